"""Revocation with the in-process vault: after a case and a resource are revoked, no later
deviation, alert, case result, pane or window includes them (issue 10)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from seqnet import sequence_net

from procvault.monitor.compliance import Compliance, DeclareRule
from procvault.monitor.compliance.model import Correlation
from procvault.monitor.event import Event
from procvault.monitor.privacy import (
    Budget,
    DeterministicReleaser,
    KnownKeys,
    PaneAccumulator,
    PaneClock,
    PaneRecord,
    PaneReleaser,
    PaneSettings,
    PrivacySettings,
    ReleasePlan,
    WindowRecord,
)
from procvault.monitor.revocation import (
    Revocations,
    RevocationState,
    Revoked,
    apply_revocation,
)
from procvault.monitor.vault import Update, Vault

T0 = datetime(2024, 1, 1, tzinfo=UTC)
PANE = timedelta(minutes=30)
FOUR_EYES = DeclareRule(
    "four_eyes", "response", "A", "C", correlation=(Correlation("resource", same=False),)
)
SETTINGS = PrivacySettings(
    budget=Budget(1.0, window=4, delta=1e-6), panes=PaneSettings(PANE), windows=(2 * PANE,)
)


NET = sequence_net("ABC")
KNOWN = KnownKeys.build(NET.labels, rules=[FOUR_EYES.name])
PLAN = ReleasePlan.build(SETTINGS, KNOWN)


def _events() -> list[Event]:
    """40 cases, one started every 5 minutes: A, B, C, end. Resource ``rx`` does B in every
    third case; the ``victim`` case runs from the first to the last hour with A and C by the
    same resource (a four-eyes violation at its end)."""
    out = []
    for c in range(40):
        t = T0 + timedelta(minutes=5 * c)
        res = [f"r{c % 3}", "rx" if c % 3 == 0 else f"r{(c + 1) % 3}", f"r{(c + c % 2) % 3}"]
        for j, act in enumerate("ABC"):
            out.append(Event.create(f"c{c}", act, t + timedelta(minutes=4 * j), resource=res[j]))
        out.append(Event.case_end(f"c{c}", t + timedelta(minutes=13)))
    out.append(Event.create("victim", "A", T0 + timedelta(minutes=1), resource="r1"))
    out.append(Event.create("victim", "B", T0 + timedelta(minutes=61), resource="rx"))
    out.append(Event.create("victim", "C", T0 + timedelta(minutes=181), resource="r1"))
    out.append(Event.case_end("victim", T0 + timedelta(minutes=182)))
    out.sort(key=lambda e: e.timestamp)
    return out


@dataclass
class Run:
    findings: list[tuple[int, Update]] = field(default_factory=list)
    records: list[PaneRecord | WindowRecord] = field(default_factory=list)
    revocations: Revocations = field(default_factory=Revocations)


def _run(events: list[Event], revoke_at: int | None = None) -> Run:
    vault = Vault(NET, compliance=Compliance([FOUR_EYES]))
    acc = PaneAccumulator(SETTINGS, KNOWN)
    rel = PaneReleaser(PLAN, DeterministicReleaser(PLAN))
    run = Run()
    revs = run.revocations

    def release(aggs: tuple) -> None:  # type: ignore[type-arg]
        for agg in aggs:
            run.records.extend(
                r for r in rel.release(agg) if isinstance(r, PaneRecord | WindowRecord)
            )

    for i, ev in enumerate(events):
        if i == revoke_at:
            assert apply_revocation(Revoked.of_case("rev-1", "victim"), revs, vault, acc).forgot
            apply_revocation(Revoked.of_resource("rev-2", "rx"), revs, vault, acc)
        if revs and revs.drops(ev):
            continue
        up = vault.update(ev)
        run.findings.append((i, up))
        release(acc.observe_replayed(ev, up))
    up = vault.flush_update()
    run.findings.append((len(events), up))
    assert acc.watermark is not None
    release(acc.observe_tick(acc.watermark, up))
    release(acc.flush())
    return run


def _names(up: Update) -> set[str]:
    return (
        {d.case_id for d in up.deviations}
        | {a.case_id for a in up.alerts}
        | {r.case_id for r in up.completed}
    )


def _later_statistics(run: Run, after_pane: int) -> tuple[list[object], list[object]]:
    panes = [
        r.statistics for r in run.records if isinstance(r, PaneRecord) and r.pane.index > after_pane
    ]
    windows = [
        r.statistics
        for r in run.records
        if isinstance(r, WindowRecord) and r.first_pane > after_pane
    ]
    return panes, windows


def test_after_revoking_a_case_and_a_resource_nothing_later_includes_them() -> None:
    events = _events()
    at = next(i for i, e in enumerate(events) if e.timestamp >= T0 + timedelta(minutes=90))
    rev_pane = PaneClock(SETTINGS.panes).index(events[at].timestamp)
    plain = _run(events)
    revoked = _run(events, revoke_at=at)

    # without the revocation, the victim shows up later (so the test can see it vanish)
    assert any("victim" in _names(up) for i, up in plain.findings if i >= at)
    assert any(a.case_id == "victim" for _, up in plain.findings for a in up.alerts)
    # with it: no later deviation, alert or case result names the victim
    assert not any("victim" in _names(up) for i, up in revoked.findings if i >= at)
    later_rx = [i for i, e in enumerate(events) if i >= at and e.resource == "rx"]
    later_victim = [i for i, e in enumerate(events) if i >= at and e.case_id == "victim"]
    assert later_rx and later_victim
    applied = {i for i, _ in revoked.findings}
    assert applied.isdisjoint(later_rx) and applied.isdisjoint(later_victim)
    assert revoked.revocations.dropped == len(set(later_rx) | set(later_victim))

    # every later pane and window is what a stream without the victim and without rx's later
    # events would have released: they include nothing of either
    drop = set(later_rx) | {i for i, e in enumerate(events) if e.case_id == "victim"}
    reference = _run([e for i, e in enumerate(events) if i not in drop])
    got, expected = _later_statistics(revoked, rev_pane), _later_statistics(reference, rev_pane)
    assert got[0] and got[1]  # there are later panes and windows
    assert got == expected
    # ... and they differ from what the unrevoked stream released
    assert _later_statistics(plain, rev_pane) != got


def test_a_revocation_is_recorded_once_and_survives_a_snapshot() -> None:
    vault = Vault(NET)
    revs = Revocations()
    ev = Event.create("c", "A", T0, org="lab", resource="ann")
    vault.update(ev)
    assert apply_revocation(Revoked.of_case("r1", "c"), revs, vault).forgot
    assert not vault.is_active("c")
    assert apply_revocation(Revoked.of_case("r1", "c"), revs, vault).new is False
    apply_revocation(Revoked.of_resource("r2", "ann", org="lab"), revs, vault)
    apply_revocation(Revoked.of_period("r3", T0 + PANE, T0 + 2 * PANE, org="ward"), revs, vault)
    assert len(revs) == 3 and "r2" in revs
    blob = msgspec.msgpack.encode(revs.snapshot())
    restored = Revocations(msgspec.msgpack.decode(blob, type=RevocationState))
    assert restored.dropped == revs.dropped and len(restored) == 3
    for r in (revs, restored):
        assert r.covers(Event.create("c", "B", T0))
        assert r.covers(Event.create("d", "B", T0, org="lab", resource="ann"))
        assert not r.covers(Event.create("d", "B", T0, org="ward", resource="ann"))
        assert r.covers(Event.create("d", "B", T0 + PANE, org="ward"))
        assert not r.covers(Event.create("d", "B", T0 + 2 * PANE, org="ward"))
        assert not r.covers(Event.create("d", "B", T0 + PANE, org="lab"))


def test_bad_revocations_are_refused() -> None:
    with pytest.raises(ValueError, match="start < end"):
        Revoked.of_period("r", T0, T0)
    with pytest.raises(ValueError, match="needs a case"):
        Revoked("r", "case")
    with pytest.raises(ValueError, match="unknown revocation kind"):
        Revoked("r", "everything")  # type: ignore[arg-type]
