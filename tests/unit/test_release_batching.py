"""Drawing a step's noise at once: the same records as pane by pane, OpenDP's draws per scale."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.privacy import (
    BinaryTreeCounter,
    Budget,
    KnownKeys,
    OpenDPReleaser,
    PaneAggregate,
    PaneClock,
    PaneReleaser,
    PaneSettings,
    PrivacySettings,
    ReleasePlan,
    RunningTotals,
)
from procvault.monitor.privacy.mechanisms import draw_vectors
from procvault.monitor.privacy.records import PaneRecord, Record, WindowRecord

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
KNOWN = KnownKeys.build("ABC", rules=["R1"])


def _plan(pane_eps: float | None = None) -> ReleasePlan:
    s = PrivacySettings(
        Budget(1.0, window=4, delta=1e-6),
        PaneSettings(HOUR),
        pane_epsilon=pane_eps,
        windows=(HOUR, 2 * HOUR, 3 * HOUR),
        running_totals=RunningTotals(share=0.2, levels=4),
    )
    return ReleasePlan.build(s, KNOWN)


class Tagged:
    """Deterministic "noise" that depends on the mechanism, the position in the vector and
    the call (not private): a value given another mechanism's noise, or another pane's, or
    drawn in another order, comes out different."""

    def __init__(self, plan: ReleasePlan) -> None:
        self.names = sorted(m.name for m in plan.mechanisms())
        self.thresholds = {m.name: m.threshold for m in plan.mechanisms()}
        self.calls = 0

    def vector(self, mechanism: str, values: Sequence[int]) -> list[int]:
        self.calls += 1
        tag = 1000 * (1 + self.names.index(mechanism))
        return [v + tag + 7 * j for j, v in enumerate(values)]

    def threshold(self, mechanism: str, counts: Mapping[str, int]) -> dict[str, int]:
        tau = self.thresholds[mechanism]
        assert tau is not None
        return {k: v + 1 for k, v in counts.items() if v + 1 >= tau}


class TaggedMany(Tagged):
    """:class:`Tagged` with a ``vectors`` method (one call for a whole batch)."""

    def vectors(self, requests: Sequence[tuple[str, Sequence[int]]]) -> list[list[int]]:
        calls = self.calls
        out = [self.vector(m, v) for m, v in requests]
        self.calls = calls + 1
        return out


def _aggs(plan: ReleasePlan, counts: Sequence[int]) -> list[PaneAggregate]:
    clock = PaneClock(plan.settings.panes)
    out = []
    for i, n in enumerate(counts):
        p = clock.pane(i)
        values = (
            (
                ("activity", ((("A",), n), (("B",), 2 * n), (("Z",), 10**6 * n))),
                ("cases", ((("started",), n),)),
            )
            if n
            else ()
        )
        firsts = (("cases", ((("started",), n),)),) if n else ()
        out.append(PaneAggregate(p.index, p.start, p.end, values, firsts))
    return out


def _check_noise(
    plan: ReleasePlan, aggs: Sequence[PaneAggregate], records: Sequence[Record]
) -> None:
    """Every released known value is its pane's exact value plus :class:`Tagged`'s noise for
    its own mechanism and position; every window is the sum of its panes."""
    tagged = Tagged(plan)
    by_index = {a.index: a for a in aggs}
    panes = {r.pane.index: r for r in records if isinstance(r, PaneRecord)}
    for idx, rec in panes.items():
        for stat in rec.statistics:
            exact = by_index[idx].statistic(stat.name)
            keys = plan.known.keys(stat.name)
            assert [e.key for e in stat.known] == list(keys)
            want = tagged.vector(stat.name, [exact.get(k, 0) for k in keys])
            assert [e.value for e in stat.known] == want
    for w in (r for r in records if isinstance(r, WindowRecord)):
        for stat in w.statistics:
            sums = [0] * len(stat.known)
            for p in range(w.first_pane, w.last_pane + 1):
                if p in panes:
                    ps = next(s for s in panes[p].statistics if s.name == stat.name)
                    sums = [a + e.value for a, e in zip(sums, ps.known, strict=True)]
            assert [e.value for e in stat.known] == sums


def _chunks(xs: list[PaneAggregate], sizes: list[int]) -> list[list[PaneAggregate]]:
    out, at, k = [], 0, 0
    while at < len(xs):
        n = sizes[k % len(sizes)] if sizes else len(xs)
        out.append(xs[at : at + n])
        at += n
        k += 1
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=40),
    st.lists(st.integers(1, 9), max_size=5),
    st.sampled_from([None, 0.3, 0.6]),
    st.lists(st.booleans(), min_size=1, max_size=4),
)
def test_a_batch_gives_the_records_and_state_of_releasing_pane_by_pane(
    counts: list[int], sizes: list[int], pane_eps: float | None, with_windows: list[bool]
) -> None:
    plan = _plan(pane_eps)
    aggs = _aggs(plan, counts)
    one = PaneReleaser(plan, Tagged(plan))
    per_pane = [one.release(a) for a in aggs]
    expected: list[Record] = [r for rs in per_pane for r in rs]
    _check_noise(plan, aggs, expected)
    for releaser in (Tagged(plan), TaggedMany(plan)):
        batched = PaneReleaser(plan, releaser)
        stored = PaneReleaser(plan, releaser)
        stored.keep_from(-(1 << 62))  # nothing published: every record stays
        at = 0
        for i, chunk in enumerate(_chunks(aggs, sizes)):
            windows = with_windows[i % len(with_windows)]
            want = per_pane[at : at + len(chunk)]
            at += len(chunk)
            if windows:
                assert batched.release_many(chunk) == want
            else:  # pane records only; the next batch with windows sums them again
                assert batched.release_many(chunk, windows=False) == [rs[:1] for rs in want]
            stored.release_many(chunk, windows=False)
        assert stored.stored_many(stored.held()) == expected
        assert batched.snapshot() == one.snapshot()
    many = TaggedMany(plan)
    rel = PaneReleaser(plan, many)
    rel.release_many(aggs)
    assert many.calls == 1  # one draw for the whole batch


def test_a_batch_after_a_restart_republishes_stored_panes_and_checks_the_order_first() -> None:
    plan = _plan()
    aggs = _aggs(plan, [1, 2, 3, 4, 5])
    rel = PaneReleaser(plan, Tagged(plan))
    first = rel.release_many(aggs[:3])
    again = PaneReleaser(plan, TaggedMany(plan), rel.snapshot())
    out = again.release_many(aggs[1:])
    assert out[:2] == first[1:]  # stored: as they were, no new noise
    assert [rs[0].pane.index for rs in out] == [1, 2, 3, 4]  # type: ignore[union-attr]
    before = again.snapshot()
    with pytest.raises(ValueError, match="has not been released"):
        again.release_many([_aggs(plan, [1] * 8)[7]])
    assert again.snapshot() == before  # refused before anything changed


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.lists(st.integers(0, 50), min_size=2, max_size=2), max_size=40),
    st.integers(1, 7),
)
def test_tree_prepared_in_batches_gives_the_totals_of_step(xs: list[list[int]], n: int) -> None:
    def noise(counter: list[int], node: Sequence[int]) -> list[int]:
        counter[0] += 1
        return [v + 100 * counter[0] + j for j, v in enumerate(node)]

    class Counter:
        def __init__(self) -> None:
            self.c = [0]

        def vector(self, mechanism: str, values: Sequence[int]) -> list[int]:
            return noise(self.c, values)

        def threshold(self, mechanism: str, counts: Mapping[str, int]) -> dict[str, int]:
            return dict(counts)

    a = BinaryTreeCounter(size=2, levels=5, mechanism="t", releaser=Counter())
    b = BinaryTreeCounter(size=2, levels=5, mechanism="t", releaser=Counter())
    expected = [a.step(x) for x in xs]
    got: list[list[int] | None] = []
    c = [0]
    for at in range(0, len(xs), n):
        nodes = [b.prepare(x) for x in xs[at : at + n]]
        got.extend(None if v is None else b.finish(noise(c, v)) for v in nodes)
    assert got == expected
    assert b.snapshot() == a.snapshot() and b.finished == a.t


# ---------------------------------------------------------------------------- OpenDP
def _variance(scale: float) -> float:
    q = math.exp(-1.0 / scale)
    return 2 * q / (1 - q) ** 2


@pytest.mark.parametrize("workers", [1, 2])
def test_vectors_draw_every_value_once_at_its_own_mechanisms_scale(workers: int) -> None:
    plan = _plan()
    rel = OpenDPReleaser(plan, workers=workers)
    scales = {m.name: m.scale for m in plan.mechanisms()}
    small = min(scales, key=lambda n: scales[n])
    large = max(scales, key=lambda n: scales[n])
    assert scales[large] > 4 * scales[small]
    n = 20_000
    base = 10**9  # far beyond any noise here: each output stays next to its own input
    requests: list[tuple[str, Sequence[int]]] = [
        (small, [base * j for j in range(n)]),
        (large, [base * j for j in range(n)]),
        (small, [5, 6]),
    ]
    calls: list[int] = []
    for per_worker in rel._by_scale:  # count OpenDP's calls (every worker's measurements)
        for scale, meas in list(per_worker.items()):

            def counted(x: Any, meas: Any = meas) -> Any:
                calls.append(len(x))
                return meas(x)

            per_worker[scale] = counted
    out = rel.vectors(requests)
    assert [len(o) for o in out] == [n, n, 2]
    assert all(isinstance(v, int) for o in out for v in o)
    assert sum(calls) == 2 * n + 2  # every value drawn once
    # one call per scale (split over the workers when long enough)
    assert len(calls) == (2 if workers == 1 else 4)
    for (name, values), noisy in zip(requests[:2], out[:2], strict=True):
        z = [y - x for x, y in zip(values, noisy, strict=True)]
        assert all(abs(v) < base // 2 for v in z)  # in order
        var = sum(v * v for v in z) / n
        expected = _variance(scales[name])
        # the sample variance of 20,000 draws is within 10% of the exact one (z ≈ 5 sigma)
        assert abs(var - expected) < 0.1 * expected, (name, var, expected)
    rel.close()


def test_draw_vectors_falls_back_to_one_call_per_vector() -> None:
    plan = _plan()
    tagged = Tagged(plan)
    assert draw_vectors(tagged, [("activity", [1]), ("cases", [2, 3])]) == [
        tagged.vector("activity", [1]),
        tagged.vector("cases", [2, 3]),
    ]
    assert OpenDPReleaser(plan).vectors([]) == []
    with pytest.raises(ValueError, match="workers"):
        OpenDPReleaser(plan, workers=0)


# ---------------------------------------------------------------------------- envelope
@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(0, 2**31 - 1))
def test_the_envelope_has_the_bytes_json_dumps_gave(record: str, epoch: int) -> None:
    """A record republished after an upgrade keeps its bytes (readers keep one per key)."""
    import json

    from procvault.streams.release import SIGNED_VERSION, envelope_bytes

    sig = "ab" * 32
    before = json.dumps(
        {"v": SIGNED_VERSION, "epoch": epoch, "record": record, "signature": sig},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert envelope_bytes(epoch, record, sig) == before.encode()
