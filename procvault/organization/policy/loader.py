"""Load a privacy policy file and check it, with errors that name the file, line and key.

A policy file (``policies/orgs/<org>.yaml``, schema in ``docs/privacy-policy.md``) is read once
and turned into a frozen :class:`~.schema.Policy`; every mistake is a :class:`ConfigError` of
one line naming the file, the line and the key (``hospital.yaml:12: windows[0].zone: unknown
IANA time zone 'Europe/Amsterdm'``). A ProMTEE extraction manifest (JSON) loads as a policy of
its own, or is imported into a YAML policy's ``minimise`` section.

>>> policy = parse_policy({"policy": "demo", "version": 2, "org": "shop", "mode": "denylist",
...                        "consent": {"scope": "monitoring"}, "activities": ["Refund"],
...                        "generalise": {"timestamps": "minute"}}, source="demo.yaml")
>>> policy.id, policy.version, policy.mode, policy.clauses
('demo', 2, 'denylist', 2)
>>> parse_policy({"policy": "demo", "version": 1, "org": "shop", "mode": "denylist",
...               "consent": {"scope": "m"}, "windows": [{"zone": "Europe/Amsterdm",
...               "days": "mon-fri", "hours": "09:00-17:00"}]}, source="demo.yaml")
Traceback (most recent call last):
...
procvault.monitor.errors.ConfigError: demo.yaml: windows[0].zone: unknown IANA time zone ...
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from procvault.config.yamlfile import LineDict, LineList, load_yaml_text
from procvault.monitor.errors import ConfigError

from .patterns import Pattern
from .pii import ScrubSettings
from .reserved import RESERVED_PREFIX
from .schema import (
    TIME_LEVELS,
    AttributeRule,
    Bucket,
    Generalisation,
    Minimisation,
    Policy,
    Pseudonymisation,
    check_policy_header,
)
from .windows import CollectionWindow, parse_days, parse_hours

__all__ = ["load_policy", "parse_manifest", "parse_policy"]

#: Keys a ProMTEE manifest names for the activity, timestamp and case id that replay maps.
_MANIFEST_XES_KEYS: Final = {
    "activity_name": "concept:name",
    "activity_timestamp": "time:timestamp",
    "case_id": "concept:name",
}
_HEADER_KEYS: Final = {"id": "policy", "version": "version", "org": "org", "mode": "mode"}


# ----------------------------------------------------------------------------- loading
class _Reader:
    """Checks a parsed document and turns it into typed parts with located errors."""

    def __init__(self, source: str, base_dir: Path | None) -> None:
        self.source = source
        self.base_dir = base_dir
        self.extra_digest = hashlib.sha256()

    def fail(self, line: int | None, where: str, problem: str) -> ConfigError:
        loc = f"{self.source}:{line}" if line else self.source
        return ConfigError(f"{loc}: {where + ': ' if where else ''}{problem}")

    @staticmethod
    def line_of(container: Any, key: Any = None) -> int | None:
        if isinstance(container, LineDict):
            return container.lines.get(key, container.line) if key is not None else container.line
        if isinstance(container, LineList):
            if isinstance(key, int) and 0 <= key < len(container.lines):
                return container.lines[key]
            return container.line
        return None

    def mapping(
        self,
        value: Any,
        where: str,
        line: int | None,
        allowed: tuple[str, ...],
        required: tuple[str, ...] = (),
    ) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(line, where, f"must be a mapping, got {_kind(value)}")
        for key in value:
            if key not in allowed:
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                extra = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else f" (expected one of: {', '.join(sorted(allowed))})"
                )
                raise self.fail(self.line_of(value, key), where, f"unknown key {key!r}{extra}")
        for key in required:
            if key not in value:
                raise self.fail(self.line_of(value), where, f"missing required key {key!r}")
        return value

    def string(self, value: Any, where: str, line: int | None) -> str:
        if not isinstance(value, str):
            raise self.fail(line, where, f"must be a string, got {_kind(value)}")
        return value

    def seq(self, value: Any, where: str, line: int | None) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(line, where, f"must be a list, got {_kind(value)}")
        return value

    def boolean(self, value: Any, where: str, line: int | None) -> bool:
        if not isinstance(value, bool):
            raise self.fail(line, where, f"must be true or false, got {_kind(value)}")
        return value

    def pattern(self, value: Any, where: str, line: int | None) -> Pattern:
        try:
            if isinstance(value, str):
                return Pattern(value)
            if isinstance(value, dict):
                m = self.mapping(value, where, line, ("regex",), ("regex",))
                return Pattern(regex=self.string(m["regex"], where + ".regex", line))
        except ValueError as exc:
            raise self.fail(line, where, str(exc)) from None
        raise self.fail(line, where, f"must be a name or {{regex: ...}}, got {_kind(value)}")

    def patterns(self, value: Any, where: str, line: int | None) -> tuple[Pattern, ...]:
        items = self.seq(value, where, line)
        return tuple(
            self.pattern(v, f"{where}[{i}]", self.line_of(items, i)) for i, v in enumerate(items)
        )

    def build(self, factory: Any, where: str, line: int | None, /, *args: Any, **kw: Any) -> Any:
        try:
            return factory(*args, **kw)
        except (ValueError, TypeError) as exc:
            raise self.fail(line, where, str(exc)) from None

    # ------------------------------------------------------------------ sections
    def attribute_rules(self, value: Any, line: int | None) -> tuple[AttributeRule, ...]:
        items = self.seq(value, "attributes", line)
        rules = []
        for i, item in enumerate(items):
            where, ln = f"attributes[{i}]", self.line_of(items, i)
            if isinstance(item, str):
                rules.append(AttributeRule(self.pattern(item, where, ln)))
                continue
            m = self.mapping(item, where, ln, ("key", "values", "withhold"), ("key",))
            key = self.pattern(m["key"], where + ".key", self.line_of(m, "key"))
            if isinstance(key.exact, str) and key.exact.startswith(RESERVED_PREFIX):
                raise self.fail(
                    ln, where + ".key", f"keys starting {RESERVED_PREFIX!r} are reserved"
                )
            values = (
                self.pattern(m["values"], where + ".values", self.line_of(m, "values"))
                if "values" in m
                else None
            )
            withhold = m.get("withhold", "field")
            rules.append(self.build(AttributeRule, where, ln, key, values, withhold))
        return tuple(rules)

    def windows(self, value: Any, line: int | None) -> tuple[CollectionWindow, ...]:
        items = self.seq(value, "windows", line)
        out = []
        allowed = ("name", "zone", "days", "hours", "resources", "groups")
        for i, item in enumerate(items):
            where, ln = f"windows[{i}]", self.line_of(items, i)
            m = self.mapping(item, where, ln, allowed, ("zone", "days", "hours"))
            zone = self.string(m["zone"], where + ".zone", self.line_of(m, "zone"))
            days_raw = m["days"]
            days_list = days_raw if isinstance(days_raw, list) else [days_raw]
            try:
                days = parse_days(days_list)
            except ValueError as exc:
                raise self.fail(self.line_of(m, "days"), where + ".days", str(exc)) from None
            try:
                start, end = parse_hours(m["hours"])
            except ValueError as exc:
                raise self.fail(self.line_of(m, "hours"), where + ".hours", str(exc)) from None
            resources = (
                self.patterns(m["resources"], where + ".resources", self.line_of(m, "resources"))
                if "resources" in m
                else ()
            )
            groups: tuple[str, ...] = ()
            if "groups" in m:
                gl = self.seq(m["groups"], where + ".groups", self.line_of(m, "groups"))
                groups = tuple(
                    self.string(g, f"{where}.groups[{j}]", self.line_of(gl, j))
                    for j, g in enumerate(gl)
                )
            name = self.string(m.get("name", ""), where + ".name", self.line_of(m, "name"))
            try:
                out.append(
                    CollectionWindow(
                        zone=zone,
                        days=days,
                        start=start,
                        end=end,
                        resources=resources,
                        groups=groups,
                        name=name,
                    )
                )
            except ValueError as exc:
                key = "zone" if "zone" in str(exc) else ""
                raise self.fail(
                    self.line_of(m, key or None), where + (f".{key}" if key else ""), str(exc)
                ) from None
        return tuple(out)

    def groups(self, value: Any, line: int | None) -> dict[str, tuple[Pattern, ...]]:
        if not isinstance(value, dict):
            raise self.fail(line, "groups", f"must be a mapping, got {_kind(value)}")
        out = {}
        for name, pats in value.items():
            ln = self.line_of(value, name)
            if not isinstance(name, str):
                raise self.fail(ln, "groups", f"a group name must be a string, got {name!r}")
            out[name] = self.patterns(pats, f"groups.{name}", ln)
        return out

    def resolve(self, raw: str, where: str, line: int | None) -> Path:
        p = Path(os.path.expanduser(raw))
        if not p.is_absolute() and self.base_dir is not None:
            p = self.base_dir / p
        return p

    def read_file(self, raw: Any, where: str, line: int | None) -> tuple[Path, bytes]:
        path = self.resolve(self.string(raw, where, line), where, line)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise self.fail(line, where, f"cannot read {path}: {exc.strerror or exc}") from None
        self.extra_digest.update(data)
        return path, data

    def minimise(self, value: Any, line: int | None) -> Minimisation:
        m = self.mapping(value, "minimise", line, ("import", "activities", "default"))
        acts: dict[str, frozenset[str]] = {}
        default = None
        source = ""
        if "import" in m:
            where, ln = "minimise.import", self.line_of(m, "import")
            path, data = self.read_file(m["import"], where, ln)
            imported = _manifest_minimisation(data, str(path))
            acts.update(imported.activities)
            default = imported.default
            source = str(path)
        if "activities" in m:
            where, ln = "minimise.activities", self.line_of(m, "activities")
            table = m["activities"]
            if not isinstance(table, dict):
                raise self.fail(ln, where, f"must be a mapping, got {_kind(table)}")
            for act, keys in table.items():
                kl = self.line_of(table, act)
                if not isinstance(act, str):
                    raise self.fail(kl, where, f"an activity must be a string, got {act!r}")
                items = self.seq(keys, f"{where}.{act}", kl)
                acts[act] = frozenset(
                    self.string(k, f"{where}.{act}[{j}]", self.line_of(items, j))
                    for j, k in enumerate(items)
                )
        if "default" in m:
            default = m["default"]
        minimisation: Minimisation = self.build(
            Minimisation,
            "minimise.default",
            self.line_of(m, "default"),
            acts,
            default if default is not None else "keep",
            source,
        )
        return minimisation

    def generalise(self, value: Any, line: int | None) -> Generalisation:
        m = self.mapping(value, "generalise", line, ("timestamps", "numbers"))
        numbers: dict[str, Bucket] = {}
        if "numbers" in m:
            table, ln = m["numbers"], self.line_of(m, "numbers")
            if not isinstance(table, dict):
                raise self.fail(ln, "generalise.numbers", f"must be a mapping, got {_kind(table)}")
            for key, spec in table.items():
                where, kl = f"generalise.numbers.{key}", self.line_of(table, key)
                s = self.mapping(spec, where, kl, ("width", "edges"))
                edges = tuple(self.seq(s["edges"], where + ".edges", kl)) if "edges" in s else ()
                numbers[str(key)] = self.build(Bucket, where, kl, s.get("width"), edges)
        ts = m.get("timestamps", "exact")
        return self.build(  # type: ignore[no-any-return]
            Generalisation, "generalise.timestamps", self.line_of(m, "timestamps"), ts, numbers
        )

    def pseudonymise(self, value: Any, line: int | None) -> Pseudonymisation:
        m = self.mapping(value, "pseudonymise", line, ("case_id", "resource", "attributes"))
        attrs: frozenset[str] = frozenset()
        if "attributes" in m:
            items = self.seq(m["attributes"], "pseudonymise.attributes", line)
            attrs = frozenset(
                self.string(a, f"pseudonymise.attributes[{i}]", self.line_of(items, i))
                for i, a in enumerate(items)
            )
        return Pseudonymisation(
            case_id=self.boolean(
                m.get("case_id", False), "pseudonymise.case_id", self.line_of(m, "case_id")
            ),
            resource=self.boolean(
                m.get("resource", False), "pseudonymise.resource", self.line_of(m, "resource")
            ),
            attributes=attrs,
        )

    def scrub(self, value: Any, line: int | None) -> tuple[bool, ScrubSettings]:
        allowed = (
            "enabled",
            "kinds",
            "phone_regions",
            "national_ids",
            "names",
            "names_file",
            "name_locales",
            "skip_attributes",
        )
        m = self.mapping(value, "scrub", line, allowed)

        def strings(key: str) -> tuple[str, ...]:
            items = self.seq(m[key], f"scrub.{key}", self.line_of(m, key))
            out = []
            for i, v in enumerate(items):
                if isinstance(v, bool) and key == "phone_regions":
                    raise self.fail(
                        self.line_of(items, i),
                        f"scrub.{key}[{i}]",
                        "YAML read a bare NO/YES/ON/OFF as a boolean; quote the region code",
                    )
                out.append(self.string(v, f"scrub.{key}[{i}]", self.line_of(items, i)))
            return tuple(out)

        kw: dict[str, Any] = {}
        if "kinds" in m:
            kw["kinds"] = frozenset(strings("kinds"))
        if "phone_regions" in m:
            kw["phone_regions"] = strings("phone_regions")
        if "national_ids" in m:
            kw["national_ids"] = strings("national_ids")
        names = list(strings("names")) if "names" in m else []
        if "names_file" in m:
            path, data = self.read_file(
                m["names_file"], "scrub.names_file", self.line_of(m, "names_file")
            )
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail(
                    self.line_of(m, "names_file"), "scrub.names_file", f"{path} is not UTF-8"
                ) from None
            names.extend(
                ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")
            )
        kw["names"] = tuple(names)
        if "name_locales" in m:
            raw = m["name_locales"]
            if raw in ("all", "none"):
                kw["name_locales"] = None if raw == "all" else ()
            elif isinstance(raw, str):
                raise self.fail(
                    self.line_of(m, "name_locales"),
                    "scrub.name_locales",
                    f"expected all, none or a list of locales like [it_IT, nl_NL], got {raw!r}",
                )
            else:
                kw["name_locales"] = strings("name_locales")
        if "skip_attributes" in m:
            kw["skip_attributes"] = frozenset(strings("skip_attributes"))
        enabled = self.boolean(m.get("enabled", False), "scrub.enabled", self.line_of(m, "enabled"))
        where = "scrub"
        try:
            settings = ScrubSettings(**kw)
        except ValueError as exc:
            text = str(exc)
            key = next(
                (
                    k
                    for k, w in (
                        ("kinds", "kind"),
                        ("phone_regions", "region"),
                        ("national_ids", "national"),
                        ("name_locales", "name locale"),
                        ("names", "name"),
                    )
                    if w in text
                ),
                None,
            )
            raise self.fail(
                self.line_of(m, key), where + (f".{key}" if key else ""), text
            ) from None
        return enabled, settings


_TOP_KEYS: Final = (
    "policy",
    "version",
    "org",
    "description",
    "mode",
    "consent",
    "activities",
    "resources",
    "attributes",
    "groups",
    "group_attribute",
    "windows",
    "minimise",
    "generalise",
    "pseudonymise",
    "placeholders",
    "scrub",
)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {value}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def parse_policy(
    data: Any,
    *,
    source: str = "<policy>",
    base_dir: str | os.PathLike[str] | None = None,
    digest: str = "",
) -> Policy:
    """Check a parsed policy document and build the :class:`Policy`.

    Parameters
    ----------
    data
        The document (from YAML or JSON, or written in Python).
    source
        The name used in error messages (the file path).
    base_dir
        Folder that relative paths (``minimise.import``, ``scrub.names_file``) start from.
    digest
        SHA-256 of the file's bytes, recorded in :attr:`Policy.digest` (files it imports are
        folded in).
    """
    r = _Reader(source, Path(base_dir) if base_dir is not None else None)
    top = r.mapping(data, "", r.line_of(data), _TOP_KEYS, ("policy", "version", "mode", "consent"))
    ln = r.line_of
    policy_id = r.string(top["policy"], "policy", ln(top, "policy"))
    consent = r.mapping(
        top["consent"], "consent", ln(top, "consent"), ("scope", "basis"), ("scope",)
    )
    scope = r.string(consent["scope"], "consent.scope", ln(consent, "scope"))
    basis = r.string(consent.get("basis", ""), "consent.basis", ln(consent, "basis"))
    kw: dict[str, Any] = {}
    if "activities" in top:
        kw["activities"] = r.patterns(top["activities"], "activities", ln(top, "activities"))
    if "resources" in top:
        kw["resources"] = r.patterns(top["resources"], "resources", ln(top, "resources"))
    if "attributes" in top:
        kw["attributes"] = r.attribute_rules(top["attributes"], ln(top, "attributes"))
    if "groups" in top:
        kw["groups"] = r.groups(top["groups"], ln(top, "groups"))
    if "group_attribute" in top:
        kw["group_attribute"] = r.string(
            top["group_attribute"], "group_attribute", ln(top, "group_attribute")
        )
    if "windows" in top:
        kw["windows"] = r.windows(top["windows"], ln(top, "windows"))
    if "minimise" in top:
        kw["minimise"] = r.minimise(top["minimise"], ln(top, "minimise"))
    if "generalise" in top:
        kw["generalise"] = r.generalise(top["generalise"], ln(top, "generalise"))
    if "pseudonymise" in top:
        kw["pseudonymise"] = r.pseudonymise(top["pseudonymise"], ln(top, "pseudonymise"))
    if "placeholders" in top:
        ph = r.mapping(
            top["placeholders"], "placeholders", ln(top, "placeholders"), ("timestamps",)
        )
        kw["placeholder_timestamps"] = ph.get("timestamps", "hour")
        if kw["placeholder_timestamps"] not in TIME_LEVELS:
            raise r.fail(
                ln(ph, "timestamps"),
                "placeholders.timestamps",
                f"must be one of {', '.join(TIME_LEVELS)}, "
                f"got {_kind(kw['placeholder_timestamps'])}",
            )
    if "scrub" in top:
        kw["scrub_enabled"], kw["scrub"] = r.scrub(top["scrub"], ln(top, "scrub"))
    description = r.string(top.get("description", ""), "description", ln(top, "description"))
    if r.extra_digest.digest() != hashlib.sha256().digest():
        digest = hashlib.sha256((digest + r.extra_digest.hexdigest()).encode()).hexdigest()
    header = {
        "id": policy_id,
        "version": top["version"],
        "org": top.get("org", ""),
        "mode": top["mode"],
    }
    for name, key in _HEADER_KEYS.items():
        try:
            check_policy_header(name, header[name])
        except ValueError as exc:
            raise r.fail(ln(top, key), key, str(exc)) from None
    return r.build(  # type: ignore[no-any-return]
        Policy,
        "",
        ln(top),
        **header,
        scope=scope,
        description=description,
        basis=basis,
        source=source,
        digest=digest,
        **kw,
    )


def _manifest_minimisation(data: bytes, source: str) -> Minimisation:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = f":{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ConfigError(f"{source}{line}: not a JSON extraction manifest: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("attribute_extraction"), dict):
        raise ConfigError(
            f"{source}: not a ProMTEE extraction manifest (no 'attribute_extraction' object)"
        )
    allowed = {"activity_name", "activity_timestamp", "case_id", "attribute_extraction"}
    for key in doc:
        if key not in allowed:
            raise ConfigError(f"{source}: unknown manifest key {key!r}")
    for key, expected in _MANIFEST_XES_KEYS.items():
        got = doc.get(key, expected)
        if got != expected:
            raise ConfigError(
                f"{source}: {key} is {got!r}; procvault's XES replay reads {expected!r}, "
                "so this manifest cannot be honoured"
            )
    acts: dict[str, frozenset[str]] = {}
    for act, keys in doc["attribute_extraction"].items():
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ConfigError(f"{source}: attribute_extraction[{act!r}] must be a list of keys")
        acts[act] = frozenset(keys)
    return Minimisation(acts, "drop", source)


def parse_manifest(data: bytes, *, source: str = "<manifest>") -> Policy:
    """A ProMTEE extraction manifest as a policy of its own.

    The manifest's activities keep exactly the attributes it lists; every other activity keeps
    none (``default: drop``); nothing is denied or pseudonymised. The policy id is
    ``promtee-<file stem>``, version 1, consent scope ``process-monitoring``.

    >>> p = parse_manifest(b'{"attribute_extraction": {"Payment": ["paymentAmount"]}}',
    ...                    source="extraction_manifest_traffic.json")
    >>> p.id, p.minimise.kept("Payment"), p.minimise.kept("Send Fine")
    ('promtee-extraction_manifest_traffic', frozenset({'paymentAmount'}), frozenset())
    """
    minimise = _manifest_minimisation(data, source)
    stem = Path(source).name.removesuffix(".json")
    pid = re.sub(r"[^A-Za-z0-9._-]", "-", f"promtee-{stem}")[:64]
    return Policy(
        id=pid,
        version=1,
        org="",
        mode="denylist",
        scope="process-monitoring",
        description=f"imported from ProMTEE extraction manifest {source}",
        minimise=minimise,
        source=source,
        digest=hashlib.sha256(data).hexdigest(),
    )


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and check a policy file: YAML, or JSON (a ProMTEE extraction manifest, or a policy
    document with a ``policy`` key).

    Every problem is a one-line :class:`ConfigError` naming the file and, where it can, the
    line and key.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the policy: {exc.strerror or exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        if isinstance(doc, dict) and "policy" in doc and "attribute_extraction" not in doc:
            # A policy written as JSON (no line numbers in its errors).
            return parse_policy(doc, source=str(p), base_dir=p.parent, digest=digest)
        return parse_manifest(raw, source=str(p))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text") from None
    doc = load_yaml_text(text, str(p))
    if doc is None:
        raise ConfigError(f"{p}: the policy file is empty")
    return parse_policy(doc, source=str(p), base_dir=p.parent, digest=digest)
