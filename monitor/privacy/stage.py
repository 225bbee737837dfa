"""The release stage's engine (pure): partials in, noisy records out, each pane noised once.

:class:`ReleaseEngine` holds a :class:`~.combiner.PaneCombiner` and a
:class:`~.release.PaneReleaser`. The shell feeds it the vault partitions'
:class:`~.combiner.PanePartials` (:meth:`ReleaseEngine.receive`), asks it to release what is
complete (:meth:`ReleaseEngine.release`: noise is drawn here, and only here), **stores** the
result (:meth:`ReleaseEngine.head` and the new pane records of :meth:`ReleaseEngine.changes`)
and only then publishes :meth:`ReleaseEngine.to_publish`, then calls
:meth:`ReleaseEngine.published`. Everything published is recomputed from stored records:
pane records as they were drawn, windows as sums of them, signed deterministically, so a
restart between storing and publishing republishes the same bytes, never fresh noise.

State is bounded by what open panes and windows need: the combiner's pending partials, the
ledger's window, the running totals' tree, and the pane records the windows still need (or
that are not published yet). It is written as one small ``head`` and one record per retained
pane.

**Published before stored** (a lost or rolled-back state, a stage started with a new
application id and an empty state topic): :meth:`ReleaseEngine.recover` takes the records
already on ``results.aggregates`` and continues after them: their panes are never noised
again, the ledger is rebuilt from their charges, windows from their values; the running
totals' exact node sums are lost with the state, so totals are withheld from then on
(``totals: null``; data-independent).

>>> from datetime import UTC, datetime, timedelta
>>> from procvault.monitor.privacy.budget import Budget
>>> from procvault.monitor.privacy.mechanisms import DeterministicReleaser
>>> from procvault.monitor.privacy.panes import PaneAggregate, PaneClock
>>> from procvault.monitor.privacy.plan import ReleasePlan
>>> from procvault.monitor.privacy.settings import KnownKeys, PaneSettings, PrivacySettings
>>> settings = PrivacySettings(Budget(1.0, window=2), PaneSettings(timedelta(hours=1)),
...                            windows=(), running_totals=None)
>>> plan = ReleasePlan.build(settings, KnownKeys.build(["A"]))
>>> eng = ReleaseEngine(plan, DeterministicReleaser(plan))
>>> eng.receive(PanePartials(0, 1, plan.fingerprint(), 0, 2, (), opens=True))
'stored'
>>> eng.release(), [r.kind for r in eng.to_publish()]
(3, ['pane', 'pane', 'pane'])
>>> head, pane_records, gone = eng.changes()
>>> again = ReleaseEngine(plan, DeterministicReleaser(plan), head, pane_records)
>>> again.to_publish() == eng.to_publish()  # not published yet: the same records again
True
>>> eng.published(2); eng.to_publish()
[]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec

from .combiner import CombinerState, PaneCombiner, PanePartials
from .ledger import LedgerState
from .mechanisms import Releaser
from .panes import PaneClock
from .plan import ReleasePlan
from .records import PaneRecord, Record, WithheldRecord
from .release import PaneReleaser, ReleaseState
from .tree import TreeState

__all__ = ["ReleaseEngine", "ReleaseHead"]

HEAD_FORMAT: Final = 2


class ReleaseHead(msgspec.Struct, frozen=True):
    """The release stage's state apart from its pane records (seal it: exact sums)."""

    plan: str
    combiner: CombinerState
    ledger: LedgerState
    tree: TreeState | None
    next_pane: int | None
    first_pane: int | None
    #: panes whose records are stored (each under its own key)
    record_panes: tuple[int, ...]
    #: the last pane whose records were published (``None``: none yet)
    published_through: int | None
    #: the next ``vault.partials`` offset to read
    offset: int | None
    totals_lost: bool = False
    released: int = 0
    rejected: int = 0
    recovered: int = 0
    format: int = HEAD_FORMAT


class ReleaseEngine:
    """See the module docstring.

    Parameters
    ----------
    plan
        The release plan (policy and known keys).
    releaser
        Where noise comes from (:class:`~.mechanisms.OpenDPReleaser` in production).
    head, records
        A stored state to resume from (:meth:`changes` wrote them).
    """

    def __init__(
        self,
        plan: ReleasePlan,
        releaser: Releaser,
        head: ReleaseHead | None = None,
        records: Iterable[PaneRecord | WithheldRecord] = (),
    ) -> None:
        self.plan: Final = plan
        self.fingerprint: Final = plan.fingerprint()
        self.clock: Final = PaneClock(plan.settings.panes)
        self._releaser_source = releaser
        if head is not None and head.format != HEAD_FORMAT:
            raise ValueError(f"release state of format {head.format}; this stage reads 2")
        if head is not None and head.plan != self.fingerprint:
            raise ValueError(
                "the stored release state was built under another DP plan (policy, model or "
                "rules): start the release stage with the same ones as before"
            )
        stored = {r.pane.index: r for r in records}
        if head is None:
            self.combiner = PaneCombiner(self.clock, self.fingerprint)
            self.releaser = PaneReleaser(plan, releaser)
            self.published_through: int | None = None
            self.offset: int | None = None
            self.totals_lost = False
            self.released = self.rejected = self.recovered = 0
        else:
            missing = [i for i in head.record_panes if i not in stored]
            if missing:
                raise ValueError(f"the release state lacks the records of panes {missing[:5]}")
            state = ReleaseState(
                head.ledger,
                head.tree,
                tuple(stored[i] for i in head.record_panes),
                head.next_pane,
                head.first_pane,
            )
            self.combiner = PaneCombiner(self.clock, self.fingerprint, head.combiner)
            self.releaser = PaneReleaser(plan, releaser, state, totals=not head.totals_lost)
            self.published_through = head.published_through
            self.offset = head.offset
            self.totals_lost = head.totals_lost
            self.released, self.rejected = head.released, head.rejected
            self.recovered = head.recovered
        self.releaser.keep_from(self._keep_from())
        self._stored = set(self.releaser.held())
        self._new: set[int] = set()

    # -- input ------------------------------------------------------------------------------
    def receive(self, partials: PanePartials, offset: int | None = None) -> str:
        """Take one report (``stored``, ``duplicate`` or ``stale``); ``ValueError`` with one
        line if it cannot belong to this stream (another plan, partition count, bounds)."""
        if offset is not None:
            self.offset = offset + 1
        return self.combiner.add(partials)

    def reject(self, offset: int | None = None) -> None:
        """Count a record that did not open or did not fit (and move past it)."""
        self.rejected += 1
        if offset is not None:
            self.offset = offset + 1

    # -- releasing --------------------------------------------------------------------------
    def release(self, limit: int | None = None) -> int:
        """Noise every complete pane (at most ``limit``), in order; how many. Store
        :meth:`changes` before publishing :meth:`to_publish`."""
        aggregates = list(self.combiner.drain(limit))
        # the noise of all of them in one draw; windows are summed when published (to_publish)
        self.releaser.release_many(aggregates, windows=False)
        self._new.update(agg.index for agg in aggregates)
        self.released += len(aggregates)
        return len(aggregates)

    def ready(self) -> int:
        """How many panes are complete and not released yet."""
        return self.combiner.ready_count()

    def to_publish(self) -> list[Record]:
        """The records not published yet, in order: per pane its record (or withholding)
        and the windows ending at it, recomputed from the stored pane records."""
        nxt = self.releaser.next_pane
        if nxt is None:
            return []
        start = (self.published_through + 1) if self.published_through is not None else None
        held = [i for i in self.releaser.held() if start is None or i >= start]
        return self.releaser.stored_many(held)

    def published(self, through: int) -> None:
        """Everything up to pane ``through`` reached ``results.aggregates``."""
        if self.published_through is None or through > self.published_through:
            self.published_through = through
        self.releaser.keep_from(self._keep_from())

    def _keep_from(self) -> int:
        """The first pane not published yet (its record, and what its windows need, stay)."""
        if self.published_through is None:
            return -(1 << 62)
        return self.published_through + 1

    # -- state ------------------------------------------------------------------------------
    def head(self) -> ReleaseHead:
        """The state apart from the pane records."""
        snap = self.releaser.snapshot()
        return ReleaseHead(
            self.fingerprint,
            self.combiner.snapshot(),
            snap.ledger,
            snap.tree,
            snap.next_pane,
            snap.first_pane,
            tuple(self.releaser.held()),
            self.published_through,
            self.offset,
            self.totals_lost,
            self.released,
            self.rejected,
            self.recovered,
        )

    def changes(self) -> tuple[ReleaseHead, list[PaneRecord | WithheldRecord], list[int]]:
        """``(head, new pane records, panes whose records go)`` since the last call: what
        to store."""
        held = set(self.releaser.held())
        new = [self.releaser.record(i) for i in sorted(self._new & held)]
        gone = sorted(self._stored - held)
        self._stored = held
        self._new = set()
        return self.head(), new, gone

    # -- recovery ---------------------------------------------------------------------------
    def recover(self, published: Iterable[Record]) -> int:
        """Continue after the pane records already on ``results.aggregates`` (verified by the
        caller) when the stored state is behind them; returns how many panes it skipped (0:
        the state was not behind)."""
        panes = sorted(
            (r for r in published if isinstance(r, PaneRecord | WithheldRecord)),
            key=lambda r: r.pane.index,
        )
        if not panes:
            return 0
        last = panes[-1].pane.index
        nxt = self.releaser.next_pane
        if nxt is not None and nxt > last:
            if self.published_through is None or self.published_through < last:
                self.published(last)
            return 0
        skipped = last + 1 - (nxt if nxt is not None else panes[0].pane.index)
        w = self.plan.settings.budget.window
        window = [r for r in panes if r.pane.index > last - max(2 * w, self.releaser.retain)]
        charges = tuple(
            (r.pane.index, r.epsilon, r.delta) for r in window if isinstance(r, PaneRecord)
        )
        state = ReleaseState(
            LedgerState(charges, last),
            None,
            tuple(r for r in window if r.pane.index > last - self.releaser.retain),
            last + 1,
            panes[0].pane.index,
        )
        self.releaser = PaneReleaser(self.plan, self._releaser_source, state, totals=False)
        self.releaser.keep_from(last + 1)
        self.totals_lost = True
        self.combiner.skip_to(last + 1)
        self.published_through = last
        self.recovered += skipped
        self._stored = set()
        self._new = set(self.releaser.held())
        return skipped

    @property
    def counters(self) -> dict[str, int]:
        """Exact operational counters (never published)."""
        return {
            "released_panes": self.released,
            "rejected_partials": self.rejected,
            "recovered_panes": self.recovered,
            "unpublished": len(self.to_publish()),
            **self.combiner.counters,
        }
