"""Tumbling event-time panes, and the accumulator that caps what each case contributes.

:class:`PaneClock` is pure pane arithmetic (as faust's ``windows.py``): pane ``i`` covers
``[origin + i * length, origin + (i + 1) * length)`` (start included, end excluded) and closes
once the clock reaches its end plus the allowed lateness. Observations of a closed pane are
late: they are dropped and counted.

**The clock is the caller's, and only the caller's.** Observing an event never moves time:
:meth:`PaneAccumulator.advance` does, with a clock the caller chooses. The vault's partition
engine passes its *public* clock (wall time, or the merge frontier bounded by wall time), so
that which panes close, and when, never depends on one case's timestamps; an offline replay
of a sorted log may pass the events' own times (:meth:`PaneAccumulator.observe_event`). With
``PaneSettings.start`` the schedule starts at a public pane: every pane from it up to the
clock closes, empty ones included.

A case's completion is filed in the pane of the time the case itself set for it
(:attr:`~procvault.monitor.vault.CaseResult.completed_at`: its marker, its last event plus the
idle timeout), never under another case's time; a flush without an idle timeout files none.

:class:`PaneAccumulator` turns what the :class:`~procvault.monitor.vault.Vault` produces (events,
deviations, completed cases) and rule violations into one exact :class:`PaneAggregate` per pane,
applying the per-case contribution caps on the way:

* per pane and statistic, a case counts at most ``max_keys`` distinct keys, each once (sums:
  each key once, its value clamped to ``[0, clamp]``);
* a case contributes to at most ``max_panes_per_case`` panes; its later observations are
  dropped;
* for running totals, a case counts each key once in its whole life, at most ``max_keys`` keys
  per statistic (:attr:`PaneAggregate.firsts`).

``start_end`` (opt-in) counts a case's first activity as ``("start", activity)`` in the pane of
that event and its last activity as ``("end", activity)`` with its completion: the first and
last steps of the path ``directly_follows`` walks (placeholders are no step of it).

Aggregates are exact and must never be published: the release stage noises them
(:class:`~procvault.monitor.privacy.release.PaneReleaser`). Aggregates of the same pane from
several vault workers (a case lives on one partition) combine with :meth:`PaneAggregate.merge`.

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> from procvault.monitor.event import Event
>>> from procvault.monitor.privacy.budget import Budget
>>> from procvault.monitor.privacy.settings import KnownKeys, PaneSettings, PrivacySettings
>>> settings = PrivacySettings(Budget(1.0, window=4), PaneSettings(timedelta(hours=1)))
>>> acc = PaneAccumulator(settings, KnownKeys.build(["A", "B"]))
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> for minute, activity in [(0, "A"), (5, "B"), (6, "A"), (7, "B")]:
...     closed = acc.observe_event(Event.create("c1", activity, t0 + timedelta(minutes=minute)))
>>> (pane,) = acc.observe_event(Event.create("c2", "A", t0 + timedelta(hours=1)))
>>> pane.index, pane.statistic("activity")
(473352, {('A',): 1, ('B',): 1})
>>> pane.statistic("directly_follows")
{('A', 'B'): 1, ('B', 'A'): 1}
>>> pane.statistic("cases")
{('started',): 1}
>>> acc.observe_event(Event.create("c3", "A", t0))  # pane 473352 has closed: dropped
()
>>> acc.counters().late_events
1
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec

from ..compliance.model import STATE_NAMES, VIOLATED
from ..event import PLACEHOLDER_ACTIVITY, Event, EventKind
from .settings import KnownKeys, PaneSettings, PrivacySettings

if TYPE_CHECKING:
    from ..vault import CaseResult, Deviation, Update
    from .settings import Key

__all__ = [
    "AccumulatorCounters",
    "AccumulatorState",
    "CaseAccState",
    "CaseSnapshot",
    "Entries",
    "OpenPaneSnapshot",
    "Pane",
    "PaneAccumulator",
    "PaneAggregate",
    "PaneClock",
]

_US: Final = timedelta(microseconds=1)
_STARTED: Final = ("started",)
_FIT: Final = ("completed_fit",)
_UNFIT: Final = ("completed_unfit",)
_UNCHECKED: Final = ("completed_unchecked",)
_MISSING: Final = ("missing",)
_REMAINING: Final = ("remaining",)
_COMPLETED: Final = ("completed",)
_VIOLATED: Final = STATE_NAMES[VIOLATED]  # a rule's permanent violation

#: Sorted ``(key, value)`` pairs of one statistic.
Entries = tuple[tuple[tuple[str, ...], int], ...]


@dataclass(frozen=True, slots=True)
class Pane:
    """One tumbling pane: ``[start, end)`` in event time."""

    index: int
    start: datetime
    end: datetime


class PaneClock:
    """Pane arithmetic; pure and stateless.

    >>> from datetime import UTC, datetime, timedelta
    >>> clock = PaneClock(PaneSettings(timedelta(minutes=1), timedelta(seconds=10)))
    >>> ts = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
    >>> p = clock.pane(clock.index(ts)); p.start.isoformat(), p.end.isoformat()
    ('2024-01-01T00:00:00+00:00', '2024-01-01T00:01:00+00:00')
    >>> clock.stale(p.index, datetime(2024, 1, 1, 0, 1, 9, tzinfo=UTC))
    False
    >>> clock.stale(p.index, datetime(2024, 1, 1, 0, 1, 10, tzinfo=UTC))
    True
    """

    __slots__ = ("_late_us", "_length_us", "_origin", "settings")

    def __init__(self, settings: PaneSettings) -> None:
        self.settings: Final = settings
        self._origin = settings.origin.astimezone(UTC)
        self._length_us = settings.length // _US
        self._late_us = settings.allowed_lateness // _US

    def micros(self, ts: datetime) -> int:
        """Microseconds from the origin to ``ts``."""
        return (ts - self._origin) // _US

    def index(self, ts: datetime) -> int:
        """The index of the pane holding ``ts``."""
        return self.micros(ts) // self._length_us

    def pane(self, index: int) -> Pane:
        """Pane ``index`` with its bounds."""
        start = self._origin + timedelta(microseconds=index * self._length_us)
        return Pane(index, start, start + self.settings.length)

    def closes_at(self, index: int) -> datetime:
        """The watermark at which pane ``index`` closes (its end plus the allowed lateness)."""
        return self.pane(index).end + self.settings.allowed_lateness

    def stale(self, index: int, watermark: datetime) -> bool:
        """Whether pane ``index`` has closed at ``watermark``."""
        return watermark >= self.closes_at(index)


class PaneAggregate(msgspec.Struct, frozen=True):
    """The exact, capped aggregates of one pane. Internal: never published as they are.

    Attributes
    ----------
    index, start, end
        The pane.
    values
        Per statistic, the sorted ``(key, value)`` pairs with a non-zero value.
    firsts
        Per running-total statistic, how many cases contributed each key for the first time
        in their life in this pane.
    """

    index: int
    start: datetime
    end: datetime
    values: tuple[tuple[str, Entries], ...] = ()
    firsts: tuple[tuple[str, Entries], ...] = ()

    @classmethod
    def empty(cls, pane: Pane) -> PaneAggregate:
        """A pane nothing was observed in."""
        return cls(pane.index, pane.start, pane.end)

    def statistic(self, name: str) -> dict[Key, int]:
        """Statistic ``name`` as a fresh dict (empty if nothing was counted)."""
        for stat, entries in self.values:
            if stat == name:
                return dict(entries)
        return {}

    def first_contributions(self, name: str) -> dict[Key, int]:
        """Running-total contributions of statistic ``name`` as a fresh dict."""
        for stat, entries in self.firsts:
            if stat == name:
                return dict(entries)
        return {}

    @property
    def is_empty(self) -> bool:
        """Whether nothing at all was counted."""
        return not self.values and not self.firsts

    def merge(self, other: PaneAggregate) -> PaneAggregate:
        """The sum of two workers' aggregates of the same pane.

        >>> from datetime import UTC, datetime
        >>> t = datetime(2024, 1, 1, tzinfo=UTC)
        >>> a = PaneAggregate(1, t, t, (("activity", ((("A",), 2),)),))
        >>> b = PaneAggregate(1, t, t, (("activity", ((("A",), 1), (("B",), 1))),))
        >>> a.merge(b).statistic("activity")
        {('A',): 3, ('B',): 1}
        """
        if (other.index, other.start, other.end) != (self.index, self.start, self.end):
            raise ValueError(f"cannot merge pane {other.index} into pane {self.index}")
        return PaneAggregate(
            self.index,
            self.start,
            self.end,
            _merge_sections(self.values, other.values),
            _merge_sections(self.firsts, other.firsts),
        )


def _merge_sections(
    a: tuple[tuple[str, Entries], ...], b: tuple[tuple[str, Entries], ...]
) -> tuple[tuple[str, Entries], ...]:
    out: dict[str, dict[Key, int]] = {}
    for section in (a, b):
        for stat, entries in section:
            d = out.setdefault(stat, {})
            for key, value in entries:
                d[key] = d.get(key, 0) + value
    return tuple((stat, tuple(sorted(d.items()))) for stat, d in sorted(out.items()) if d)


class AccumulatorCounters(NamedTuple):
    """Exact operational counters. Never part of a release (they are exact counts).

    Attributes
    ----------
    late_events
        Events dropped because their pane had closed.
    late_completions
        Completions dropped because their pane had closed.
    capped
        Observations dropped because the case had used up its panes.
    orphans
        Deviations or violations of a case the accumulator holds no state for (dropped).
    active_cases, open_panes
        The size of the state.
    """

    late_events: int
    late_completions: int
    capped: int
    orphans: int
    active_cases: int
    open_panes: int


class CaseSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """One active case in an :class:`AccumulatorState`."""

    case_id: str
    first_us: int
    max_us: int
    prev_us: int
    last_activity: str | None
    panes: tuple[int, ...]
    life: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]


class CaseAccState(msgspec.Struct, frozen=True, array_like=True):
    """One case's share of an accumulator's state (:meth:`PaneAccumulator.case_state`): its
    bookkeeping while active, and the keys it has counted in each open pane (which cap what it
    may still count there, also after it completed)."""

    case: CaseSnapshot | None
    #: ``(pane index, statistic, keys)`` for every open pane and statistic the case counted in.
    seen: tuple[tuple[int, str, tuple[tuple[str, ...], ...]], ...]


class OpenPaneSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """One open pane in an :class:`AccumulatorState`."""

    index: int
    counts: tuple[tuple[str, Entries], ...]
    seen: tuple[tuple[str, tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]], ...]
    firsts: tuple[tuple[str, Entries], ...]


class AccumulatorState(msgspec.Struct, frozen=True):
    """Everything a :class:`PaneAccumulator` holds, as a value (seal it before storing it:
    it names cases)."""

    watermark_us: int | None
    next_close: int | None
    late_events: int
    late_completions: int
    capped: int
    orphans: int
    cases: tuple[CaseSnapshot, ...]
    panes: tuple[OpenPaneSnapshot, ...]
    version: int = 1
    #: the index of the first pane this accumulator ever closes (its partials say so)
    first_pane: int | None = None


class _Case:
    __slots__ = ("first_us", "last_activity", "life", "max_us", "panes", "prev_us")

    def __init__(self, us: int) -> None:
        self.first_us = us
        self.max_us = us
        self.prev_us = us
        self.last_activity: str | None = None
        self.panes: list[int] = []
        self.life: dict[str, set[Key]] = {}


class _Pane:
    __slots__ = ("counts", "firsts", "index", "seen")

    def __init__(self, index: int) -> None:
        self.index = index
        # per statistic, created on first use
        self.counts: dict[str, dict[Key, int]] = {}
        self.seen: dict[str, dict[str, set[Key]]] = {}
        self.firsts: dict[str, dict[Key, int]] = {}


class PaneAccumulator:
    """Per-pane exact aggregates with per-case contribution caps; see the module docstring.

    Parameters
    ----------
    settings
        The release policy (statistics, caps, panes).
    known
        The keys known in advance (only needed here for running totals and ``df_duration``,
        which count known keys only).
    state
        A snapshot to resume from (:meth:`snapshot`).

    Notes
    -----
    Wire it after the vault: ``acc.observe(event, vault.update(event))`` per event (nothing
    closes), then ``closed = acc.observe_tick(clock, vault.tick(clock))`` when the clock moves;
    at the end of a finite stream ``acc.observe_tick(clock, vault.flush_update())`` then
    :meth:`flush`. Every call that moves the clock returns the panes it closed, in order, empty
    ones included. A caller must not pass anything of a case after its completion (the vault
    engine does not): the case's caps are kept in the open panes it touched, not beyond.
    """

    def __init__(
        self,
        settings: PrivacySettings,
        known: KnownKeys,
        state: AccumulatorState | None = None,
    ) -> None:
        self.settings: Final = settings
        self.known: Final = known
        self.clock: Final = PaneClock(settings.panes)
        self._origin = settings.panes.origin.astimezone(UTC)
        self._len = settings.panes.length // _US
        self._late = settings.panes.allowed_lateness // _US
        self._k = settings.max_panes_per_case
        self._m: dict[str, int] = {s.name: s.m for s in settings.statistics}
        self._clamp: dict[str, int] = {s.name: s.c for s in settings.statistics}
        self._unit: dict[str, int] = {
            s.name: s.unit_value // _US for s in settings.statistics if s.spec.duration
        }
        self._df_known: frozenset[Key] = frozenset(known.keys("df_duration"))
        totals = settings.running_totals
        self._life: dict[str, frozenset[Key]] = (
            {name: frozenset(known.keys(name)) for name in totals.statistics} if totals else {}
        )
        self._cases: dict[str, _Case] = {}
        self._open: dict[int, _Pane] = {}
        self._wm: int | None = None
        self._next_close: int | None = None
        self._first: int | None = None  # the first pane ever to close
        self._close_us = 0  # watermark at which pane ``_next_close`` closes
        self._late_events = 0
        self._late_completions = 0
        self._capped = 0
        self._orphans = 0
        start = settings.panes.start
        if start is not None:
            nc = self._next_close = self._first = ((start - self._origin) // _US) // self._len
            self._close_us = (nc + 1) * self._len + self._late
        if state is not None:
            self._restore(state)

    # -- observations --------------------------------------------------------------------
    def observe(
        self,
        event: Event,
        update: Update | None = None,
        violations: Iterable[tuple[str, str, datetime]] = (),
    ) -> None:
        """Observe one event with what the vault found for it (time does not move).

        Parameters
        ----------
        event
            The event given to :meth:`Vault.update`.
        update
            What :meth:`Vault.update` returned for it: the event (unless the vault did not
            apply it: ``after_completion``), its missing-token deviations, the rules it made
            permanently violated (alerts to ``Violated``) and the cases it completed are
            counted, in that order.
        violations
            ``(rule_id, case_id, timestamp)`` of violations from elsewhere, counted with the
            update's.
        """
        us = (event.timestamp - self._origin) // _US
        devs = update.deviations if update is not None else ()
        applied = not (devs and any(d.kind == "after_completion" for d in devs))
        if not event.kind and applied and self._event(event, us):
            for dev in devs:
                self.observe_deviation(dev)
        elif event.kind == EventKind.PLACEHOLDER:
            self._placeholder(event, us)
        self._update(update, violations)
        if event.kind == EventKind.CASE_END:
            # a case the vault completed is gone by now; one it held no state for (only
            # placeholders) ends at its marker all the same, without a completion to count
            self._cases.pop(event.case_id, None)

    def observe_replayed(
        self,
        event: Event,
        update: Update | None = None,
        violations: Iterable[tuple[str, str, datetime]] = (),
    ) -> tuple[PaneAggregate, ...]:
        """:meth:`observe`, then move the clock to the event's time; return the closed panes.
        For offline replays of a sorted log (the events' own times are an honest clock there);
        the vault's engine moves a public clock instead."""
        self.observe(event, update, violations)
        return self.advance(event.timestamp)

    def observe_tick(
        self,
        watermark: datetime,
        update: Update | None = None,
        violations: Iterable[tuple[str, str, datetime]] = (),
    ) -> tuple[PaneAggregate, ...]:
        """Observe what :meth:`Vault.tick` (or :meth:`Vault.flush_update`) returned at
        ``watermark`` — deadline violations, then completions, each at its own time — and move
        the clock there."""
        self._update(update, violations)
        return self.advance(watermark)

    def _update(
        self,
        update: Update | None,
        violations: Iterable[tuple[str, str, datetime]],
    ) -> None:
        for rule_id, case_id, ts in violations:
            self.observe_violation(rule_id, case_id, ts)
        if update is None:
            return
        ends = {r.case_id: r.completed_at for r in update.completed} if update.completed else {}
        for alert in update.alerts:
            if alert.new == _VIOLATED:
                # a violation found by the case's completion is filed with the completion
                at = ends.get(alert.case_id, alert.timestamp) if ends else alert.timestamp
                if at is not None:
                    self.observe_violation(alert.rule, alert.case_id, at)
        for result in update.completed:
            at = result.completed_at
            if at is not None:
                self.observe_completed(result, at)
            else:  # ended by the stream, not by the case: no completion to count
                self._cases.pop(result.case_id, None)

    def observe_update(
        self, update: Update | None, violations: Iterable[tuple[str, str, datetime]] = ()
    ) -> None:
        """Observe what a :meth:`Vault.tick` or :meth:`Vault.flush_update` returned (each
        completion and violation at its own time) without moving the clock."""
        self._update(update, violations)

    def observe_event(self, event: Event) -> tuple[PaneAggregate, ...]:
        """Observe one activity event (a marker only moves time), then move the clock to its
        time; return the closed panes. For offline replays of a sorted log, whose events'
        own times are an honest clock; the vault's engine uses :meth:`observe` and a public
        clock instead."""
        us = (event.timestamp - self._origin) // _US
        if not event.kind:
            self._event(event, us)
        elif event.kind == EventKind.PLACEHOLDER:
            self._placeholder(event, us)
        return self._advance(us)

    def _pane_at(self, us: int) -> _Pane | None:
        """The open pane of time ``us`` (opened if need be), or ``None`` when it has closed
        (the observation is late: counted)."""
        idx = us // self._len
        nc = self._next_close
        if nc is None:
            nc = self._start(us)
        if idx < nc:
            self._late_events += 1
            return None
        pane = self._open.get(idx)
        return pane if pane is not None else self._open_pane(idx)

    def _event(self, event: Event, us: int) -> bool:
        pane = self._pane_at(us)
        if pane is None:
            return False
        case_id = event.case_id
        act = event.activity
        cs = self._cases.get(case_id)
        add = self._add
        if cs is None:
            cs = self._cases[case_id] = _Case(us)
            add(pane, case_id, cs, "cases", _STARTED, 1)
        add(pane, case_id, cs, "activity", (act,), 1)
        prev = cs.last_activity
        if prev is None:  # the first step of the case's path (placeholders are none)
            add(pane, case_id, cs, "start_end", ("start", act), 1)
        else:
            key = (prev, act)
            add(pane, case_id, cs, "directly_follows", key, 1)
            unit = self._unit.get("df_duration")
            if unit is not None and key in self._df_known:
                gap = max(0, us - cs.prev_us) // unit
                add(pane, case_id, cs, "df_duration", key, min(gap, self._clamp["df_duration"]))
        cs.last_activity = act
        cs.prev_us = us
        if us > cs.max_us:
            cs.max_us = us
        elif us < cs.first_us:
            cs.first_us = us
        return True

    def _placeholder(self, event: Event, us: int) -> None:
        """Count a placeholder under activity ``pv:withheld``, within its case's caps (its
        first event starts the case as any event does). It is no step of the case's path:
        directly-follows pairs and durations skip it."""
        pane = self._pane_at(us)
        if pane is None:
            return
        case_id = event.case_id
        cs = self._cases.get(case_id)
        if cs is None:
            cs = self._cases[case_id] = _Case(us)
            self._add(pane, case_id, cs, "cases", _STARTED, 1)
        self._add(pane, case_id, cs, "activity", (PLACEHOLDER_ACTIVITY,), 1)

    def observe_deviation(self, deviation: Deviation) -> None:
        """Count a ``missing_tokens`` deviation under its activity (other kinds are ignored:
        unknown activities show in ``activity``, late events are not applied)."""
        if deviation.kind != "missing_tokens":
            return
        self._keyed(deviation.case_id, deviation.timestamp, "deviation", (deviation.activity,))

    def observe_violation(self, rule_id: str, case_id: str, timestamp: datetime) -> None:
        """Count a violation of rule ``rule_id`` by an active case at ``timestamp``.

        Call it before the case's completion is observed: the case's caps live in its state.
        """
        self._keyed(case_id, timestamp, "violation", (rule_id,))

    def _keyed(self, case_id: str, ts: datetime, stat: str, key: Key) -> None:
        if stat not in self._m:
            return
        cs = self._cases.get(case_id)
        if cs is None:
            self._orphans += 1
            return
        idx = ((ts - self._origin) // _US) // self._len
        if self._next_close is None or idx < self._next_close:
            return  # the event itself was late and has been counted as such
        pane = self._open.get(idx) or self._open_pane(idx)
        self._add(pane, case_id, cs, stat, key, 1)

    def observe_completed(self, result: CaseResult, at: datetime) -> None:
        """Count a completed case in the pane of ``at`` (the time the case set for its
        completion, :attr:`~procvault.monitor.vault.CaseResult.completed_at`).

        Adds the ``cases`` completion (fitting, not fitting, or unchecked when the vault has
        no model), its missing and remaining tokens, its last activity as ``("end",
        activity)`` of ``start_end`` and its duration (first to last observed event), and
        forgets the case.
        """
        us = (at - self._origin) // _US
        idx = us // self._len
        cs = self._cases.pop(result.case_id, None)
        nc = self._next_close
        if nc is None:
            nc = self._start(us)
        if idx < nc:
            self._late_completions += 1
            return
        pane = self._open.get(idx) or self._open_pane(idx)
        observed = cs is not None
        if cs is None:
            cs = _Case(us)
        case_id = result.case_id
        add = self._add
        checked = getattr(result, "conformance", True)  # False: the vault has no model
        key = (_FIT if result.is_fit else _UNFIT) if checked else _UNCHECKED
        add(pane, case_id, cs, "cases", key, 1)
        if checked and "tokens" in self._m:
            c = self._clamp["tokens"]
            add(pane, case_id, cs, "tokens", _MISSING, min(max(result.missing, 0), c))
            add(pane, case_id, cs, "tokens", _REMAINING, min(max(result.remaining, 0), c))
        if observed and cs.last_activity is not None:  # the last step of the case's path
            add(pane, case_id, cs, "start_end", ("end", cs.last_activity), 1)
        unit = self._unit.get("case_duration")
        if unit is not None and observed:
            dur = (cs.max_us - cs.first_us) // unit
            add(
                pane,
                case_id,
                cs,
                "case_duration",
                _COMPLETED,
                min(dur, self._clamp["case_duration"]),
            )

    def _add(self, pane: _Pane, case_id: str, cs: _Case, stat: str, key: Key, value: int) -> None:
        m = self._m.get(stat)
        if m is None:
            return
        life_keys = self._life.get(stat)
        if life_keys is not None and key in life_keys:
            life = cs.life.get(stat)
            if life is None:
                life = cs.life[stat] = set()
            if key not in life and len(life) < m:
                life.add(key)
                firsts = pane.firsts.get(stat)
                if firsts is None:
                    firsts = pane.firsts[stat] = {}
                firsts[key] = firsts.get(key, 0) + 1
        idx = pane.index
        panes = cs.panes
        if idx not in panes:
            if len(panes) >= self._k:
                self._capped += 1
                return
            panes.append(idx)
        by_case = pane.seen.get(stat)
        if by_case is None:
            by_case = pane.seen[stat] = {}
        seen = by_case.get(case_id)
        if seen is None:
            seen = by_case[case_id] = set()
        elif key in seen or len(seen) >= m:
            return
        seen.add(key)
        if value:
            counts = pane.counts.get(stat)
            if counts is None:
                counts = pane.counts[stat] = {}
            counts[key] = counts.get(key, 0) + value

    def forget(self, case_id: str) -> bool:
        """Drop a case's state (a revocation); its later events must not reach the
        accumulator. Contributions already counted in open panes stay, under the same
        guarantee as everything released. Returns whether the case was known."""
        return self._cases.pop(case_id, None) is not None

    # -- time ----------------------------------------------------------------------------
    def advance(self, watermark: datetime) -> tuple[PaneAggregate, ...]:
        """Move the watermark to ``watermark`` (never back); return the panes that closed."""
        return self._advance((watermark - self._origin) // _US)

    def _start(self, us: int) -> int:
        nc = self._next_close = self._first = (us - self._late) // self._len
        self._close_us = (nc + 1) * self._len + self._late
        return nc

    def _advance(self, us: int) -> tuple[PaneAggregate, ...]:
        if self._wm is None or us > self._wm:
            self._wm = us
        nc = self._next_close
        if nc is None:
            self._start(us)
            return ()
        if self._wm < self._close_us:
            return ()
        limit = (self._wm - self._late) // self._len
        return self._close_until(nc, limit)

    def _close_until(self, nc: int, limit: int) -> tuple[PaneAggregate, ...]:
        out = tuple(self._close(i) for i in range(nc, limit))
        self._next_close = limit
        self._close_us = (limit + 1) * self._len + self._late
        return out

    def flush(self, through: datetime | None = None) -> tuple[PaneAggregate, ...]:
        """Close every pane up to the last one holding an observation or the watermark
        (the end of a finite stream, offline).

        With ``through``, every pane up to the one holding ``through`` and no further,
        whatever was observed later: the vault passes a public bound (its clock plus the idle
        timeout), so that which panes a finite stream releases never depends on how late
        one case's last observation was."""
        nc = self._next_close
        if nc is None:
            return ()
        if through is not None:
            last = ((through - self._origin) // _US) // self._len
            if last < nc:
                return ()
            return self._close_until(nc, last + 1)
        last = max(self._open, default=nc - 1)
        if self._wm is not None:
            last = max(last, self._wm // self._len)
        if last < nc:
            return ()
        return self._close_until(nc, last + 1)

    def _open_pane(self, idx: int) -> _Pane:
        pane = self._open[idx] = _Pane(idx)
        return pane

    def _close(self, idx: int) -> PaneAggregate:
        pane = self.clock.pane(idx)
        p = self._open.pop(idx, None)
        if p is None:
            return PaneAggregate.empty(pane)
        return PaneAggregate(pane.index, pane.start, pane.end, _freeze(p.counts), _freeze(p.firsts))

    # -- state ---------------------------------------------------------------------------
    def counters(self) -> AccumulatorCounters:
        """Exact operational counters (never published; see :class:`AccumulatorCounters`)."""
        return AccumulatorCounters(
            self._late_events,
            self._late_completions,
            self._capped,
            self._orphans,
            len(self._cases),
            len(self._open),
        )

    @property
    def watermark(self) -> datetime | None:
        """The largest event time seen (or given to :meth:`advance`)."""
        if self._wm is None:
            return None
        return self._origin + timedelta(microseconds=self._wm)

    def snapshot(self) -> AccumulatorState:
        """The whole state as a frozen value (names cases: seal it before storing)."""
        return self._snapshot(with_cases=True)

    def shared_snapshot(self) -> AccumulatorState:
        """The state without any case's share (:meth:`case_state`): watermark, counters and
        the open panes' aggregates. Its size does not grow with the number of active cases.

        A store that keeps this and, per case, the :meth:`case_state` written whenever the case
        was last observed restores the whole accumulator: pass this to the constructor, then
        every stored case state to :meth:`restore_case`. A case state taken before some of its
        panes closed is fine: the closed panes' part is ignored.

        >>> from datetime import UTC, datetime, timedelta
        >>> from procvault.monitor.event import Event
        >>> from procvault.monitor.privacy.budget import Budget
        >>> from procvault.monitor.privacy.settings import KnownKeys, PaneSettings, PrivacySettings
        >>> settings = PrivacySettings(Budget(1.0, window=4), PaneSettings(timedelta(hours=1)))
        >>> known = KnownKeys.build(["A", "B"])
        >>> acc = PaneAccumulator(settings, known)
        >>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
        >>> _ = acc.observe_event(Event.create("c1", "A", t0))
        >>> c1 = acc.case_state("c1")
        >>> _ = acc.observe_event(Event.create("c2", "B", t0 + timedelta(minutes=1)))
        >>> c2 = acc.case_state("c2")
        >>> back = PaneAccumulator(settings, known, acc.shared_snapshot())
        >>> back.restore_case("c1", c1); back.restore_case("c2", c2)
        >>> back.snapshot() == acc.snapshot()
        True
        """
        return self._snapshot(with_cases=False)

    def _snapshot(self, *, with_cases: bool) -> AccumulatorState:
        # canonical order (sorted), so that equal states give equal snapshots however they
        # were built
        cases = (
            tuple(_case_snapshot(cid, c) for cid, c in sorted(self._cases.items()))
            if with_cases
            else ()
        )
        panes = tuple(
            OpenPaneSnapshot(
                p.index,
                _freeze(p.counts),
                tuple(
                    (
                        stat,
                        tuple((cid, tuple(sorted(keys))) for cid, keys in sorted(by_case.items())),
                    )
                    for stat, by_case in sorted(p.seen.items())
                    if by_case
                )
                if with_cases
                else (),
                _freeze(p.firsts),
            )
            for p in sorted(self._open.values(), key=lambda p: p.index)
        )
        return AccumulatorState(
            self._wm,
            self._next_close,
            self._late_events,
            self._late_completions,
            self._capped,
            self._orphans,
            cases,
            panes,
            first_pane=self._first,
        )

    @property
    def first_pane(self) -> int | None:
        """The index of the first pane this accumulator closes (``None``: not known yet)."""
        return self._first

    def case_state(self, case_id: str) -> CaseAccState | None:
        """The case's share of the state (see :meth:`shared_snapshot`), ``None`` if it has
        none. O(open panes * statistics): take it for the cases an update touched."""
        cs = self._cases.get(case_id)
        seen = tuple(
            (p.index, stat, tuple(sorted(keys)))
            for p in sorted(self._open.values(), key=lambda p: p.index)
            for stat, by_case in sorted(p.seen.items())
            if (keys := by_case.get(case_id))
        )
        if cs is None and not seen:
            return None
        return CaseAccState(None if cs is None else _case_snapshot(case_id, cs), seen)

    def restore_case(self, case_id: str, state: CaseAccState) -> None:
        """Put back a case's share taken with :meth:`case_state` (after building the
        accumulator from a :meth:`shared_snapshot`); entries of panes that have closed since
        are ignored."""
        snap = state.case
        if snap is not None:
            self._cases[case_id] = _case_from(snap)
        for idx, stat, keys in state.seen:
            pane = self._open.get(idx)
            if pane is not None:
                pane.seen.setdefault(stat, {})[case_id] = set(keys)

    def _restore(self, state: AccumulatorState) -> None:
        if state.version != 1:
            raise ValueError(f"unsupported accumulator state version {state.version}")
        self._wm = state.watermark_us
        if state.next_close is not None:
            self._next_close = state.next_close
            self._close_us = (state.next_close + 1) * self._len + self._late
        if state.first_pane is not None:
            self._first = state.first_pane
        self._late_events = state.late_events
        self._late_completions = state.late_completions
        self._capped = state.capped
        self._orphans = state.orphans
        for snap in state.cases:
            self._cases[snap.case_id] = _case_from(snap)
        for ps in state.panes:
            p = self._open_pane(ps.index)
            for stat, entries in ps.counts:
                p.counts[stat] = dict(entries)
            for stat, by_case in ps.seen:
                p.seen[stat] = {cid: set(keys) for cid, keys in by_case}
            for stat, entries in ps.firsts:
                p.firsts[stat] = dict(entries)


def _case_snapshot(case_id: str, c: _Case) -> CaseSnapshot:
    return CaseSnapshot(
        case_id,
        c.first_us,
        c.max_us,
        c.prev_us,
        c.last_activity,
        tuple(c.panes),
        tuple((s, tuple(sorted(keys))) for s, keys in sorted(c.life.items())),
    )


def _case_from(snap: CaseSnapshot) -> _Case:
    c = _Case(snap.first_us)
    c.max_us, c.prev_us, c.last_activity = snap.max_us, snap.prev_us, snap.last_activity
    c.panes = list(snap.panes)
    c.life = {s: set(keys) for s, keys in snap.life}
    return c


def _freeze(section: dict[str, dict[Key, int]]) -> tuple[tuple[str, Entries], ...]:
    return tuple((stat, tuple(sorted(d.items()))) for stat, d in sorted(section.items()) if d)
