"""The typed form of an organization's privacy policy (frozen, checked in the constructors).

:func:`~procvault.organization.policy.loader.load_policy` builds a :class:`Policy` from a policy
file; the classes here can also be built directly in Python. Every constructor refuses bad
values with ``ValueError``.

>>> p = Policy(id="demo", version=2, org="shop", mode="denylist", scope="monitoring",
...            activities=(Pattern("Refund"),), generalise=Generalisation("minute"))
>>> p.clauses, p.summary()["generalise"]["timestamps"]
(2, 'minute')
>>> Policy(id="demo", version=0, org="shop", mode="denylist", scope="monitoring")
Traceback (most recent call last):
...
ValueError: version must be >= 1, got 0
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

from .patterns import Pattern
from .pii import ScrubSettings
from .windows import CollectionWindow

__all__ = [
    "ID_RE",
    "TIME_LEVELS",
    "AttributeRule",
    "Bucket",
    "Generalisation",
    "Minimisation",
    "Mode",
    "Policy",
    "Pseudonymisation",
    "TimeLevel",
    "check_policy_header",
]

Mode = Literal["allowlist", "denylist"]
TimeLevel = Literal["exact", "second", "minute", "hour", "day"]
#: Timestamp generalisation levels, finest first.
TIME_LEVELS: Final = ("exact", "second", "minute", "hour", "day")
ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


# ----------------------------------------------------------------------------- typed policy
@dataclass(frozen=True)
class AttributeRule:
    """An attribute clause: a key pattern and, optionally, a pattern over its values.

    In a denylist a matching key is withheld (with ``values``: only when the value matches);
    in an allowlist only matching keys are kept (with ``values``: only when the value matches).
    ``withhold`` says whether a denied value costs the field or the whole event.
    """

    key: Pattern
    values: Pattern | None = None
    withhold: Literal["field", "event"] = "field"

    def __post_init__(self) -> None:
        if self.withhold not in ("field", "event"):
            raise ValueError(f"withhold must be 'field' or 'event', got {self.withhold!r}")
        if self.withhold == "event" and self.values is None:
            raise ValueError("withhold: event needs a values pattern")


@dataclass(frozen=True)
class Bucket:
    """Numbers generalised into buckets: fixed ``width`` or explicit ``edges``.

    >>> Bucket(width=10).apply(47), Bucket(width=0.5).apply(1.7)
    (40, 1.5)
    >>> b = Bucket(edges=(0, 18, 65))
    >>> b.apply(-1), b.apply(30), b.apply(65)
    ('<0', '18-65', '>=65')
    """

    width: float | None = None
    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if (self.width is None) == (not self.edges):
            raise ValueError("a bucket has either a width or edges")
        if self.width is not None and (
            isinstance(self.width, bool)
            or not isinstance(self.width, int | float)
            or not math.isfinite(self.width)
            or self.width <= 0
        ):
            raise ValueError(f"bucket width must be a positive number, got {self.width!r}")
        edges = tuple(self.edges)
        for e in edges:
            if isinstance(e, bool) or not isinstance(e, int | float) or not math.isfinite(e):
                raise ValueError(f"bucket edges must be numbers, got {e!r}")
        if edges and (len(edges) < 2 or any(a >= b for a, b in itertools.pairwise(edges))):
            raise ValueError("bucket edges must be at least two increasing numbers")
        object.__setattr__(self, "edges", edges)

    def apply(self, value: float) -> float | str:
        """The bucket of ``value``: its lower bound (width) or a label (edges)."""
        if self.width is not None:
            low = math.floor(value / self.width) * self.width
            return int(low) if isinstance(self.width, int) and isinstance(value, int) else low
        edges = self.edges
        if value < edges[0]:
            return f"<{edges[0]:g}"
        for a, b in itertools.pairwise(edges):
            if value < b:
                return f"{a:g}-{b:g}"
        return f">={edges[-1]:g}"


@dataclass(frozen=True)
class Minimisation:
    """Which attributes each activity may carry.

    ``activities`` maps an activity to the keys it keeps; an activity not listed keeps all its
    attributes (``default: keep``) or none (``default: drop``, what a ProMTEE manifest means).
    """

    activities: Mapping[str, frozenset[str]] = field(default_factory=dict)
    default: Literal["keep", "drop"] = "keep"
    source: str = ""

    def __post_init__(self) -> None:
        if self.default not in ("keep", "drop"):
            raise ValueError(f"default must be 'keep' or 'drop', got {self.default!r}")
        acts = {str(k): frozenset(v) for k, v in self.activities.items()}
        object.__setattr__(self, "activities", MappingProxyType(acts))

    @property
    def active(self) -> bool:
        """True when minimisation removes anything."""
        return bool(self.activities) or self.default == "drop"

    def kept(self, activity: str) -> frozenset[str] | None:
        """Keys ``activity`` keeps, or ``None`` when it keeps everything."""
        keys = self.activities.get(activity)
        if keys is not None:
            return keys
        return None if self.default == "keep" else frozenset()


@dataclass(frozen=True)
class Generalisation:
    """Coarser timestamps and bucketed numbers."""

    timestamps: TimeLevel = "exact"
    numbers: Mapping[str, Bucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.timestamps not in TIME_LEVELS:
            raise ValueError(
                f"timestamps must be one of {', '.join(TIME_LEVELS)}, got {self.timestamps!r}"
            )
        object.__setattr__(self, "numbers", MappingProxyType(dict(self.numbers)))


@dataclass(frozen=True)
class Pseudonymisation:
    """What is replaced by keyed pseudonyms."""

    case_id: bool = False
    resource: bool = False
    attributes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", frozenset(self.attributes))

    @property
    def needs_key(self) -> bool:
        """True when anything is pseudonymised (so a key is required)."""
        return self.case_id or self.resource or bool(self.attributes)


def _check_id(value: Any) -> None:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ValueError(f"policy id must be 1-64 letters, digits, '.', '_' or '-', got {value!r}")


def _check_version(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"version must be a whole number, got {value!r}")
    if value < 1:
        raise ValueError(f"version must be >= 1, got {value}")


def _check_org(value: Any) -> None:
    if not isinstance(value, str) or (value and not ID_RE.fullmatch(value)):
        raise ValueError(f"org must be an organization name like 'hospital', got {value!r}")


def _check_mode(value: Any) -> None:
    if value not in ("allowlist", "denylist"):
        raise ValueError(f"mode must be 'allowlist' or 'denylist', got {value!r}")


#: (check, Policy field) pairs run by the constructor and, with line numbers, by the loader.
_HEADER_CHECKS: Final = (
    (_check_id, "id"),
    (_check_version, "version"),
    (_check_org, "org"),
    (_check_mode, "mode"),
)


def check_policy_header(name: str, value: Any) -> None:
    """Check one header field (``id``, ``version``, ``org`` or ``mode``); ``ValueError`` if bad."""
    for check, field_name in _HEADER_CHECKS:
        if field_name == name:
            check(value)
            return
    raise KeyError(name)


@dataclass(frozen=True)
class Policy:
    """One organization's privacy policy, checked once and never changed.

    See ``docs/privacy-policy.md`` for the meaning of each field; :func:`load_policy` builds
    one from a file.
    """

    id: str
    version: int
    org: str
    mode: Mode
    scope: str
    description: str = ""
    basis: str = ""
    activities: tuple[Pattern, ...] | None = None
    resources: tuple[Pattern, ...] | None = None
    attributes: tuple[AttributeRule, ...] | None = None
    groups: Mapping[str, tuple[Pattern, ...]] = field(default_factory=dict)
    group_attribute: str | None = None
    windows: tuple[CollectionWindow, ...] = ()
    minimise: Minimisation = field(default_factory=Minimisation)
    generalise: Generalisation = field(default_factory=Generalisation)
    pseudonymise: Pseudonymisation = field(default_factory=Pseudonymisation)
    placeholder_timestamps: TimeLevel = "hour"
    scrub: ScrubSettings = field(default_factory=ScrubSettings)
    scrub_enabled: bool = False
    source: str = ""
    digest: str = ""

    def __post_init__(self) -> None:
        for check, value in _HEADER_CHECKS:
            check(getattr(self, value))
        if not isinstance(self.scope, str) or not self.scope.strip():
            raise ValueError("the consent scope must be a non-empty string")
        if self.placeholder_timestamps not in TIME_LEVELS:
            raise ValueError(f"placeholder timestamps must be one of {', '.join(TIME_LEVELS)}")
        for name in ("activities", "resources", "attributes"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        groups = {str(k): tuple(v) for k, v in self.groups.items()}
        object.__setattr__(self, "groups", MappingProxyType(groups))
        object.__setattr__(self, "windows", tuple(self.windows))
        for w in self.windows:
            for g in w.groups:
                if g not in groups and self.group_attribute is None:
                    raise ValueError(
                        f"window {w.name or w.describe()!r} names group {g!r}, which is neither "
                        "defined under groups nor read from a group_attribute"
                    )
        if self.group_attribute is not None and (
            not isinstance(self.group_attribute, str) or not self.group_attribute
        ):
            raise ValueError("group_attribute must be an attribute key")

    @property
    def clauses(self) -> int:
        """How many clauses the policy has: patterns, windows, minimised activities, buckets,
        a timestamp level, pseudonymised fields (the unit of the ``20-clause`` benchmark)."""
        n = sum(len(x) for x in (self.activities, self.resources, self.attributes) if x)
        n += sum(len(v) for v in self.groups.values()) + len(self.windows)
        n += len(self.minimise.activities) + (self.minimise.default == "drop")
        n += len(self.generalise.numbers) + (self.generalise.timestamps != "exact")
        p = self.pseudonymise
        n += p.case_id + p.resource + len(p.attributes)
        return n

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (no secrets: a policy holds none)."""

        def pats(ps: tuple[Pattern, ...] | None) -> list[str] | None:
            return None if ps is None else [p.describe() for p in ps]

        return {
            "policy": self.id,
            "version": self.version,
            "org": self.org,
            "mode": self.mode,
            "scope": self.scope,
            "clauses": self.clauses,
            "digest": self.digest,
            "activities": pats(self.activities),
            "resources": pats(self.resources),
            "attributes": None
            if self.attributes is None
            else [
                r.key.describe()
                + (f" values {r.values.describe()}" if r.values else "")
                + (" (withhold event)" if r.withhold == "event" else "")
                for r in self.attributes
            ],
            "groups": {k: pats(v) for k, v in self.groups.items()},
            "group_attribute": self.group_attribute,
            "windows": [w.describe() + (f" [{w.name}]" if w.name else "") for w in self.windows],
            "zones": sorted({w.zone for w in self.windows}),
            "minimise": {
                "activities": len(self.minimise.activities),
                "default": self.minimise.default,
                "source": self.minimise.source or None,
            },
            "generalise": {
                "timestamps": self.generalise.timestamps,
                "numbers": sorted(self.generalise.numbers),
            },
            "pseudonymise": {
                "case_id": self.pseudonymise.case_id,
                "resource": self.pseudonymise.resource,
                "attributes": sorted(self.pseudonymise.attributes),
                "needs_key": self.pseudonymise.needs_key,
            },
            "placeholder_timestamps": self.placeholder_timestamps,
            "scrub": {
                "enabled": self.scrub_enabled,
                "kinds": sorted(self.scrub.kinds),
                "phone_regions": list(self.scrub.phone_regions),
                "national_ids": list(self.scrub.national_ids),
                "names": len(self.scrub.names),
                "name_locales": (
                    "all" if self.scrub.name_locales is None else list(self.scrub.name_locales)
                ),
            },
        }
