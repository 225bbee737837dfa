"""What a private release is made of: statistics, caps, panes, windows and the budget.

Every setting is checked once, in the constructor, and never changes. The catalog of
statistics is fixed (:data:`STATISTICS`): a release policy chooses which of them to publish,
with which share of the pane's ε, and how much one case may contribute to each.

Per pane, per case, a statistic counts at most ``max_keys`` distinct keys, each once (for
counts) or clamped to ``[0, clamp]`` (for sums). Its L1 sensitivity (how far one case can move
the released vector) is therefore ``max_keys * clamp``; see :meth:`StatisticSettings.sensitivity`.

Examples
--------
>>> from datetime import timedelta
>>> known = KnownKeys.build(["A", "B"], rules=["R1"])
>>> len(known.keys("directly_follows")), known.keys("violation")
(4, (('R1',),))
>>> known.keys("start_end")
(('end', 'A'), ('end', 'B'), ('start', 'A'), ('start', 'B'))
>>> s = PrivacySettings(budget=Budget(1.0, window=24), panes=PaneSettings(timedelta(hours=1)))
>>> [st.name for st in s.statistics][:3]
['activity', 'directly_follows', 'cases']
>>> s.statistic("directly_follows").sensitivity()
3
>>> s.window_panes
(1, 24)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, cast

from ..event import PLACEHOLDER_ACTIVITY
from .budget import Budget

__all__ = [
    "CASE_KEYS",
    "OPT_IN",
    "STATISTICS",
    "TOKEN_KEYS",
    "Key",
    "KnownKeys",
    "PaneSettings",
    "PrivacySettings",
    "RunningTotals",
    "StatisticSettings",
    "StatisticSpec",
]

#: A key of a statistic: ``(activity,)``, ``(from, to)``, ``(rule_id,)``, ``("started",)``...
Key = tuple[str, ...]

#: Keys of the ``cases`` statistic.
CASE_KEYS: Final[tuple[Key, ...]] = (
    ("started",),
    ("completed_fit",),
    ("completed_unfit",),
    ("completed_unchecked",),
)
#: Keys of the ``tokens`` statistic.
TOKEN_KEYS: Final[tuple[Key, ...]] = (("missing",), ("remaining",))
_DURATION_KEYS: Final[tuple[Key, ...]] = (("completed",),)

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StatisticSpec:
    """What a statistic of the catalog is (fixed by procvault, not by policy).

    Attributes
    ----------
    kind
        ``"count"``: each key counts a case once; ``"sum"``: each key adds a clamped value.
    keys
        Where its known keys come from: ``"labels"`` (model activities), ``"pairs"``
        (activity pairs), ``"rules"`` (rule ids), ``"ends"`` (``("start", activity)`` and
        ``("end", activity)`` of every model activity) or ``"fixed"`` (:attr:`fixed_keys`).
    thresholded
        Whether keys not known in advance may be released, through a DP threshold.
    fixed_keys
        The keys of a ``"fixed"`` statistic.
    max_keys
        How many keys one case can touch per pane, when the catalog implies it (fixed
        statistics, ``start_end``); ``None``: the policy's ``max_keys``.
    duration
        Whether the summed value is a duration (then ``unit`` applies).
    """

    kind: Literal["count", "sum"]
    keys: Literal["labels", "pairs", "rules", "ends", "fixed"]
    thresholded: bool
    fixed_keys: tuple[Key, ...] = ()
    max_keys: int | None = None
    duration: bool = False


#: The catalog, in release order.
STATISTICS: Final[dict[str, StatisticSpec]] = {
    # cases that executed the activity in the pane (each activity once per case)
    "activity": StatisticSpec("count", "labels", thresholded=True),
    # cases with the directly-follows pair in the pane (pair attributed to the later event)
    "directly_follows": StatisticSpec("count", "pairs", thresholded=True),
    # cases started, and completed fitting / not fitting / without a model to check against
    # (a case starts once and completes once)
    "cases": StatisticSpec("count", "fixed", False, CASE_KEYS, max_keys=2),
    # cases with a missing-token deviation at the activity in the pane
    "deviation": StatisticSpec("count", "labels", thresholded=True),
    # cases violating the rule in the pane
    "violation": StatisticSpec("count", "rules", thresholded=True),
    # missing and remaining tokens of completed cases, each clamped to [0, clamp]
    "tokens": StatisticSpec("sum", "fixed", False, TOKEN_KEYS, max_keys=2),
    # durations of completed cases (first to last event), clamped, in units
    "case_duration": StatisticSpec("sum", "fixed", False, _DURATION_KEYS, 1, duration=True),
    # time between the two events of a directly-follows pair, clamped, in units
    "df_duration": StatisticSpec("sum", "pairs", thresholded=False, duration=True),
    # cases starting with the activity (in the pane of their first activity event) and
    # ending with it (in the pane their completion is filed under): one start and one end
    # per case; opt-in (not among the default statistics)
    "start_end": StatisticSpec("count", "ends", thresholded=True, max_keys=2),
}

#: Statistics a policy must name to release (not in :class:`PrivacySettings`' default).
OPT_IN: Final[frozenset[str]] = frozenset({"start_end"})

_DEFAULT_WEIGHT: Final = {
    "activity": 2.0,
    "directly_follows": 3.0,
    "cases": 1.0,
    "deviation": 1.0,
    "violation": 1.0,
    "tokens": 0.5,
    "case_duration": 0.5,
    "df_duration": 0.5,
    "start_end": 1.0,
}
_DEFAULT_CLAMP: Final = {"tokens": 10, "case_duration": 720, "df_duration": 24}
_DEFAULT_UNIT: Final = {"case_duration": timedelta(hours=1), "df_duration": timedelta(hours=1)}
_DEFAULT_MAX_KEYS: Final = 3


@dataclass(frozen=True, slots=True)
class StatisticSettings:
    """How one statistic of the catalog is released.

    Parameters
    ----------
    name
        A key of :data:`STATISTICS`.
    weight
        Its share of each pane's ε, relative to the other statistics' weights.
    max_keys
        ``m``: distinct keys one case may touch per pane (ignored for fixed statistics).
    clamp
        For sums: the largest value one case adds to one key (tokens, or duration units).
    unit
        For durations: the unit the clamped values are counted in (whole units, rounded down).

    Examples
    --------
    >>> StatisticSettings("case_duration").sensitivity()
    720
    >>> StatisticSettings("activity", max_keys=0)
    Traceback (most recent call last):
    ...
    ValueError: statistic 'activity': max_keys must be >= 1, got 0
    >>> StatisticSettings("events")
    Traceback (most recent call last):
    ...
    ValueError: unknown statistic 'events'; known: activity, directly_follows, cases, ...
    """

    name: str
    weight: float | None = None
    max_keys: int | None = None
    clamp: int | None = None
    unit: timedelta | None = None

    def __post_init__(self) -> None:
        spec = STATISTICS.get(self.name)
        if spec is None:
            raise ValueError(f"unknown statistic {self.name!r}; known: {', '.join(STATISTICS)}")
        weight = _DEFAULT_WEIGHT[self.name] if self.weight is None else self.weight
        if math.isnan(weight) or not 0.0 < weight < math.inf:
            raise ValueError(f"statistic {self.name!r}: weight must be positive, got {weight}")
        object.__setattr__(self, "weight", float(weight))
        if spec.max_keys is not None:
            object.__setattr__(self, "max_keys", spec.max_keys)
        else:
            m = _DEFAULT_MAX_KEYS if self.max_keys is None else self.max_keys
            if isinstance(m, bool) or not isinstance(m, int) or m < 1:
                raise ValueError(f"statistic {self.name!r}: max_keys must be >= 1, got {m}")
            object.__setattr__(self, "max_keys", m)
        if spec.kind == "count":
            if self.clamp not in (None, 1):
                raise ValueError(f"statistic {self.name!r}: a count takes no clamp (it is 1)")
            object.__setattr__(self, "clamp", 1)
        else:
            c = _DEFAULT_CLAMP[self.name] if self.clamp is None else self.clamp
            if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                raise ValueError(f"statistic {self.name!r}: clamp must be an integer >= 1")
            object.__setattr__(self, "clamp", c)
        if spec.duration:
            u = _DEFAULT_UNIT[self.name] if self.unit is None else self.unit
            if u <= timedelta(0):
                raise ValueError(f"statistic {self.name!r}: unit must be positive")
            object.__setattr__(self, "unit", u)
        elif self.unit is not None:
            raise ValueError(f"statistic {self.name!r}: not a duration, it takes no unit")

    @property
    def spec(self) -> StatisticSpec:
        """Its entry in the catalog."""
        return STATISTICS[self.name]

    @property
    def share(self) -> float:
        """The relative weight after defaults."""
        return cast(float, self.weight)  # resolved in __post_init__

    @property
    def m(self) -> int:
        """The per-case, per-pane key cap (``max_keys`` after defaults)."""
        return cast(int, self.max_keys)  # resolved in __post_init__

    @property
    def c(self) -> int:
        """The per-case, per-key value cap (1 for counts)."""
        return cast(int, self.clamp)  # resolved in __post_init__

    @property
    def unit_value(self) -> timedelta:
        """The duration unit (durations only)."""
        if self.unit is None:
            raise ValueError(f"statistic {self.name!r} is not a duration")
        return self.unit

    def sensitivity(self) -> int:
        """L1 sensitivity per case and pane: ``max_keys * clamp`` (L∞: ``clamp``)."""
        return self.m * self.c


@dataclass(frozen=True, slots=True)
class PaneSettings:
    """Tumbling event-time panes.

    Parameters
    ----------
    length
        The pane length. Panes are ``[origin + i * length, origin + (i + 1) * length)``.
    allowed_lateness
        How long after its end a pane stays open for late observations, measured by the clock
        that closes panes (the vault: the public clock). Later ones are dropped and counted.
    origin
        Where pane 0 starts (UTC midnight, 1 January 1970, by default).
    start
        The first pane of the public schedule: the pane holding this time is the first one
        released, and every pane after it up to the clock is released, empty or not.
        ``None`` (``start: auto`` in a policy file): the first pane observed or reached by the
        clock, which depends on the data (the vault warns).

    Examples
    --------
    >>> PaneSettings(timedelta(0))
    Traceback (most recent call last):
    ...
    ValueError: pane length must be positive, got 0:00:00
    """

    length: timedelta
    allowed_lateness: timedelta = timedelta(0)
    origin: datetime = EPOCH
    start: datetime | None = None

    def __post_init__(self) -> None:
        if self.length <= timedelta(0):
            raise ValueError(f"pane length must be positive, got {self.length}")
        if self.length % timedelta(microseconds=1):
            raise ValueError("pane length must be a whole number of microseconds")
        if self.allowed_lateness < timedelta(0):
            raise ValueError(f"allowed lateness must be >= 0, got {self.allowed_lateness}")
        if self.origin.tzinfo is None:
            raise ValueError("the pane origin must be timezone-aware")
        if self.start is not None and self.start.tzinfo is None:
            raise ValueError("the pane schedule's start must be timezone-aware")


@dataclass(frozen=True, slots=True)
class RunningTotals:
    """Running totals since the start, by the binary-tree mechanism.

    They count *distinct cases* since start per key (each case once per key over its lifetime,
    at most ``max_keys`` keys per statistic), so their per-case sensitivity does not grow with
    time; the tree multiplies it by ``levels``.

    Parameters
    ----------
    statistics
        Count statistics to total (their known keys only).
    levels
        The tree's height ``L``: totals are released for ``2**levels - 1`` panes, then withheld.
    share
        The fraction of the budget's ε reserved for them, for every case's whole lifetime.
    """

    statistics: tuple[str, ...] = ("cases",)
    levels: int = 20
    share: float = 0.2

    def __post_init__(self) -> None:
        if not self.statistics:
            raise ValueError("running totals need at least one statistic")
        for name in self.statistics:
            spec = STATISTICS.get(name)
            if spec is None or spec.kind != "count":
                raise ValueError(f"running totals: count statistics only, not {name!r}")
        if len(set(self.statistics)) != len(self.statistics):
            raise ValueError("running totals list a statistic twice")
        if isinstance(self.levels, bool) or not 1 <= self.levels <= 40:
            raise ValueError(f"running totals: levels must be in [1, 40], got {self.levels}")
        if math.isnan(self.share) or not 0.0 < self.share < 1.0:
            raise ValueError(f"running totals: share must be in (0, 1), got {self.share}")


def _default_statistics() -> tuple[StatisticSettings, ...]:
    return tuple(StatisticSettings(name) for name in STATISTICS if name not in OPT_IN)


@dataclass(frozen=True, slots=True)
class PrivacySettings:
    """A whole release policy.

    Parameters
    ----------
    budget
        ε (and δ) per case over any ``budget.window`` consecutive panes.
    panes
        Pane length, allowed lateness, origin.
    statistics
        The statistics to release (all of :data:`STATISTICS` but the opt-in ones,
        :data:`OPT_IN`, by default), each at most once.
    max_panes_per_case
        ``k``: the number of panes one case may contribute to; its later observations are
        dropped. A case's loss over its whole life is at most ``k`` pane shares (plus the
        running totals' share), so the uniform allocation gives each pane ``ε / min(k, w)``
        of what the running totals leave.
    running_totals
        Running totals by the binary-tree mechanism, or ``None``.
    windows
        Sliding windows to publish, as durations (whole multiples of the pane length).
    pane_epsilon
        ε per pane; ``None`` (the default) is the uniform allocation, ``ε / min(k, w)`` of
        what the running totals leave. A larger value makes the ledger withhold panes.
    """

    budget: Budget
    panes: PaneSettings
    statistics: tuple[StatisticSettings, ...] = field(default_factory=_default_statistics)
    max_panes_per_case: int = 8
    running_totals: RunningTotals | None = field(default_factory=RunningTotals)
    windows: tuple[timedelta, ...] = (timedelta(hours=1), timedelta(days=1))
    pane_epsilon: float | None = None

    def __post_init__(self) -> None:
        if not self.statistics:
            raise ValueError("a release needs at least one statistic")
        names = [s.name for s in self.statistics]
        if len(set(names)) != len(names):
            raise ValueError("a statistic is listed twice")
        k = self.max_panes_per_case
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"max_panes_per_case must be >= 1, got {k}")
        if self.running_totals is not None:
            missing = set(self.running_totals.statistics) - set(names)
            if missing:
                raise ValueError(
                    f"running totals of statistics not released: {', '.join(sorted(missing))}"
                )
        for w in self.windows:
            if w <= timedelta(0) or w % self.panes.length:
                raise ValueError(
                    f"window {w} is not a positive multiple of the pane length {self.panes.length}"
                )
        if len(set(self.windows)) != len(self.windows):
            raise ValueError("a window is listed twice")
        if self.pane_epsilon is not None and (
            math.isnan(self.pane_epsilon) or not 0.0 < self.pane_epsilon <= self.budget.epsilon
        ):
            raise ValueError(
                f"pane_epsilon must be in (0, {self.budget.epsilon}], got {self.pane_epsilon}"
            )

    def statistic(self, name: str) -> StatisticSettings:
        """The settings of statistic ``name``; ``KeyError`` if it is not released."""
        for s in self.statistics:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def window_panes(self) -> tuple[int, ...]:
        """The sliding windows, in panes."""
        return tuple(w // self.panes.length for w in self.windows)


@dataclass(frozen=True, slots=True)
class KnownKeys:
    """The keys known in advance (public): model activities, their pairs, rule ids.

    Known keys are always released, zeros included; any other key passes a DP threshold.

    Parameters
    ----------
    activities
        The model's visible activities (``CompiledNet.labels``).
    rules
        The compliance rules' ids.
    pairs
        Known directly-follows pairs; by default every ordered pair of activities.
    """

    activities: tuple[str, ...]
    rules: tuple[str, ...] = ()
    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(
        cls,
        activities: Iterable[str],
        *,
        rules: Iterable[str] = (),
        pairs: Iterable[tuple[str, str]] | None = None,
    ) -> KnownKeys:
        """Sorted, de-duplicated keys; ``pairs`` default to all ordered activity pairs."""
        acts = tuple(sorted(set(activities)))
        if any(not isinstance(a, str) or not a for a in acts):
            raise ValueError("activities must be non-empty strings")
        rule_ids = tuple(sorted(set(rules)))
        if any(not isinstance(r, str) or not r for r in rule_ids):
            raise ValueError("rule ids must be non-empty strings")
        if pairs is None:
            df = tuple((a, b) for a in acts for b in acts)
        else:
            df = tuple(sorted({(str(a), str(b)) for a, b in pairs}))
        return cls(acts, rule_ids, df)

    def keys(self, statistic: str) -> tuple[Key, ...]:
        """The known keys of ``statistic``, sorted."""
        spec = STATISTICS[statistic]
        if statistic == "activity":  # placeholders count as their own public key
            return tuple((a,) for a in sorted({*self.activities, PLACEHOLDER_ACTIVITY}))
        if spec.keys == "labels":
            return tuple((a,) for a in self.activities)
        if spec.keys == "pairs":
            return self.pairs
        if spec.keys == "rules":
            return tuple((r,) for r in self.rules)
        if spec.keys == "ends":  # the placeholder activity is never a start or an end
            return tuple(sorted((end, a) for a in self.activities for end in ("start", "end")))
        return spec.fixed_keys
