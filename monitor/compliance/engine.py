"""The incremental compliance evaluator: one event in, the rule state changes out.

Rules are compiled once into a dispatch table from activity to handlers, so an event touches
only the rules that mention its activity (plus the few that asked to see the next event, and
state machines that react to every event). Per case the evaluator keeps one byte per kernel
slot (a state, or a temporary state with a phase: see :mod:`.kernels`), a small data value
for the kernels that need more, and the case's previous event. Each dispatch entry holds, per
code, the next code (a verdict map, applied in the loop after the entry's condition), "skip"
(the event cannot change that verdict) or "call the handler"; nothing is allocated per event
unless an alert is raised. Completing a case closes every verdict with one
``bytearray.translate``, picks the rules to report with ``itertools.compress`` and counts
final states per rule in byte lanes of big integers (:class:`_FinalCounts`), so its cost grows
little with the number of rules beyond the alerts it raises and the final states it returns.

Time windows register deadlines in one heap ordered by time; :meth:`Compliance.advance` (and
every event, whose time moves the watermark) pops the deadlines that passed, so "within 1 hour"
becomes ``Violated`` when the hour is over even if the case sends nothing more.

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
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import compress
from operator import getitem
from typing import Any, Final, Literal

from ..event import Event, EventKind
from .kernels import (
    N_CODES,
    PUBLIC,
    Case,
    Check,
    Kernel,
    StateMachineKernel,
    VerdictMap,
    conj,
    declare_kernels,
)
from .model import (
    END,
    INIT,
    PENDING,
    SATISFIED,
    STATE_NAMES,
    TEMP_SATISFIED,
    TEMP_VIOLATED,
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


#: ``step[code]`` in a dispatch entry: skip the entry, or call its handler (else: the new code)
_SKIP: Final = -1
_CALL: Final = -2
#: One dispatch entry: slot, step per code (new code, _SKIP or _CALL), handler, condition
#: (checked before a new code is taken; a called handler checks its own), whether every
#: change of the slot goes through the alert logic (else only a violation does).
_Entry = tuple[int, tuple[int, ...], Any, "Check | None", bool]


def _entry(
    slot: int,
    live: frozenset[int],
    vmap: VerdictMap | None,
    handler: Any,
    cond: Check | None,
    report: bool,
) -> _Entry:
    if vmap is None:
        step = tuple(_CALL if x in live else _SKIP for x in range(N_CODES))
        return (slot, step, handler, None, report)
    if any(vmap[x] in (-1, x) for x in live):
        raise AssertionError(f"slot {slot}: a verdict map must change every live verdict")
    step = tuple(vmap[x] if x in live else _SKIP for x in range(N_CODES))
    return (slot, step, handler, cond, report)


#: How a Declare verdict closes at the end of a case, per code, as a ``bytes.translate``
#: table: its state, closed (TemporarySatisfied -> Satisfied, TemporaryViolated -> Violated).
_CLOSE: Final = PUBLIC.translate(
    bytes((INIT, PENDING, VIOLATED, SATISFIED, SATISFIED, VIOLATED, *range(6, 256)))
)
#: RV-LTL conjunction of the states of two codes, as a table (``conj`` of their states;
#: Declare verdicts are never ``Pending``).
_CONJ: Final = tuple(
    tuple(
        PUBLIC[a] if PENDING in (PUBLIC[a], PUBLIC[b]) else conj(PUBLIC[a], PUBLIC[b])
        for b in range(N_CODES)
    )
    for a in range(N_CODES)
)
_V: Final = STATE_NAMES[VIOLATED]
#: the name of the state of each code
_NAME_OF_CODE: Final = tuple(STATE_NAMES[PUBLIC[x]] for x in range(N_CODES))
_TV: Final = STATE_NAMES[TEMP_VIOLATED]


def _getter(slots: tuple[int, ...]) -> Callable[[bytes | bytearray], tuple[int, ...]]:
    """``lambda v: tuple(v[s] for s in slots)``, in C."""
    if len(slots) == 1:
        (only,) = slots
        return lambda v: (v[only],)
    return operator.itemgetter(*slots)


#: ``_alert(Alert, fields)`` builds an alert without the NamedTuple's Python-level ``__new__``
_alert: Final = tuple.__new__


class _FinalCounts:
    """Completed cases per rule and final state, cheap per case whatever the rule count.

    Each case's final verdicts (one byte per rule) are added to one big integer per state,
    a byte per rule (``verdicts.translate`` marks the rules in that state; ``int.from_bytes``
    turns the marks into a number; one addition counts them all). Every 255 cases, before a
    byte could overflow, the integers are folded into plain per-rule counts.
    """

    __slots__ = ("_lanes", "_n", "_pending", "_totals")

    _ONE_HOT: Final = tuple(bytes(int(i == x) for i in range(256)) for x in range(6))

    def __init__(self, n_rules: int) -> None:
        self._n = n_rules
        self._totals = [[0] * len(STATE_NAMES) for _ in range(n_rules)]
        self._lanes = [0] * len(STATE_NAMES)
        self._pending = 0

    def add(self, verdicts: bytes | bytearray) -> None:
        lanes, one_hot = self._lanes, self._ONE_HOT
        for x in range(len(STATE_NAMES)):
            if x in verdicts:
                lanes[x] += int.from_bytes(verdicts.translate(one_hot[x]), "big")
        self._pending += 1
        if self._pending == 255:
            self._fold()

    def _fold(self) -> None:
        for x, lane in enumerate(self._lanes):
            if lane:
                for counts, k in zip(self._totals, lane.to_bytes(self._n, "big"), strict=True):
                    counts[x] += k
                self._lanes[x] = 0
        self._pending = 0

    def totals(self) -> list[list[int]]:
        """Per rule, completed cases per state number."""
        self._fold()
        return self._totals


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
        # dispatch: activity -> entries (see _Entry), in rule order. A handler that only moves
        # the verdict is applied as its map, after its condition, without a call; the others
        # are called (and check their own condition). Each entry skips the codes in which its
        # handler cannot change anything. every_event: state machines that react to any
        # event; init_watch: slots that watch a case's first event.
        table: dict[str, list[_Entry]] = {}
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
            act_map, tgt_map = k.maps()
            report = alerts == "changes" or self._partner[k.slot] >= 0
            # a handler the kernel does not define does nothing: no entry
            if k.act_live and (act_map is not None or type(k).act is not Kernel.act):
                table.setdefault(k.activation, []).append(
                    _entry(k.slot, k.act_live, act_map, k.act, k.acond, report)
                )
            if (
                k.target is not None
                and k.tgt_live
                and (tgt_map is not None or type(k).tgt is not Kernel.tgt)
            ):
                table.setdefault(k.target, []).append(
                    _entry(k.slot, k.tgt_live, tgt_map, k.tgt, k.tcond, report)
                )
            if k.rule.template == "init":
                init_watch.append(k.slot)
        self._table: Final = {a: tuple(h) for a, h in table.items()}
        self._machine_table: Final = {a: tuple(h) for a, h in machine_table.items()}
        self._every: Final = tuple(every)
        #: per rule: its first slot; the rules that are conjunctions of two slots
        self._first: Final = tuple(sl[0] for sl in self._slots)
        #: the codes of the rules' first slots, as a tuple (in C)
        self._get_first: Final = _getter(self._first)
        self._pairs: Final = tuple((ri, sl) for ri, sl in enumerate(self._slots) if len(sl) > 1)
        self._simple: Final = not self._pairs and not self._machines
        self._init_watch: Final = tuple(init_watch)
        self._initial_v: Final = bytes(k.initial for k in kernels)
        #: rules whose final state is not the closing of their verdict (state machines)
        self._machine_rules: Final = tuple(self._rule_of[k.slot] for k in self._machines)
        self._is_machine: Final = bytes(isinstance(r, StateMachineRule) for r in self.rules)
        self._violations = [0] * len(self.rules)
        #: closing: per rule and state number, the final-state entry ``(name, state name)``;
        #: the rules a closing may report (1 per code: TemporaryViolated, with every change
        #: reported TemporarySatisfied too), as a ``bytes.translate`` table
        self._final_items: Final = tuple(
            tuple((name, state) for state in STATE_NAMES) for name in self.names
        )
        reported = (TEMP_VIOLATED, TEMP_SATISFIED) if alerts == "changes" else (TEMP_VIOLATED,)
        self._closing: Final = bytes(int(x in reported) for x in range(256))
        self._rule_range: Final = range(len(self.rules))
        #: what the per-event loop reads, bound to locals in one step
        self._hot: Final = (
            self._partner,
            self._rule_of,
            self.names,
            _CONJ,
            alerts == "changes",
            PUBLIC,
            self._violations,
        )
        self._cases: dict[str, Case] = {}
        self._heap: list[tuple[datetime, int, str, int]] = []
        self._seq = 0
        self._watermark: datetime | None = None
        #: per rule: completed cases per final state number
        self._final = _FinalCounts(len(self.rules))
        self._all_changes = alerts == "changes"

    # -- helpers -------------------------------------------------------------------------
    def _verdict_of(self, v: bytes | bytearray, ri: int) -> int:
        slots = self._slots[ri]
        out = PUBLIC[v[slots[0]]]
        for s in slots[1:]:
            out = _CONJ[out][v[s]]
        return out

    def _push(self, deadline: datetime, case_id: str, slot: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, case_id, slot))

    def _new_case(self) -> Case:
        return Case(
            bytearray(self._initial_v), list(self._init_watch) if self._init_watch else None
        )

    def _changed(
        self, c: Case, case_id: str, s: int, before: int, activity: str, ts: datetime
    ) -> Alert | None:
        """Slot ``s`` went from ``before`` to its current verdict: the rule's alert, if any."""
        new = PUBLIC[c.v[s]]
        p = self._partner[s]
        old = PUBLIC[before]
        if p >= 0:
            old, new = _CONJ[before][c.v[p]], _CONJ[new][c.v[p]]
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
        wm = self._watermark
        if wm is None or ts > wm:
            self._watermark = ts
            heap = self._heap
            if heap and heap[0][0] < ts:
                out = list(self._expire(ts))
        case_id = event.case_id
        c = self._cases.get(case_id)
        if c is None:
            c = self._cases[case_id] = self._new_case()
        v = c.v
        activity = event.activity
        if c.watch is not None:
            watch = c.watch
            c.watch = None
            kernels = self._kernels
            for s in watch:
                before = v[s]
                kernels[s].nxt(c, event)  # type: ignore[union-attr]
                if v[s] != before and (
                    v[s] == VIOLATED or self._all_changes or self._partner[s] >= 0
                ):
                    a = self._changed(c, case_id, s, before, activity, ts)
                    if a is not None:
                        out = [a] if out is None else [*out, a]
        entries = self._table.get(activity)
        if entries is not None:
            partner, rule_of, names, conj_table, all_changes, public, violations = self._hot
            for s, step, handler, cond, report in entries:
                x = v[s]
                y = step[x]
                if y >= 0:  # a verdict map: the new code, if the event meets the condition
                    if cond is not None and not cond(event):
                        continue
                    v[s] = y
                elif y == _SKIP:
                    continue
                else:  # _CALL
                    handler(c, event)
                    y = v[s]
                    if y == x:
                        continue
                if report:  # a conjunction's slot, or every change reported
                    p = partner[s]
                    if p >= 0:
                        x, y = conj_table[x][v[p]], conj_table[y][v[p]]
                    else:
                        x, y = public[x], public[y]
                    if x == y:  # a phase moved, the state did not
                        continue
                    if y == VIOLATED:
                        violations[rule_of[s]] += 1
                    elif not all_changes:
                        continue
                    states = STATE_NAMES[x], STATE_NAMES[y]
                    a = _alert(Alert, (names[rule_of[s]], case_id, *states, activity, ts))
                elif y == VIOLATED:
                    ri = rule_of[s]
                    violations[ri] += 1
                    a = _alert(Alert, (names[ri], case_id, _NAME_OF_CODE[x], _V, activity, ts))
                else:
                    continue
                if out is None:
                    out = [a]
                else:
                    out.append(a)
        if self._machines:
            out = self._step_machines(c, event, out)
        c.last = event
        return _NO_ALERTS if out is None else tuple(out)

    def _step_machines(self, c: Case, event: Event, out: list[Alert] | None) -> list[Alert] | None:
        """The state machines that see ``event`` (by its activity, or every event)."""
        v, activity, case_id, ts = c.v, event.activity, event.case_id, event.timestamp
        for handler, s in (*self._machine_table.get(activity, ()), *self._every):
            before = v[s]
            handler(c, event)
            if v[s] != before and (v[s] == VIOLATED or self._all_changes):
                a = self._changed(c, case_id, s, before, activity, ts)
                if a is not None:
                    out = [a] if out is None else [*out, a]
        return out

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
        closed = v.translate(_CLOSE)
        names = self.names
        if self._simple:  # one slot per rule, no state machine: slots are rules
            old, new = v.translate(PUBLIC), closed
        else:
            if self._machines:
                for k in self._machines:
                    closed[k.slot] = v[k.slot]
                c.v = closed
                for k in self._machines:
                    k.end(c, ts)
            old = bytearray(self._get_first(v)).translate(PUBLIC)
            new = bytearray(self._get_first(closed))
            conj_table = _CONJ
            for ri, (s1, s2) in self._pairs:
                old[ri] = conj_table[v[s1]][v[s2]]
                new[ri] = conj_table[closed[s1]][closed[s2]]
        final = dict(map(getitem, self._final_items, new))
        self._final.add(new)
        # Declare rules close TemporaryViolated -> Violated and TemporarySatisfied ->
        # Satisfied (a conjunction too); state machines move as their END transitions say
        changed = list(compress(self._rule_range, old.translate(self._closing)))
        if self._machines:
            is_machine = self._is_machine
            changed = [ri for ri in changed if not is_machine[ri]]
            changed += [ri for ri in self._machine_rules if old[ri] != new[ri]]
        if not changed:
            return final, _NO_ALERTS
        violations = self._violations
        if not self._all_changes and not self._machines:  # all TemporaryViolated -> Violated
            for ri in changed:
                violations[ri] += 1
            return final, tuple(
                [_alert(Alert, (names[ri], case_id, _TV, _V, END, ts)) for ri in changed]
            )
        changed.sort()  # the state machines' changes come last
        alerts = []
        for ri in changed:
            n = new[ri]
            if n == VIOLATED:
                violations[ri] += 1
            elif not self._all_changes:
                continue
            alerts.append(
                _alert(Alert, (names[ri], case_id, STATE_NAMES[old[ri]], STATE_NAMES[n], END, ts))
            )
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
        finals = self._final.totals()
        return {
            name: RuleCounters(
                self._violations[i],
                {STATE_NAMES[s]: n for s, n in enumerate(finals[i]) if n},
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
        c = Case(bytearray(snap.verdicts), list(snap.watch) if snap.watch is not None else None)
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
