"""The partition engine against an oracle and against itself.

A workload is a log of cases whose events belong to up to three organizations, streamed as
each organization's agent would (events in source order, heartbeats, producer sessions that
restart, a closing heartbeat; each frame chained to the organization's previous one), with
adversarial copies of earlier records appended to the topics (replays) and records the
adversary hides the first time they are read (a drop, or a reorder: the record is served
later). Hypothesis draws the workload, the order in which the organizations' records arrive,
the batch boundaries and crashes: a crash throws away what the engine produced since its last
commit, restores it from the last committed snapshot and reads again from the committed
offsets. Like the vault worker, the harness reads an organization's topic again from where
:meth:`~procvault.monitor.partition.PartitionEngine.stalled` says when a frame did not
continue its chain.

Two properties:

* **oracle**: every case's verdict and every organization's deviations equal those of a plain
  :class:`~procvault.monitor.vault.Vault` fed each distinct event once, in source order;
* **restart**: the committed findings and DP panes of an interrupted run equal those of an
  uninterrupted one.

``test_the_checks_see_a_broken_guard``, ``..._broken_completion`` and ``..._broken_chain``
run the same checks on an engine with the replay guard, the completion memory or the chain
check removed, and expect them to fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seqnet import sequence_net

from procvault.monitor.compliance import Compliance, DeclareRule
from procvault.monitor.event import Event, EventKind
from procvault.monitor.findings import (
    FULL_VERDICT,
    CaseFinding,
    DeviationFinding,
    NoticeFinding,
    ResultsPolicy,
)
from procvault.monitor.partition import (
    EventFrame,
    Heartbeat,
    Origin,
    PartitionEngine,
    PartitionSettings,
    RevocationFrame,
)
from procvault.monitor.privacy.budget import Budget
from procvault.monitor.privacy.panes import PaneAccumulator
from procvault.monitor.privacy.settings import KnownKeys, PaneSettings, PrivacySettings
from procvault.monitor.vault import Vault

T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = 1_900_000_000_000_000  # the caller's clock: far after the events
ORGS = ("a", "b", "c")
NET = sequence_net("ABC")
RULES = [DeclareRule("has_b", "existence", "B"), DeclareRule("c_after_a", "response", "A", "C")]
DP = PrivacySettings(
    Budget(1.0, window=4, delta=1e-6), PaneSettings(timedelta(minutes=30)), max_panes_per_case=3
)
KNOWN = KnownKeys.build(NET.labels, rules=[r.name for r in RULES])


def _vault() -> Vault:
    return Vault(NET, compliance=Compliance(RULES))


def _acc(state: Any = None) -> PaneAccumulator:
    return PaneAccumulator(DP, KNOWN, state)


@dataclass
class Workload:
    """The organizations' topics (frames by offset) and the clean source."""

    orgs: tuple[str, ...]
    topics: dict[str, list[Any]]
    source: list[Event]  # each distinct event once, in source order
    #: per organization, the offsets the adversary hides the first time they are read
    hidden: dict[str, frozenset[int]] = field(default_factory=dict)


@st.composite
def workloads(draw: st.DrawFn) -> Workload:
    orgs = ORGS[: draw(st.integers(1, 3))]
    rows: list[tuple[int, str, str, str, EventKind]] = []
    for case in range(draw(st.integers(1, 6))):
        t = draw(st.integers(0, 240))
        org = draw(st.sampled_from(orgs))
        for _ in range(draw(st.integers(1, 5))):
            act = draw(st.sampled_from("ABCAX"))
            org = draw(st.sampled_from(orgs))
            kind = draw(st.sampled_from([EventKind.ACTIVITY] * 5 + [EventKind.PLACEHOLDER]))
            rows.append(
                (t, f"c{case}", act if kind == EventKind.ACTIVITY else "pv:withheld", org, kind)
            )
            t += draw(st.integers(0, 40))
        if draw(st.booleans()):
            rows.append((t, f"c{case}", "", org, EventKind.CASE_END))
            if draw(st.integers(0, 3)) == 0:  # something after the case's end
                rows.append(
                    (t + 5, f"c{case}", "A", draw(st.sampled_from(orgs)), EventKind.ACTIVITY)
                )
    rows.sort(key=lambda r: r[0])  # a stable sort: ties keep the drawn order
    source = [
        Event(case, act, T0 + timedelta(minutes=t), org, None, (), kind)
        for t, case, act, org, kind in rows
    ]
    topics: dict[str, list[Any]] = {o: [] for o in orgs}
    gen = dict.fromkeys(orgs, 1)
    seq = dict.fromkeys(orgs, 0)
    last = dict.fromkeys(orgs, (0, 0))

    def origin(org: str) -> Origin:
        o = Origin(org, "agent-1", gen[org], seq[org], len(topics[org]), prev=last[org])
        last[org] = (gen[org], seq[org])
        seq[org] += 1
        return o

    for pos, ev in enumerate(source):
        org = ev.org
        if draw(st.integers(0, 9)) == 0:  # the agent restarts: a new session
            gen[org] += 1
            seq[org] = 0
        topics[org].append(EventFrame(origin(org), pos * 256, 0, ev))
        if draw(st.integers(0, 3)) == 0:
            ts = int((ev.timestamp - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
            topics[org].append(Heartbeat(origin(org), ts, pos * 256, False))
        if draw(st.integers(0, 5)) == 0 and topics[org]:  # an adversary's copy of a record
            topics[org].append(draw(st.sampled_from(topics[org]))._replace())
    for org in orgs:
        topics[org].append(Heartbeat(origin(org), 1 << 60, 0, True))
        for _ in range(draw(st.integers(0, 2))):  # replays after the end, too
            topics[org].append(draw(st.sampled_from(topics[org])))
    # a copied record keeps its origin but lands at a new offset
    for org in orgs:
        topics[org] = [
            f._replace(origin=f.origin._replace(offset=i)) for i, f in enumerate(topics[org])
        ]
    hidden = {
        o: frozenset(i for i in range(len(topics[o])) if draw(st.integers(0, 9)) == 0) for o in orgs
    }
    return Workload(orgs, topics, source, hidden)


@dataclass
class Run:
    """What a run committed."""

    findings: dict[str, list[Any]] = field(default_factory=dict)
    panes: list[Any] = field(default_factory=list)


def _settings(orgs: tuple[str, ...]) -> PartitionSettings:
    return PartitionSettings(
        partition=0,
        orgs=orgs,
        source_timeout_us=None,
        max_skew_us=None,
        results=ResultsPolicy(FULL_VERDICT, "own", "participants"),
    )


def run(
    w: Workload,
    arrivals: list[int],
    batches: list[int],
    crashes: set[int],
    engine_cls: type[PartitionEngine] = PartitionEngine,
) -> Run:
    """Deliver ``w``'s records in the drawn order, in batches, crashing where told."""
    settings = _settings(w.orgs)
    engine = engine_cls(settings, _vault(), _acc())
    committed = engine.snapshot()
    committed_pos = dict.fromkeys(w.orgs, 0)
    pos = dict(committed_pos)
    out = Run()
    pending = Run()
    choices = iter(arrivals)
    sizes = iter(batches)
    batch_no = 0
    hidden = {o: set(w.hidden.get(o, ())) for o in w.orgs}  # each hidden once (fair delivery)
    rereads = 0
    tail_rereads = 0
    last_progress: tuple[int, ...] = ()

    def next_org() -> str | None:
        live = [o for o in w.orgs if pos[o] < len(w.topics[o])]
        if not live:
            return None
        return live[next(choices, 0) % len(live)]

    while True:
        engine.begin(NOW)
        size = next(sizes, 7) or 1
        read: set[str] = set()
        for _ in range(size):
            org = next_org()
            if org is None:
                break
            if pos[org] in hidden[org]:  # the adversary hides it this time
                hidden[org].discard(pos[org])
            else:
                engine.admit(w.topics[org][pos[org]])
            pos[org] += 1
            read.add(org)
        for org in read:
            engine.read_until(org, pos[org])
        eff = engine.step()
        for org, offset in engine.stalled().items():  # what the worker does on a gap
            rereads += 1
            assert rereads < 500, "a stream stays stalled"
            engine.reread(org)
            pos[org] = offset
        for org, items in eff.findings.items():
            pending.findings.setdefault(org, []).extend(items)
        pending.panes.extend(p for p, _ in eff.panes)
        batch_no += 1
        if batch_no in crashes:  # lose what was not committed, restart from the last commit
            meta, cases = committed
            engine = engine_cls.restore(settings, _vault(), meta, cases, accumulator=_acc)
            pos = dict(committed_pos)
            pending = Run()
            tail_rereads = 0
            continue
        for org, items in pending.findings.items():
            out.findings.setdefault(org, []).extend(items)
        out.panes.extend(pending.panes)
        pending = Run()
        committed = engine.snapshot()
        resume = engine.resume_offsets()
        committed_pos = {o: max(0, resume.get(o, 0)) for o in w.orgs}
        if all(pos[o] >= len(w.topics[o]) for o in w.orgs) and not read:
            # everything read: a stream that did not close is read again (the worker does so
            # for a silent source: from its chain's end, then from the start)
            quiet = [o for o in w.orgs if o not in engine.closed]
            progress = tuple(engine.chain_end(o) for o in w.orgs)
            if progress != last_progress:
                tail_rereads, last_progress = 0, progress
            if not quiet or tail_rereads >= 2:
                return out
            tail_rereads += 1
            for org in quiet:
                rereads += 1
                assert rereads < 500, "a stream stays stalled"
                engine.reread(org)
                pos[org] = engine.chain_end(org) if tail_rereads == 1 else 0


def oracle(w: Workload) -> tuple[dict[str, dict[str, Any]], dict[str, list[Any]]]:
    """Per case its verdict, per organization its deviations: a plain vault, each event once."""
    vault = _vault()
    verdicts: dict[str, dict[str, Any]] = {}
    devs: dict[str, list[Any]] = {}
    for ev in w.source:
        up = vault.update(ev)
        for d in up.deviations:
            devs.setdefault(ev.org, []).append((d.case_id, d.activity, d.kind))
        for r in up.completed:
            verdicts[r.case_id] = _verdict(r)
    for r in vault.flush():
        verdicts[r.case_id] = _verdict(r)
    return verdicts, devs


def _verdict(r: Any) -> dict[str, Any]:
    return {
        "completed_by": r.completed_by,
        "is_fit": r.is_fit,
        "fitness": r.fitness,
        "missing": r.missing,
        "remaining": r.remaining,
        "events": r.events,
        "rules": r.rules,
    }


def _engine_view(out: Run) -> tuple[dict[str, dict[str, Any]], dict[str, list[Any]]]:
    verdicts: dict[str, dict[str, Any]] = {}
    devs: dict[str, list[Any]] = {}
    for org, items in out.findings.items():
        for f in items:
            if isinstance(f, CaseFinding):
                v = {k: getattr(f, k) for k in ("completed_by", "is_fit", "fitness", "missing")}
                v.update(remaining=f.remaining, events=f.events, rules=f.rules)
                assert verdicts.setdefault(f.case, v) == v, "participants disagree"
            elif isinstance(f, DeviationFinding):
                devs.setdefault(org, []).append((f.case, f.activity, f.kind))
    return verdicts, devs


def _without_gaps(findings: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The findings but the gap notices, per organization that has any (an organization
    with an empty list has none: Hypothesis found a run that left one)."""
    out = {
        org: [f for f in items if not (isinstance(f, NoticeFinding) and f.kind == "source_gap")]
        for org, items in findings.items()
    }
    return {org: items for org, items in out.items() if items}


def check(
    w: Workload,
    arrivals: list[int],
    batches: list[int],
    crashes: set[int],
    engine_cls: type[PartitionEngine] = PartitionEngine,
) -> None:
    """Both properties (see the module docstring)."""
    straight = run(w, arrivals, batches, set(), engine_cls)
    verdicts, devs = oracle(w)
    got_verdicts, got_devs = _engine_view(straight)
    assert got_verdicts == verdicts
    assert {o: sorted(d) for o, d in got_devs.items()} == {o: sorted(d) for o, d in devs.items()}
    interrupted = run(w, arrivals, batches, crashes, engine_cls)
    # (where a gap is met depends on what the adversary hid from which read: not compared)
    assert _without_gaps(interrupted.findings) == _without_gaps(straight.findings)
    assert interrupted.panes == straight.panes


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    w=workloads(),
    arrivals=st.lists(st.integers(0, 5), max_size=200),
    batches=st.lists(st.integers(1, 12), max_size=60),
    crashes=st.sets(st.integers(1, 40), max_size=6),
)
def test_any_interleaving_with_replays_and_restarts_matches_the_oracle(
    w: Workload, arrivals: list[int], batches: list[int], crashes: set[int]
) -> None:
    check(w, arrivals, batches, crashes)


# -- mutants: the checks must see a broken guard and a broken completion memory --------------
def _example() -> tuple[Workload, list[int], list[int], set[int]]:
    """A workload with a replayed event of a completed case, a genuine event after the case's
    end, and a restart after its completion."""
    orgs = ("a", "b")
    ev = [
        Event("c1", "A", T0, "a"),
        Event("c1", "B", T0 + timedelta(minutes=1), "b"),
        Event("c1", "C", T0 + timedelta(minutes=2), "a"),
        Event("c1", "", T0 + timedelta(minutes=3), "a", None, (), EventKind.CASE_END),
        Event("c2", "A", T0 + timedelta(minutes=4), "b"),
        Event("c1", "B", T0 + timedelta(minutes=5), "a"),  # after c1 completed: not applied
    ]
    topics: dict[str, list[Any]] = {"a": [], "b": []}
    seq = {"a": 0, "b": 0}

    def origin(org: str) -> Origin:
        prev = (1, seq[org] - 1) if seq[org] else (0, 0)
        o = Origin(org, "agent-1", 1, seq[org], len(topics[org]), prev=prev)
        seq[org] += 1
        return o

    for pos, e in enumerate(ev):
        topics[e.org].append(EventFrame(origin(e.org), pos * 256, 0, e))
    replay = topics["a"][0]  # case c1's first event, again, after c1 completed
    topics["a"].append(replay._replace(origin=replay.origin._replace(offset=len(topics["a"]))))
    for org in orgs:
        topics[org].append(Heartbeat(origin(org), 1 << 60, 0, True))
    # b's first event (c1's B) is hidden the first time: served only if b is read again
    hidden = {"a": frozenset(), "b": frozenset({0})}
    return Workload(orgs, topics, ev, hidden), [0, 1] * 20, [2] * 20, {3}


_LOW = -(1 << 62)


def _no_guard_admit(self: PartitionEngine, frame: Any) -> str | None:
    """``admit`` with the guard's state wiped before every frame (its chain still met)."""
    org = frame.origin.org
    self._stream[org] = (*frame.origin.prev, _LOW, -1, 0, 0)  # type: ignore[attr-defined]
    self._revoke[org] = (0, 0, _LOW, -1, 0, 0)  # type: ignore[attr-defined]
    return PartitionEngine.admit(self, frame)


class _ForgetfulGuard(PartitionEngine):
    admit = _no_guard_admit  # type: ignore[assignment]


def _unchained_admit(self: PartitionEngine, frame: Any) -> str | None:
    """``admit`` that takes every frame as continuing its chain (no gap is ever seen)."""
    o = frame.origin
    lane = self._stream[o.org]  # type: ignore[attr-defined]
    if type(frame) is not RevocationFrame and (o.generation, o.sequence) > lane[:2]:
        frame = frame._replace(origin=o._replace(prev=lane[:2]))
    return PartitionEngine.admit(self, frame)


class _Unchained(PartitionEngine):
    admit = _unchained_admit  # type: ignore[assignment]


class _ForgetsCompletion(PartitionEngine):
    """Completion remembered per case object only, and lost on restart (the old bug)."""

    @classmethod
    def restore(cls, settings: Any, vault: Vault, meta: Any, cases: Any, **kw: Any) -> Any:
        live = [c for c in cases if not c.completed]
        return super().restore(settings, vault, meta, live, **kw)


def test_the_checks_pass_on_the_example() -> None:
    w, arrivals, batches, _ = _example()
    for crash in range(1, 12):
        check(w, arrivals, batches, {crash})


def test_the_checks_see_a_broken_guard() -> None:
    with pytest.raises(AssertionError):
        check(*_example(), engine_cls=_ForgetfulGuard)


def _fails(engine_cls: type[PartitionEngine], crash: int) -> bool:
    w, arrivals, batches, _ = _example()
    try:
        check(w, arrivals, batches, {crash}, engine_cls=engine_cls)
    except AssertionError:
        return True
    return False


def test_the_checks_see_a_broken_completion_memory() -> None:
    # a crash after the batch that completed c1 and before c1's late event is read again
    assert any(_fails(_ForgetsCompletion, crash) for crash in range(1, 12))


def test_the_checks_see_a_broken_chain() -> None:
    # b's hidden event is never asked for again: c1 completes without its B
    with pytest.raises(AssertionError):
        check(*_example(), engine_cls=_Unchained)


def test_a_silent_source_that_comes_back_is_reported_back() -> None:
    """``source_back`` is noted when the organization's next frame is admitted (between two
    steps): the next step's effects carry it, to the log and to every organization."""
    settings = PartitionSettings(partition=0, orgs=("a", "b"), source_timeout_us=5_000_000)
    engine = PartitionEngine(settings, _vault())

    def origin(org: str, seq: int) -> Origin:
        return Origin(org, "agent-1", 1, seq, seq, prev=(1, seq - 1) if seq else (0, 0))

    def beat(org: str, seq: int, minute: int) -> Heartbeat:
        promise = int((T0 + timedelta(minutes=minute)).timestamp() * 1e6)
        return Heartbeat(origin(org, seq), promise, 0, closed=False)

    notes: list[tuple[str, str]] = []
    told: list[tuple[str, str]] = []

    def step(now_s: int, *frames: Any) -> None:
        engine.begin(NOW + now_s * 1_000_000)
        for f in frames:
            assert engine.admit(f) is None
        eff = engine.step()
        notes.extend(eff.notices)
        told.extend(
            (f.kind, f.org) for f in eff.findings.get("b", []) if isinstance(f, NoticeFinding)
        )

    step(0, beat("a", 0, 1), beat("b", 0, 1))
    step(3, beat("b", 1, 2))
    step(7, beat("b", 2, 3))  # a: 7 s without a frame
    step(8, beat("a", 1, 4))  # a is back
    step(9)
    assert ("source_silent", "a") in notes and ("source_back", "a") in notes, notes
    assert told == [("source_silent", "a"), ("source_back", "a")], told


def test_a_case_placed_on_another_partition_is_refused() -> None:
    """With ``place``, a partition refuses the events of a case whose id places it elsewhere
    (``misplaced``, counted; the chain moves on), so an agent cannot give a case two
    partitions, and with them two sets of DP caps; without ``place`` nothing is checked."""

    def place(case_id: str) -> int:
        return 0 if case_id.startswith("here") else 1

    def origin(seq: int) -> Origin:
        return Origin("a", "agent-1", 1, seq, seq, prev=(1, seq - 1) if seq else (0, 0))

    def frame(seq: int, case: str) -> EventFrame:
        ev = Event.create(case, "A", T0 + timedelta(minutes=seq), org="a")
        return EventFrame(origin(seq), seq, 0, ev)

    settings = PartitionSettings(partition=0, orgs=("a",))
    checked = PartitionEngine(settings, _vault(), place=place)
    unchecked = PartitionEngine(settings, _vault())
    for engine, expected in ((checked, [None, "misplaced", None]), (unchecked, [None] * 3)):
        engine.begin(NOW)
        got = [engine.admit(frame(i, c)) for i, c in enumerate(("here-1", "there-1", "here-2"))]
        assert got == expected
        engine.step()
    assert checked.counters.misplaced == 1 and checked.counters.applied == 2
    assert unchecked.counters.misplaced == 0 and unchecked.counters.applied == 3


class _ScanChecked(PartitionEngine):
    """Checks every answer of the index of organizations waiting in the merge against a scan
    of the merge buffer (what the engine did before the index)."""

    calls = 0

    def _participants(self, case_id: str, *, waiting: bool = False) -> tuple[str, ...]:
        got = super()._participants(case_id, waiting=True)  # (checked at every call)
        meta = self._cases.get(case_id)
        merged = set(meta.counts) if meta else {o for o, _ in self._done.get(case_id, ())}
        assert super()._participants(case_id) == tuple(sorted(merged))
        merged.update(org for _, _, org, _, _, ev in self._buffer if ev.case_id == case_id)
        assert got == tuple(sorted(merged)), (case_id, got, merged)
        _ScanChecked.calls += 1
        return super()._participants(case_id, waiting=waiting)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    w=workloads(),
    arrivals=st.lists(st.integers(0, 5), max_size=200),
    batches=st.lists(st.integers(1, 12), max_size=60),
    crashes=st.sets(st.integers(1, 40), max_size=6),
)
def test_the_waiting_organizations_index_answers_as_a_scan_of_the_merge_buffer(
    w: Workload, arrivals: list[int], batches: list[int], crashes: set[int]
) -> None:
    run(w, arrivals, batches, crashes, engine_cls=_ScanChecked)


def test_the_scan_check_is_reached_on_the_example() -> None:
    before = _ScanChecked.calls
    w, arrivals, batches, crashes = _example()
    run(w, arrivals, batches, crashes, engine_cls=_ScanChecked)
    assert _ScanChecked.calls > before
