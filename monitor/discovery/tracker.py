"""The streaming discovery tracker: one event at a time, the counts pm4py's miners start from.

:class:`DiscoveryTracker` keeps, per activity and per directly-follows pair, the counts that
pm4py's ``discover_dfg``, ``get_start_activities``/``get_end_activities``,
``discover_performance_dfg``, ``discover_heuristics_net`` and ``discover_declare`` compute over
a whole log (see :mod:`.heuristics` and :mod:`.declare` for the formulas), so that the models
derived from :meth:`DiscoveryTracker.counts` equal pm4py's on the same cases.

Cost and memory
---------------
Per event: a few dictionary and integer operations, independent of the log's length and of the
number of active cases (directly-follows count, duration sum/min/max, the ``a, b, a`` triple of
length-two loops). With Declare on, also a few bit operations on the case's summary and, when
an activity repeats in a case, one scan of the case's distinct activities (at most the number
of activities). When a case completes: its end activity, and one row of seven integers per
distinct activity of the case appended to a flat buffer. The buffer is tallied in bulk (numpy:
every pair of activities within each buffered case, O(k^2) for k distinct activities) when it
holds ``summary_cache`` rows, or when :meth:`counts` or a snapshot is taken.

Memory holds, per activity, its counters; per pair of activities, its counters; per active
case, its last two activities and last timestamp and, with Declare, O(k) integers (which
activities it has seen, in which order, and per activity four bit sets); and the row buffer,
at most ``summary_cache`` rows. A completed case is dropped. Nothing grows with the number of
events or completed cases.

A case completes when :meth:`complete` is called or its end-of-case marker arrives. An event
of a case that completed starts a new case with the same id (the tracker remembers no
completed case; the :class:`~procvault.monitor.vault.Vault` in front of it reports such events
as ``after_completion`` and does not pass them on). Each case's events must arrive in its own
order (the vault's merge gives event-time order); pm4py sorts each case by timestamp, stably,
so the two agree when they see the same order.

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> from procvault.monitor.event import Event
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> tracker = DiscoveryTracker()
>>> for case, acts in (("c1", "ABCB"), ("c2", "AC")):
...     for i, act in enumerate(acts):
...         tracker.update(Event.create(case, act, t0 + timedelta(minutes=i)))
...     tracker.update(Event.case_end(case, t0))
>>> counts = tracker.counts()
>>> counts.dfg()
{('A', 'B'): 1, ('A', 'C'): 1, ('B', 'C'): 1, ('C', 'B'): 1}
>>> counts.start_activities(), counts.end_activities()
({'A': 2}, {'B': 1, 'C': 1})
>>> counts.loops_two()
{('B', 'C'): 1}
>>> counts.pair("A", "C").mean_seconds
60.0
>>> back = DiscoveryTracker.restore(tracker.snapshot())
>>> back.snapshot() == tracker.snapshot()
True
"""

from __future__ import annotations

import itertools
from array import array
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from ..event import Event, EventKind
from .counts import (
    ActivityStat,
    DeclareActivityStat,
    DeclarePairStat,
    DiscoveryCounts,
    LoopStat,
    PairStat,
)

__all__ = [
    "CaseActivity",
    "CaseState",
    "DiscoveryTracker",
    "TrackerSettings",
    "TrackerState",
]

_US: Final = timedelta(microseconds=1)
_ALL: Final = -1  # a bit set holding every activity (an unconstrained gap)
_NONE: Final = -1  # chain_next before any event followed the activity
#: Bit sets of up to this many activities fit numpy's int64 (the expansion's fast path).
_NUMPY_MAX_ACTIVITIES: Final = 62
#: Integers per buffered Declare row (see ``DiscoveryTracker._summarize``).
_ROW: Final = 7
_EARLIEST: Final = datetime.min.replace(tzinfo=UTC)
_LATEST: Final = datetime.max.replace(tzinfo=UTC)


class TrackerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How a :class:`DiscoveryTracker` counts (checked once, never changed).

    Parameters
    ----------
    declare
        Also tally the Declare relations of completed cases (``False``: directly-follows
        graph, durations and Heuristics Miner counts only; less work per event).
    summary_cache
        How many Declare rows (one per distinct activity of a completed case) may wait before
        they are tallied: a memory bound (56 bytes a row); any value gives the same counts.
    """

    declare: bool = True
    summary_cache: int = 20_000

    def __post_init__(self) -> None:
        if not isinstance(self.declare, bool):
            raise TypeError(f"declare must be True or False, not {self.declare!r}")
        if isinstance(self.summary_cache, bool) or not isinstance(self.summary_cache, int):
            raise TypeError(f"summary_cache must be an integer, not {self.summary_cache!r}")
        if self.summary_cache < 1:
            raise ValueError(f"summary_cache must be >= 1, not {self.summary_cache}")


class CaseActivity(msgspec.Struct, frozen=True, array_like=True):
    """One activity of an active case, as Declare needs it (in a :class:`CaseState`).

    Attributes
    ----------
    name
        The activity.
    repeated
        Whether it occurred more than once.
    before_first
        The activities seen before its first occurrence (sorted).
    between
        The activities seen between every two consecutive occurrences (sorted), ``None`` if
        it occurred once.
    chain_prev
        The activity right before every occurrence, ``None`` if there is no single one (or its
        first occurrence started the case).
    chain_next
        The activity right after every occurrence: ``()`` if none has followed yet,
        ``(name,)`` if always the same one, ``None`` if several.
    """

    name: str
    repeated: bool
    before_first: tuple[str, ...]
    between: tuple[str, ...] | None
    chain_prev: str | None
    chain_next: tuple[str, ...] | None


class CaseState(msgspec.Struct, frozen=True, array_like=True):
    """One active case: its last activity, the one before, the last event's time and, with
    Declare, its activities in first-occurrence order and by last occurrence (oldest first)."""

    case_id: str
    last: str
    previous: str | None
    last_time: datetime
    activities: tuple[CaseActivity, ...] | None = None
    recency: tuple[str, ...] = ()


class TrackerState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a :class:`DiscoveryTracker` holds, as a value: the counts and the active
    cases (sorted by id). It names cases: seal it before storing it."""

    settings: TrackerSettings
    counts: DiscoveryCounts
    cases: tuple[CaseState, ...] = ()
    version: int = 1


class _Act:
    """One activity's counters (tracker-local; its bit identifies it in bit sets)."""

    __slots__ = (
        "bit",
        "d_cases",
        "d_first",
        "d_once",
        "ends",
        "events",
        "loops",
        "name",
        "starts",
        "succ",
    )

    def __init__(self, name: str, bit: int) -> None:
        self.name = name
        self.bit = bit
        self.events = 0
        self.starts = 0
        self.ends = 0
        # target name -> [count, total, min, max] (an int, then durations as timedelta)
        self.succ: dict[str, list[Any]] = {}
        # b -> how often (self, b, self) occurred
        self.loops: dict[str, int] = {}
        self.d_cases = 0
        self.d_once = 0
        self.d_first = 0


class _Case:
    """An active case. ``info`` maps an activity's bit to ``[G, R, chain_prev, chain_next]``:
    G the bits seen before its first occurrence, R the bits seen between every two of its
    consecutive occurrences (``_ALL`` while it occurred once), chain_prev the bit right before
    every occurrence (0: none or several), chain_next the bit right after every occurrence
    (``_NONE``: none yet, 0: several)."""

    __slots__ = ("firsts", "info", "last", "last_info", "multi", "order", "prev", "seen", "ts")

    last: _Act
    prev: _Act | None
    ts: datetime
    seen: int
    multi: int
    order: list[int]
    firsts: list[int]
    info: dict[int, list[int]]
    last_info: list[int]


class DiscoveryTracker:
    """Streaming counts for process discovery; see the module docstring.

    Parameters
    ----------
    settings
        What to count (:class:`TrackerSettings`).

    Use :meth:`update` per event (end-of-case markers complete their case, placeholders are
    ignored: they are no step of the case), :meth:`complete` or :meth:`flush` to complete
    cases, :meth:`counts` for the counts, :meth:`snapshot`/:meth:`restore` for the state and
    :meth:`merge` to absorb another tracker's cases and counts.
    """

    def __init__(self, settings: TrackerSettings | None = None) -> None:
        self.settings: Final = settings if settings is not None else TrackerSettings()
        self._declare = self.settings.declare
        self._cap = self.settings.summary_cache
        self._acts: dict[str, _Act] = {}
        self._by_pos: list[_Act] = []
        self._cases: dict[str, _Case] = {}
        self._started = 0
        self._completed = 0
        self._lo = _LATEST  # the earliest and latest event times seen
        self._hi = _EARLIEST
        # Declare summaries waiting to be expanded, and the expanded pair tallies
        # Declare rows of completed cases (_ROW integers each) waiting to be tallied: a flat
        # int64 array while bit sets fit 63 bits, a list of Python ints beyond
        self._rows: array[int] | list[int] = array("q")
        self._buffered = 0  # completed cases in the row buffer
        self._pairs: dict[tuple[int, int], list[int]] = {}

    # -- events ---------------------------------------------------------------------------
    def update(self, event: Event) -> None:
        """Count one event; an end-of-case marker completes its case."""
        if event.kind:
            if event.kind == EventKind.CASE_END:
                self.complete(event.case_id)
            return
        name = event.activity
        act = self._acts.get(name)
        if act is None:
            act = self._new_activity(name)
        act.events += 1
        ts = event.timestamp
        if ts > self._hi:  # noqa: PLR1730 (a comparison is cheaper than a call to max)
            self._hi = ts
        if ts < self._lo:  # noqa: PLR1730
            self._lo = ts
        cs = self._cases.get(event.case_id)
        if cs is None:
            self._start(event.case_id, act, ts)
            return
        last = cs.last
        d = ts - cs.ts
        succ = last.succ
        rec = succ.get(name)
        if rec is None:
            succ[name] = [1, d, d, d]
        else:
            rec[0] += 1
            rec[1] += d
            if d < rec[2]:
                rec[2] = d
            elif d > rec[3]:
                rec[3] = d
        if cs.prev is act and last is not act:
            loops = act.loops
            lname = last.name
            loops[lname] = loops.get(lname, 0) + 1
        cs.prev = last
        cs.last = act
        cs.ts = ts
        if self._declare:
            b = act.bit
            seen = cs.seen
            li = cs.last_info
            if seen & b:
                order = cs.order
                i = order.index(b)
                since = sum(order[i + 1 :])  # the activities seen since b's last occurrence
                del order[i]
                order.append(b)
                cs.multi |= b
                r = cs.info[b]
                r[1] &= since
                if r[2] != last.bit:
                    r[2] = 0
            else:
                cs.seen = seen | b
                cs.order.append(b)
                cs.firsts.append(b)
                r = cs.info[b] = [seen, _ALL, last.bit, _NONE]
            cn = li[3]
            if cn != b:
                li[3] = b if cn == _NONE else 0
            cs.last_info = r

    def _new_activity(self, name: str) -> _Act:
        if len(self._by_pos) == _NUMPY_MAX_ACTIVITIES and isinstance(self._rows, array):
            self._expand()  # bit sets are about to outgrow int64: tally, then buffer ints
            self._rows = []
        act = self._acts[name] = _Act(name, 1 << len(self._by_pos))
        self._by_pos.append(act)
        return act

    def _start(self, case_id: str, act: _Act, ts: datetime) -> None:
        cs = self._cases[case_id] = _Case()
        cs.last = act
        cs.prev = None
        cs.ts = ts
        act.starts += 1
        self._started += 1
        if self._declare:
            b = act.bit
            cs.seen = b
            cs.multi = 0
            cs.order = [b]
            cs.firsts = [b]
            rec = [0, _ALL, 0, _NONE]
            cs.info = {b: rec}
            cs.last_info = rec

    # -- completion -----------------------------------------------------------------------
    def complete(self, case_id: str) -> bool:
        """Complete a case: count its end activity and its Declare relations, then forget
        it. Returns whether the case was active."""
        cs = self._cases.pop(case_id, None)
        if cs is None:
            return False
        cs.last.ends += 1
        self._completed += 1
        if self._declare:
            self._summarize(cs)
        return True

    def flush(self) -> int:
        """Complete every active case (in case-id order; the end of a finite log); returns how
        many."""
        ids = sorted(self._cases)
        for case_id in ids:
            self.complete(case_id)
        return len(ids)

    def _summarize(self, cs: _Case) -> None:
        """File a completed case's Declare summary: one row per activity ``a`` of the case,
        ``(case, a, last, first, R, cp, cn)``: the rank of ``a``'s last occurrence among the
        case's activities (response), the rank of its first occurrence (precedence, and
        ``init`` for rank 0), R the activities seen between every two consecutive occurrences
        (alternate response and precedence; ``_ALL`` if ``a`` occurred once: exactly one), and
        the activities right before (``cp``) and after (``cn``) every occurrence (chain
        relations; 0: none or several). Rows wait in a flat buffer (no Python object per row)
        until :meth:`_expand` tallies them. The case's records are consumed."""
        info = cs.info
        cs.last_info[3] = 0  # the case's last event has no follower
        for rank, b in enumerate(cs.order):
            info[b].append(rank)
        case = self._buffered
        self._buffered = case + 1
        extend = self._rows.extend
        for rank, b in enumerate(cs.firsts):
            _, r, cp, cn, last = info[b]
            extend((case, b, last, rank, r, cp, cn))
        if len(self._rows) >= self._cap:
            self._expand()

    def _expand(self) -> None:
        """Tally the buffered Declare rows into per-activity and per-pair counts: for every
        two activities ``a != b`` of a case, which of the ten relations hold (numpy while
        bit sets fit 63 bits, else plain Python; both give the same)."""
        if not self._buffered:
            return
        if isinstance(self._rows, array):
            self._expand_numpy(np.frombuffer(self._rows, dtype=np.int64).reshape(-1, _ROW))
            self._rows = array("q")
        else:
            self._expand_python()
            self._rows = []
        self._buffered = 0

    def _expand_numpy(self, rows: npt.NDArray[np.int64]) -> None:
        n = len(self._by_pos)
        case, bit, last, first, gaps, cp, cn = rows.T
        pos = _positions(bit)
        per_act = (
            np.bincount(pos, minlength=n),
            np.bincount(pos[gaps == _ALL], minlength=n),
            np.bincount(pos[first == 0], minlength=n),
        )
        # every ordered pair (i, j) of rows of the same case, i != j
        starts = np.flatnonzero(np.r_[True, case[1:] != case[:-1]])
        sizes = np.diff(np.r_[starts, len(case)])
        k = np.repeat(sizes, sizes)  # per row: its case's number of activities
        i = np.repeat(np.arange(len(case)), k)
        offsets = np.repeat(np.cumsum(k) - k, k)
        j = np.repeat(np.repeat(starts, sizes), k) + (np.arange(len(i)) - offsets)
        keep = i != j
        i, j = i[keep], j[keep]
        pa, pb = pos[i], pos[j]
        response = last[i] < last[j]
        precedence = first[i] < first[j]
        alt_response = response & ((gaps[i] >> pb) & 1).astype(bool)  # b between every two a
        alt_precedence = precedence & ((gaps[j] >> pa) & 1).astype(bool)  # a between every two b
        chain_response = cn[i] == bit[j]
        chain_precedence = cp[j] == bit[i]
        cell = pa * n + pb
        tallies = np.stack(
            [
                np.bincount(cell[holds], minlength=n * n)
                for holds in (
                    np.ones(len(cell), dtype=bool),
                    response,
                    precedence,
                    response & precedence,
                    alt_response,
                    alt_precedence,
                    alt_response & alt_precedence,
                    chain_response,
                    chain_precedence,
                    chain_response & chain_precedence,
                )
            ]
        ).reshape(10, n, n)
        for p, act in enumerate(self._by_pos):
            act.d_cases += int(per_act[0][p])
            act.d_once += int(per_act[1][p])
            act.d_first += int(per_act[2][p])
        pairs = self._pairs
        bits = [act.bit for act in self._by_pos]
        for x, y in zip(*np.nonzero(tallies[0]), strict=True):
            key = (bits[x], bits[y])
            rec = pairs.get(key)
            if rec is None:
                rec = pairs[key] = [0] * 10
            for rel, v in enumerate(tallies[:, x, y].tolist()):
                rec[rel] += v

    def _expand_python(self) -> None:
        by_pos = self._by_pos
        pairs = self._pairs
        rows = self._rows
        cases = [rows[x : x + _ROW] for x in range(0, len(rows), _ROW)]
        for _, group in itertools.groupby(cases, key=lambda row: row[0]):
            acts = [row[1:] for row in group]
            for b, _last, first, r, _cp, _cn in acts:
                act = by_pos[b.bit_length() - 1]
                act.d_cases += 1
                act.d_once += r == _ALL
                act.d_first += first == 0
            for a, last_a, first_a, r_a, _cp, cn_a in acts:
                for b, last_b, first_b, r_b, cp_b, _cn in acts:
                    if a == b:
                        continue
                    resp = last_a < last_b
                    prec = first_a < first_b
                    alt_resp = resp and bool(r_a & b)
                    alt_prec = prec and bool(r_b & a)
                    chain_resp = cn_a == b
                    chain_prec = cp_b == a
                    holds = (
                        True,
                        resp,
                        prec,
                        resp and prec,
                        alt_resp,
                        alt_prec,
                        alt_resp and alt_prec,
                        chain_resp,
                        chain_prec,
                        chain_resp and chain_prec,
                    )
                    rec = pairs.get((a, b))
                    if rec is None:
                        rec = pairs[(a, b)] = [0] * 10
                    for rel, h in enumerate(holds):
                        rec[rel] += h

    # -- reading ----------------------------------------------------------------------------
    @property
    def active_cases(self) -> int:
        """How many cases are active (started, not completed)."""
        return len(self._cases)

    def is_active(self, case_id: str) -> bool:
        """Whether ``case_id`` is active."""
        return case_id in self._cases

    def counts(self) -> DiscoveryCounts:
        """Everything counted so far, as a value (no case ids). Cost: the number of
        activities and pairs, plus the Declare summaries still waiting."""
        if self._declare:
            self._expand()
        acts = sorted(self._acts.values(), key=lambda a: a.name)
        pairs: list[PairStat] = []
        loops: list[LoopStat] = []
        for a in acts:
            for target, (n, total, lo, hi) in sorted(a.succ.items()):
                pairs.append(PairStat(a.name, target, n, total // _US, lo // _US, hi // _US))
            loops.extend(LoopStat(a.name, b, n) for b, n in sorted(a.loops.items()))
        by_pos = self._by_pos
        declare_pairs = sorted(
            (
                DeclarePairStat(
                    by_pos[a.bit_length() - 1].name, by_pos[b.bit_length() - 1].name, *rec
                )
                for (a, b), rec in self._pairs.items()
            ),
            key=lambda p: (p.a, p.b),
        )
        return DiscoveryCounts(
            events=sum(a.events for a in acts),
            cases_started=self._started,
            cases_completed=self._completed,
            first_time=None if not self._started else self._lo,
            last_time=None if not self._started else self._hi,
            activities=tuple(ActivityStat(a.name, a.events, a.starts, a.ends) for a in acts),
            pairs=tuple(pairs),
            loops=tuple(loops),
            declare_activities=tuple(
                DeclareActivityStat(a.name, a.d_cases, a.d_once, a.d_first)
                for a in acts
                if a.d_cases
            ),
            declare_pairs=tuple(declare_pairs),
            declare=self._declare,
        )

    # -- state ----------------------------------------------------------------------------
    def snapshot(self) -> TrackerState:
        """The whole state as a frozen value (canonical: equal states, equal snapshots)."""
        counts = self.counts()
        cases = tuple(self._case_state(cid, self._cases[cid]) for cid in sorted(self._cases))
        return TrackerState(settings=self.settings, counts=counts, cases=cases)

    def shared_snapshot(self) -> TrackerState:
        """The state without any active case (:meth:`case_state`): settings and counts. Its
        size does not grow with the number of active cases, and it names no case.

        A store that keeps this and, per active case, the :meth:`case_state` written when the
        case was last updated restores the whole tracker: :meth:`restore` this, then
        :meth:`restore_case` every stored case state (of the cases not completed since).

        >>> from datetime import UTC, datetime
        >>> from procvault.monitor.event import Event
        >>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
        >>> tracker = DiscoveryTracker()
        >>> for case, act in (("c1", "A"), ("c2", "A"), ("c1", "B"), ("c2", "C")):
        ...     tracker.update(Event.create(case, act, t0))
        >>> tracker.complete("c2")
        True
        >>> shares = [tracker.case_state("c1")]
        >>> back = DiscoveryTracker.restore(tracker.shared_snapshot())
        >>> for share in shares:
        ...     back.restore_case(share)
        >>> back.snapshot() == tracker.snapshot()
        True
        """
        return TrackerState(settings=self.settings, counts=self.counts())

    def case_state(self, case_id: str) -> CaseState | None:
        """An active case's share of the state (see :meth:`shared_snapshot`), ``None`` if the
        case is not active. O(k) for the case's k distinct activities."""
        cs = self._cases.get(case_id)
        return None if cs is None else self._case_state(case_id, cs)

    def restore_case(self, state: CaseState) -> None:
        """Put back an active case's share taken with :meth:`case_state` (``ValueError`` if the
        case is active already)."""
        if state.case_id in self._cases:
            raise ValueError(f"case {state.case_id!r} is active already")
        self._restore_case(state)

    def _case_state(self, case_id: str, cs: _Case) -> CaseState:
        activities = None
        recency: tuple[str, ...] = ()
        if self._declare:
            by_pos = self._by_pos
            activities = tuple(self._case_activity(b, cs) for b in cs.firsts)
            recency = tuple(by_pos[b.bit_length() - 1].name for b in cs.order)
        return CaseState(
            case_id,
            cs.last.name,
            None if cs.prev is None else cs.prev.name,
            cs.ts,
            activities,
            recency,
        )

    def _name_set(self, mask: int) -> tuple[str, ...]:
        by_pos = self._by_pos
        return tuple(sorted(by_pos[b.bit_length() - 1].name for b in _bits(mask)))

    def _case_activity(self, b: int, cs: _Case) -> CaseActivity:
        g, r, cp, cn = cs.info[b]
        names = self._name_set
        return CaseActivity(
            self._by_pos[b.bit_length() - 1].name,
            bool(cs.multi & b),
            names(g),
            None if r == _ALL else names(r),
            names(cp)[0] if cp else None,
            () if cn == _NONE else (names(cn) if cn else None),
        )

    @classmethod
    def restore(cls, state: TrackerState) -> DiscoveryTracker:
        """A tracker holding exactly ``state`` (from :meth:`snapshot`)."""
        if state.version != 1:
            raise ValueError(f"unsupported tracker state version {state.version}")
        tracker = cls(state.settings)
        tracker._absorb(state)
        return tracker

    def merge(self, other: DiscoveryTracker | TrackerState) -> None:
        """Add another tracker's counts and take over its active cases (the two must have
        seen disjoint cases: ``ValueError`` if an active case is in both, or the settings'
        ``declare`` differ)."""
        state = other.snapshot() if isinstance(other, DiscoveryTracker) else other
        if state.settings.declare != self._declare:
            raise ValueError("cannot merge trackers with and without Declare")
        clash = [c.case_id for c in state.cases if c.case_id in self._cases]
        if clash:
            raise ValueError(f"case {clash[0]!r} is active in both trackers")
        self._absorb(state)

    def _absorb(self, state: TrackerState) -> None:
        """Add ``state``'s counts and cases to this tracker's."""
        counts = state.counts
        if counts.declare != self._declare:
            raise ValueError("cannot merge counts with and without Declare tallies")
        if self._declare:
            self._expand()
        act = self._activity
        self._started += counts.cases_started
        self._completed += counts.cases_completed
        if counts.first_time is not None and counts.first_time < self._lo:
            self._lo = counts.first_time
        if counts.last_time is not None and counts.last_time > self._hi:
            self._hi = counts.last_time
        for a in counts.activities:
            rec = act(a.name)
            rec.events += a.events
            rec.starts += a.starts
            rec.ends += a.ends
        for p in counts.pairs:
            succ = act(p.source).succ
            act(p.target)
            lo, hi, total = p.min_us * _US, p.max_us * _US, p.total_us * _US
            cur = succ.get(p.target)
            if cur is None:
                succ[p.target] = [p.count, total, lo, hi]
            else:
                cur[0] += p.count
                cur[1] += total
                cur[2] = min(cur[2], lo)
                cur[3] = max(cur[3], hi)
        for x in counts.loops:
            loops = act(x.a).loops
            act(x.b)
            loops[x.b] = loops.get(x.b, 0) + x.count
        for d in counts.declare_activities:
            rec = act(d.name)
            rec.d_cases += d.cases
            rec.d_once += d.once
            rec.d_first += d.first
        for dp in counts.declare_pairs:
            key = (act(dp.a).bit, act(dp.b).bit)
            cur_pair = self._pairs.get(key)
            if cur_pair is None:
                cur_pair = self._pairs[key] = [0] * 10
            for i, v in enumerate(dp.values()):
                cur_pair[i] += v
        for c in state.cases:
            self._restore_case(c)

    def _activity(self, name: str) -> _Act:
        act = self._acts.get(name)
        return act if act is not None else self._new_activity(name)

    def _restore_case(self, c: CaseState) -> None:
        act = self._activity
        cs = self._cases[c.case_id] = _Case()
        cs.last = act(c.last)
        cs.prev = None if c.previous is None else act(c.previous)
        cs.ts = c.last_time
        if not self._declare:
            return
        if c.activities is None:
            raise ValueError(f"case {c.case_id!r} carries no Declare state")

        def mask(names: tuple[str, ...]) -> int:
            out = 0
            for n in names:
                out |= act(n).bit
            return out

        cs.firsts = [act(a.name).bit for a in c.activities]
        cs.order = [act(n).bit for n in c.recency]
        cs.seen = mask(tuple(a.name for a in c.activities))
        cs.multi = mask(tuple(a.name for a in c.activities if a.repeated))
        cs.info = {}
        for a in c.activities:
            if a.chain_next is None:
                nxt = 0
            elif not a.chain_next:
                nxt = _NONE
            else:
                nxt = act(a.chain_next[0]).bit
            cs.info[act(a.name).bit] = [
                mask(a.before_first),
                _ALL if a.between is None else mask(a.between),
                0 if a.chain_prev is None else act(a.chain_prev).bit,
                nxt,
            ]
        cs.last_info = cs.info[cs.last.bit]


def _positions(bits: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
    """The positions of single-bit values (exact: powers of two below 2**63 are exact
    floats)."""
    return np.log2(bits).astype(np.intp)


def _bits(mask: int) -> list[int]:
    """The single bits of ``mask``, lowest first."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low)
        mask ^= low
    return out
