"""The incremental compliance evaluator: one event in, the rule state changes out.

Rules are compiled once into a dispatch table from activity to handlers, so an event touches
only the rules that mention its activity (plus the few that asked to see the next event, and
state machines that react to every event). Per case the evaluator keeps a verdict and a small
data value per rule, and the case's previous event. Time windows register deadlines in one
heap ordered by time; :meth:`Compliance.advance` (and every event, whose time moves the
watermark) pops the deadlines that passed, so "within 1 hour" becomes ``Violated`` when the hour
is over even if the case sends nothing more.

Examples
--------
>>> from datetime import datetime, timedelta, UTC
>>> from procvault.monitor.event import Event
>>> from procvault.monitor.compliance import Compliance, DeclareRule, Window
>>> within_1h = Window(within=timedelta(hours=1))
>>> rule = DeclareRule("iv_in_1h", "response", "Triage", "IV", window=within_1h)
>>> cc = Compliance([rule])
>>> t0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
>>> cc.update(Event.create("c1", "Triage", t0))
()
>>> cc.states("c1")
{'iv_in_1h': 'TemporaryViolated'}
>>> [a.new for a in cc.advance(t0 + timedelta(minutes=61))]
['Violated']
>>> cc.complete("c1")
{'iv_in_1h': 'Violated'}
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from ..event import Event, EventKind
from .kernels import Case, Kernel, StateMachineKernel, conj, declare_kernels
from .model import (
    END,
    INIT,
    PENDING,
    SATISFIED,
    STATE_NAMES,
    VIOLATED,
    Alert,
    DeclareRule,
    Rule,
    StateMachineRule,
)

__all__ = ["CaseSnapshot", "Compliance", "RuleCounters"]

AlertMode = Literal["violations", "changes"]
_NO_ALERTS: Final[tuple[Alert, ...]] = ()


@dataclass(frozen=True, slots=True)
class CaseSnapshot:
    """The frozen state of one case: enough to rebuild it with :meth:`Compliance.restore`."""

    case_id: str
    verdicts: tuple[int, ...]
    data: tuple[Any, ...]
    last: Event | None
    watch: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class RuleCounters:
    """Per-rule counters: cases that entered ``Violated`` and final states of completed cases."""

    violations: int
    completed: dict[str, int]


def _mask(states: frozenset[int]) -> tuple[bool, ...]:
    return tuple(i in states for i in range(len(STATE_NAMES)))


#: How a Declare verdict closes at the end of a case (indexed by state number).
_CLOSE: Final = (INIT, PENDING, VIOLATED, SATISFIED, SATISFIED, VIOLATED)


class Compliance:
    """Online compliance of many cases against a set of rules.

    Parameters
    ----------
    rules
        :class:`~.model.DeclareRule` and :class:`~.model.StateMachineRule` values, with unique
        names.
    alerts
        ``"violations"`` (default): an alert when a rule enters ``Violated``; ``"changes"``:
        an alert for every state change.

    References
    ----------
    F. M. Maggi, M. Montali, M. Westergaard, W. M. P. van der Aalst. "Monitoring Business
    Constraints with Linear Temporal Logic: An Approach Based on Colored Automata." BPM 2011
    (RV-LTL verdicts for Declare). A. Bauer, M. Leucker, C. Schallhart. "Comparing LTL Semantics
    for Runtime Verification." J. Log. Comput. 2010 (RV-LTL).
    """

    def __init__(self, rules: Iterable[Rule], *, alerts: AlertMode = "violations") -> None:
        if alerts not in ("violations", "changes"):
            raise ValueError("alerts must be 'violations' or 'changes'")
        self.rules: Final[tuple[Rule, ...]] = tuple(rules)
        self.alert_mode: Final = alerts
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {', '.join(dupes)}")
        self.names: Final = tuple(names)
        kernels: list[Kernel | StateMachineKernel] = []
        #: per rule: its slots
        self._slots: list[tuple[int, ...]] = []
        #: per slot: its rule
        self._rule_of: list[int] = []
        for ri, rule in enumerate(self.rules):
            first = len(kernels)
            if isinstance(rule, DeclareRule):
                kernels.extend(declare_kernels(rule, first))
            elif isinstance(rule, StateMachineRule):
                kernels.append(StateMachineKernel(first, rule))
            else:
                raise TypeError(f"not a rule: {rule!r}")
            self._slots.append(tuple(range(first, len(kernels))))
            self._rule_of.extend([ri] * (len(kernels) - first))
        self._kernels: Final = tuple(kernels)
        #: per slot: the other slot of its rule (a conjunction), or -1
        self._partner: Final = tuple(
            next((x for x in self._slots[self._rule_of[sl]] if x != sl), -1)
            for sl in range(len(kernels))
        )
        self._machines: Final = tuple(k for k in kernels if isinstance(k, StateMachineKernel))
        for k in kernels:
            if isinstance(k, Kernel) and k.deadlines:
                k.push = self._push
        # dispatch: activity -> ((handler, slot), ...); every_event: state machines that
        # react to any event; init_watch: slots that watch a case's first event.
        table: dict[str, list[tuple[Any, int, tuple[bool, ...], bool]]] = {}
        machine_table: dict[str, list[tuple[Any, int]]] = {}
        every: list[tuple[Any, int]] = []
        init_watch: list[int] = []
        for k in kernels:
            if isinstance(k, StateMachineKernel):
                if k.every_event:
                    every.append((k.step, k.slot))
                else:
                    for a in sorted(k.activities):
                        machine_table.setdefault(a, []).append((k.step, k.slot))
                continue
            # each entry skips the verdicts in which the handler cannot change anything
            # report: a change of this slot may need an alert even when not a violation
            report = alerts == "changes" or len(self._slots[self._rule_of[k.slot]]) > 1
            if k.act_live:
                table.setdefault(k.activation, []).append(
                    (k.act, k.slot, _mask(k.act_live), report)
                )
            if k.target is not None and k.tgt_live:
                table.setdefault(k.target, []).append((k.tgt, k.slot, _mask(k.tgt_live), report))
            if k.rule.template == "init":
                init_watch.append(k.slot)
        self._table: Final = {a: tuple(h) for a, h in table.items()}
        self._machine_table: Final = {a: tuple(h) for a, h in machine_table.items()}
        self._every: Final = tuple(every)
        #: per rule: its first slot; the rules that are conjunctions of two slots
        self._first: Final = tuple(sl[0] for sl in self._slots)
        self._pairs: Final = tuple((ri, sl) for ri, sl in enumerate(self._slots) if len(sl) > 1)
        self._simple: Final = not self._pairs and not self._machines
        self._init_watch: Final = tuple(init_watch)
        self._initial_v: Final = [k.initial for k in kernels]
        self._cases: dict[str, Case] = {}
        self._heap: list[tuple[datetime, int, str, int]] = []
        self._seq = 0
        self._watermark: datetime | None = None
        self._violations = [0] * len(self.rules)
        #: per rule: completed cases per final state number
        self._final = [[0] * len(STATE_NAMES) for _ in self.rules]
        self._all_changes = alerts == "changes"

    # -- helpers -------------------------------------------------------------------------
    def _verdict_of(self, v: list[int], ri: int) -> int:
        slots = self._slots[ri]
        out = v[slots[0]]
        for s in slots[1:]:
            out = conj(out, v[s])
        return out

    def _push(self, deadline: datetime, case_id: str, slot: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, case_id, slot))

    def _new_case(self) -> Case:
        return Case(list(self._initial_v), list(self._init_watch) if self._init_watch else None)

    def _changed(
        self, c: Case, case_id: str, s: int, before: int, activity: str, ts: datetime
    ) -> Alert | None:
        """Slot ``s`` went from ``before`` to its current verdict: the rule's alert, if any."""
        new = c.v[s]
        p = self._partner[s]
        old = before
        if p >= 0:
            old, new = conj(before, c.v[p]), conj(new, c.v[p])
            if old == new:
                return None
        ri = self._rule_of[s]
        if new == VIOLATED:
            self._violations[ri] += 1
        elif not self._all_changes:
            return None
        return Alert(self.names[ri], case_id, STATE_NAMES[old], STATE_NAMES[new], activity, ts)

    # -- per event -----------------------------------------------------------------------
    def update(self, event: Event) -> tuple[Alert, ...]:
        """Apply one event; an end-of-case marker completes the case (see :meth:`close`)."""
        if event.kind:
            if event.kind == EventKind.CASE_END and event.case_id in self._cases:
                return self.close(event.case_id, event.timestamp)[1]
            return _NO_ALERTS
        ts = event.timestamp
        out: list[Alert] | None = None
        if self._watermark is None or ts > self._watermark:
            self._watermark = ts
            heap = self._heap
            if heap and heap[0][0] < ts:
                out = list(self._expire(ts))
        case_id = event.case_id
        c = self._cases.get(case_id)
        if c is None:
            c = self._cases[case_id] = self._new_case()
        v = c.v
        watch = c.watch
        if watch is not None:
            c.watch = None
            kernels = self._kernels
            for s in watch:
                before = v[s]
                kernels[s].nxt(c, event)  # type: ignore[union-attr]
                if v[s] != before and (
                    v[s] == VIOLATED or self._all_changes or self._partner[s] >= 0
                ):
                    a = self._changed(c, case_id, s, before, event.activity, ts)
                    if a is not None:
                        out = [a] if out is None else [*out, a]
        handlers = self._table.get(event.activity)
        if handlers is not None:
            for handler, s, live, report in handlers:
                before = v[s]
                if not live[before]:
                    continue
                handler(c, event)
                if v[s] != before and (report or v[s] == VIOLATED):
                    a = self._changed(c, case_id, s, before, event.activity, ts)
                    if a is not None:
                        out = [a] if out is None else [*out, a]
        if self._machine_table:
            for handler, s in self._machine_table.get(event.activity, ()):
                before = v[s]
                handler(c, event)
                if v[s] != before and (v[s] == VIOLATED or self._all_changes):
                    a = self._changed(c, case_id, s, before, event.activity, ts)
                    if a is not None:
                        out = [a] if out is None else [*out, a]
        for handler, s in self._every:
            before = v[s]
            handler(c, event)
            if v[s] != before and (v[s] == VIOLATED or self._all_changes):
                a = self._changed(c, case_id, s, before, event.activity, ts)
                if a is not None:
                    out = [a] if out is None else [*out, a]
        c.last = event
        return _NO_ALERTS if out is None else tuple(out)

    def update_many(self, events: Iterable[Event]) -> list[Alert]:
        """:meth:`update` for each event; all alerts in order."""
        out: list[Alert] = []
        for e in events:
            a = self.update(e)
            if a:
                out.extend(a)
        return out

    # -- time ----------------------------------------------------------------------------
    @property
    def watermark(self) -> datetime | None:
        """The largest event time seen or given to :meth:`advance`."""
        return self._watermark

    def advance(self, watermark: datetime) -> tuple[Alert, ...]:
        """Move event time forward (never back); deadlines before it are violated."""
        if self._watermark is not None and watermark <= self._watermark:
            return _NO_ALERTS
        self._watermark = watermark
        if not self._heap or self._heap[0][0] >= watermark:
            return _NO_ALERTS
        return self._expire(watermark)

    def _expire(self, watermark: datetime) -> tuple[Alert, ...]:
        heap = self._heap
        out: list[Alert] = []
        while heap and heap[0][0] < watermark:
            deadline, _, case_id, slot = heapq.heappop(heap)
            c = self._cases.get(case_id)
            if c is None:
                continue
            before = c.v[slot]
            self._kernels[slot].expire(c, case_id, watermark)  # type: ignore[union-attr]
            if c.v[slot] != before:
                a = self._changed(c, case_id, slot, before, "", deadline)
                if a is not None:
                    out.append(a)
        return tuple(out)

    # -- completion ----------------------------------------------------------------------
    def close(
        self, case_id: str, timestamp: datetime | None = None
    ) -> tuple[dict[str, str], tuple[Alert, ...]]:
        """Complete a case: state machines see :data:`~.model.END`, temporary verdicts of
        Declare rules become permanent, the case is forgotten. Returns the final states and
        the alerts of the changes."""
        c = self._cases.pop(case_id, None)
        if c is None:
            raise KeyError(f"unknown case {case_id!r}")
        ts = timestamp or (c.last.timestamp if c.last is not None else self._watermark)
        if ts is None:
            raise ValueError("no time for the end of a case without events; pass timestamp")
        v = c.v
        closed = [_CLOSE[x] for x in v]
        names, state_names = self.names, STATE_NAMES
        if self._simple:  # one slot per rule, no state machine: slots are rules
            final = dict(zip(names, [state_names[x] for x in closed], strict=True))
            old, new = v, closed
        else:
            if self._machines:
                for k in self._machines:
                    closed[k.slot] = v[k.slot]
                c.v = closed
                for k in self._machines:
                    k.end(c, ts)
            first = self._first
            old = [v[s] for s in first]
            new = [closed[s] for s in first]
            for ri, _ in self._pairs:
                old[ri] = self._verdict_of(v, ri)
                new[ri] = self._verdict_of(closed, ri)
            final = dict(zip(names, [state_names[x] for x in new], strict=True))
        for counts, x in zip(self._final, new, strict=True):
            counts[x] += 1
        alerts = []
        all_changes = self._all_changes
        for ri in [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]:
            n = new[ri]
            if n == VIOLATED:
                self._violations[ri] += 1
            elif not all_changes:
                continue
            alerts.append(Alert(names[ri], case_id, state_names[old[ri]], state_names[n], END, ts))
        return final, tuple(alerts)

    def complete(self, case_id: str) -> dict[str, str]:
        """:meth:`close`, returning only the final states."""
        return self.close(case_id)[0]

    def flush(self) -> dict[str, dict[str, str]]:
        """Complete every active case; final states per case."""
        return {cid: self.complete(cid) for cid in list(self._cases)}

    # -- introspection and state ---------------------------------------------------------
    def __contains__(self, case_id: object) -> bool:
        return case_id in self._cases

    def __len__(self) -> int:
        return len(self._cases)

    def active_cases(self) -> list[str]:
        """The ids of the cases not completed yet."""
        return list(self._cases)

    def states(self, case_id: str) -> dict[str, str]:
        """Each rule's current state for ``case_id`` (a new case's initial states if unknown)."""
        c = self._cases.get(case_id)
        v = c.v if c is not None else self._initial_v
        return {name: STATE_NAMES[self._verdict_of(v, i)] for i, name in enumerate(self.names)}

    def counters(self) -> dict[str, RuleCounters]:
        """Per rule: cases that entered ``Violated``, and final states of completed cases."""
        return {
            name: RuleCounters(
                self._violations[i],
                {STATE_NAMES[s]: n for s, n in enumerate(self._final[i]) if n},
            )
            for i, name in enumerate(self.names)
        }

    def snapshot(self, case_id: str) -> CaseSnapshot:
        """The frozen state of an active case."""
        c = self._cases[case_id]
        return CaseSnapshot(
            case_id,
            tuple(c.v),
            tuple(k.snapshot_data(d) for k, d in zip(self._kernels, c.d, strict=True)),
            c.last,
            tuple(c.watch) if c.watch is not None else None,
        )

    def restore(self, snap: CaseSnapshot) -> None:
        """Rebuild a case from :meth:`snapshot` (replacing any state it has here).

        Deadlines of the case's open activations are registered again.
        """
        if len(snap.verdicts) != len(self._kernels):
            raise ValueError("the snapshot was taken with other rules")
        c = Case(list(snap.verdicts), list(snap.watch) if snap.watch is not None else None)
        c.d = [k.restore_data(d) for k, d in zip(self._kernels, snap.data, strict=True)]
        c.last = snap.last
        self._cases[snap.case_id] = c
        for k in self._kernels:
            if isinstance(k, Kernel) and k.deadlines and k.within is not None:
                d = c.d[k.slot]
                recs = d if isinstance(d, list) else [d] if isinstance(d, tuple) else []
                for rec in recs:
                    if isinstance(rec, tuple) and rec and isinstance(rec[0], datetime):
                        self._push(rec[0] + k.within, snap.case_id, k.slot)
