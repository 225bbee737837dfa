"""The :class:`Vault`: the object every transport hosts. Events in, findings and results out.

Per event the vault replays the case against the model (:class:`~.tbr.TokenReplay`) and returns
an :class:`Update`: the deviations the event revealed (an activity that was not enabled, an
activity the model does not know, an event for a case that already completed) and the results
of any cases that completed. A case completes

* on an end-of-case marker event (``EventKind.CASE_END``), at the marker's time,
* on reaching exactly the final marking, if ``complete_on_final_marking`` is set, at that
  event's time,
* after ``idle_timeout`` without an event of its own: a case whose last event was at ``t``
  completes at ``t + idle_timeout`` when no event of its own comes before that time. The rule
  depends on the case alone: it completes when time (the largest event time seen, or a time
  given to :meth:`Vault.tick`) reaches ``t + idle_timeout``, or when its own next event is
  that late (that event then finds it completed: ``after_completion``), whichever comes first,
  so other cases' events never decide whether it completes,
* or when the caller flushes it (:meth:`Vault.flush`).

Each :class:`CaseResult` carries ``completed_at``, the time the case itself set for its
completion (the marker's, the event's, ``t + idle_timeout``; for a flush ``t + idle_timeout``
with an idle timeout, else ``None``): the DP release files the completion there, never under
another case's time.

A completed case is finalised exactly as pm4py's offline token replay finishes a trace and is
then forgotten, except for its id: memory holds the active cases, the bounded step cache and
the ids of the completed cases (so that a later event is reported as ``after_completion``
instead of silently starting a new case with the same id; ``remember_completed`` bounds them
when set).

Examples
--------
>>> from datetime import datetime, timedelta, UTC
>>> from pm4py.objects.petri_net.obj import PetriNet, Marking
>>> from pm4py.objects.petri_net.utils.petri_utils import add_arc_from_to
>>> from procvault.monitor.event import Event
>>> from procvault.monitor.petri import compile_net
>>> net = PetriNet("seq")
>>> p = [PetriNet.Place(f"p{i}") for i in range(3)]
>>> t = [PetriNet.Transition(x, x) for x in "AB"]
>>> for x in p: net.places.add(x)
>>> for x in t: net.transitions.add(x)
>>> for x, y in ((p[0], t[0]), (t[0], p[1]), (p[1], t[1]), (t[1], p[2])):
...     _ = add_arc_from_to(x, y, net)
>>> vault = Vault(compile_net(net, Marking({p[0]: 1}), Marking({p[2]: 1})))
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> vault.update(Event.create("c1", "B", t0)).deviations[0].missing_places
('p1',)
>>> up = vault.update(Event.case_end("c1", t0))
>>> r = up.completed[0]; (r.case_id, r.missing, r.remaining, r.is_fit, r.completed_by)
('c1', 1, 1, False, 'end_marker')
>>> vault.update(Event.create("c1", "A", t0)).deviations[0].kind
'after_completion'
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, NamedTuple

from .alignments import PrefixAlignments
from .compliance import Alert, Compliance
from .compliance.engine import CaseSnapshot as RuleSnapshot
from .event import Event, EventKind
from .petri import CompiledNet
from .tbr import UNKNOWN, CaseSnapshot, Outcome, TokenReplay

__all__ = [
    "CaseResult",
    "CaseState",
    "Deviation",
    "Update",
    "Vault",
    "VaultSettings",
    "VaultState",
]

CompletedBy = Literal["end_marker", "final_marking", "idle", "flush"]
DeviationKind = Literal["missing_tokens", "unknown_activity", "after_completion"]


class Deviation(NamedTuple):
    """A deviation found by one event, when it happens.

    Attributes
    ----------
    case_id, activity, timestamp
        The event that revealed it.
    kind
        ``"missing_tokens"``: the activity was not enabled (``missing_places`` lacked tokens);
        ``"unknown_activity"``: no transition of the model carries it (the marking is unchanged);
        ``"after_completion"``: the case had already completed (the event is not applied).
    transition
        The transition fired, if any.
    missing_places
        The places that lacked a token.
    """

    case_id: str
    activity: str
    timestamp: datetime
    kind: DeviationKind
    transition: str | None = None
    missing_places: tuple[str, ...] = ()


class CaseResult(NamedTuple):
    """The final result of a completed case: pm4py's token-replay diagnostics, rule states.

    ``events`` counts the case's activity events, including unknown ones
    (``unknown_activities``), which the replay skips as pm4py does. ``rules`` holds each
    compliance rule's final state (``None`` without rules); ``conformance`` is False when the
    vault has no model (the token counts are then zero and not reported by :meth:`to_dict`).
    """

    case_id: str
    events: int
    produced: int
    consumed: int
    missing: int
    remaining: int
    fitness: float
    is_fit: bool
    unknown_activities: int
    completed_by: CompletedBy
    alignment_cost: int | None = None
    rules: dict[str, str] | None = None
    conformance: bool = True
    #: When the case completed by its own time (see the module docstring); ``None``: by a flush
    #: without an idle timeout.
    completed_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``case`` for the case id)."""
        out: dict[str, Any] = {"case": self.case_id, "events": self.events}
        if self.conformance:
            out.update(
                produced=self.produced,
                consumed=self.consumed,
                missing=self.missing,
                remaining=self.remaining,
                fitness=self.fitness,
                is_fit=self.is_fit,
                unknown_activities=self.unknown_activities,
            )
        out["completed_by"] = self.completed_by
        if self.alignment_cost is not None:
            out["alignment_cost"] = self.alignment_cost
        if self.rules is not None:
            out["rules"] = self.rules
        return out


class Update(NamedTuple):
    """What one call changed: deviations found, cases completed, rule alerts (usually empty).

    Records are immutable named tuples: cheap to build on the per-event path.
    """

    deviations: tuple[Deviation, ...] = ()
    completed: tuple[CaseResult, ...] = ()
    alerts: tuple[Alert, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.deviations or self.completed or self.alerts)


NOTHING: Final = Update()


@dataclass(frozen=True, slots=True)
class VaultSettings:
    """How the vault decides that a case is complete, and how much it may remember.

    Parameters
    ----------
    complete_on_final_marking
        Complete a case as soon as its marking equals the final marking. Off by default:
        real processes often continue after the model's end (Sepsis: "Return ER").
    idle_timeout
        Complete a case after this much event time without events (``None``: never).
    remember_completed
        How many completed case ids to remember for reporting late events (``None``, the
        default: all of them; a later event of a forgotten case would start a new case).
    cache_size
        Markings kept in the replay step cache.
    """

    complete_on_final_marking: bool = False
    idle_timeout: timedelta | None = None
    remember_completed: int | None = None
    cache_size: int = 100_000

    def __post_init__(self) -> None:
        if self.idle_timeout is not None and self.idle_timeout <= timedelta(0):
            raise ValueError(f"idle_timeout must be positive, got {self.idle_timeout}")
        if self.remember_completed is not None and self.remember_completed < 0:
            raise ValueError("remember_completed must be >= 0")
        if self.cache_size < 1:
            raise ValueError("cache_size must be >= 1")


@dataclass(frozen=True, slots=True)
class VaultState:
    """The size of the vault's state."""

    active_cases: int
    cached_markings: int
    remembered_completed: int
    watermark: datetime | None


@dataclass(frozen=True, slots=True)
class CaseState:
    """One active case's whole state in a vault: enough to rebuild it elsewhere
    (:meth:`Vault.snapshot_case`, :meth:`Vault.restore_case`), for instance in another process
    after a crash. Alignments are not included: a vault with prefix alignments cannot move cases.
    """

    case_id: str
    replay: CaseSnapshot | None
    rules: RuleSnapshot | None
    events: int
    last_seen: datetime | None


class Vault:
    """Online conformance and compliance of many cases; see the module docstring.

    Parameters
    ----------
    net
        The compiled model (``None``: rules only).
    settings
        Completion and memory settings.
    compliance
        A :class:`~.compliance.Compliance` evaluator (``None``: conformance only). Its alerts
        come back in :attr:`Update.alerts`, each completed case's final rule states in
        :attr:`CaseResult.rules`.
    alignments
        A :class:`~.alignments.PrefixAlignments` engine on the same net (``None``: token replay
        only). Each activity event also extends the case's prefix alignment; a completed case
        carries the optimal alignment cost in :attr:`CaseResult.alignment_cost`.
    """

    def __init__(
        self,
        net: CompiledNet | None = None,
        settings: VaultSettings | None = None,
        *,
        compliance: Compliance | None = None,
        alignments: PrefixAlignments | None = None,
    ) -> None:
        if net is None and compliance is None:
            raise ValueError("a vault needs a model, compliance rules, or both")
        if alignments is not None and alignments.net is not net:
            raise ValueError("the alignment engine must be built on the vault's net")
        self.settings: Final = settings or VaultSettings()
        self.net: Final = net
        self.compliance: Final = compliance
        self._tbr = (
            TokenReplay(net, cache_size=self.settings.cache_size) if net is not None else None
        )
        if self._tbr is not None:
            self._replay = self._tbr.update
        # rules only: events per active case (the replay counts them otherwise)
        self._counts: dict[str, int] = {}
        if compliance is not None:
            # The conformance-only path (update) stays exactly as lean as it was.
            self.update = self._update_with_rules  # type: ignore[method-assign]
        self._aligner = alignments
        if alignments is not None:
            self._base_update = self.update
            self.update = self._update_aligned  # type: ignore[method-assign]
        self._idle: Final = self.settings.idle_timeout
        # True when every event needs more than the replay step (completion checks).
        self._per_event_checks = (
            self.settings.complete_on_final_marking or self.settings.idle_timeout is not None
        )
        self._done: set[str] = set()
        self._done_order: deque[str] = deque()
        self._watermark: datetime | None = None
        # idle tracking (only with idle_timeout): last event time per case, and (time, case)
        # in arrival order; stale entries are skipped when they reach the front.
        self._last_seen: dict[str, datetime] = {}
        self._arrivals: deque[tuple[datetime, str]] = deque()
        self._unsorted = False  # restored cases left the arrivals out of time order

    # -- per event ----------------------------------------------------------------------
    def update(self, event: Event) -> Update:
        """Apply one event (or marker) and return what it revealed."""
        if self._idle is not None:
            pre = self._catch_up(event.timestamp)
            if pre:
                return _joined(pre, self._update(event))
        return self._update(event)

    def _update(self, event: Event) -> Update:
        """:meth:`update` without the catch-up of idle cases (conformance only)."""
        case_id = event.case_id
        if event.kind:  # a marker or a placeholder (EventKind.ACTIVITY is 0)
            # (a vault without a model never gets here: it uses _update_with_rules)
            if event.kind != EventKind.CASE_END:
                return NOTHING
            if case_id not in self._tbr:  # type: ignore[operator]
                self.mark_completed(case_id)  # nothing shared so far: it ends all the same
                return NOTHING
            return Update((), (self._complete(case_id, "end_marker", at=event.timestamp),))
        if case_id in self._done:
            return Update(
                (Deviation(case_id, event.activity, event.timestamp, "after_completion"),)
            )
        outcome = self._replay(case_id, event.activity)
        if outcome.deviates or self._per_event_checks:
            return self._after(event, outcome)
        return NOTHING

    def _update_aligned(self, event: Event) -> Update:
        """:meth:`update` when the vault also keeps prefix alignments (fed first, so a case
        completed by this very event has seen it)."""
        pre = self._catch_up(event.timestamp) if self._idle is not None else NOTHING
        if not event.kind and event.case_id not in self._done:
            self._aligner.update(event.case_id, event.activity)  # type: ignore[union-attr]
        up = self._base_update(event)
        return _joined(pre, up) if pre else up

    def _update_with_rules(self, event: Event) -> Update:
        """:meth:`update` when the vault also checks compliance rules."""
        if self._idle is not None:
            pre = self._catch_up(event.timestamp)
            if pre:
                return _joined(pre, self._update_rules(event))
        return self._update_rules(event)

    def _update_rules(self, event: Event) -> Update:  # noqa: PLR0911 - flat exits
        case_id = event.case_id
        if event.kind:
            if event.kind != EventKind.CASE_END:
                return NOTHING
            if not self.is_active(case_id):
                self.mark_completed(case_id)  # nothing shared so far: it ends all the same
                return NOTHING
            alerts: list[Alert] = []
            done = self._complete(
                case_id, "end_marker", alerts, event.timestamp, at=event.timestamp
            )
            return Update((), (done,), tuple(alerts))
        if case_id in self._done:
            return Update(
                (Deviation(case_id, event.activity, event.timestamp, "after_completion"),)
            )
        assert self.compliance is not None
        found = self.compliance.update(event)
        if self._tbr is not None:
            outcome = self._replay(case_id, event.activity)
        else:
            self._counts[case_id] = self._counts.get(case_id, 0) + 1
            outcome = _NO_MODEL
        if outcome.deviates or self._per_event_checks:
            up = self._after(event, outcome)
            if found:
                return Update(up.deviations, up.completed, found + up.alerts)
            return up
        if found:
            return Update((), (), found)
        return NOTHING

    def _after(self, event: Event, outcome: Outcome) -> Update:
        """The rarer part of :meth:`update`: deviations and completion checks."""
        case_id = event.case_id
        deviations: tuple[Deviation, ...] = ()
        if outcome.deviates:
            deviations = (self._deviation(event, outcome),)
        completed: tuple[CaseResult, ...] = ()
        alerts: list[Alert] = []
        if (
            self.settings.complete_on_final_marking
            and self._tbr is not None
            and self._tbr.in_final_marking(case_id)
        ):
            completed = (self._complete(case_id, "final_marking", alerts, at=event.timestamp),)
        if self._idle is not None and not completed:
            self._last_seen[case_id] = event.timestamp
            self._arrivals.append((event.timestamp, case_id))
        if deviations or completed or alerts:
            return Update(deviations, completed, tuple(alerts))
        return NOTHING

    @staticmethod
    def _deviation(event: Event, outcome: Outcome) -> Deviation:
        if outcome is UNKNOWN:
            return Deviation(event.case_id, event.activity, event.timestamp, "unknown_activity")
        return Deviation(
            event.case_id,
            event.activity,
            event.timestamp,
            "missing_tokens",
            outcome.transition,
            outcome.missing_places,
        )

    def update_many(self, events: Iterable[Event]) -> list[Update]:
        """:meth:`update` for each event; only the non-empty updates are returned."""
        update = self.update
        return [u for u in map(update, events) if u]

    # -- time and completion ------------------------------------------------------------
    def catch_up(self, ts: datetime) -> Update:
        """Complete the cases idle by ``ts`` (what :meth:`update` does first for an event at
        ``ts``), so that a caller can ask :meth:`is_completed` of the event's own case before
        applying it: a case whose own next event comes after its idle deadline is completed by
        then, whether or not another case's event came between.

        >>> from datetime import datetime, timedelta, UTC
        >>> from procvault.monitor.compliance import Compliance, DeclareRule
        >>> from procvault.monitor.event import Event
        >>> v = Vault(settings=VaultSettings(idle_timeout=timedelta(minutes=15)),
        ...           compliance=Compliance([DeclareRule("has_b", "existence", "B")]))
        >>> t = datetime(2024, 1, 1, tzinfo=UTC)
        >>> _ = v.update(Event.create("c", "A", t))
        >>> [r.case_id for r in v.catch_up(t + timedelta(minutes=16)).completed]
        ['c']
        >>> v.is_completed("c")
        True
        """
        return self._catch_up(ts) if self._idle is not None else NOTHING

    def advance(self, watermark: datetime) -> tuple[CaseResult, ...]:
        """Move event time forward (never back) and complete the cases idle for too long.

        With compliance rules, use :meth:`tick`, which also returns the deadline alerts.
        """
        return self.tick(watermark).completed

    def tick(self, watermark: datetime) -> Update:
        """Move event time forward: idle cases complete and rule deadlines pass, in time order
        (a deadline before a case's idle completion still counts against it)."""
        up = self._catch_up(watermark) if self._idle is not None else NOTHING
        if self._watermark is None or watermark > self._watermark:
            self._watermark = watermark
        if self.compliance is not None:
            late = self.compliance.advance(watermark)
            if late:
                return Update((), up.completed, up.alerts + late)
        return up

    def _catch_up(self, ts: datetime) -> Update:
        """Complete, in time order, every case that went idle by ``ts``; the rule deadlines
        before each completion pass first. The same whenever it runs, as long as it runs
        before anything later than ``ts`` is applied: so results never depend on when the
        caller ticks, or on other cases' events."""
        if self._watermark is None or ts > self._watermark:
            self._watermark = ts
        arrivals = self._arrivals
        if not arrivals:
            return NOTHING
        if self._unsorted:
            arrivals = self._arrivals = deque(sorted(arrivals))
            self._unsorted = False
        idle = self._idle
        assert idle is not None
        cutoff = self._watermark - idle
        if arrivals[0][0] > cutoff:
            return NOTHING
        due = []
        picked: set[str] = set()  # (a case with two events at its last time arrived twice)
        while arrivals and arrivals[0][0] <= cutoff:
            seen, case_id = arrivals.popleft()
            if (
                case_id not in picked
                and self._last_seen.get(case_id) == seen
                and self.is_active(case_id)
            ):
                picked.add(case_id)
                due.append((seen, case_id))
        if not due:
            return NOTHING
        due.sort()  # in time order, ties by case id (however the cases got here)
        alerts: list[Alert] = []
        cc = self.compliance
        done = []
        for seen, case_id in due:
            if cc is not None:
                alerts.extend(cc.advance(seen + idle))
            done.append(self._complete(case_id, "idle", alerts))
        return Update((), tuple(done), tuple(alerts))

    def flush(self) -> tuple[CaseResult, ...]:
        """Complete every active case now (end of a finite stream)."""
        return tuple(self._complete(c, "flush") for c in self._active_cases())

    def flush_update(self) -> Update:
        """:meth:`flush`, with the alerts that closing the cases' rules raised."""
        alerts: list[Alert] = []
        done = tuple(self._complete(c, "flush", alerts) for c in self._active_cases())
        return Update((), done, tuple(alerts))

    def _active_cases(self) -> list[str]:
        """The active cases, sorted (a flush finishes them in the same order however the
        vault got here)."""
        if self._tbr is not None:
            return sorted(self._tbr.active_cases())
        return sorted(self._counts)

    def _complete(
        self,
        case_id: str,
        by: CompletedBy,
        alerts: list[Alert] | None = None,
        end_time: datetime | None = None,
        *,
        at: datetime | None = None,
    ) -> CaseResult:
        """Finalise a case; ``at``: its completion time for a marker or the final marking
        (idle and flush completions take the case's last event plus the idle timeout)."""
        rules: dict[str, str] | None = None
        cc = self.compliance
        if cc is not None:
            if case_id in cc:
                rules, closing = cc.close(case_id, end_time)
                if alerts is not None:
                    alerts.extend(closing)
            else:
                rules = cc.states(case_id)
        seen = self._last_seen.pop(case_id, None)
        if by in ("idle", "flush") and seen is not None and self._idle is not None:
            at = seen + self._idle
        self._remember(case_id)
        tbr = self._tbr
        if tbr is None:
            return CaseResult(
                case_id,
                self._counts.pop(case_id, 0),
                0,
                0,
                0,
                0,
                1.0,
                True,
                0,
                by,
                rules=rules,
                conformance=False,
                completed_at=at,
            )
        events, unknown = tbr.events_of(case_id), tbr.unknown_of(case_id)
        c = tbr.complete(case_id)
        cost = None
        aligner = self._aligner
        if aligner is not None and case_id in aligner:
            cost = aligner.complete(case_id).cost
        return CaseResult(
            case_id,
            events,
            c.produced,
            c.consumed,
            c.missing,
            c.remaining,
            c.fitness,
            c.is_fit,
            unknown,
            by,
            alignment_cost=cost,
            rules=rules,
            completed_at=at,
        )

    def _remember(self, case_id: str) -> None:
        keep = self.settings.remember_completed
        if keep is None:
            self._done.add(case_id)
        elif keep and case_id not in self._done:
            self._done.add(case_id)
            self._done_order.append(case_id)
            if len(self._done_order) > keep:
                self._done.discard(self._done_order.popleft())

    # -- moving cases -------------------------------------------------------------------
    def snapshot_case(self, case_id: str) -> CaseState:
        """The state of an active case (``KeyError`` if it is not active).

        >>> from datetime import datetime, UTC
        >>> from procvault.monitor.compliance import Compliance, DeclareRule
        >>> rules = [DeclareRule("has_a", "existence", "A")]
        >>> v = Vault(compliance=Compliance(rules))
        >>> _ = v.update(Event.create("c", "B", datetime(2024, 1, 1, tzinfo=UTC)))
        >>> state = v.snapshot_case("c")
        >>> w = Vault(compliance=Compliance(rules))
        >>> w.restore_case(state)
        >>> r = w.flush()[0]; r.events, r.rules
        (1, {'has_a': 'Violated'})
        """
        if not self.is_active(case_id):
            raise KeyError(f"case {case_id!r} is not active")
        if self._aligner is not None:
            raise ValueError("a vault with prefix alignments cannot snapshot cases")
        tbr, cc = self._tbr, self.compliance
        return CaseState(
            case_id,
            tbr.snapshot(case_id) if tbr is not None else None,
            cc.snapshot(case_id) if cc is not None and case_id in cc else None,
            self._counts.get(case_id, 0),
            self._last_seen.get(case_id),
        )

    def restore_case(self, state: CaseState) -> None:
        """Rebuild a case from :meth:`snapshot_case` (replacing any state it has here)."""
        if self._aligner is not None:
            raise ValueError("a vault with prefix alignments cannot restore cases")
        case_id = state.case_id
        if (state.replay is None) != (self._tbr is None):
            raise ValueError("the case state was taken by a vault with another model setting")
        if self._tbr is not None and state.replay is not None:
            self._tbr.restore(case_id, state.replay)
        else:
            self._counts[case_id] = state.events
        if state.rules is not None:
            if self.compliance is None:
                raise ValueError("the case state has rule states but this vault has no rules")
            self.compliance.restore(state.rules)
        self._done.discard(case_id)
        if state.last_seen is not None and self.settings.idle_timeout is not None:
            self._last_seen[case_id] = state.last_seen
            arrivals = self._arrivals
            if arrivals and arrivals[-1][0] > state.last_seen:
                self._unsorted = True  # sorted again before the next expiry check
            arrivals.append((state.last_seen, case_id))

    def forget(self, case_id: str) -> bool:
        """Drop everything the vault holds on ``case_id`` (a revocation), without a result,
        an alert or a deviation: its replay, rule states, alignment, idle tracking and its
        place among the completed cases. Returns whether the vault knew the case.

        >>> from datetime import datetime, UTC
        >>> from procvault.monitor.compliance import Compliance, DeclareRule
        >>> v = Vault(compliance=Compliance([DeclareRule("has_a", "existence", "A")]))
        >>> _ = v.update(Event.create("c", "B", datetime(2024, 1, 1, tzinfo=UTC)))
        >>> v.forget("c"), v.is_active("c"), v.flush_update()
        (True, False, Update(deviations=(), completed=(), alerts=()))
        """
        known = False
        if self._tbr is not None:
            known = self._tbr.discard(case_id)
        if self._counts.pop(case_id, None) is not None:
            known = True
        cc = self.compliance
        if cc is not None and case_id in cc:
            # (Compliance has no public discard yet: dropping the case's entry is all it
            # takes; its pending deadlines skip a case they no longer find.)
            cc._cases.pop(case_id, None)
            known = True
        if self._aligner is not None and self._aligner.discard(case_id):
            known = True
        self._last_seen.pop(case_id, None)  # (stale idle entries are skipped)
        if case_id in self._done:
            self._done.discard(case_id)
            known = True
        return known

    def mark_completed(self, case_id: str) -> None:
        """Remember ``case_id`` as completed, without a result: its later events are reported
        as ``after_completion``. Used when restoring a vault, and by an end-of-case marker of
        a case the vault holds no state for (one that only had placeholders so far)."""
        self._remember(case_id)

    # -- introspection ------------------------------------------------------------------
    def state(self) -> VaultState:
        """How much the vault holds right now."""
        tbr = self._tbr
        return VaultState(
            active_cases=len(tbr) if tbr is not None else len(self._counts),
            cached_markings=tbr.cached_markings if tbr is not None else 0,
            remembered_completed=len(self._done),
            watermark=self._watermark,
        )

    def is_completed(self, case_id: str) -> bool:
        """Whether the vault remembers ``case_id`` as completed (the last
        ``remember_completed`` cases)."""
        return case_id in self._done

    def is_active(self, case_id: str) -> bool:
        """Whether ``case_id`` has events and has not completed."""
        if self._tbr is not None:
            return case_id in self._tbr
        return case_id in self._counts


#: The outcome of an event in a vault without a model.
_NO_MODEL: Final = Outcome("fit", None)


def _joined(a: Update, b: Update) -> Update:
    """Two updates as one (``a``'s findings first)."""
    if not b:
        return a
    return Update(a.deviations + b.deviations, a.completed + b.completed, a.alerts + b.alerts)
