"""Read native compliance rules from YAML (the schema is in ``docs/rules.md``).

Every mistake is reported when the file is loaded, as one :class:`ConfigError` line naming the
file, the line and the reason: an unknown template or key, an activity the model does not know
(when a set of activities is given), a malformed condition, a bad duration, a duplicate name.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "r.yaml").write_text('''
... rules:
...   - name: pay_after_fine
...     template: respnse
...     activation: Create Fine
...     target: Payment
... ''')
>>> load_rules(d / "r.yaml")
Traceback (most recent call last):
...
procvault.monitor.errors.ConfigError: .../r.yaml:3: rule 'pay_after_fine': unknown template ...
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Collection, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from procvault.config.yamlfile import line_of, load_yaml_text
from procvault.monitor.compliance.model import (
    END,
    OPS,
    STATE_NAMES,
    TEMPLATES,
    Aggregate,
    AttrTest,
    Correlation,
    DeclareRule,
    Guard,
    Op,
    Rule,
    StateMachineRule,
    Transition,
    Window,
)
from procvault.monitor.durations import parse_duration
from procvault.monitor.errors import ConfigError, InputError

__all__ = ["load_rules"]

_DECLARE_KEYS = {
    "name",
    "template",
    "activation",
    "target",
    "activation_if",
    "target_if",
    "correlation",
    "within",
    "after",
    "at_least",
    "at_most",
    "times",
    "description",
    "promtee",
}
_MACHINE_KEYS = {"name", "machine", "description", "promtee"}


class _Ctx:
    """Where we are: the file, for messages."""

    def __init__(self, path: Path, activities: Collection[str] | None) -> None:
        self.path = path
        self.activities = activities

    def fail(self, line: object, message: str) -> ConfigError:
        where = f"{self.path}:{line}" if isinstance(line, int) else str(self.path)
        return ConfigError(f"{where}: {message}")

    def activity(self, name: object, line: object, what: str, rule: str) -> str:
        if not isinstance(name, str) or not name:
            raise self.fail(line, f"rule {rule!r}: {what} must be an activity name")
        if self.activities is not None and name not in self.activities:
            close = difflib.get_close_matches(name, list(self.activities), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.fail(line, f"rule {rule!r}: unknown activity {name!r}{hint}")
        return name


def _value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=UTC)
    return v


def _conditions(ctx: _Ctx, raw: Any, line: object, rule: str, what: str) -> tuple[AttrTest, ...]:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        out.append(_condition(ctx, item, line, rule, what))
    return tuple(out)


def _condition(ctx: _Ctx, item: Any, line: object, rule: str, what: str) -> AttrTest:
    if not isinstance(item, dict):
        raise ctx.fail(
            line, f"rule {rule!r}: {what}: a condition is a mapping like {{attr: x, gt: 5}}"
        )
    ln = line_of(item, line)
    body = dict(item)
    attr = body.pop("attr", None)
    if not isinstance(attr, str) or not attr:
        raise ctx.fail(ln, f"rule {rule!r}: {what}: a condition needs 'attr'")
    if len(body) != 1:
        raise ctx.fail(
            ln,
            f"rule {rule!r}: {what}: malformed condition on {attr!r}: give exactly one of "
            f"{', '.join(OPS)}",
        )
    ((op, value),) = body.items()
    if op not in OPS:
        raise ctx.fail(
            ln, f"rule {rule!r}: {what}: malformed condition on {attr!r}: unknown operator {op!r}"
        )
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise ctx.fail(ln, f"rule {rule!r}: {what}: '{op}' needs a non-empty list")
        return AttrTest(attr, op, frozenset(_value(v) for v in value))
    if op in ("exists", "missing"):
        if value is not True:
            raise ctx.fail(ln, f"rule {rule!r}: {what}: write '{op}: true'")
        return AttrTest(attr, op)
    if isinstance(value, list | dict):
        raise ctx.fail(ln, f"rule {rule!r}: {what}: '{op}' needs a single value")
    return AttrTest(attr, op, _value(value))


def _correlation(ctx: _Ctx, raw: Any, line: object, rule: str) -> tuple[Correlation, ...]:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        ln = line_of(item, line) if isinstance(item, dict) else line
        body = dict(item) if isinstance(item, dict) else {}
        if len(body) != 1 or next(iter(body)) not in ("same", "different"):
            raise ctx.fail(
                ln, f"rule {rule!r}: correlation: write {{same: ATTR}} or {{different: ATTR}}"
            )
        ((kind, attr),) = body.items()
        if not isinstance(attr, str):
            raise ctx.fail(ln, f"rule {rule!r}: correlation: {kind} needs an attribute name")
        out.append(Correlation(attr, kind == "same"))
    return tuple(out)


def _declare(ctx: _Ctx, raw: dict[str, Any], name: str, line: object) -> DeclareRule:
    unknown = sorted(set(raw) - _DECLARE_KEYS)
    if unknown:
        raise ctx.fail(line, f"rule {name!r}: unknown key {unknown[0]!r}")
    template = raw.get("template")
    if template not in TEMPLATES:
        close = difflib.get_close_matches(str(template), sorted(TEMPLATES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ctx.fail(line, f"rule {name!r}: unknown template {template!r}{hint}")
    activation = ctx.activity(raw.get("activation"), line, "activation", name)
    target = raw.get("target")
    if target is not None:
        target = ctx.activity(target, line, "target", name)
    count = 1
    counts = [k for k in ("at_least", "at_most", "times") if k in raw]
    expected = {"existence": "at_least", "absence": "at_most", "exactly": "times"}.get(
        str(template)
    )
    if counts and (expected is None or counts != [expected]):
        raise ctx.fail(line, f"rule {name!r}: {template} does not take {counts[0]!r}")
    if expected is not None:
        raw_count = raw.get(
            expected, 1 if template == "existence" else 0 if template == "absence" else None
        )
        if not isinstance(raw_count, int) or isinstance(raw_count, bool):
            raise ctx.fail(line, f"rule {name!r}: {template} needs an integer {expected!r}")
        count = raw_count
    window = None
    if "within" in raw or "after" in raw:
        try:
            window = Window(
                after=parse_duration(raw["after"]) if "after" in raw else None,
                within=parse_duration(raw["within"]) if "within" in raw else None,
            )
        except ValueError as exc:
            raise ctx.fail(line, f"rule {name!r}: {exc}") from None
    try:
        return DeclareRule(
            name,
            template,
            activation,
            target,
            activation_if=_conditions(ctx, raw.get("activation_if"), line, name, "activation_if"),
            target_if=_conditions(ctx, raw.get("target_if"), line, name, "target_if"),
            correlation=_correlation(ctx, raw.get("correlation"), line, name),
            window=window,
            count=count,
            source=f"{ctx.path}:{line}",
        )
    except (ValueError, TypeError) as exc:
        msg = str(exc).split(": ", 1)[1] if str(exc).startswith(str(ctx.path)) else str(exc)
        raise ctx.fail(line, msg) from None


def _state(ctx: _Ctx, s: object, line: object, rule: str) -> int:
    if s not in STATE_NAMES:
        raise ctx.fail(
            line, f"rule {rule!r}: unknown state {s!r} (one of {', '.join(STATE_NAMES)})"
        )
    index: int = STATE_NAMES.index(str(s))
    return index


def _agg_ref(ctx: _Ctx, raw: Any, line: object, rule: str, kinds: tuple[str, ...]) -> Aggregate:
    """``{first: A}``, ``{last: A}``, ``{sum: [A, attr]}``, ``{max: [A, attr]}``, ``{count: A}``."""
    if not isinstance(raw, dict):
        raise ctx.fail(
            line, f"rule {rule!r}: expected one of {', '.join(kinds)} (e.g. {{first: A}})"
        )
    body = {k: v for k, v in raw.items() if k not in ("coef", "where")}
    if len(body) != 1 or next(iter(body)) not in kinds:
        raise ctx.fail(
            line, f"rule {rule!r}: expected one of {', '.join(kinds)} (e.g. {{first: A}})"
        )
    ((kind, arg),) = body.items()
    where = _conditions(ctx, raw.get("where"), line, rule, "where")
    if kind in ("first", "last", "count"):
        act = "*" if arg == "*" else ctx.activity(arg, line, kind, rule)
        return Aggregate(kind, act, None, where)
    if not isinstance(arg, list) or len(arg) != 2:
        raise ctx.fail(line, f"rule {rule!r}: {kind} takes [activity, attribute]")
    act = "*" if arg[0] == "*" else ctx.activity(arg[0], line, kind, rule)
    return Aggregate(kind, act, str(arg[1]), where)


_COMPARISONS: dict[str, Op] = {k: k for k in ("eq", "ne", "lt", "le", "gt", "ge")}


def _comparison(ctx: _Ctx, body: dict[str, Any], line: object, rule: str) -> tuple[Op, Any]:
    ops = [_COMPARISONS[k] for k in body if k in _COMPARISONS]
    if len(ops) != 1:
        raise ctx.fail(line, f"rule {rule!r}: give exactly one comparison (lt, le, gt, ge, eq, ne)")
    return ops[0], body[ops[0]]


def _guard(ctx: _Ctx, raw: Any, line: object, rule: str) -> Guard:  # noqa: PLR0911 - one per kind
    if not isinstance(raw, dict):
        raise ctx.fail(line, f"rule {rule!r}: a guard is a mapping")
    ln = line_of(raw, line)
    body = dict(raw)
    if "not" in body:
        if len(body) != 1:
            raise ctx.fail(ln, f"rule {rule!r}: 'not' takes one guard and nothing beside it")
        return Guard("not", inner=_guard(ctx, body["not"], ln, rule))
    if "attr" in body:
        return Guard("attr", test=_condition(ctx, raw, ln, rule, "if"))
    if "seen" in body or "not_seen" in body:
        kind: Literal["seen", "not_seen"] = "seen" if "seen" in body else "not_seen"
        act = body[kind]
        act = "*" if act == "*" else ctx.activity(act, ln, kind, rule)
        where = _conditions(ctx, body.get("where"), ln, rule, "where")
        return Guard(kind, terms=((1.0, Aggregate("count", act, None, where)),))
    if "elapsed" in body:
        spec = body["elapsed"]
        if not isinstance(spec, dict) or "since" not in spec:
            raise ctx.fail(ln, f"rule {rule!r}: elapsed needs 'since: {{first: A}}'")
        op, val = _comparison(ctx, spec, ln, rule)
        agg = _agg_ref(ctx, spec["since"], ln, rule, ("first", "last"))
        return Guard("elapsed", op, _duration(ctx, val, ln, rule), terms=((1.0, agg),))
    if "delay" in body:
        spec = body["delay"]
        if not isinstance(spec, dict) or "from" not in spec or "to" not in spec:
            raise ctx.fail(ln, f"rule {rule!r}: delay needs 'from' and 'to'")
        op, val = _comparison(ctx, spec, ln, rule)
        a0 = _agg_ref(ctx, spec["from"], ln, rule, ("first", "last"))
        a1 = _agg_ref(ctx, spec["to"], ln, rule, ("first", "last"))
        return Guard("delay", op, _duration(ctx, val, ln, rule), terms=((1.0, a0), (1.0, a1)))
    if "time" in body:
        spec = body["time"]
        if not isinstance(spec, dict):
            raise ctx.fail(ln, f"rule {rule!r}: time needs a comparison, e.g. {{ge: 2012-01-01}}")
        op, val = _comparison(ctx, spec, ln, rule)
        when = _value(val)
        if isinstance(when, str):
            try:
                when = _value(datetime.fromisoformat(when))
            except ValueError:
                when = None
        if not isinstance(when, datetime):
            raise ctx.fail(ln, f"rule {rule!r}: time needs a date or timestamp, not {val!r}")
        return Guard("time", op, when)
    if "since_attr" in body:
        spec = body["since_attr"]
        if not isinstance(spec, dict) or not isinstance(spec.get("attr"), str):
            raise ctx.fail(ln, f"rule {rule!r}: since_attr needs 'attr'")
        op, val = _comparison(ctx, spec, ln, rule)
        return Guard("since_attr", op, _duration(ctx, val, ln, rule), attr=spec["attr"])
    if "shared" in body:
        spec = body["shared"]
        between = spec.get("between") if isinstance(spec, dict) else None
        if (
            not isinstance(between, list)
            or len(between) != 2
            or not isinstance(spec.get("attr"), str)
        ):
            raise ctx.fail(ln, f"rule {rule!r}: shared needs 'attr' and 'between: [A, B]'")
        acts = tuple(ctx.activity(a, ln, "shared", rule) for a in between)
        return Guard("shared", attr=spec["attr"], activities=acts)
    if "earlier" in body:
        return _earlier(ctx, body["earlier"], ln, rule)
    if "compare" in body:
        spec = body["compare"]
        if not isinstance(spec, dict) or not isinstance(spec.get("terms"), list):
            raise ctx.fail(ln, f"rule {rule!r}: compare needs 'terms' and a comparison")
        op, val = _comparison(ctx, spec, ln, rule)
        terms = []
        for t in spec["terms"]:
            coef = t.get("coef", 1) if isinstance(t, dict) else 1
            if not isinstance(coef, int | float):
                raise ctx.fail(ln, f"rule {rule!r}: coef must be a number")
            terms.append((float(coef), _agg_ref(ctx, t, ln, rule, ("count", "sum", "max", "min"))))
        if not isinstance(val, int | float):
            raise ctx.fail(ln, f"rule {rule!r}: compare needs a number to compare with")
        return Guard("compare", op, val, terms=tuple(terms))
    keys = ", ".join(sorted(body)) or "nothing"
    raise ctx.fail(
        ln,
        f"rule {rule!r}: malformed guard ({keys}); use attr, seen, not_seen, elapsed, delay, "
        "time, since_attr, shared, earlier, compare or not",
    )


def _earlier(ctx: _Ctx, spec: Any, line: object, rule: str) -> Guard:
    """``{same|different: ATTR, of: [A, ...], other_activity: bool, where: [...]}``."""
    usage = (
        f"rule {rule!r}: earlier needs {{same: ATTR}} or {{different: ATTR}} and "
        "'of: [activities]' (optional: other_activity, where)"
    )
    if not isinstance(spec, dict):
        raise ctx.fail(line, usage)
    body = dict(spec)
    sides = [k for k in ("same", "different") if k in body]
    unknown = sorted(set(body) - {"same", "different", "of", "other_activity", "where"})
    if len(sides) != 1 or "of" not in body or unknown:
        raise ctx.fail(line, usage + (f"; unknown key {unknown[0]!r}" if unknown else ""))
    attr = body[sides[0]]
    if not isinstance(attr, str) or not attr:
        raise ctx.fail(line, f"rule {rule!r}: earlier: {sides[0]} needs an attribute name")
    of = body["of"] if isinstance(body["of"], list) else [body["of"]]
    if not of:
        raise ctx.fail(line, usage)
    acts = tuple(ctx.activity(a, line, "earlier", rule) for a in of)
    other = body.get("other_activity", False)
    if not isinstance(other, bool):
        raise ctx.fail(line, f"rule {rule!r}: earlier: other_activity is true or false")
    return Guard(
        "earlier",
        attr=attr,
        activities=acts,
        same=sides[0] == "same",
        other_activity=other,
        where=_conditions(ctx, body.get("where"), line, rule, "where"),
    )


def _duration(ctx: _Ctx, raw: Any, line: object, rule: str) -> timedelta:
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ctx.fail(line, f"rule {rule!r}: {exc}") from None


def _trigger(
    ctx: _Ctx, raw: Any, line: object, rule: str
) -> tuple[frozenset[str] | None, frozenset[str]]:
    if raw == "any":
        return None, frozenset()
    if isinstance(raw, dict) and set(raw) == {"any_except"}:
        ex = raw["any_except"]
        ex = ex if isinstance(ex, list) else [ex]
        return None, frozenset(a if a == END else ctx.activity(a, line, "on", rule) for a in ex)
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise ctx.fail(line, f"rule {rule!r}: 'on' needs an activity, {END}, any or any_except")
    return frozenset(
        a if a == END else ctx.activity(a, line, "on", rule) for a in items
    ), frozenset()


def _machine(ctx: _Ctx, raw: dict[str, Any], name: str, line: object) -> StateMachineRule:
    unknown = sorted(set(raw) - _MACHINE_KEYS)
    if unknown:
        raise ctx.fail(line, f"rule {name!r}: unknown key {unknown[0]!r}")
    items = raw["machine"]
    if not isinstance(items, list):
        raise ctx.fail(line, f"rule {name!r}: 'machine' is a list of transitions")
    transitions = []
    for t in items:
        ln = line_of(t, line) if isinstance(t, dict) else line
        if not isinstance(t, dict) or "from" not in t or "to" not in t or "on" not in t:
            raise ctx.fail(ln, f"rule {name!r}: a transition needs 'from', 'to' and 'on'")
        extra = sorted(set(t) - {"from", "to", "on", "if"})
        if extra:
            raise ctx.fail(ln, f"rule {name!r}: unknown key {extra[0]!r} in a transition")
        on, on_except = _trigger(ctx, t["on"], ln, name)
        guards_raw = t.get("if") or []
        guards_raw = guards_raw if isinstance(guards_raw, list) else [guards_raw]
        guards = tuple(_guard(ctx, g, ln, name) for g in guards_raw)
        transitions.append(
            Transition(
                _state(ctx, t["from"], ln, name),
                _state(ctx, t["to"], ln, name),
                on,
                on_except,
                guards,
            )
        )
    promtee = raw.get("promtee")
    return StateMachineRule(
        name,
        tuple(transitions),
        source=f"{ctx.path}:{line}",
        promtee=str(promtee) if promtee else None,
    )


def _parse_file(path: Path, activities: Collection[str] | None) -> list[Rule]:
    ctx = _Ctx(path, activities)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    doc = load_yaml_text(text, str(path))
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise ctx.fail(None, "a rule file is a mapping with a 'rules' list")
    out: list[Rule] = []
    for raw in doc["rules"]:
        if not isinstance(raw, dict):
            raise ctx.fail(None, "each entry of 'rules' is a mapping")
        line = line_of(raw)
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ctx.fail(line, "a rule needs a 'name'")
        if "machine" in raw:
            out.append(_machine(ctx, raw, name, line))
        elif "template" in raw:
            out.append(_declare(ctx, raw, name, line))
        else:
            raise ctx.fail(line, f"rule {name!r}: give a 'template' (Declare) or a 'machine'")
    return out


def load_rules(
    path: str | os.PathLike[str], *, activities: Collection[str] | None = None
) -> tuple[Rule, ...]:
    """Load the rules of a YAML file, or of every ``*.yaml``/``*.yml`` in a folder (sorted).

    Parameters
    ----------
    path
        A file or a folder.
    activities
        If given, every activity a rule names must be in it (e.g. the model's labels).
    """
    p = Path(path)
    if p.is_dir():
        files: Iterable[Path] = sorted(
            f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file()
        )
    elif p.is_file():
        files = [p]
    else:
        raise InputError(f"{p}: file not found")
    rules: list[Rule] = []
    where: dict[str, str] = {}
    for f in files:
        for r in _parse_file(f, activities):
            src = r.source
            if r.name in where:
                raise ConfigError(f"{src}: rule name {r.name!r} is already used at {where[r.name]}")
            where[r.name] = src
            rules.append(r)
    if not rules:
        raise ConfigError(f"{p}: no rules")
    return tuple(rules)
