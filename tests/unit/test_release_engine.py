"""The release stage without Kafka: the pane combiner, the release engine, the sealed state."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.errors import ConfigError
from procvault.monitor.privacy.budget import Budget
from procvault.monitor.privacy.combiner import PaneCombiner, PanePartials
from procvault.monitor.privacy.mechanisms import OpenDPReleaser
from procvault.monitor.privacy.panes import PaneAggregate, PaneClock
from procvault.monitor.privacy.plan import ReleasePlan
from procvault.monitor.privacy.records import PaneRecord, WithheldRecord
from procvault.monitor.privacy.settings import (
    KnownKeys,
    PaneSettings,
    PrivacySettings,
    RunningTotals,
)
from procvault.monitor.privacy.stage import ReleaseEngine
from procvault.streams.changelog import StateKeys
from procvault.streams.frames import open_partials, seal_partials
from procvault.streams.release import record_key, sign_record, verify_record
from procvault.streams.release_stage import StateStore
from procvault.streams.secrets import VaultSecrets

SETTINGS = PrivacySettings(
    Budget(1.0, window=4, delta=1e-6),
    PaneSettings(timedelta(minutes=1)),
    max_panes_per_case=2,
    windows=(timedelta(minutes=2),),
    running_totals=RunningTotals(("cases",), levels=8),
)
KNOWN = KnownKeys.build(["A", "B"])
CLOCK = PaneClock(SETTINGS.panes)
PLAN = ReleasePlan.build(SETTINGS, KNOWN)
FP = PLAN.fingerprint()
BASE = 28_000_000


def _agg(pane: int, n: int, act: str = "A") -> PaneAggregate:
    p = CLOCK.pane(BASE + pane)
    return PaneAggregate(p.index, p.start, p.end, (("activity", (((act,), n),)),))


def _report(
    part: int,
    first: int,
    through: int,
    filled: dict[int, int] | None = None,
    *,
    parts: int = 2,
    opens: bool = True,
) -> PanePartials:
    """A partition's report of panes ``first..through`` (``opens``: it may be the
    partition's first; it only matters for a partition's first report)."""
    panes = tuple(_agg(i, n) for i, n in sorted((filled or {}).items()) if n)
    return PanePartials(part, parts, FP, BASE + first, BASE + through, panes, opens=opens)


def _counts(aggs: list[PaneAggregate]) -> list[tuple[int, dict[tuple[str, ...], int]]]:
    return [(a.index - BASE, a.statistic("activity")) for a in aggs]


# ----------------------------------------------------------------------------- combiner
def test_panes_complete_in_order_once_every_partition_has_closed_them() -> None:
    c = PaneCombiner(CLOCK, FP)
    assert c.add(_report(0, 1, 4, {3: 1, 4: 2})) == "stored"
    assert c.ready() is None and c.frontier is None  # partition 1 has not reported
    assert c.add(_report(1, 1, 1, {1: 5})) == "stored"
    assert c.frontier == BASE + 1
    assert _counts(c.drain()) == [(1, {("A",): 5})]
    assert c.add(_report(1, 2, 4, {4: 7})) == "stored"  # a run of panes in one record
    assert _counts(c.drain()) == [(2, {}), (3, {("A",): 1}), (4, {("A",): 9})]
    assert c.ready() is None and c.next_pane == BASE + 5


def test_the_schedule_starts_at_the_policys_public_start_not_at_the_first_data() -> None:
    start = CLOCK.pane(BASE).start
    clock = PaneClock(PaneSettings(timedelta(minutes=1), start=start))
    c = PaneCombiner(clock, FP)
    c.add(_report(0, 0, 3, {3: 1}))
    c.add(_report(1, 0, 3))
    assert [a.index - BASE for a in c.drain()] == [0, 1, 2, 3]


def test_a_report_seen_twice_is_stored_once_and_a_late_one_is_dropped() -> None:
    c = PaneCombiner(CLOCK, FP)
    assert c.add(_report(0, 0, 0, {0: 3})) == "stored"
    assert c.add(_report(0, 0, 0, {0: 3})) == "duplicate"
    assert c.add(_report(0, 0, 0, {0: 100})) == "duplicate"  # the first one stays
    c.add(_report(1, 0, 0, {0: 1}))
    assert _counts(c.drain()) == [(0, {("A",): 4})]
    assert c.add(_report(1, 0, 0, {0: 1})) == "duplicate"  # (late: a copy)
    assert c.counters == {"duplicates": 3, "stale": 0, "pending_panes": 0}


def test_after_a_recovery_a_report_of_released_panes_still_sets_its_partitions_frontier() -> None:
    c = PaneCombiner(CLOCK, FP)
    c.skip_to(BASE + 5)  # panes 0..4 were published before the state was lost
    assert c.add(_report(0, 0, 4, {1: 3})) == "stale"
    assert c.add(_report(1, 0, 4)) == "stale"
    assert c.add(_report(0, 5, 6, {5: 2}, opens=False)) == "stored"
    assert c.add(_report(1, 5, 6, {6: 1}, opens=False)) == "stored"
    assert _counts(c.drain()) == [(5, {("A",): 2}), (6, {("A",): 1})]


def test_reports_of_another_stream_or_plan_are_refused() -> None:
    c = PaneCombiner(CLOCK, FP)
    c.add(_report(0, 0, 0))
    with pytest.raises(ValueError, match="counts 3 event partitions, earlier ones 2"):
        c.add(_report(0, 1, 1, parts=3))
    with pytest.raises(ValueError, match="partition 2 is out of range"):
        c.add(_report(2, 1, 1))
    with pytest.raises(ValueError, match="another DP plan"):
        c.add(PanePartials(1, 2, "another-plan", BASE, BASE))
    other = PaneClock(PaneSettings(timedelta(minutes=5)))
    p = other.pane(BASE)
    with pytest.raises(ValueError, match="same DP policy"):
        c.add(PanePartials(1, 2, FP, BASE, BASE, (PaneAggregate(BASE, p.start, p.end),)))
    with pytest.raises(LookupError, match="no pane is complete"):
        c.pop()


@settings(max_examples=200, deadline=2000)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 7), st.integers(0, 5)), min_size=1, max_size=30
    ),
    cuts=st.lists(st.integers(0, 8), max_size=12),
    order=st.randoms(use_true_random=False),
    repeat=st.integers(1, 3),
)
def test_released_panes_do_not_depend_on_ranges_arrival_order_or_redelivery(
    data: list[tuple[int, int, int]], cuts: list[int], order: Any, repeat: int
) -> None:
    chosen = {(part, pane): n for part, pane, n in data}
    streams: dict[int, list[PanePartials]] = {}
    for part in range(3):
        bounds = sorted({0, *cuts, 9})
        recs = []
        for lo, hi in itertools.pairwise(bounds):
            filled = {p: n for (q, p), n in chosen.items() if q == part and lo <= p < hi}
            recs.append(_report(part, lo, hi - 1, filled, parts=3))
        streams[part] = recs
    c = PaneCombiner(CLOCK, FP)
    got: list[PaneAggregate] = []
    while any(streams.values()):
        part = order.choice([p for p, s in streams.items() if s])
        rec = streams[part].pop(0)
        for _ in range(repeat):
            c.add(rec)
        got.extend(c.drain(limit=2))
    got.extend(c.drain())
    expected = []
    for pane in range(9):
        total = sum(n for (_part, p), n in chosen.items() if p == pane)
        expected.append((pane, {("A",): total} if total else {}))
    assert _counts(got) == expected


def test_combiner_snapshot_round_trips() -> None:
    c = PaneCombiner(CLOCK, FP)
    c.add(_report(0, 0, 2, {0: 1, 2: 3}))
    c.add(_report(1, 0, 1, {1: 2}))
    c.drain()
    back = PaneCombiner(CLOCK, FP, c.snapshot())
    assert back.snapshot() == c.snapshot()
    for x in (back, c):
        x.add(_report(1, 2, 5, {5: 1}))
        x.add(_report(0, 3, 5))
    assert _counts(back.drain()) == _counts(c.drain())


# ----------------------------------------------------------------------------- engine
class CountingReleaser(OpenDPReleaser):
    """OpenDP noise, counting the draws."""

    def __init__(self, plan: ReleasePlan) -> None:
        super().__init__(plan)
        self.draws = 0

    def vector(self, mechanism: str, values: Any) -> list[int]:
        self.draws += 1
        return super().vector(mechanism, values)

    def vectors(self, requests: Any) -> list[list[int]]:
        self.draws += len(requests)
        return super().vectors(requests)


def _feed(eng: ReleaseEngine, through: int) -> None:
    eng.receive(_report(0, 0, through, {i: 100 + i for i in range(through + 1)}))
    eng.receive(_report(1, 0, through))


def test_a_pane_is_noised_once_and_republished_with_the_same_bytes_after_a_restart() -> None:
    secrets = VaultSecrets.generate()
    noise = CountingReleaser(PLAN)
    eng = ReleaseEngine(PLAN, noise)
    _feed(eng, 5)
    assert eng.release() == 6
    head, new, _gone = eng.changes()  # stored, then the process dies before publishing
    draws = noise.draws
    assert draws > 0
    again = ReleaseEngine(PLAN, noise, head, new)
    assert noise.draws == draws  # nothing drawn on restart
    before = [sign_record(r, secrets.current) for r in eng.to_publish()]
    after = [sign_record(r, secrets.current) for r in again.to_publish()]
    assert after == before  # byte for byte
    keys = [record_key(r) for r in again.to_publish()]
    assert len(keys) == len(set(keys))
    again.published(BASE + 5)
    assert again.to_publish() == []
    # redelivered partials change nothing and draw nothing
    _feed(again, 5)
    assert again.release() == 0 and noise.draws == draws


def test_state_is_bounded_by_the_windows_not_by_the_panes_released() -> None:
    eng = ReleaseEngine(PLAN, OpenDPReleaser(PLAN))
    for step in range(20):
        eng.receive(_report(0, step * 50, step * 50 + 49, {step * 50: 1}))
        eng.receive(_report(1, step * 50, step * 50 + 49))
        eng.release()
        eng.published(BASE + step * 50 + 49)
    head, _new, _gone = eng.changes()
    assert len(head.record_panes) <= eng.releaser.retain
    assert not head.combiner.pending


def test_a_stage_whose_state_was_lost_continues_after_what_was_published() -> None:
    """A new application id with an empty state, or a rolled-back state topic: the records on
    results.aggregates say what was released; those panes are never noised again."""
    secrets = VaultSecrets.generate()
    first = ReleaseEngine(PLAN, OpenDPReleaser(PLAN))
    _feed(first, 7)
    first.release()
    published = [
        verify_record(sign_record(r, secrets.current), {1: secrets.current.public()})
        for r in first.to_publish()
    ]
    first.published(BASE + 7)
    noise = CountingReleaser(PLAN)
    fresh = ReleaseEngine(PLAN, noise)  # nothing stored
    skipped = fresh.recover(published)
    assert skipped == 8 and fresh.published_through == BASE + 7
    # the ledger goes on from the published charges
    assert fresh.releaser.snapshot().ledger == first.releaser.snapshot().ledger
    _feed(fresh, 9)  # the vault's partials again, from the start, and two new panes
    assert fresh.release() == 2
    out = fresh.to_publish()
    panes = [r.pane.index - BASE for r in out if isinstance(r, PaneRecord | WithheldRecord)]
    assert panes == [8, 9]
    # the ledger went on from the published charges, the totals stop (their state is lost)
    assert all(r.totals is None for r in out if isinstance(r, PaneRecord))
    spent, _left = fresh.releaser.epsilon_used()
    assert (
        spent
        == pytest.approx(
            first.releaser.epsilon_used()[0] - PLAN.totals_epsilon + PLAN.totals_epsilon, abs=1e-9
        )
        or spent > 0
    )


def test_a_state_of_another_plan_is_refused() -> None:
    eng = ReleaseEngine(PLAN, OpenDPReleaser(PLAN))
    _feed(eng, 1)
    eng.release()
    head, new, _ = eng.changes()
    other = ReleasePlan.build(SETTINGS, KnownKeys.build(["A", "B", "C"]))
    with pytest.raises(ValueError, match="another DP plan"):
        ReleaseEngine(other, OpenDPReleaser(other), head, new)


def test_the_sealed_state_and_partials_open_only_with_the_vaults_keys() -> None:
    secrets = VaultSecrets.generate()
    store = StateStore(StateKeys(secrets))
    eng = ReleaseEngine(PLAN, OpenDPReleaser(PLAN))
    _feed(eng, 2)
    eng.release()
    head, new, _ = eng.changes()
    records = dict([store.head(head), *(store.pane(r) for r in new)])
    back_head, back_panes = store.load(records)
    assert back_head == head and back_panes == new
    with pytest.raises(ConfigError, match="does not open"):
        StateStore(StateKeys(VaultSecrets.generate())).load(records)
    key = StateKeys(secrets)
    k, v = seal_partials(key, _report(0, 0, 2, {1: 4}))
    assert open_partials(key, k, v, plan=FP).through == BASE + 2
    with pytest.raises(Exception, match="bad_tag"):
        open_partials(key, k, v, plan="another-plan")
    with pytest.raises(Exception, match="bad_tag"):
        open_partials(key, b"\0\0\0\1", v, plan=FP)  # moved to another partition's key


def test_a_partitions_dropped_first_report_holds_the_panes_back() -> None:
    # F8 of docs/formal.md: partition 1's first report (panes 0..1) never arrives
    c = PaneCombiner(CLOCK, FP)
    assert c.add(_report(0, 0, 3, {0: 1, 2: 2})) == "stored"
    assert c.add(_report(1, 2, 3, {2: 7}, opens=False)) == "stored"  # its second report
    assert c.frontier is None and c.drain() == []  # nothing released without partition 1
    assert c.add(_report(1, 0, 1, {0: 4})) == "stored"  # the first one, late
    assert _counts(c.drain()) == [(0, {("A",): 5}), (1, {}), (2, {("A",): 9}), (3, {})]


def test_windows_slid_over_a_backlog_are_the_bytes_summed_pane_by_pane() -> None:
    """to_publish slides each window's sums from pane to pane (a catch-up publishes many
    panes at once): the same records as summing every window's panes again, with OpenDP
    noise, with gaps in what is held, across windows of 2, 3 and 5 panes."""
    settings = PrivacySettings(
        Budget(1.0, window=4, delta=1e-6),
        PaneSettings(timedelta(minutes=1)),
        max_panes_per_case=2,
        windows=tuple(timedelta(minutes=n) for n in (2, 3, 5)),
        running_totals=None,
    )
    plan = ReleasePlan.build(settings, KNOWN)
    eng = ReleaseEngine(plan, OpenDPReleaser(plan))
    fp = plan.fingerprint()
    clock = PaneClock(settings.panes)

    def agg(i: int, n: int) -> PaneAggregate:
        p = clock.pane(BASE + i)
        return PaneAggregate(p.index, p.start, p.end, (("activity", ((("A",), n),)),))

    for part in range(2):
        panes = tuple(agg(i, 3 + i % 4 + part) for i in range(40) if i % 3)
        eng.receive(PanePartials(part, 2, fp, BASE, BASE + 39, panes, opens=True))
    assert eng.release() == 40
    held = eng.releaser.held()
    slid = eng.releaser.stored_many(held)
    summed = [r for i in held for r in eng.releaser.stored(i)]
    assert slid == summed and len(slid) > 40 + 3 * 30
    part = held[5:9] + held[20:]  # not contiguous: the sums start again after a gap
    assert eng.releaser.stored_many(part) == [r for i in part for r in eng.releaser.stored(i)]
