"""The partition engine against an oracle and against itself.

A workload is a log of cases whose events belong to up to three organizations, streamed as
each organization's agent would (events in source order, heartbeats, producer sessions that
restart, a closing heartbeat), with adversarial copies of earlier records appended to the
topics (replays). Hypothesis draws the workload, the order in which the organizations'
records arrive, the batch boundaries and crashes: a crash throws away what the engine produced
since its last commit, restores it from the last committed snapshot and reads again from the
committed offsets.

Two properties:

* **oracle**: every case's verdict and every organization's deviations equal those of a plain
  :class:`~procvault.monitor.vault.Vault` fed each distinct event once, in source order;
* **restart**: the committed findings and DP panes of an interrupted run equal those of an
  uninterrupted one.

``test_the_checks_see_a_broken_guard`` and ``..._broken_completion`` run the same checks on an
engine with the replay guard or the completion memory removed, and expect them to fail.
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
from procvault.monitor.findings import FULL_VERDICT, CaseFinding, DeviationFinding, ResultsPolicy
from procvault.monitor.partition import (
    EventFrame,
    Heartbeat,
    Origin,
    PartitionEngine,
    PartitionSettings,
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

    def origin(org: str) -> Origin:
        o = Origin(org, "agent-1", gen[org], seq[org], len(topics[org]))
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
    return Workload(orgs, topics, source)


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
            engine.admit(w.topics[org][pos[org]])
            pos[org] += 1
            read.add(org)
        for org in read:
            engine.read_until(org, pos[org])
        eff = engine.step()
        for org, items in eff.findings.items():
            pending.findings.setdefault(org, []).extend(items)
        pending.panes.extend(p for p, _ in eff.panes)
        batch_no += 1
        if batch_no in crashes:  # lose what was not committed, restart from the last commit
            meta, cases = committed
            engine = engine_cls.restore(settings, _vault(), meta, cases, accumulator=_acc)
            pos = dict(committed_pos)
            pending = Run()
            continue
        for org, items in pending.findings.items():
            out.findings.setdefault(org, []).extend(items)
        out.panes.extend(pending.panes)
        pending = Run()
        committed = engine.snapshot()
        resume = engine.resume_offsets()
        committed_pos = {o: max(0, resume.get(o, 0)) for o in w.orgs}
        if all(pos[o] >= len(w.topics[o]) for o in w.orgs) and not read:
            return out


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
    assert interrupted.findings == straight.findings
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
    for pos, e in enumerate(ev):
        o = Origin(e.org, "agent-1", 1, seq[e.org], len(topics[e.org]))
        seq[e.org] += 1
        topics[e.org].append(EventFrame(o, pos * 256, 0, e))
    replay = topics["a"][0]  # case c1's first event, again, after c1 completed
    topics["a"].append(replay._replace(origin=replay.origin._replace(offset=len(topics["a"]))))
    for org in orgs:
        o = Origin(org, "agent-1", 1, seq[org], len(topics[org]))
        topics[org].append(Heartbeat(o, 1 << 60, 0, True))
    return Workload(orgs, topics, ev), [0, 1] * 20, [2] * 20, {3}


def _no_guard_admit(self: PartitionEngine, frame: Any) -> str | None:
    """``admit`` with the guard's state wiped before every frame."""
    org = frame.origin.org
    self._stream[org] = (-1, -1, -(1 << 62), -1)  # type: ignore[attr-defined]
    self._revoke[org] = (-1, -1, -(1 << 62), -1)  # type: ignore[attr-defined]
    return PartitionEngine.admit(self, frame)


class _ForgetfulGuard(PartitionEngine):
    admit = _no_guard_admit  # type: ignore[assignment]


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
