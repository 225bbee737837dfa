"""The :class:`Vault`: the object every transport hosts. Events in, findings and results out.

Per event the vault replays the case against the model (:class:`~.tbr.TokenReplay`) and returns
an :class:`Update`: the deviations the event revealed (an activity that was not enabled, an
activity the model does not know, an event for a case that already completed) and the results
of any cases that completed. A case completes

* on an end-of-case marker event (``EventKind.CASE_END``),
* on reaching exactly the final marking, if ``complete_on_final_marking`` is set,
* when no event arrived for ``idle_timeout`` of event time (the watermark is the largest event
  time seen, or a time given to :meth:`Vault.advance`),
* or when the caller flushes it (:meth:`Vault.flush`).

A completed case is finalised exactly as pm4py's offline token replay finishes a trace and is
then forgotten: memory holds the active cases, the bounded step cache and a bounded list of
recently completed case ids (used to report late events instead of silently starting a new
case with the same id).

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

from .event import Event, EventKind
from .petri import CompiledNet
from .tbr import UNKNOWN, Outcome, TokenReplay

__all__ = ["CaseResult", "Deviation", "Update", "Vault", "VaultSettings", "VaultState"]

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
    """The final conformance result of a completed case (pm4py's token-replay diagnostics).

    ``events`` counts the case's activity events, including unknown ones
    (``unknown_activities``), which the replay skips as pm4py does.
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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``case`` for the case id)."""
        out: dict[str, Any] = {
            "case": self.case_id,
            "events": self.events,
            "produced": self.produced,
            "consumed": self.consumed,
            "missing": self.missing,
            "remaining": self.remaining,
            "fitness": self.fitness,
            "is_fit": self.is_fit,
            "unknown_activities": self.unknown_activities,
            "completed_by": self.completed_by,
        }
        if self.alignment_cost is not None:
            out["alignment_cost"] = self.alignment_cost
        return out


class Update(NamedTuple):
    """What one call changed: deviations found and cases completed (both usually empty).

    Records are immutable named tuples: cheap to build on the per-event path.
    """

    deviations: tuple[Deviation, ...] = ()
    completed: tuple[CaseResult, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.deviations or self.completed)


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
        How many completed case ids to remember for reporting late events.
    cache_size
        Markings kept in the replay step cache.
    """

    complete_on_final_marking: bool = False
    idle_timeout: timedelta | None = None
    remember_completed: int = 100_000
    cache_size: int = 100_000

    def __post_init__(self) -> None:
        if self.idle_timeout is not None and self.idle_timeout <= timedelta(0):
            raise ValueError(f"idle_timeout must be positive, got {self.idle_timeout}")
        if self.remember_completed < 0:
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


class Vault:
    """Online conformance of many cases against one model; see the module docstring."""

    def __init__(self, net: CompiledNet, settings: VaultSettings | None = None) -> None:
        self.settings: Final = settings or VaultSettings()
        self.net: Final = net
        self._tbr = TokenReplay(net, cache_size=self.settings.cache_size)
        self._replay = self._tbr.update
        # True when every event needs more than the replay step (completion checks).
        self._per_event_checks = (
            self.settings.complete_on_final_marking or self.settings.idle_timeout is not None
        )
        self._replay = self._tbr.update
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

    # -- per event ----------------------------------------------------------------------
    def update(self, event: Event) -> Update:
        """Apply one event (or marker) and return what it revealed."""
        case_id = event.case_id
        if event.kind:  # a marker (EventKind.ACTIVITY is 0)
            if event.kind != EventKind.CASE_END or case_id not in self._tbr:
                return NOTHING
            return Update((), (self._complete(case_id, "end_marker"),))
        if case_id in self._done:
            return Update(
                (Deviation(case_id, event.activity, event.timestamp, "after_completion"),)
            )
        outcome = self._replay(case_id, event.activity)
        if outcome.deviates or self._per_event_checks:
            return self._after(event, outcome)
        return NOTHING

    def _after(self, event: Event, outcome: Outcome) -> Update:
        """The rarer part of :meth:`update`: deviations and completion checks."""
        case_id = event.case_id
        deviations: tuple[Deviation, ...] = ()
        if outcome.deviates:
            deviations = (self._deviation(event, outcome),)
        completed: tuple[CaseResult, ...] = ()
        if self.settings.complete_on_final_marking and self._tbr.in_final_marking(case_id):
            completed = (self._complete(case_id, "final_marking"),)
        if self.settings.idle_timeout is not None:
            if not completed:
                self._last_seen[case_id] = event.timestamp
                self._arrivals.append((event.timestamp, case_id))
            expired = self._advance(event.timestamp)
            if expired:
                completed += expired
        if deviations or completed:
            return Update(deviations, completed)
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
    def advance(self, watermark: datetime) -> tuple[CaseResult, ...]:
        """Move event time forward (never back) and complete the cases idle for too long."""
        return self._advance(watermark)

    def _advance(self, ts: datetime) -> tuple[CaseResult, ...]:
        if self._watermark is None or ts > self._watermark:
            self._watermark = ts
        timeout = self.settings.idle_timeout
        if timeout is None or not self._arrivals:
            return ()
        cutoff = self._watermark - timeout
        arrivals = self._arrivals
        if arrivals[0][0] > cutoff:
            return ()
        out = []
        while arrivals and arrivals[0][0] <= cutoff:
            seen, case_id = arrivals.popleft()
            if self._last_seen.get(case_id) == seen and case_id in self._tbr:
                out.append(self._complete(case_id, "idle"))
        return tuple(out)

    def flush(self) -> tuple[CaseResult, ...]:
        """Complete every active case now (end of a finite stream)."""
        return tuple(self._complete(c, "flush") for c in self._tbr.active_cases())

    def _complete(self, case_id: str, by: CompletedBy) -> CaseResult:
        tbr = self._tbr
        events, unknown = tbr.events_of(case_id), tbr.unknown_of(case_id)
        c = tbr.complete(case_id)
        self._last_seen.pop(case_id, None)
        keep = self.settings.remember_completed
        if keep:
            self._done.add(case_id)
            self._done_order.append(case_id)
            if len(self._done_order) > keep:
                self._done.discard(self._done_order.popleft())
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
        )

    # -- introspection ------------------------------------------------------------------
    def state(self) -> VaultState:
        """How much the vault holds right now."""
        return VaultState(
            active_cases=len(self._tbr),
            cached_markings=self._tbr.cached_markings,
            remembered_completed=len(self._done),
            watermark=self._watermark,
        )

    def is_active(self, case_id: str) -> bool:
        """Whether ``case_id`` has events and has not completed."""
        return case_id in self._tbr
