"""Combining the vault workers' pane partials into complete panes (pure).

Each vault partition closes panes on its clock and reports them as :class:`PanePartials`: "this
partition has closed every pane from ``first`` through ``through``; here are the exact
aggregates of those in which anything was counted" (a run of empty panes costs one small
record). :class:`PaneCombiner` keeps, per partition, how far it has reported, and completes
panes strictly in index order up to the smallest frontier over all ``P`` partitions; a pane
nobody counted anything in is empty. Panes start at the plan's public start (or, without one,
at the first pane any partition reported once all have). A partial seen twice is stored once;
one of a pane already completed is dropped (``stale``); one built under another DP plan (its
``plan`` fingerprint) is refused.

>>> from datetime import UTC, datetime, timedelta
>>> from procvault.monitor.privacy.panes import PaneAggregate, PaneClock
>>> from procvault.monitor.privacy.settings import PaneSettings
>>> clock = PaneClock(PaneSettings(timedelta(hours=1)))
>>> def agg(i, n):
...     p = clock.pane(i)
...     return PaneAggregate(i, p.start, p.end, (("activity", ((("A",), n),)),))
>>> c = PaneCombiner(clock, "plan-1")
>>> c.add(PanePartials(0, 2, "plan-1", 5, 7, (agg(5, 3), agg(7, 1)), opens=True)), c.ready()
('stored', None)
>>> c.add(PanePartials(1, 2, "plan-1", 5, 6, (agg(6, 2),), opens=True))
'stored'
>>> [(a.index, a.statistic("activity")) for a in c.drain()]
[(5, {('A',): 3}), (6, {('A',): 2})]
>>> c.add(PanePartials(1, 2, "plan-1", 5, 6, (agg(6, 2),)))  # (again)
'duplicate'
>>> c.add(PanePartials(1, 2, "plan-2", 7, 7, ()))
Traceback (most recent call last):
...
ValueError: a partial of partition 1 was built under another DP plan (plan-2, this stage: ...
>>> PaneCombiner(clock, "plan-1", c.snapshot()).snapshot() == c.snapshot()
True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, Literal

import msgspec

from .panes import PaneAggregate, PaneClock

__all__ = ["AddOutcome", "CombinerState", "PaneCombiner", "PanePartials", "split_partials"]


def _shown(plan: str) -> str:
    """A partial's plan fingerprint for a message: as it is if it looks like one (letters,
    digits, ``-``), else quoted and cut (it comes from a record: one line, not a screenful)."""
    if len(plan) <= 64 and all(c.isascii() and (c.isalnum() or c == "-") for c in plan):
        return plan
    return repr(plan[:64])


#: Each partials record stays well below Kafka's 1 MB (and 256 KB) record limits.
RECORD_BYTES: Final = 200_000

#: What :meth:`PaneCombiner.add` did with a record.
AddOutcome = Literal["stored", "duplicate", "stale"]


class PanePartials(msgspec.Struct, frozen=True):
    """One vault partition's report of the panes it closed (exact: seal it).

    Attributes
    ----------
    partition, partitions
        Which partition, of how many.
    plan
        The fingerprint of the DP plan the vault counted under
        (:meth:`~procvault.monitor.privacy.plan.ReleasePlan.fingerprint`).
    first, through
        The panes it closed, both included: every pane up to ``through`` is closed there.
    panes
        The aggregates of the panes of ``[first, through]`` with anything counted, in order.
    sent_us
        ``(pane, the latest agent send time of its events)`` (latency metrics only).
    opens
        Whether ``first`` is the first pane the partition ever closes: the combiner takes a
        partition's first report only if it says so, so a dropped first report holds the
        panes back instead of releasing them without that partition (F8 of
        ``docs/formal.md``).
    """

    partition: int
    partitions: int
    plan: str
    first: int
    through: int
    panes: tuple[PaneAggregate, ...] = ()
    sent_us: tuple[tuple[int, int], ...] = ()
    format: int = 2
    opens: bool = False


def split_partials(
    partition: int,
    partitions: int,
    plan: str,
    panes: Sequence[tuple[PaneAggregate, int]],
    first_pane: int | None,
    *,
    record_bytes: int = RECORD_BYTES,
) -> Iterator[PanePartials]:
    """The panes one partition closed (in order, empty ones included, each with its latest
    agent send time) as :class:`PanePartials` records, each of about ``record_bytes`` at
    most; the vault worker sends exactly these. ``first_pane``: the first pane the
    partition's accumulator ever closes (the record starting there ``opens``).

    >>> from datetime import UTC, datetime, timedelta
    >>> from procvault.monitor.privacy.settings import PaneSettings
    >>> clock = PaneClock(PaneSettings(timedelta(hours=1)))
    >>> p = clock.pane(5)
    >>> full = PaneAggregate(5, p.start, p.end, (("activity", ((("A",), 1),)),))
    >>> closed = [(full, 0), (PaneAggregate.empty(clock.pane(6)), 0)]
    >>> [(r.first, r.through, len(r.panes), r.opens) for r in split_partials(0, 1, "p", closed, 5)]
    [(5, 6, 1, True)]
    """
    start = 0
    while start < len(panes):
        size, end = 0, start
        filled: list[PaneAggregate] = []
        sent: list[tuple[int, int]] = []
        while end < len(panes):
            agg, sent_us = panes[end]
            if not agg.is_empty:
                cost = 64 + sum(16 + 24 * len(e) for _, e in agg.values)
                if filled and size + cost > record_bytes:
                    break
                size += cost
                filled.append(agg)
            if sent_us:
                sent.append((agg.index, sent_us))
            end += 1
        yield PanePartials(
            partition,
            partitions,
            plan,
            panes[start][0].index,
            panes[end - 1][0].index,
            tuple(filled),
            tuple(sent),
            opens=panes[start][0].index == first_pane,
        )
        start = end


class CombinerState(msgspec.Struct, frozen=True):
    """Everything a :class:`PaneCombiner` holds, as a value (exact sums: seal it)."""

    partitions: int | None = None
    #: ``(partition, the last pane it reported contiguously)``
    frontiers: tuple[tuple[int, int], ...] = ()
    #: ``(partition, first, through)`` of reports beyond a partition's frontier (a gap)
    ahead: tuple[tuple[int, int, int], ...] = ()
    pending: tuple[tuple[int, int, PaneAggregate], ...] = ()
    next_pane: int | None = None
    lowest: int | None = None
    duplicates: int = 0
    stale: int = 0
    version: int = 2


class PaneCombiner:
    """Complete panes from per-partition reports, in order; see the module docstring.

    Parameters
    ----------
    clock
        The panes' clock (the DP policy's pane settings): the bounds of empty panes, a check
        that every aggregate has the bounds this stage expects, and the public start.
    plan
        The fingerprint of this stage's DP plan: reports made under another are refused.
    state
        A snapshot to resume from (:meth:`snapshot`).
    """

    def __init__(self, clock: PaneClock, plan: str, state: CombinerState | None = None) -> None:
        self.clock: Final = clock
        self.plan: Final = plan
        start = clock.settings.start
        self._start: int | None = clock.index(start) if start is not None else None
        self._partitions: int | None = None
        self._frontiers: dict[int, int] = {}
        self._ahead: dict[int, list[tuple[int, int]]] = {}
        self._pending: dict[int, dict[int, PaneAggregate]] = {}
        self._next: int | None = None
        self._lowest: int | None = None
        self._duplicates = 0
        self._stale = 0
        if state is not None:
            if state.version != 2:
                raise ValueError(f"unsupported combiner state version {state.version}")
            self._partitions = state.partitions
            self._frontiers = dict(state.frontiers)
            for part, first, through in state.ahead:
                self._ahead.setdefault(part, []).append((first, through))
            for pane, part, agg in state.pending:
                self._pending.setdefault(pane, {})[part] = agg
            self._next, self._lowest = state.next_pane, state.lowest
            self._duplicates, self._stale = state.duplicates, state.stale

    def add(self, partials: PanePartials) -> AddOutcome:
        """Take one report; ``ValueError`` if it cannot belong to this stream (another
        partition count, a partition out of range, another plan, pane bounds of another
        clock)."""
        part = partials.partition
        if partials.plan != self.plan:
            raise ValueError(
                f"a partial of partition {part} was built under another DP plan "
                f"({_shown(partials.plan)}, this stage: {self.plan}): the vault and the release "
                "stage must run the same policy and model"
            )
        if partials.partitions < 1:
            raise ValueError(f"a partial claims {partials.partitions} partitions")
        if self._partitions is None:
            self._partitions = partials.partitions
        elif partials.partitions != self._partitions:
            raise ValueError(
                f"a partial of partition {part} counts {partials.partitions} event partitions, "
                f"earlier ones {self._partitions}: repartitioning needs a fresh release stage"
            )
        if not 0 <= part < self._partitions:
            raise ValueError(f"partition {part} is out of range (P = {self._partitions})")
        first, through = partials.first, partials.through
        if first > through:
            raise ValueError(f"a partial covers panes {first}..{through}")
        for agg in partials.panes:
            try:
                pane = self.clock.pane(agg.index)
            except OverflowError:  # (an index no clock of a date can have)
                raise ValueError(f"pane {agg.index} of partition {part} is out of range") from None
            if not first <= agg.index <= through or (agg.start, agg.end) != (
                pane.start,
                pane.end,
            ):
                raise ValueError(
                    f"pane {agg.index} of partition {part} spans {agg.start}..{agg.end} in a "
                    f"report of panes {first}..{through}: the vault and the release stage must "
                    "use the same DP policy"
                )
        frontier = self._frontiers.get(part)
        if frontier is not None and through <= frontier:
            self._duplicates += 1
            return "duplicate"
        # a report of panes completed already still tells how far its partition got
        stale = self._next is not None and through < self._next
        for agg in () if stale else partials.panes:
            if self._next is not None and agg.index < self._next:
                continue
            by_part = self._pending.setdefault(agg.index, {})
            if part not in by_part:
                by_part[part] = agg
        if (frontier is None and partials.opens) or (
            frontier is not None and first <= frontier + 1
        ):
            self._frontiers[part] = through
            self._catch_up(part)
        else:  # a gap: the reports in between (or the partition's first) have not come (yet)
            self._ahead.setdefault(part, []).append((first, through))
        if self._lowest is None or first < self._lowest:
            self._lowest = first
        if self._next is None and len(self._frontiers) == self._partitions:
            self._next = self._start if self._start is not None else self._lowest
        if stale:
            self._stale += 1
            return "stale"
        return "stored"

    def _catch_up(self, part: int) -> None:
        ahead = self._ahead.get(part)
        if not ahead or part not in self._frontiers:
            return
        ahead.sort()
        frontier = self._frontiers[part]
        while ahead and ahead[0][0] <= frontier + 1:
            frontier = max(frontier, ahead.pop(0)[1])
        self._frontiers[part] = frontier
        if not ahead:
            del self._ahead[part]

    def skip_to(self, index: int) -> None:
        """Panes before ``index`` were released elsewhere (recovered from what was
        published): never complete them here."""
        if self._next is None or index > self._next:
            self._next = index
        for pane in [p for p in self._pending if p < index]:
            del self._pending[pane]

    @property
    def frontier(self) -> int | None:
        """The last pane every partition has closed (``None`` while one has not reported)."""
        if self._partitions is None or len(self._frontiers) < self._partitions:
            return None
        return min(self._frontiers.values())

    def ready(self) -> int | None:
        """The index of the pane that :meth:`pop` would complete, or ``None``."""
        nxt, front = self._next, self.frontier
        if nxt is None or front is None or nxt > front:
            return None
        return nxt

    def ready_count(self) -> int:
        """How many panes are ready."""
        nxt, front = self._next, self.frontier
        if nxt is None or front is None or nxt > front:
            return 0
        return front - nxt + 1

    def pop(self) -> PaneAggregate:
        """Complete the next pane: the sum of its partials (empty if none); ``LookupError``
        if it is not ready."""
        idx = self.ready()
        if idx is None:
            raise LookupError("no pane is complete yet")
        parts = self._pending.pop(idx, {})
        agg = PaneAggregate.empty(self.clock.pane(idx))
        for part in sorted(parts):
            agg = agg.merge(parts[part])
        self._next = idx + 1
        return agg

    def drain(self, limit: int | None = None) -> list[PaneAggregate]:
        """Complete every ready pane (at most ``limit``), in order."""
        out: list[PaneAggregate] = []
        while (limit is None or len(out) < limit) and self.ready() is not None:
            out.append(self.pop())
        return out

    @property
    def next_pane(self) -> int | None:
        """The pane that completes next (``None`` before every partition has reported)."""
        return self._next

    @property
    def counters(self) -> dict[str, int]:
        """Exact operational counters (never published)."""
        return {
            "duplicates": self._duplicates,
            "stale": self._stale,
            "pending_panes": len(self._pending),
        }

    def snapshot(self) -> CombinerState:
        """The whole state as a value."""
        return CombinerState(
            self._partitions,
            tuple(sorted(self._frontiers.items())),
            tuple(sorted((p, f, t) for p, rs in self._ahead.items() for f, t in rs)),
            tuple(
                (pane, part, self._pending[pane][part])
                for pane in sorted(self._pending)
                for part in sorted(self._pending[pane])
            ),
            self._next,
            self._lowest,
            self._duplicates,
            self._stale,
        )
