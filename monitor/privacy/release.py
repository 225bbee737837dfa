"""The release stage's engine: noisy panes, sliding windows, running totals, the ledger.

:class:`PaneReleaser` takes the exact :class:`~.panes.PaneAggregate` of each pane, in order
(empty panes included), and returns the records to publish:

1. the running totals' tree takes the pane's first contributions (always, so that totals stay
   right across withheld panes);
2. the ledger is asked for the pane's (data-independent) ε and δ; if any ``w`` consecutive
   panes would exceed the budget the pane is withheld (:class:`~.records.WithheldRecord`);
3. otherwise every statistic is noised once through the :class:`~.mechanisms.Releaser`: known
   keys as one vector (zeros included), other keys through the DP threshold;
4. the record is stored in the releaser's state *before* it is returned: the caller persists
   :meth:`PaneReleaser.snapshot` and then publishes. Asked again for a stored pane (after a
   restart), it returns the stored record, never fresh noise;
5. each configured sliding window of ``n >= 2`` panes ending at the pane is the sum of the
   noisy panes in it (post-processing: no budget). A window of one pane is the pane record.

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> from procvault.monitor.privacy.budget import Budget
>>> from procvault.monitor.privacy.mechanisms import DeterministicReleaser
>>> from procvault.monitor.privacy.panes import PaneAggregate, PaneClock
>>> from procvault.monitor.privacy.plan import ReleasePlan
>>> from procvault.monitor.privacy.settings import KnownKeys, PaneSettings, PrivacySettings
>>> settings = PrivacySettings(
...     Budget(1.0, window=2), PaneSettings(timedelta(hours=1)),
...     windows=(timedelta(hours=2),), running_totals=None, pane_epsilon=0.6)
>>> plan = ReleasePlan.build(settings, KnownKeys.build(["A"]))
>>> rel = PaneReleaser(plan, DeterministicReleaser(plan))
>>> clock = PaneClock(settings.panes)
>>> def agg(i, n):
...     p = clock.pane(i)
...     return PaneAggregate(i, p.start, p.end, (("activity", ((("A",), n),)),))
>>> [r.kind for r in rel.release(agg(0, 5))]
['pane']
>>> [r.kind for r in rel.release(agg(1, 7))]  # 0.6 + 0.6 > 1.0 over 2 panes
['withheld', 'window']
>>> pane, window = rel.release(agg(2, 1))
>>> pane.statistics[0].known[0], window.statistics[0].known[0], window.withheld_panes
(Entry(key=('A',), value=1), Entry(key=('A',), value=1), 1)
>>> pane.statistics[0].known[1]  # placeholders: always a known key of ``activity``
Entry(key=('pv:withheld',), value=0)
>>> rel.release(agg(2, 99))[0] == pane  # a stored pane is republished as it was
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

import msgspec

from .ledger import Ledger, LedgerState
from .mechanisms import Releaser, draw_vectors
from .panes import PaneAggregate
from .plan import TOTALS, ReleasePlan
from .records import (
    BudgetInfo,
    Entry,
    MechanismInfo,
    PaneInfo,
    PaneRecord,
    Record,
    StatisticRelease,
    TotalsRelease,
    WindowRecord,
    WithheldRecord,
)
from .settings import Key
from .tree import BinaryTreeCounter, TreeState

__all__ = ["PaneReleaser", "ReleaseState"]

_KEY_ENCODER: Final = msgspec.json.Encoder()
_KEY_DECODER: Final = msgspec.json.Decoder(tuple[str, ...])


class ReleaseState(msgspec.Struct, frozen=True):
    """Everything a :class:`PaneReleaser` holds, as a value: the ledger, the running totals'
    tree (exact node sums included: seal it), the records of the last panes (needed for the
    windows and to republish), the next pane expected and the first pane released."""

    ledger: LedgerState
    tree: TreeState | None
    records: tuple[PaneRecord | WithheldRecord, ...]
    next_pane: int | None
    first_pane: int | None
    version: int = 1


class _WindowSum:
    """Running sums of the noisy values of the last ``n`` pane records."""

    __slots__ = ("known", "other", "withheld")

    def __init__(self, names: Sequence[str], sizes: Sequence[int]) -> None:
        self.known: dict[str, list[int]] = {n: [0] * k for n, k in zip(names, sizes, strict=True)}
        self.other: dict[str, dict[Key, int]] = {n: {} for n in names}
        self.withheld = 0

    def add(self, record: PaneRecord | WithheldRecord, sign: int) -> None:
        if isinstance(record, WithheldRecord):
            self.withheld += sign
            return
        for stat in record.statistics:
            _accumulate(self.known[stat.name], stat.known, sign)
            other = self.other[stat.name]
            for e in stat.other:
                v = other.get(e.key, 0) + sign * e.value
                if v or sign > 0:
                    other[e.key] = v
                else:
                    other.pop(e.key, None)

    def statistics(self, known: dict[str, tuple[Key, ...]]) -> tuple[StatisticRelease, ...]:
        return tuple(
            StatisticRelease(
                name,
                _entries(known[name], values),
                tuple(Entry(k, v) for k, v in sorted(self.other[name].items())),
            )
            for name, values in self.known.items()
        )


class _Pending(NamedTuple):
    """A pane of :meth:`PaneReleaser.release_many` between its ledger decision and its noise:
    its record if it was stored before, the index of its totals' node and of its first
    statistic in the batch's requests (``-1``: none; no statistics: withheld), and its
    thresholded keys."""

    aggregate: PaneAggregate
    stored: PaneRecord | WithheldRecord | None
    totals_at: int
    stats_at: int
    other: tuple[tuple[Entry, ...], ...]


def _add_known(s: _WindowSum, record: PaneRecord | WithheldRecord, sign: int) -> None:
    """:meth:`_WindowSum.add` of the known keys and the withheld count only."""
    if isinstance(record, WithheldRecord):
        s.withheld += sign
        return
    for stat in record.statistics:
        _accumulate(s.known[stat.name], stat.known, sign)


def _accumulate(acc: list[int], entries: tuple[Entry, ...], sign: int) -> None:
    """``acc[i] += sign * entries[i].value`` for every ``i``."""
    if sign > 0:
        acc[:] = [a + e.value for a, e in zip(acc, entries, strict=True)]
    else:
        acc[:] = [a - e.value for a, e in zip(acc, entries, strict=True)]


def _entries(keys: tuple[Key, ...], values: Sequence[int]) -> tuple[Entry, ...]:
    """``Entry(key, value)`` of each known key and its value (the lengths are equal)."""
    if len(keys) != len(values):
        raise ValueError(f"{len(values)} values for {len(keys)} known keys")
    return tuple(map(Entry, keys, values))


def _add_other(s: _WindowSum, record: PaneRecord | WithheldRecord) -> None:
    """:meth:`_WindowSum.add` (``sign=+1``) of the keys outside the known ones only."""
    if isinstance(record, WithheldRecord):
        return
    for stat in record.statistics:
        other = s.other[stat.name]
        for e in stat.other:
            other[e.key] = other.get(e.key, 0) + e.value


class PaneReleaser:
    """Noisy panes, windows and running totals under a ledger; see the module docstring.

    Parameters
    ----------
    plan
        The release plan (every scale, threshold and share of the budget).
    releaser
        Where noise comes from: :class:`~.mechanisms.OpenDPReleaser` in production.
    state
        A snapshot to resume from (:meth:`snapshot`).
    totals
        Release running totals (if the plan has them). ``False`` after their exact state was
        lost: totals are withheld (``null``) from then on.
    """

    def __init__(
        self,
        plan: ReleasePlan,
        releaser: Releaser,
        state: ReleaseState | None = None,
        *,
        totals: bool = True,
    ) -> None:
        self.plan: Final = plan
        self._releaser = releaser
        settings = plan.settings
        budget = settings.budget
        if state is not None and state.version != 1:
            raise ValueError(f"unsupported release state version {state.version}")
        self._ledger = Ledger(
            epsilon=budget.epsilon,
            delta=budget.delta,
            window=budget.window,
            reserved=plan.totals_epsilon,
            panes_per_case=settings.max_panes_per_case,
            state=state.ledger if state else None,
        )
        self._tree: BinaryTreeCounter | None = None
        if totals and plan.totals is not None and settings.running_totals is not None:
            self._tree = BinaryTreeCounter(
                size=len(plan.totals_keys),
                levels=settings.running_totals.levels,
                mechanism=TOTALS,
                releaser=releaser,
                state=state.tree if state else None,
            )
        self._names = tuple(s.name for s in plan.statistics)
        self._known: dict[str, tuple[Key, ...]] = {n: plan.known.keys(n) for n in self._names}
        self._known_set = {n: frozenset(keys) for n, keys in self._known.items()}
        self._thresholded = {s.name for s in plan.statistics if s.threshold is not None}
        self._mechanisms = tuple(
            MechanismInfo(
                s.name,
                s.mechanism,
                s.scale,
                s.sensitivity,
                s.max_keys,
                s.linf,
                s.epsilon,
                s.delta,
                s.threshold,
            )
            for s in plan.mechanisms()
        )
        self._budget = BudgetInfo(
            budget.epsilon,
            budget.delta,
            budget.window,
            budget.advantage,
            "case",
            "uniform" if settings.pane_epsilon is None else "fixed",
            settings.max_panes_per_case,
            plan.totals_epsilon,
        )
        self._windows = tuple(sorted({n for n in settings.window_panes if n >= 2}))
        self._retain = max(self._windows, default=1) + 1
        self._keep: int | None = None  # records from here on are kept (not published yet)
        self._records: dict[int, PaneRecord | WithheldRecord] = {}
        self._next: int | None = None
        self._first: int | None = None
        self._sums: dict[int, _WindowSum] = {}
        self._sums_at: int | None = None  # the last pane the running sums include
        if state is not None:
            self._records = {_index(r): r for r in state.records}
            self._next, self._first = state.next_pane, state.first_pane
        self._rebuild_sums()

    # -- releasing -----------------------------------------------------------------------
    def release(self, aggregate: PaneAggregate) -> tuple[Record, ...]:
        """The records to publish for ``aggregate``'s pane: the pane (or its withholding),
        then the windows ending at it. Panes must come in order, empty ones included."""
        return self.release_many([aggregate])[0]

    def release_many(
        self, aggregates: Sequence[PaneAggregate], *, windows: bool = True
    ) -> list[tuple[Record, ...]]:
        """:meth:`release` of each of ``aggregates`` (consecutive panes, in order), with the
        noise of all of them drawn at once (:func:`~.mechanisms.draw_vectors`: one OpenDP
        call per scale for the whole batch). The same records, values and ledger as releasing
        them one by one: each value gets one draw of its statistic's mechanism.

        With ``windows=False`` only the pane records are returned (a caller that publishes
        through :meth:`stored_many` recomputes the windows there): no window is summed here.

        The order is checked before anything changes; if drawing fails, the releaser's state
        is undefined (the caller resumes from its last :meth:`snapshot`)."""
        self._check_order(aggregates)
        # 1. everything that does not need noise: ledger, tree nodes, the vectors to noise
        pending: list[_Pending] = []
        requests: list[tuple[str, Sequence[int]]] = []
        for aggregate in aggregates:
            idx = aggregate.index
            stored = self._records.get(idx)
            if stored is not None:
                pending.append(_Pending(aggregate, stored, -1, -1, ()))
                continue  # republished as it was, never noised again
            if self._first is None:
                self._first = idx
            totals_at = -1
            if self._tree is not None:
                node = self._tree.prepare(self._first_contributions(aggregate))
                if node is not None:
                    totals_at = len(requests)
                    requests.append((TOTALS, node))
            self._next = idx + 1
            if not self._ledger.spend(idx, self.plan.pane_epsilon, self.plan.pane_delta):
                pending.append(_Pending(aggregate, None, totals_at, -1, ()))  # withheld
                continue
            stats_at = len(requests)
            other: list[tuple[Entry, ...]] = []
            for name in self._names:
                values = aggregate.statistic(name)
                known = self._known[name]
                if values:
                    requests.append((name, [values.get(k, 0) for k in known]))
                    other.append(self._thresholded_other(name, values))
                else:  # nothing counted (most panes): zeros, noised all the same
                    requests.append((name, [0] * len(known)))
                    other.append(())
            pending.append(_Pending(aggregate, None, totals_at, stats_at, tuple(other)))
        # 2. the noise, all at once
        noisy = draw_vectors(self._releaser, requests) if requests else []
        # 3. records, totals and windows, pane by pane
        out: list[tuple[Record, ...]] = []
        for p in pending:
            idx = p.aggregate.index
            if p.stored is not None:
                out.append((p.stored, *self._direct_windows(idx)) if windows else (p.stored,))
                continue
            totals = self._totals(noisy[p.totals_at]) if p.totals_at >= 0 else None
            info = PaneInfo(idx, p.aggregate.start, p.aggregate.end)
            record: PaneRecord | WithheldRecord
            if p.stats_at < 0:
                record = WithheldRecord(pane=info, reason="budget")
            else:
                record = PaneRecord(
                    pane=info,
                    epsilon=self.plan.pane_epsilon,
                    delta=self.plan.pane_delta,
                    budget=self._budget,
                    mechanisms=self._mechanisms,
                    statistics=tuple(
                        StatisticRelease(
                            name, _entries(self._known[name], noisy[p.stats_at + j]), p.other[j]
                        )
                        for j, name in enumerate(self._names)
                    ),
                    totals=totals,
                )
            self._records[idx] = record
            if windows:
                out.append((record, *self._advance_windows(idx, record)))
            else:
                self._sums_at = None  # the running sums no longer end at the last pane
                out.append((record,))
            self._prune(idx)
        return out

    def _check_order(self, aggregates: Sequence[PaneAggregate]) -> None:
        nxt = self._next
        for aggregate in aggregates:
            idx = aggregate.index
            if idx in self._records:
                continue
            if nxt is not None and idx != nxt:
                if idx < nxt:
                    raise ValueError(f"pane {idx} was released before and is no longer held")
                raise ValueError(
                    f"pane {nxt} has not been released: release every pane in order, "
                    "empty ones included"
                )
            nxt = idx + 1

    def _first_contributions(self, aggregate: PaneAggregate) -> list[int]:
        firsts = {
            n: aggregate.first_contributions(n) for n in {s for s, _ in self.plan.totals_keys}
        }
        return [firsts[stat].get(key, 0) for stat, key in self.plan.totals_keys]

    def _totals(self, noisy_node: Sequence[int]) -> TotalsRelease:
        if self._tree is None:  # pragma: no cover - only called with a tree
            raise ValueError("no running totals")
        total = self._tree.finish(noisy_node)
        return TotalsRelease(
            self._tree.finished,
            tuple(
                Entry((stat, *key), v)
                for (stat, key), v in zip(self.plan.totals_keys, total, strict=True)
            ),
        )

    def _thresholded_other(self, name: str, values: Mapping[Key, int]) -> tuple[Entry, ...]:
        """The keys outside the known ones, through the DP threshold (drawn here)."""
        if name not in self._thresholded:
            return ()
        known_set = self._known_set[name]
        unknown = {
            _KEY_ENCODER.encode(k).decode(): v for k, v in values.items() if k not in known_set
        }
        if not unknown:
            return ()
        released = self._releaser.threshold(name, unknown)
        return tuple(
            sorted(
                (Entry(_KEY_DECODER.decode(k), v) for k, v in released.items()),
                key=lambda e: e.key,
            )
        )

    # -- windows -------------------------------------------------------------------------
    def _window_record(self, idx: int, n: int, s: _WindowSum) -> WindowRecord:
        first = self._records[idx - n + 1]
        last = self._records[idx]
        return WindowRecord(
            first_pane=idx - n + 1,
            last_pane=idx,
            start=first.pane.start,
            end=last.pane.end,
            panes=n,
            withheld_panes=s.withheld,
            statistics=s.statistics(self._known),
        )

    def _complete(self, idx: int, n: int) -> bool:
        return self._first is not None and idx - n + 1 >= self._first

    def _advance_windows(self, idx: int, record: PaneRecord | WithheldRecord) -> list[WindowRecord]:
        if self._sums_at != idx - 1:  # panes were released without their windows
            self._sums = {n: self._direct_sum(idx - 1, n) for n in self._windows}
        self._sums_at = idx
        out = []
        for n in self._windows:
            s = self._sums[n]
            s.add(record, +1)
            leaving = self._records.get(idx - n)
            if leaving is not None:
                s.add(leaving, -1)
            if self._complete(idx, n):
                out.append(self._window_record(idx, n, s))
        return out

    def _direct_windows(self, idx: int) -> list[WindowRecord]:
        out = []
        for n in self._windows:
            if self._complete(idx, n) and all(
                p in self._records for p in range(idx - n + 1, idx + 1)
            ):
                out.append(self._window_record(idx, n, self._direct_sum(idx, n)))
        return out

    def _direct_sum(self, idx: int, n: int) -> _WindowSum:
        s = _WindowSum(self._names, [len(self._known[x]) for x in self._names])
        for p in range(idx - n + 1, idx + 1):
            rec = self._records.get(p)
            if rec is not None:
                s.add(rec, +1)
        return s

    def _rebuild_sums(self) -> None:
        self._sums = {}
        self._sums_at = None if self._next is None else self._next - 1
        for n in self._windows:
            if self._next is None:
                self._sums[n] = _WindowSum(self._names, [len(self._known[x]) for x in self._names])
            else:
                self._sums[n] = self._direct_sum(self._next - 1, n)

    def _prune(self, idx: int) -> None:
        horizon = idx - self._retain
        if self._keep is not None:
            # what is not published yet stays, with the panes its windows need
            horizon = min(horizon, self._keep - self._retain)
        for p in [p for p in self._records if p <= horizon]:
            del self._records[p]

    @property
    def retain(self) -> int:
        """How many pane records the windows need (the longest window, plus one)."""
        return self._retain

    def held(self) -> list[int]:
        """The panes whose records are held, in order."""
        return sorted(self._records)

    def record(self, index: int) -> PaneRecord | WithheldRecord:
        """The stored record of pane ``index`` (``KeyError`` if not held)."""
        return self._records[index]

    def stored(self, index: int) -> tuple[Record, ...]:
        """What :meth:`release` returned for pane ``index``, recomputed from the stored
        records (the pane's record and the windows ending at it)."""
        return (self._records[index], *self._direct_windows(index))

    def stored_many(self, indices: Sequence[int]) -> list[Record]:
        """:meth:`stored` of each of ``indices`` (ascending), concatenated: the same records,
        with each window's known-key sums slid from one pane to the next (O(1) per pane and
        window instead of re-adding its ``n`` pane records); keys outside the known ones are
        summed as :meth:`stored` sums them."""
        out: list[Record] = []
        sizes = [len(self._known[x]) for x in self._names]
        slid: dict[int, tuple[int, int, _WindowSum]] = {}  # n -> (last pane, records in, sums)
        for idx in indices:
            out.append(self._records[idx])
            for n in self._windows:
                prev = slid.get(n)
                if prev is not None and prev[0] == idx - 1:
                    present, acc = prev[1], prev[2]
                    rec = self._records.get(idx)
                    if rec is not None:
                        _add_known(acc, rec, +1)
                        present += 1
                    leaving = self._records.get(idx - n)
                    if leaving is not None:
                        _add_known(acc, leaving, -1)
                        present -= 1
                else:
                    acc = _WindowSum(self._names, sizes)
                    present = 0
                    for p in range(idx - n + 1, idx + 1):
                        rec = self._records.get(p)
                        if rec is not None:
                            _add_known(acc, rec, +1)
                            present += 1
                slid[n] = (idx, present, acc)
                if not (self._complete(idx, n) and present == n):
                    continue
                s = _WindowSum(self._names, sizes)
                s.known = {k: list(v) for k, v in acc.known.items()}
                s.withheld = acc.withheld
                for p in range(idx - n + 1, idx + 1):
                    _add_other(s, self._records[p])
                out.append(self._window_record(idx, n, s))
        return out

    def keep_from(self, index: int | None) -> None:
        """Records of panes from ``index`` on are not published yet: keep them (and what
        their windows need); older ones may go."""
        self._keep = index
        if self._next is not None:
            self._prune(self._next - 1)

    # -- state ---------------------------------------------------------------------------
    def records(self) -> tuple[PaneRecord | WithheldRecord, ...]:
        """The stored pane records, in pane order (to republish after a restart)."""
        return tuple(self._records[p] for p in sorted(self._records))

    @property
    def next_pane(self) -> int | None:
        """The pane :meth:`release` expects next."""
        return self._next

    def epsilon_used(self, end_pane: int | None = None) -> tuple[float, float]:
        """``(spent, left)``: the most ε one case can have lost over the ``w`` panes ending at
        ``end_pane`` (default: the last pane released or withheld), the running totals'
        reserve included, and what the budget leaves. Data-independent: charges come from the
        plan, and whether a pane was charged depends only on the ledger."""
        if end_pane is None and self._next is not None:
            end_pane = self._next - 1
        spent = self.plan.totals_epsilon
        if end_pane is not None:
            spent += self._ledger.spent(end_pane)[0]
        return spent, max(0.0, self.plan.settings.budget.epsilon - spent)

    def snapshot(self) -> ReleaseState:
        """Everything as a value; persist it (sealed) *before* publishing what
        :meth:`release` returned."""
        return ReleaseState(
            self._ledger.snapshot(),
            self._tree.snapshot() if self._tree else None,
            self.records(),
            self._next,
            self._first,
        )


def _index(record: PaneRecord | WithheldRecord) -> int:
    return record.pane.index
