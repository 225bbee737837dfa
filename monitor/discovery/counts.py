"""What a discovery tracker has counted, as one frozen, mergeable value without case ids.

:class:`DiscoveryCounts` holds every number the discovered models are derived from: per
activity its events, the cases it started and ended; per directly-follows pair its count and
its durations; the ``a, b, a`` triples of length-two loops; and, over the completed cases, the
per-activity and per-pair tallies of the Declare templates. It names no case, so it can leave
the vault for the consortium (sealed) as it is.

Counts of cases that are disjoint (a case counted in one value only) add up:
:meth:`DiscoveryCounts.merge` is commutative and associative, with :meth:`DiscoveryCounts.empty`
as its identity, so partial counts of several vault workers combine into exactly the counts a
single tracker would have made.

Examples
--------
>>> a = DiscoveryCounts(
...     events=3, cases_started=1, cases_completed=1,
...     activities=(ActivityStat("A", 2, 1, 0), ActivityStat("B", 1, 0, 1)),
...     pairs=(PairStat("A", "A", 1, 5, 5, 5), PairStat("A", "B", 1, 7, 7, 7)),
... )
>>> b = DiscoveryCounts(
...     events=2, cases_started=1, cases_completed=1,
...     activities=(ActivityStat("A", 1, 1, 0), ActivityStat("B", 1, 0, 1)),
...     pairs=(PairStat("A", "B", 1, 3, 3, 3),),
... )
>>> m = a.merge(b)
>>> m.dfg()
{('A', 'A'): 1, ('A', 'B'): 2}
>>> m.start_activities(), m.end_activities()
({'A': 2}, {'B': 2})
>>> m.pair("A", "B")
PairStat(source='A', target='B', count=2, total_us=10, min_us=3, max_us=7)
>>> m.merge(DiscoveryCounts.empty()) == m == b.merge(a)
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final

import msgspec

__all__ = [
    "DECLARE_RELATIONS",
    "ActivityStat",
    "DeclareActivityStat",
    "DeclarePairStat",
    "DiscoveryCounts",
    "LoopStat",
    "PairStat",
]

#: The per-pair Declare tallies a :class:`DeclarePairStat` holds, in field order: over the
#: completed cases containing both activities, how many satisfy each relation.
DECLARE_RELATIONS: Final = (
    "both",
    "response",
    "precedence",
    "succession",
    "alt_response",
    "alt_precedence",
    "alt_succession",
    "chain_response",
    "chain_precedence",
    "chain_succession",
)


class ActivityStat(msgspec.Struct, frozen=True, array_like=True):
    """One activity: its ``events``, the cases it ``starts`` (first event) and ``ends`` (last
    event of a completed case)."""

    name: str
    events: int
    starts: int
    ends: int


class PairStat(msgspec.Struct, frozen=True, array_like=True):
    """One directly-follows pair ``source -> target``: how often ``target`` came right after
    ``source`` in a case, and the time between the two events (integer microseconds: their
    sum, minimum and maximum)."""

    source: str
    target: str
    count: int
    total_us: int
    min_us: int
    max_us: int

    @property
    def mean_seconds(self) -> float:
        """The mean time from ``source`` to ``target`` in seconds (pm4py's performance DFG
        ``mean``)."""
        return self.total_us / self.count / 1e6


class LoopStat(msgspec.Struct, frozen=True, array_like=True):
    """How often the three events ``a, b, a`` followed each other in a case (``a != b``): the
    Heuristics Miner's length-two loops (pm4py's ``freq_triples`` with ``a == c``)."""

    a: str
    b: str
    count: int


class DeclareActivityStat(msgspec.Struct, frozen=True, array_like=True):
    """One activity over the completed cases: how many contain it (``cases``), contain it
    exactly once (``once``), start with it (``first``)."""

    name: str
    cases: int
    once: int
    first: int


class DeclarePairStat(msgspec.Struct, frozen=True, array_like=True):
    """An ordered pair ``a != b`` over the completed cases that contain both (``both``), with
    how many of those satisfy each relation (see ``docs/discovery.md``): the last ``a`` before
    the last ``b`` (``response``), the first ``a`` before the first ``b`` (``precedence``), both
    (``succession``), every ``a`` followed by ``b`` before the next ``a`` (``alt_response``),
    every ``b`` preceded by ``a`` after the previous ``b`` (``alt_precedence``), both
    (``alt_succession``), every ``a`` immediately followed by ``b`` (``chain_response``), every
    ``b`` immediately preceded by ``a`` (``chain_precedence``), both (``chain_succession``)."""

    a: str
    b: str
    both: int
    response: int
    precedence: int
    succession: int
    alt_response: int
    alt_precedence: int
    alt_succession: int
    chain_response: int
    chain_precedence: int
    chain_succession: int

    def values(self) -> tuple[int, ...]:
        """The tallies in :data:`DECLARE_RELATIONS` order."""
        return (
            self.both,
            self.response,
            self.precedence,
            self.succession,
            self.alt_response,
            self.alt_precedence,
            self.alt_succession,
            self.chain_response,
            self.chain_precedence,
            self.chain_succession,
        )


class DiscoveryCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a discovery tracker counted (see the module docstring); canonical: every
    table sorted by name, no zero rows, so equal counts are equal values.

    Attributes
    ----------
    events
        Activity events observed.
    cases_started, cases_completed
        Cases seen so far, and those completed (their end activity and Declare tallies are
        counted).
    activities, pairs, loops
        Per activity, per directly-follows pair, per length-two loop.
    declare_activities, declare_pairs
        The Declare tallies over the completed cases; both empty when Declare is not tracked.
    declare
        Whether Declare was tracked (counts with and without cannot be merged).
    first_time, last_time
        The earliest and latest event timestamps (``None`` before any event).
    """

    events: int
    cases_started: int
    cases_completed: int
    first_time: datetime | None = None
    last_time: datetime | None = None
    activities: tuple[ActivityStat, ...] = ()
    pairs: tuple[PairStat, ...] = ()
    loops: tuple[LoopStat, ...] = ()
    declare_activities: tuple[DeclareActivityStat, ...] = ()
    declare_pairs: tuple[DeclarePairStat, ...] = ()
    declare: bool = True
    version: int = 1

    @classmethod
    def empty(cls, *, declare: bool = True) -> DiscoveryCounts:
        """Nothing counted (the identity of :meth:`merge`)."""
        return cls(events=0, cases_started=0, cases_completed=0, declare=declare)

    # -- views -------------------------------------------------------------------------------
    def activity_counts(self) -> dict[str, int]:
        """Events per activity (pm4py's ``get_attribute_values`` on ``concept:name``)."""
        return {a.name: a.events for a in self.activities}

    def dfg(self) -> dict[tuple[str, str], int]:
        """The directly-follows graph: ``(source, target) -> count`` (pm4py's
        ``discover_dfg``)."""
        return {(p.source, p.target): p.count for p in self.pairs}

    def start_activities(self) -> dict[str, int]:
        """Cases started per first activity (pm4py's ``get_start_activities``)."""
        return {a.name: a.starts for a in self.activities if a.starts}

    def end_activities(self) -> dict[str, int]:
        """Completed cases per last activity (pm4py's ``get_end_activities``)."""
        return {a.name: a.ends for a in self.activities if a.ends}

    def loops_two(self) -> dict[tuple[str, str], int]:
        """``(a, b) -> `` how often ``a, b, a`` occurred (``a != b``)."""
        return {(x.a, x.b): x.count for x in self.loops}

    def pair(self, source: str, target: str) -> PairStat | None:
        """The directly-follows pair ``source -> target``, if it occurred."""
        for p in self.pairs:
            if p.source == source and p.target == target:
                return p
        return None

    # -- combining ---------------------------------------------------------------------------
    def merge(self, other: DiscoveryCounts) -> DiscoveryCounts:
        """The counts of two trackers that saw disjoint sets of cases, combined.

        Raises ``ValueError`` if one tracked Declare and the other did not, or the versions
        differ.
        """
        if other.version != self.version:
            raise ValueError(f"cannot merge counts of version {other.version} into {self.version}")
        if other.declare != self.declare:
            raise ValueError("cannot merge counts with and without Declare tallies")
        return DiscoveryCounts(
            events=self.events + other.events,
            cases_started=self.cases_started + other.cases_started,
            cases_completed=self.cases_completed + other.cases_completed,
            first_time=_pick(min, self.first_time, other.first_time),
            last_time=_pick(max, self.last_time, other.last_time),
            activities=_merge_activities(self.activities, other.activities),
            pairs=_merge_pairs(self.pairs, other.pairs),
            loops=_merge_loops(self.loops, other.loops),
            declare_activities=_merge_declare_activities(
                self.declare_activities, other.declare_activities
            ),
            declare_pairs=_merge_declare_pairs(self.declare_pairs, other.declare_pairs),
            declare=self.declare,
        )

    @classmethod
    def merge_all(
        cls, parts: Iterable[DiscoveryCounts], *, declare: bool = True
    ) -> DiscoveryCounts:
        """All ``parts`` merged (:meth:`empty` if there are none)."""
        out = cls.empty(declare=declare)
        for part in parts:
            out = out.merge(part)
        return out


def _pick(
    f: Callable[[datetime, datetime], datetime], a: datetime | None, b: datetime | None
) -> datetime | None:
    if a is None:
        return b
    return a if b is None else f(a, b)


def _merge_activities(
    a: tuple[ActivityStat, ...], b: tuple[ActivityStat, ...]
) -> tuple[ActivityStat, ...]:
    acc: dict[str, list[int]] = {}
    for row in (*a, *b):
        cur = acc.get(row.name)
        if cur is None:
            acc[row.name] = [row.events, row.starts, row.ends]
        else:
            cur[0] += row.events
            cur[1] += row.starts
            cur[2] += row.ends
    return tuple(ActivityStat(name, *acc[name]) for name in sorted(acc))


def _merge_pairs(a: tuple[PairStat, ...], b: tuple[PairStat, ...]) -> tuple[PairStat, ...]:
    acc: dict[tuple[str, str], list[int]] = {}
    for p in (*a, *b):
        key = (p.source, p.target)
        cur = acc.get(key)
        if cur is None:
            acc[key] = [p.count, p.total_us, p.min_us, p.max_us]
        else:
            cur[0] += p.count
            cur[1] += p.total_us
            cur[2] = min(cur[2], p.min_us)
            cur[3] = max(cur[3], p.max_us)
    return tuple(PairStat(s, t, *acc[(s, t)]) for s, t in sorted(acc))


def _merge_loops(a: tuple[LoopStat, ...], b: tuple[LoopStat, ...]) -> tuple[LoopStat, ...]:
    acc: dict[tuple[str, str], int] = {}
    for x in (*a, *b):
        acc[(x.a, x.b)] = acc.get((x.a, x.b), 0) + x.count
    return tuple(LoopStat(x, y, acc[(x, y)]) for x, y in sorted(acc))


def _merge_declare_activities(
    a: tuple[DeclareActivityStat, ...], b: tuple[DeclareActivityStat, ...]
) -> tuple[DeclareActivityStat, ...]:
    acc: dict[str, list[int]] = {}
    for row in (*a, *b):
        cur = acc.get(row.name)
        if cur is None:
            acc[row.name] = [row.cases, row.once, row.first]
        else:
            cur[0] += row.cases
            cur[1] += row.once
            cur[2] += row.first
    return tuple(DeclareActivityStat(name, *acc[name]) for name in sorted(acc))


def _merge_declare_pairs(
    a: tuple[DeclarePairStat, ...], b: tuple[DeclarePairStat, ...]
) -> tuple[DeclarePairStat, ...]:
    acc: dict[tuple[str, str], list[int]] = {}
    for row in (*a, *b):
        key = (row.a, row.b)
        cur = acc.get(key)
        values = row.values()
        if cur is None:
            acc[key] = list(values)
        else:
            for i, v in enumerate(values):
                cur[i] += v
    return tuple(DeclarePairStat(x, y, *acc[(x, y)]) for x, y in sorted(acc))
