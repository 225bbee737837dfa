"""The partition engine: everything a vault worker decides for one partition, as one pure state
machine.

Frames in (:mod:`.frames`: events, placeholders, end-of-case markers, heartbeats, revocations,
each with its organization, producer session and sequence), effects out (:class:`Effects`:
findings per organization, the DP panes that closed, the cases whose state changed, counters).
The engine alone owns

* **the replay guard**, per organization and lane (its agent's stream, its revocations): a
  frame whose ``(generation, sequence)`` is not greater than the last one of its lane is a
  replay (or, read again after a restart, a redelivery); a frame of the stream must also
  **continue its chain** (its ``prev`` is the lane's last ``(generation, sequence)``) and
  must not be sealed under an older key epoch than the lane's last frame. A frame that does
  not continue the chain shows that one before it is missing (dropped, hidden or reordered
  by whoever serves the topic): it is held back (``gap``), the organization's stream stalls
  there and the shell reads its log again from the point the chain reached
  (:meth:`PartitionEngine.stalled`), so nothing is ever skipped silently; a stalled
  organization is not heard from, so the source timeout reports it. An event that continues
  the chain is admitted only if its merge key ``(timestamp, order)`` is greater than the last
  event's (else ``resent``: an agent's own re-sending). The guard is merged forward, never
  replaced; it is part of the partition's state, so it survives case completion, restarts and
  rebalances, and its size is the number of organizations, not of cases;
* **placement**: with ``place`` (the agents' keyed placement of a case id), an event of a
  case that belongs on another partition is refused (``misplaced``), so no agent can give a
  case a second partition, and with it a second set of DP caps;
* **the merge** of the organizations' streams in ``(timestamp, order, organization)`` order:
  an event waits until every organization's stream has passed it. An organization never heard
  from holds the merge (it may simply not have started yet: results never depend on start
  order); one heard from and then silent for ``source_timeout`` stops holding it back, is
  reported (a ``source_silent`` notice to every organization, a flag on the verdicts of the
  cases that ran meanwhile) and its later events are applied late (counted as such);
* **completion**, through the :class:`~procvault.monitor.vault.Vault` (the one source of
  truth): a completed case is remembered, and whatever of it arrives later contributes to
  nothing (an ``after_completion`` finding for its organization, a count);
* **revocations**, applied in merge order, scoped to what the revoking organization
  contributed: a case it took part in, or its own events of a resource or a period;
* **the DP accumulator**, on the **public clock**: the merge frontier bounded by ``now`` plus
  ``max_lead`` (``now`` is injected by the caller, never read here). Events further ahead of
  ``now`` than ``max_skew`` are refused and counted. Completions are filed at the time each
  case set itself (:attr:`~procvault.monitor.vault.CaseResult.completed_at`).

Time comes only from :meth:`PartitionEngine.begin` (``now``, µs). :meth:`PartitionEngine.snapshot`
and :meth:`PartitionEngine.restore` turn the whole state into typed values
(:mod:`.state`) and back; a restored engine continues exactly as the original would have.

Examples
--------
>>> from datetime import datetime, timedelta, UTC
>>> from procvault.monitor.compliance import Compliance, DeclareRule
>>> from procvault.monitor.event import Event
>>> from procvault.monitor.vault import Vault
>>> def vault():
...     return Vault(compliance=Compliance([DeclareRule("has_b", "existence", "B")]))
>>> settings = PartitionSettings(partition=0, orgs=("lab", "ward"))
>>> engine = PartitionEngine(settings, vault())
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> def origin(org, seq):  # agent-1's session 1: its frames chained one to the next
...     return Origin(org, "agent-1", 1, seq, seq, prev=(1, seq - 1) if seq else (0, 0))
>>> def ev(org, seq, minute, activity, case="c1"):
...     return EventFrame(origin(org, seq), seq * 256, 0,
...                       Event.create(case, activity, t0 + timedelta(minutes=minute), org=org))
>>> engine.begin(now_us=1_800_000_000_000_000)  # the caller's clock (2027)
>>> engine.admit(ev("lab", 0, 1, "A")), engine.admit(ev("lab", 0, 1, "A"))
(None, 'replay')
>>> engine.step().findings  # ward has not been heard from: the merge waits
{}
>>> def end(org, seq):
...     return Heartbeat(origin(org, seq), 1 << 60, 0, closed=True)
>>> engine.admit(end("ward", 0)), engine.admit(end("lab", 1))
(None, None)
>>> effects = engine.step()
>>> [type(f).__name__ for f in effects.findings["lab"]]
['AlertFinding', 'CaseFinding']
>>> effects.findings["lab"][1].rules
{'has_b': 'Violated'}
>>> meta, cases = engine.snapshot()
>>> again = PartitionEngine.restore(settings, vault(), meta, cases)
>>> again.admit(ev("lab", 0, 1, "A"))  # the guard survived the case and the restart
'replay'
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import msgspec

from ..event import EventKind
from ..findings import (
    AlertFinding,
    CaseFinding,
    DeviationFinding,
    Finding,
    NoticeFinding,
    ResultsPolicy,
    RevocationFinding,
)
from ..revocation import Revocations, Revoked, apply_revocation
from ..vault import CaseResult, CaseState, Update, Vault
from .frames import EventFrame, Frame, Heartbeat, Origin, RevocationFrame
from .state import (
    CaseRecord,
    EngineCounters,
    GuardState,
    OrgState,
    PartitionMeta,
    ReplayState,
    RulesState,
    pack_value,
    unpack_value,
)

if TYPE_CHECKING:
    from ..compliance import Alert
    from ..discovery.tracker import DiscoveryTracker, TrackerState
    from ..event import Event
    from ..privacy.panes import AccumulatorState, PaneAccumulator, PaneAggregate

__all__ = ["Effects", "PartitionEngine", "PartitionSettings"]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_LOW: Final = -(1 << 62)
_INF: Final = (1 << 62, 1 << 64, "")
_NEG: Final = (_LOW, 0, "")
_NO_GUARD: Final = (0, 0, _LOW, -1, 0, 0)
_CASE_END: Final = EventKind.CASE_END
_ACTIVITY: Final = EventKind.ACTIVITY
#: case ids whose placement is remembered (then forgotten all at once)
_PLACED_CACHE: Final = 1 << 16

#: ``(generation, sequence, ts_us, order, epoch, next_offset)``: one lane of the replay guard.
_Guard = tuple[int, int, int, int, int, int]
#: ``(ts_us, order, org)``: a merge key.
_Key = tuple[int, int, str]


def _us(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


def _at(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class PartitionSettings:
    """How one partition's engine runs; every time in microseconds.

    Parameters
    ----------
    partition
        The partition number (it goes into the findings and panes).
    orgs
        The registered organizations.
    partitions
        How many partitions the event topics have (it goes into revocation answers).
    expect
        The organizations the merge waits for before their first frame (default: all of
        ``orgs``); an organization not expected holds nothing until it is heard from.
    source_timeout_us
        An organization heard from and then silent this long stops holding the merge back
        (``None``: never).
    max_skew_us
        Events whose time is more than this ahead of ``now`` are refused and counted
        (``None``: no limit).
    max_lead_us
        How far the public clock may run ahead of ``now``.
    results
        What each organization receives (:class:`~procvault.monitor.findings.ResultsPolicy`).
    """

    partition: int
    orgs: tuple[str, ...]
    partitions: int = 1
    expect: frozenset[str] | None = None
    source_timeout_us: int | None = 30_000_000
    max_skew_us: int | None = 300_000_000
    max_lead_us: int = 0
    results: ResultsPolicy = field(default_factory=ResultsPolicy)

    def __post_init__(self) -> None:
        if not self.orgs:
            raise ValueError("a partition needs at least one registered organization")
        if len(set(self.orgs)) != len(self.orgs):
            raise ValueError("organizations must be unique")
        if self.expect is not None and not self.expect <= set(self.orgs):
            unknown = sorted(self.expect - set(self.orgs))
            raise ValueError(f"expected organizations are not registered: {', '.join(unknown)}")
        for name in ("source_timeout_us", "max_skew_us"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_lead_us < 0:
            raise ValueError("max_lead_us must be >= 0")


@dataclass
class Effects:
    """What one :meth:`PartitionEngine.step` produced (besides the state it changed).

    Attributes
    ----------
    findings
        Per organization, its findings, in order.
    panes
        The DP panes that closed (in order, empty ones included), each with the latest agent
        send time (µs) of the events in it (0: none).
    changed, forgotten
        Cases whose record must be written again, and cases whose record must go (revoked).
    sent_us
        The agents' send times of the events applied (latency).
    engine_ns
        Per applied event, the engine's time (only with a stopwatch).
    notices
        ``(kind, organization)`` of what the shell should log: ``source_silent``,
        ``source_back``, ``waiting_for_source``.
    """

    findings: dict[str, list[Finding]] = field(default_factory=dict)
    panes: list[tuple[PaneAggregate, int]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)
    forgotten: set[str] = field(default_factory=set)
    sent_us: list[int] = field(default_factory=list)
    engine_ns: list[int] = field(default_factory=list)
    notices: list[tuple[str, str]] = field(default_factory=list)

    def add(self, orgs: Iterable[str], finding: Finding) -> None:
        for org in orgs:
            self.findings.setdefault(org, []).append(finding)

    def __bool__(self) -> bool:
        return bool(self.findings or self.panes or self.changed or self.forgotten)


class _Case:
    """The engine's own bookkeeping of an active case (the vault holds the rest)."""

    __slots__ = ("counts", "silent")

    def __init__(self, silent: Iterable[str]) -> None:
        self.counts: dict[str, int] = {}
        self.silent: set[str] = set(silent)


class PartitionEngine:
    """One partition's merge, guard, completion, revocations and DP contributions; see the
    module docstring.

    Parameters
    ----------
    settings
        The partition's settings.
    vault
        A fresh :class:`~procvault.monitor.vault.Vault` (the model and rules).
    accumulator
        A fresh :class:`~procvault.monitor.privacy.panes.PaneAccumulator` (``None``: no DP).
    stopwatch
        A monotonic nanosecond clock for the per-event engine time (``None``: not measured).
    discovery
        A fresh :class:`~procvault.monitor.discovery.DiscoveryTracker` (``None``: no process
        discovery): it counts the events the vault applied, in merge order, and completes
        with the vault's completions.
    place
        The partition a case id belongs on (the agents' keyed placement; ``None``: not
        checked). An event of a case placed elsewhere is refused as ``misplaced``: an agent
        that sends a case to two partitions would otherwise get two sets of DP caps.
    """

    def __init__(
        self,
        settings: PartitionSettings,
        vault: Vault,
        accumulator: PaneAccumulator | None = None,
        *,
        stopwatch: Callable[[], int] | None = None,
        discovery: DiscoveryTracker | None = None,
        place: Callable[[str], int] | None = None,
    ) -> None:
        self.settings: Final = settings
        self._place = place
        #: case id -> whether it belongs here (bounded: cleared when full)
        self._placed: dict[str, bool] = {}
        self.vault: Final = vault
        self.accumulator = accumulator
        self.discovery = discovery
        self._stopwatch = stopwatch
        self._policy = settings.results
        orgs = tuple(sorted(settings.orgs))
        self.orgs: Final = orgs
        self._expect = frozenset(orgs) if settings.expect is None else settings.expect
        self._pos: dict[str, _Key] = dict.fromkeys(orgs, _NEG)
        self._closed: set[str] = set()
        self._heard: set[str] = set()
        self._heard_at: dict[str, int] = dict.fromkeys(orgs, 0)
        self._silent: set[str] = set()
        self._waited: set[str] = set()
        self._buffer: list[tuple[int, int, str, int, int, Event]] = []
        # per case, the organizations with events in the merge buffer and how many: what
        # :meth:`_participants` adds to the merged ones, without a scan of the buffer
        self._buffered: dict[str, dict[str, int]] = {}
        self._waiting: dict[str, deque[tuple[int, _Guard]]] = {o: deque() for o in orgs}
        self._revoking: list[tuple[int, int, str, int, _Guard, RevocationFrame]] = []
        self._consumed: dict[str, int] = {}
        self._reread: dict[str, int] = {}
        self._stalled: dict[str, int] = {}
        self._gap_notes: list[str] = []
        self._tries: dict[str, tuple[tuple[int, int], int]] = {}
        self._stream: dict[str, _Guard] = dict.fromkeys(orgs, _NO_GUARD)
        #: per organization, ``(ts, order)`` of events admitted ahead of the clock whose
        #: merge keys have not joined the guard yet (see :meth:`_fold_ahead`)
        self._ahead: dict[str, set[tuple[int, int]]] = {o: set() for o in orgs}
        self._ahead_due: dict[str, list[tuple[int, int]]] = {o: [] for o in orgs}
        self._revoke: dict[str, _Guard] = dict.fromkeys(orgs, _NO_GUARD)
        self._released: _Key = _NEG
        self._clock: int | None = None
        self._finished = False
        self._last_event_us: int | None = None
        self._cases: dict[str, _Case] = {}
        self._done: dict[str, tuple[tuple[str, int], ...]] = {}
        self._pane_sent: dict[int, int] = {}
        self.revocations = Revocations()
        self.counters = EngineCounters()
        self._now = 0
        self._effects = Effects()

    # -- input ------------------------------------------------------------------------------
    def begin(self, now_us: int) -> None:
        """Start a batch at ``now_us`` (the caller's clock, µs since the Unix epoch)."""
        self._now = now_us

    def admit(self, frame: Frame) -> str | None:
        """Take one opened frame; ``None`` if admitted, else why not: ``replay`` (counted),
        ``redelivered`` (read again after a restart or a re-read and applied before:
        harmless), ``gap`` (does not continue its organization's chain: held back, see
        :meth:`stalled`), ``old_epoch`` (sealed under an older key epoch than its stream had
        moved to), ``unknown_org``, ``wrong_org`` (an event naming another organization than
        its stream's), ``misplaced`` (an event of a case whose id places it on another
        partition), ``resent`` (an event whose merge key is not new: its agent sent it
        before), ``future`` (further ahead of ``now`` than ``max_skew``)."""
        self.counters.frames += 1
        origin = frame.origin
        org = origin.org
        if org not in self._pos:
            return "unknown_org"
        if type(frame) is RevocationFrame:
            return self._admit_revocation(frame, org, origin)
        g = self._stream[org]
        refused = self._chain(org, origin, g)
        if refused is not None:
            return refused
        # the chain moves on, whatever becomes of the frame's content
        self._hear(org)
        if type(frame) is EventFrame:
            return self._admit_event(frame, org, origin, g)
        if type(frame) is Heartbeat:
            self._admit_heartbeat(frame, org, origin, g)
            return None
        raise TypeError(f"not a frame: {type(frame).__name__}")

    def _chain(self, org: str, origin: Origin, g: _Guard) -> str | None:
        """Why a frame of the stream does not go on (``None``: it continues the chain)."""
        c = self.counters
        if (origin.generation, origin.sequence) <= g[:2]:
            return self._replayed(org, origin)
        if origin.epoch < g[4]:
            c.old_epoch += 1
            return "old_epoch"
        if origin.prev != g[:2]:
            c.gaps += 1
            if org not in self._stalled:
                # read again from the chain's end; if that did not help (the same head
                # stalls again), from the start of the log: the offsets the chain's end was
                # read at are the broker's word, and a copy served elsewhere can mislead them
                tries = self._tries.get(org)
                again = tries is not None and tries[0] == g[:2]
                n = tries[1] + 1 if again and tries is not None else 0
                self._tries[org] = (g[:2], n)
                self._stalled[org] = 0 if n % 2 else g[5]
                if not again:
                    self._gap_notes.append(org)
            return "gap"
        if self._stalled:
            self._stalled.pop(org, None)
        if self._tries:
            self._tries.pop(org, None)
        return None

    def _admit_revocation(self, frame: RevocationFrame, org: str, origin: Origin) -> str | None:
        r = self._revoke[org]
        if (origin.generation, origin.sequence) <= r[:2]:
            return self._replayed(org, origin)
        if origin.epoch < r[4]:
            self.counters.old_epoch += 1
            return "old_epoch"
        self._hear(org)
        self._revoke[org] = (origin.generation, origin.sequence, _LOW, -1, origin.epoch, 0)
        # a resource or period revocation goes in the merge where its organization's stream
        # is (it covers what the organization sent before it); a case's applies at the point
        # the merge has reached: placed after the organization's newest event, it would wait
        # for other cases' events, and whether the case's own idle completion came first
        # (and with it the DP contribution of its completion) would depend on those cases
        pos = self._released if frame.revoked.kind == "case" else self._pos[org]
        heapq.heappush(self._revoking, (pos[0], pos[1], org, origin.offset, r, frame))
        return None

    def _admit_heartbeat(self, frame: Heartbeat, org: str, origin: Origin, g: _Guard) -> None:
        self._stream[org] = (
            origin.generation,
            origin.sequence,
            g[2],
            g[3],
            origin.epoch,
            origin.offset + 1,
        )
        if frame.closed:  # (its promise means nothing more: the position stays)
            self._closed.add(org)
        else:
            key = (frame.promise_us, frame.promise_order, org)
            self._pos[org] = max(self._pos[org], key)
            self._closed.discard(org)
        self.counters.heartbeats += 1

    def _admit_event(self, frame: EventFrame, org: str, origin: Origin, g: _Guard) -> str | None:
        ev = frame.event
        c = self.counters
        ts = _us(ev.timestamp)
        order = frame.order
        chained = (origin.generation, origin.sequence)
        after = origin.offset + 1
        if ev.org != org:
            self._stream[org] = (*chained, g[2], g[3], origin.epoch, after)
            c.wrong_org += 1
            return "wrong_org"
        if self._place is not None and not self._here(ev.case_id):
            self._stream[org] = (*chained, g[2], g[3], origin.epoch, after)
            c.misplaced += 1
            return "misplaced"
        if (ts, order) <= g[2:4]:
            self._stream[org] = (*chained, g[2], g[3], origin.epoch, after)
            c.resent += 1
            return "resent"
        skew = self.settings.max_skew_us
        if skew is not None and ts > self._now + skew:
            self._stream[org] = (*chained, g[2], g[3], origin.epoch, after)
            c.future += 1
            return "future"
        key = (ts, order, org)
        ahead = self._ahead[org]
        if skew is not None and ts > self._now + self.settings.max_lead_us:
            # ahead of the clock (within the skew): neither its merge key nor its position
            # may move on the organization's stream, else its events of the next minutes,
            # other cases' among them, would be refused as resent (one case moving others)
            if (ts, order) in ahead:
                self._stream[org] = (*chained, g[2], g[3], origin.epoch, after)
                c.resent += 1
                return "resent"
            ahead.add((ts, order))
            heapq.heappush(self._ahead_due[org], (ts, order))
            self._stream[org] = (*chained, g[2], g[3], origin.epoch, after)
        else:
            self._stream[org] = (*chained, ts, order, origin.epoch, after)
            self._pos[org] = max(self._pos[org], key)
        if ahead:
            self._fold_ahead(org)
        self._closed.discard(org)
        heapq.heappush(self._buffer, (ts, order, org, origin.offset, frame.sent_us, ev))
        waiting_orgs = self._buffered.setdefault(ev.case_id, {})
        waiting_orgs[org] = waiting_orgs.get(org, 0) + 1
        self._waiting[org].append((origin.offset, g))
        return None

    def _here(self, case_id: str) -> bool:
        """Whether ``case_id`` belongs on this partition (cached per case)."""
        placed = self._placed
        here = placed.get(case_id)
        if here is None:
            if len(placed) >= _PLACED_CACHE:
                placed.clear()
            assert self._place is not None
            here = placed[case_id] = self._place(case_id) == self.settings.partition
        return here

    def _fold_ahead(self, org: str) -> None:
        """Merge keys of events admitted ahead of the clock that the clock has passed by
        the skew (or that the stream's guard passed) join the guard: the pending set holds
        only the events of the last ``2 * max_skew``."""
        ahead, due = self._ahead[org], self._ahead_due[org]
        g = self._stream[org]
        cutoff = self._now - (self.settings.max_skew_us or 0)
        top = None
        while due and (due[0][0] <= cutoff or due[0] <= g[2:4]):  # O(log n) per key
            top = heapq.heappop(due)
            ahead.discard(top)
        if top is not None and top > g[2:4]:
            self._stream[org] = (g[0], g[1], top[0], top[1], g[4], g[5])

    def _replayed(self, org: str, origin: Origin) -> str:
        if origin.offset < self._reread.get(org, 0):
            self.counters.redelivered += 1
            return "redelivered"
        self.counters.replay += 1
        return "replay"

    def _hear(self, org: str) -> None:
        self._heard.add(org)
        self._heard_at[org] = self._now
        if org in self._silent:
            self._silent.discard(org)
            self._note("source_back", org)

    def read_until(self, org: str, next_offset: int) -> None:
        """Everything of ``org``'s topic partition below ``next_offset`` has been read (the
        records the shell rejected included)."""
        if next_offset > self._consumed.get(org, -1):
            self._consumed[org] = next_offset

    def read_position(self, org: str) -> int:
        """The next offset of ``org``'s topic partition not read yet (0: nothing read)."""
        return max(self._consumed.get(org, 0), 0)

    def stalled(self) -> dict[str, int]:
        """Organizations whose chain has a gap, each with the offset from which its topic
        partition must be read again: the record after the last frame that continued the
        chain, or 0 (the start of the log) when a re-read from there did not help. They stay
        stalled until a frame continues the chain."""
        return dict(self._stalled)

    def reread(self, org: str) -> None:
        """The shell is about to read ``org``'s topic partition again from an earlier offset:
        what it reads again that was applied before is a redelivery, not a replay. A stall of
        ``org`` counts as handled: a gap met again stalls it anew (see :meth:`stalled`)."""
        self._reread[org] = max(self._reread.get(org, 0), self._consumed.get(org, 0))
        self._stalled.pop(org, None)

    def lagging(self, org: str) -> None:
        """``org`` has records not read yet: it is not silent, however long ago its last
        record was read (a worker catching up must not time its sources out)."""
        if org in self._heard:
            self._hear(org)

    # -- the step ---------------------------------------------------------------------------
    def step(self) -> Effects:
        """Apply, in merge order, what the frontier lets through; move the public clock:
        deadlines, idle cases, DP panes; the end of the stream. Returns the effects (with
        what admitting noted since the last step: an organization back)."""
        eff = self._effects
        for org in self._gap_notes:  # (told the organization: its stream has a gap here)
            eff.notices.append(("source_gap", org))
            eff.add((org,), NoticeFinding("source_gap", org, self.settings.partition))
        self._gap_notes.clear()
        frontier, all_closed = self._frontier()
        revoking = self._revoking
        while revoking and revoking[0][:3] <= frontier:
            self._apply(revoking[0][:3])
            self._revoke_one(heapq.heappop(revoking)[5])
        self._apply(frontier)
        # the public clock: the frontier (or, once nothing holds it, the furthest any stream
        # got), never ahead of now + max_lead
        t = frontier[0] if frontier < _INF else max(k[0] for k in self._pos.values())
        t = min(t, self._now + self.settings.max_lead_us)
        if t > _LOW and (self._clock is None or t > self._clock):
            self._tick(t)
        if all_closed and not self._buffer and not self._finished:
            self._flush()
        elif self._finished and not all_closed:
            self._finished = False  # an organization reopened its stream
        self._effects = Effects()  # what the next batch's admits note
        return eff

    def _frontier(self) -> tuple[_Key, bool]:
        """The largest key every live organization has passed, and whether the stream has
        ended (every organization expected or heard from has closed its stream)."""
        timeout = self.settings.source_timeout_us
        now = self._now
        low: _Key | None = None
        ended = True
        for org in self.orgs:
            if org in self._closed:
                continue
            if org not in self._heard:
                if org not in self._expect:
                    continue
                ended = False
                if org not in self._waited:
                    self._waited.add(org)
                    self._note("waiting_for_source", org)
            else:
                ended = False
                if timeout is not None and now - self._heard_at[org] > timeout:
                    if org not in self._silent:
                        self._silent.add(org)
                        self._note("source_silent", org)
                        for case in self._cases.values():
                            case.silent.add(org)
                    continue
            k = self._pos[org]
            if low is None or k < low:
                low = k
        if low is not None:
            return low, False
        return _INF, ended

    def _note(self, kind: str, org: str) -> None:
        """Tell the shell (a log line); tell every organization when a source went silent or
        came back."""
        self._effects.notices.append((kind, org))
        if kind in ("source_silent", "source_back"):
            notice = NoticeFinding(kind, org, self.settings.partition)  # type: ignore[arg-type]
            self._effects.add(self.orgs, notice)

    def _apply(self, frontier: _Key) -> None:
        buf = self._buffer
        if not buf or buf[0][:3] > frontier:
            return
        vault, acc, disc = self.vault, self.accumulator, self.discovery
        c, eff = self.counters, self._effects
        drops = self.revocations.drops if self.revocations else None
        stopwatch = self._stopwatch
        cases = self._cases
        while buf and buf[0][:3] <= frontier:
            ts, order, org, offset, sent_us, ev = heapq.heappop(buf)
            self._unbuffer(ev.case_id, org)
            waiting = self._waiting[org]
            if waiting and waiting[0][0] == offset:
                waiting.popleft()
            else:  # (not expected: an organization's records leave in offset order)
                for i, (off, _) in enumerate(waiting):
                    if off == offset:
                        del waiting[i]
                        break
            key = (ts, order, org)
            if key <= self._released:
                c.late += 1
            else:
                self._released = key
            if drops is not None and drops(ev):
                c.revoked_events += 1
                continue
            case_id = ev.case_id
            # the cases idle by this event's time complete first (the vault would do it in
            # update): whether the event's own case is over must not depend on whether another
            # case's event came between its idle deadline and this event
            pre = vault.catch_up(ev.timestamp)
            if pre:
                if acc is not None:
                    acc.observe_update(pre)
                self._collect(pre, org, sent_us)
            if vault.is_completed(case_id):
                c.after_completion += 1
                if ev.kind == _ACTIVITY:
                    late = DeviationFinding(
                        case_id, ev.activity, ev.timestamp, "after_completion", sent_us=sent_us
                    )
                    eff.add((org,), late)
                continue
            meta = cases.get(case_id)
            if meta is None:
                meta = cases[case_id] = _Case(self._silent)
            meta.counts[org] = meta.counts.get(org, 0) + 1
            if stopwatch is not None:
                t0 = stopwatch()
                up = vault.update(ev)
                eff.engine_ns.append(stopwatch() - t0)
            else:
                up = vault.update(ev)
            if disc is not None and ev.kind == _ACTIVITY:
                disc.update(ev)
            c.applied += 1
            eff.sent_us.append(sent_us)
            eff.changed.add(case_id)
            if self._last_event_us is None or ts > self._last_event_us:
                self._last_event_us = ts
            if acc is not None:
                idx = acc.clock.index(ev.timestamp)
                if sent_us > self._pane_sent.get(idx, 0):
                    self._pane_sent[idx] = sent_us
                acc.observe(ev, up)
            if up:
                self._collect(up, org, sent_us)
            elif ev.kind == _CASE_END and vault.is_completed(case_id):
                self._finish(case_id, None)  # only placeholders so far: it ends all the same

    def _collect(self, up: Update, org: str | None, sent_us: int = 0) -> None:
        """Route an update's findings: deviations to the organization whose event caused
        them, alerts and verdicts to the case's participants (as the policy grants)."""
        eff, policy = self._effects, self._policy
        for d in up.deviations:
            finding = DeviationFinding(
                d.case_id,
                d.activity,
                d.timestamp,
                d.kind,
                d.transition,
                d.missing_places,
                sent_us,
            )
            if policy.deviations == "participants":
                eff.add(self._participants(d.case_id), finding)
            elif org is not None:
                eff.add((org,), finding)
        for a in up.alerts:
            self.counters.alerts += 1
            self._alert(a, org, sent_us)
        for r in up.completed:
            self._finish(r.case_id, r, sent_us)

    def _alert(self, a: Alert, org: str | None, sent_us: int) -> None:
        eff = self._effects
        parts = self._participants(a.case_id)
        full = AlertFinding(a.case_id, a.rule, a.old, a.new, a.activity, a.timestamp, sent_us)
        if org is None:  # a deadline or the case's closing: nobody's event in particular
            eff.add(parts, AlertFinding(a.case_id, a.rule, a.old, a.new, sent_us=sent_us))
            return
        if self._policy.rule_changes == "participants":
            bare = AlertFinding(a.case_id, a.rule, a.old, a.new, sent_us=sent_us)
            for p in parts:
                eff.add((p,), full if p == org else bare)
        else:
            eff.add((org,), full)

    def _participants(self, case_id: str, *, waiting: bool = False) -> tuple[str, ...]:
        """The organizations whose events of ``case_id`` were merged; with ``waiting``
        (a revocation's check), also those with events admitted and still waiting in the
        merge (counted per case beside the buffer: a scan of the buffer per alert cost the
        vault three quarters of its throughput on a backlog, bench/pipeline.py). Results are
        routed on the merged ones only: what waits in the buffer depends on when records
        were read, results must not."""
        meta = self._cases.get(case_id)
        if meta is not None:
            merged = set(meta.counts)
        else:
            merged = {o for o, _ in self._done.get(case_id, ())}
        if waiting:
            merged.update(self._buffered.get(case_id, ()))
        return tuple(sorted(merged))

    def _unbuffer(self, case_id: str, org: str) -> None:
        """One event of ``case_id`` from ``org`` left the merge buffer."""
        waiting_orgs = self._buffered[case_id]
        n = waiting_orgs[org] - 1
        if n:
            waiting_orgs[org] = n
        else:
            del waiting_orgs[org]
            if not waiting_orgs:
                del self._buffered[case_id]

    def _finish(self, case_id: str, result: CaseResult | None, sent_us: int = 0) -> None:
        meta = self._cases.pop(case_id, None)
        counts = tuple(sorted(meta.counts.items())) if meta is not None else ()
        self._done[case_id] = counts
        self._effects.changed.add(case_id)
        if self.discovery is not None:
            self.discovery.complete(case_id)
        if result is None:
            return
        self.counters.completed += 1
        grants = self._policy.grants
        silent = tuple(sorted(meta.silent)) if meta is not None else ()
        for org, n in counts:
            finding = CaseFinding(
                case_id,
                result.completed_by,
                is_fit=result.is_fit if grants("is_fit") and result.conformance else None,
                fitness=result.fitness if grants("fitness") and result.conformance else None,
                missing=result.missing if grants("missing") and result.conformance else None,
                remaining=result.remaining if grants("remaining") and result.conformance else None,
                produced=result.produced if grants("produced") and result.conformance else None,
                consumed=result.consumed if grants("consumed") and result.conformance else None,
                events=result.events if grants("events") else None,
                unknown_activities=result.unknown_activities
                if grants("unknown_activities") and result.conformance
                else None,
                own_events=n if grants("own_events") else None,
                alignment_cost=result.alignment_cost if grants("alignment_cost") else None,
                rules=result.rules if grants("rules") else None,
                silent_sources=silent,
                sent_us=sent_us,
            )
            self._effects.add((org,), finding)

    def _revoke_one(self, frame: RevocationFrame) -> None:
        """Apply one revocation, within what its organization contributed, and answer it."""
        r, issuer = frame.revoked, frame.origin.org
        if r.kind != "case":
            r = Revoked(r.id, r.kind, issuer, r.case, r.resource, r.start, r.end)
        part, parts = self.settings.partition, self.settings.partitions
        if r.kind == "case" and r.id not in self.revocations:
            assert r.case is not None
            if issuer not in self._participants(r.case, waiting=True):
                self.counters.revocations_refused += 1
                refused = RevocationFinding(
                    r.id, "refused", part, parts, case=r.case, reason="not_a_participant"
                )
                self._effects.add((issuer,), refused)
                return
        outcome = apply_revocation(r, self.revocations, self.vault, self.accumulator)
        if outcome.new:
            self.counters.revocations += 1
            if r.case is not None:
                self._cases.pop(r.case, None)
                self._done.pop(r.case, None)
                self._effects.changed.discard(r.case)
                self._effects.forgotten.add(r.case)
        status = "applied" if outcome.new else "repeated"
        ack = RevocationFinding(
            r.id,
            status,  # type: ignore[arg-type]
            part,
            parts,
            outcome.forgot,
            case=r.case,
            resource=r.resource,
            time_from=r.start,
            time_to=r.end,
        )
        self._effects.add((issuer,), ack)

    def _tick(self, t: int) -> None:
        self._clock = t
        at = _at(t)
        up = self.vault.tick(at)
        if up:
            self._collect(up, None)
        acc = self.accumulator
        if acc is not None:
            self._closed_panes(acc.observe_tick(at, up))

    def _flush(self) -> None:
        """Every expected organization has closed its stream: finish the cases and the panes."""
        up = self.vault.flush_update()
        self._collect(up, None)
        acc = self.accumulator
        if acc is not None:
            if self._clock is not None:
                closed = acc.observe_tick(_at(self._clock), up)
                # up to a public bound, not to the latest observation: the last pane a
                # completion can be filed in at this clock (its case's time + idle timeout)
                idle = self.vault.settings.idle_timeout
                through = _at(self._clock) + (idle if idle is not None else timedelta(0))
                closed = (*closed, *acc.flush(through))
            else:
                acc.observe_update(up)
                closed = acc.flush()
            self._closed_panes(closed)
        self._finished = True

    def _closed_panes(self, panes: Iterable[PaneAggregate]) -> None:
        sent = self._pane_sent
        out = self._effects.panes
        for p in panes:
            out.append((p, sent.pop(p.index, 0)))

    # -- introspection ----------------------------------------------------------------------
    def resume_offsets(self) -> dict[str, int]:
        """Per organization, where a restart resumes reading: the oldest record still waiting
        (an event in the merge, a revocation not applied yet), or the next one not read."""
        out = dict(self._consumed)
        for org, waiting in self._waiting.items():
            if waiting and org in out:
                out[org] = min(out[org], waiting[0][0])
        for entry in self._revoking:
            org = entry[2]
            if org in out:
                out[org] = min(out[org], entry[3])
        for org, offset in self._stalled.items():
            if org in out:
                out[org] = min(out[org], offset)
        return out

    @property
    def finished(self) -> bool:
        """Whether every expected organization closed its stream and everything was applied."""
        return self._finished

    @property
    def silent(self) -> frozenset[str]:
        """The organizations currently timed out."""
        return frozenset(self._silent)

    @property
    def closed(self) -> frozenset[str]:
        """The organizations whose stream has ended (their closing heartbeat applied)."""
        return frozenset(self._closed)

    def chain_head(self, org: str) -> tuple[int, int]:
        """``(generation, sequence)`` of the last frame of ``org`` that continued its chain
        (``(0, 0)``: none yet)."""
        g = self._stream[org]
        return (g[0], g[1])

    def lane_epoch(self, org: str) -> int:
        """The key epoch of the last frame of ``org``'s stream (0: none yet)."""
        return self._stream[org][4]

    def chain_end(self, org: str) -> int:
        """The offset after the last frame of ``org`` that continued its chain: where to read
        its topic partition again when its stream went quiet without closing (a record at its
        end may have been hidden)."""
        return self._stream[org][5]

    def active_cases(self) -> int:
        """Cases with state (active in the vault, or with placeholders only)."""
        return len(self._cases)

    def waiting(self) -> int:
        """Events waiting in the merge."""
        return len(self._buffer)

    # -- state ------------------------------------------------------------------------------
    def _persisted_guards(self) -> dict[str, tuple[_Guard, _Guard]]:
        """Per organization, its guard lanes as of its resume offset: before the oldest frame
        of the lane a restart reads again without having applied it."""
        oldest_rev: dict[str, tuple[int, _Guard]] = {}
        for entry in self._revoking:
            org, offset, prev = entry[2], entry[3], entry[4]
            if org not in oldest_rev or offset < oldest_rev[org][0]:
                oldest_rev[org] = (offset, prev)
        out = {}
        for org in self.orgs:
            waiting = self._waiting[org]
            stream = waiting[0][1] if waiting else self._stream[org]
            rev = oldest_rev[org][1] if org in oldest_rev else self._revoke[org]
            out[org] = (stream, rev)
        return out

    def meta(self) -> PartitionMeta:
        """The partition's state apart from its cases (write it with every commit)."""
        resume = self.resume_offsets()
        guards = self._persisted_guards()
        orgs = []
        for org in self.orgs:
            stream, rev = guards[org]
            pos = self._pos[org]
            consumed = self._consumed.get(org, -1)
            orgs.append(
                OrgState(
                    org,
                    pos[0],
                    pos[1],
                    org in self._closed,
                    org in self._heard,
                    consumed,
                    resume.get(org, -1),
                    GuardState(*stream),
                    GuardState(*rev),
                    org in self._silent,
                )
            )
        acc = self.accumulator
        return PartitionMeta(
            self.settings.partition,
            tuple(orgs),
            *self._released,
            self._clock,
            self._finished,
            self._last_event_us,
            acc.shared_snapshot() if acc is not None else None,
            self.revocations.snapshot(),
            msgspec.structs.replace(self.counters),
            discovery=self.discovery.shared_snapshot() if self.discovery is not None else None,
        )

    def case_record(self, case_id: str) -> CaseRecord | None:
        """The record of ``case_id``, or ``None`` if the partition keeps nothing of it (a
        revoked case: delete its record)."""
        acc = self.accumulator
        meta = self._cases.get(case_id)
        if meta is None:
            done = self._done.get(case_id)
            if done is None:
                return None
            return CaseRecord(case_id, done, True)
        share = acc.case_state(case_id) if acc is not None else None
        counts = tuple(sorted(meta.counts.items()))
        silent = tuple(sorted(meta.silent))
        if not self.vault.is_active(case_id):  # only placeholders so far
            return CaseRecord(case_id, counts, False, accumulator=share, silent=silent)
        st = self.vault.snapshot_case(case_id)
        replay = rules = None
        if st.replay is not None:
            r = st.replay
            replay = ReplayState(r.marking, r.consumed, r.produced, r.missing, r.events, r.unknown)
        if st.rules is not None:
            q = st.rules
            rules = RulesState(q.verdicts, pack_value(q.data), q.last, q.watch)
        return CaseRecord(
            case_id,
            counts,
            False,
            replay,
            rules,
            st.events,
            _us(st.last_seen) if st.last_seen is not None else None,
            share,
            silent,
            discovery=self.discovery.case_state(case_id) if self.discovery is not None else None,
        )

    def snapshot(self) -> tuple[PartitionMeta, list[CaseRecord]]:
        """The whole state: the metadata and every case's record."""
        records = []
        for case_id in sorted({*self._cases, *self._done}):
            rec = self.case_record(case_id)
            if rec is not None:
                records.append(rec)
        return self.meta(), records

    @classmethod
    def restore(
        cls,
        settings: PartitionSettings,
        vault: Vault,
        meta: PartitionMeta | None,
        cases: Iterable[CaseRecord],
        *,
        accumulator: Callable[[AccumulatorState | None], PaneAccumulator] | None = None,
        stopwatch: Callable[[], int] | None = None,
        now_us: int = 0,
        discovery: Callable[[TrackerState | None], DiscoveryTracker] | None = None,
        place: Callable[[str], int] | None = None,
    ) -> PartitionEngine:
        """An engine that continues from ``meta`` and ``cases`` (what :meth:`meta` and
        :meth:`case_record` wrote) with a fresh ``vault`` and, for DP, ``accumulator`` (a
        factory taking the accumulator's shared snapshot) and, for process discovery,
        ``discovery`` (a factory taking the tracker's shared snapshot); ``place`` as for
        the constructor."""
        acc = accumulator(meta.accumulator if meta is not None else None) if accumulator else None
        disc = discovery(meta.discovery if meta is not None else None) if discovery else None
        engine = cls(settings, vault, acc, stopwatch=stopwatch, discovery=disc, place=place)
        engine._now = now_us
        if meta is not None:
            engine._load_meta(meta)
        for rec in cases:
            engine._load_case(rec)
        if meta is not None and meta.clock_us is not None:
            # the vault's clock where it was (deadlines that passed fired before: their rules'
            # states say so)
            engine._effects = Effects()
            up = vault.tick(_at(meta.clock_us))
            if up:
                engine._collect(up, None)
        engine._effects = Effects()
        return engine

    def _load_meta(self, meta: PartitionMeta) -> None:
        if meta.partition != self.settings.partition:
            raise ValueError(
                f"the metadata is of partition {meta.partition}, not {self.settings.partition}"
            )
        self._released = (meta.released_us, meta.released_order, meta.released_org)
        for o in meta.orgs:
            org = o.org
            if org not in self._pos:
                raise ValueError(f"the partition's state names an unknown organization {org!r}")
            key = (o.position_us, o.position_order, org)
            reread = o.committed < o.consumed
            if reread:
                # Records of ``org`` will be read again: until they are, all we know is that
                # they sort after what was released.
                key = min(key, self._released)
            self._pos[org] = key
            if o.closed and not reread:
                self._closed.add(org)
            if o.heard:
                self._heard.add(org)
                self._heard_at[org] = self._now
            if o.committed >= 0:
                self._consumed[org] = o.committed
            if o.consumed >= 0:
                self._reread[org] = o.consumed
            s = o.stream
            self._stream[org] = (s.generation, s.sequence, s.ts_us, s.order, s.epoch, s.next_offset)
            r = o.revoke
            self._revoke[org] = (r.generation, r.sequence, _LOW, -1, r.epoch, 0)
        self._clock = meta.clock_us
        self._finished = meta.finished
        self._last_event_us = meta.last_event_us
        self.revocations = Revocations(meta.revocations)
        self.counters = msgspec.structs.replace(meta.counters)

    def _load_case(self, rec: CaseRecord) -> None:
        case_id = rec.case
        if rec.completed:
            self._done[case_id] = rec.participants
            self.vault.mark_completed(case_id)
            return
        meta = self._cases[case_id] = _Case(rec.silent)
        meta.counts = dict(rec.participants)
        acc = self.accumulator
        if rec.accumulator is not None and acc is not None:
            acc.restore_case(case_id, rec.accumulator)
        if rec.discovery is not None and self.discovery is not None:
            self.discovery.restore_case(rec.discovery)
        if rec.replay is None and rec.rules is None and not rec.events:
            return  # placeholders only: nothing in the vault
        from ..compliance.engine import CaseSnapshot as RuleSnapshot
        from ..tbr import CaseSnapshot as ReplaySnapshot

        replay = None
        if rec.replay is not None:
            r = rec.replay
            replay = ReplaySnapshot(
                tuple((p, n) for p, n in r.marking),
                r.consumed,
                r.produced,
                r.missing,
                r.events,
                r.unknown,
            )
        rules = None
        if rec.rules is not None:
            q = rec.rules
            rules = RuleSnapshot(case_id, tuple(q.verdicts), unpack_value(q.data), q.last, q.watch)
        last_seen = _at(rec.last_seen_us) if rec.last_seen_us is not None else None
        self.vault.restore_case(CaseState(case_id, replay, rules, rec.events, last_seen))
