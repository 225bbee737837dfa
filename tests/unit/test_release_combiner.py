"""The release stage without Kafka: the pane combiner and the sealed release core."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.errors import ConfigError
from procvault.monitor.privacy.budget import Budget
from procvault.monitor.privacy.mechanisms import OpenDPReleaser
from procvault.monitor.privacy.panes import PaneAggregate, PaneClock
from procvault.monitor.privacy.plan import ReleasePlan
from procvault.monitor.privacy.settings import (
    KnownKeys,
    PaneSettings,
    PrivacySettings,
    RunningTotals,
)
from procvault.streams.frames import Partial, seal_partial
from procvault.streams.release import record_key, verify_record
from procvault.streams.release_stage import PaneCombiner, ReleaseCore
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
BASE = 28_000_000


def _partial(part: int, pane: int, n: int = 0, *, partitions: int = 2, act: str = "A") -> Partial:
    p = CLOCK.pane(BASE + pane)
    values = (("activity", (((act,), n),)),) if n else ()
    return Partial(part, partitions, PaneAggregate(p.index, p.start, p.end, values))


def _counts(aggs: list[PaneAggregate]) -> list[tuple[int, dict[tuple[str, ...], int]]]:
    return [(a.index - BASE, a.statistic("activity")) for a in aggs]


# ----------------------------------------------------------------------------- combiner
def test_panes_complete_in_order_once_every_partition_has_closed_them() -> None:
    c = PaneCombiner(CLOCK)
    assert c.add(_partial(0, 3, 1)) == "stored"
    assert c.add(_partial(0, 4, 2)) == "stored"
    assert c.ready() is None  # partition 1 has not reported: nothing is complete
    assert c.frontier is None
    assert c.add(_partial(1, 1, 5)) == "stored"  # the smallest pane seen: releasing starts here
    assert c.frontier == BASE + 1
    assert _counts(c.drain()) == [(1, {("A",): 5})]
    assert c.add(_partial(1, 4, 7)) == "stored"  # partition 1 skipped empty panes 2 and 3
    assert _counts(c.drain()) == [(2, {}), (3, {("A",): 1}), (4, {("A",): 9})]
    assert c.ready() is None and c.next_pane == BASE + 5


def test_empty_panes_have_the_clocks_bounds() -> None:
    c = PaneCombiner(CLOCK)
    c.add(_partial(0, 0))
    c.add(_partial(1, 3))
    c.add(_partial(0, 3))
    aggs = c.drain()
    assert [a.index - BASE for a in aggs] == [0, 1, 2, 3]
    for a in aggs:
        pane = CLOCK.pane(a.index)
        assert (a.start, a.end) == (pane.start, pane.end)
        assert a.is_empty


def test_a_partial_seen_twice_is_stored_once_and_a_late_one_is_dropped() -> None:
    c = PaneCombiner(CLOCK)
    assert c.add(_partial(0, 0, 3)) == "stored"
    assert c.add(_partial(0, 0, 3)) == "duplicate"
    assert c.add(_partial(0, 0, 100)) == "duplicate"  # the first one stays
    c.add(_partial(1, 0, 1))
    assert _counts(c.drain()) == [(0, {("A",): 4})]
    assert c.add(_partial(1, 0, 1)) == "stale"
    assert c.counters == {"duplicates": 2, "stale": 1, "pending_panes": 0}


def test_partials_of_another_stream_are_refused() -> None:
    c = PaneCombiner(CLOCK)
    c.add(_partial(0, 0))
    with pytest.raises(ValueError, match="counts 3 event partitions, earlier ones 2"):
        c.add(_partial(0, 1, partitions=3))
    with pytest.raises(ValueError, match="partition 2 is out of range"):
        c.add(_partial(2, 1))
    other = PaneClock(PaneSettings(timedelta(minutes=5)))
    p = other.pane(BASE)
    with pytest.raises(ValueError, match="must use the same DP policy"):
        c.add(Partial(1, 2, PaneAggregate(BASE, p.start, p.end)))
    with pytest.raises(LookupError, match="no pane is complete"):
        c.pop()


def test_combiner_snapshot_round_trips_through_bytes() -> None:
    c = PaneCombiner(CLOCK)
    for part, pane, n in [(0, 0, 1), (0, 2, 3), (1, 1, 2), (0, 1, 1)]:
        c.add(_partial(part, pane, n))
    c.drain()
    back = PaneCombiner.from_bytes(CLOCK, c.to_bytes())
    assert back.snapshot() == c.snapshot()
    back.add(_partial(1, 5, 1))
    c.add(_partial(1, 5, 1))
    assert _counts(back.drain()) == _counts(c.drain())


@settings(max_examples=60, deadline=2000)
@given(
    data=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 7), st.integers(0, 5)), min_size=1, max_size=30
    ),
    order=st.randoms(use_true_random=False),
    repeat=st.integers(1, 3),
)
def test_released_panes_do_not_depend_on_arrival_order_or_redelivery(
    data: list[tuple[int, int, int]], order: object, repeat: int
) -> None:
    # One partial per (partition, pane); every partition ends with its last pane (frontier).
    chosen = {(part, pane): n for part, pane, n in data}
    for part in range(3):
        chosen.setdefault((part, 8), 0)
    partials = [_partial(part, pane, n, partitions=3) for (part, pane), n in chosen.items()]
    # Within a partition partials arrive in pane order; partitions interleave arbitrarily.
    streams = {
        p: sorted((x for x in partials if x.partition == p), key=lambda x: x.aggregate.index)
        for p in range(3)
    }
    shuffled = []
    while any(streams.values()):
        part = order.choice([p for p, s in streams.items() if s])  # type: ignore[attr-defined]
        x = streams[part].pop(0)
        shuffled.extend([x] * repeat)
    c = PaneCombiner(CLOCK)
    got = []
    for x in shuffled:
        c.add(x)
        got.extend(c.drain(limit=2))
    got.extend(c.drain())
    start = min(pane for _part, pane in chosen)
    expected = []
    for pane in range(start, 9):
        total = sum(n for (_part, p), n in chosen.items() if p == pane)
        expected.append((pane, {("A",): total} if total else {}))
    assert _counts(got) == expected


# ----------------------------------------------------------------------------- core
@pytest.fixture(scope="module")
def plan() -> ReleasePlan:
    return ReleasePlan.build(SETTINGS, KNOWN)


@pytest.fixture(scope="module")
def secrets() -> VaultSecrets:
    return VaultSecrets.generate()


def _core(plan: ReleasePlan, secrets: VaultSecrets, store: dict[bytes, bytes]) -> ReleaseCore:
    return ReleaseCore(plan, OpenDPReleaser(plan), secrets, store)


def _sealed(secrets: VaultSecrets, part: int, pane: int, n: int) -> tuple[bytes, bytes]:
    return seal_partial(secrets.state_key, _partial(part, pane, n, act="B"))


def test_core_releases_signed_records_and_keeps_everything_sealed(
    plan: ReleasePlan, secrets: VaultSecrets
) -> None:
    store: dict[bytes, bytes] = {}
    core = _core(plan, secrets, store)
    for pane in range(3):
        for part in range(2):
            core.receive(*_sealed(secrets, part, pane, 10_000 + pane))
    out = core.advance()
    keys = [k for k, _v in out]
    assert keys == [b"pane/%d" % (BASE + i) for i in (0,)] + [
        k for i in (1, 2) for k in (b"pane/%d" % (BASE + i), b"window/2/%d" % (BASE + i))
    ]
    public = {secrets.current_epoch: secrets.current.public()}
    records = [verify_record(v, public) for _k, v in out]
    assert [record_key(r) for r in records] == keys
    assert core.advance() == out  # not published yet: still the outbox
    core.published()
    assert core.outbox == [] and core.advance() == []
    # Nothing in the store is readable without the state key.
    assert store and all(b"register" not in v and b'"B"' not in v for v in store.values())
    assert core.counters["released_panes"] == 3


def test_a_restart_republishes_the_stored_noise_never_fresh_noise(
    plan: ReleasePlan, secrets: VaultSecrets
) -> None:
    store: dict[bytes, bytes] = {}
    core = _core(plan, secrets, store)
    sent = [_sealed(secrets, part, pane, 5_000) for pane in range(6) for part in range(2)]
    published: list[tuple[bytes, bytes]] = []
    for rec in sent[:6]:
        core.receive(*rec)
        published += core.advance()
        core.published()
    for rec in sent[6:8]:
        core.receive(*rec)
    crashed_outbox = core.advance()  # written to the store, crash before publishing
    assert crashed_outbox
    crashed = dict(store)

    again = _core(plan, secrets, dict(crashed))
    assert again.outbox == crashed_outbox  # byte for byte
    for rec in sent:  # everything redelivered (at least once)
        again.receive(*rec)
        again.advance()
    # The other way round: an uninterrupted core from the same point draws its own noise.
    final = published + crashed_outbox
    again_out = again.outbox
    assert again_out[: len(crashed_outbox)] == crashed_outbox
    final += again_out[len(crashed_outbox) :]
    keys = [k for k, _v in final]
    assert len(keys) == len(set(keys))  # no pane or window released twice
    panes = [int(k.split(b"/")[1]) - BASE for k in keys if k.startswith(b"pane/")]
    assert panes == list(range(6))
    assert again.counters["stale"] >= 8


def test_core_counts_tampered_partials_and_refuses_another_policy(
    plan: ReleasePlan, secrets: VaultSecrets
) -> None:
    store: dict[bytes, bytes] = {}
    core = _core(plan, secrets, store)
    key, value = _sealed(secrets, 0, 0, 1)
    assert core.receive(key, value[:-1] + bytes([value[-1] ^ 1])) is None
    assert core.receive(b"\0" * 8, value) is None  # moved to another pane
    assert core.receive(key, value) == "stored"
    assert core.counters["rejected_partials"] == 2
    other = ReleasePlan.build(SETTINGS, KnownKeys.build(["A", "B", "C"]))
    with pytest.raises(ConfigError, match="another DP policy or model"):
        ReleaseCore(other, OpenDPReleaser(other), secrets, store)
    with pytest.raises(Exception, match="authentication"):
        ReleaseCore(plan, OpenDPReleaser(plan), VaultSecrets.generate(), store)


def test_core_applies_source_records_in_offset_order_across_a_restart(
    plan: ReleasePlan, secrets: VaultSecrets
) -> None:
    store: dict[bytes, bytes] = {}
    core = _core(plan, secrets, store)
    recs = [_sealed(secrets, part, pane, 7) for pane in range(3) for part in range(2)]
    assert core.expected() is None
    assert core.gap(0, 0) is None  # nothing read yet, the partition's first offset
    assert core.gap(0, 4) == (None, 4)  # nothing read yet: from the beginning
    assert core.receive(*recs[0], offset=0) == "stored"
    assert core.expected() == 1 and core.gap(0, 1) is None
    # A commit marker at 1: the next record comes at 2, after a gap that holds nothing.
    assert core.gap(0, 2) == (1, 2)
    assert core.receive(*recs[1], offset=2) == "stored"
    # A rejected record moves the offset too (it is never read again).
    assert core.receive(b"junk", b"junk", offset=3) is None
    assert core.expected() == 4
    # The offset is sealed in the head with the records' effect: a restarted core knows it.
    store = dict(store)
    again = _core(plan, secrets, store)
    assert again.expected() == 4 and again.expected(1) is None
    # Redelivered below the expected offset: dropped, nothing written.
    before = dict(store)
    assert again.receive(*recs[1], offset=2) == "redelivered"
    assert again.receive(*recs[0], offset=0) == "redelivered"
    assert store == before and again.counters["redelivered_partials"] == 2
    # Offset 5 arrives first (4 was skipped): the caller reads [4, 5) back and applies it.
    assert again.gap(0, 5) == (4, 5)
    assert again.receive(*recs[2], offset=4, recovered=True) == "stored"
    assert again.receive(*recs[3], offset=5) == "stored"
    assert again.receive(*recs[3], offset=5) == "redelivered"
    assert again.counters["recovered_partials"] == 1
    assert [k for k, _v in again.advance()][:2] == [b"pane/%d" % BASE, b"pane/%d" % (BASE + 1)]
    # Offsets of each source partition are kept apart.
    assert again.gap(1, 3) == (None, 3)
    assert _core(plan, secrets, dict(store)).counters["recovered_partials"] == 1


def test_budget_is_the_ledger_over_the_window_ending_at_the_last_pane(
    plan: ReleasePlan, secrets: VaultSecrets
) -> None:
    core = _core(plan, secrets, {})
    reserve = plan.totals_epsilon
    assert core.budget() == pytest.approx((reserve, 1.0 - reserve))
    for pane in range(3):
        for part in range(2):
            core.receive(*_sealed(secrets, part, pane, 3))
    core.advance()
    spent, left = core.budget()
    # max_panes_per_case=2: a case loses at most two panes' ε in any window of 4
    assert spent == pytest.approx(reserve + 2 * plan.pane_epsilon)
    assert spent + left == pytest.approx(1.0)
