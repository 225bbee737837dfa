"""The release engine: budget split, ledger, running totals, windows, idempotent restart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import cache
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqnet import sequence_net

from procvault.monitor.event import Event
from procvault.monitor.privacy import (
    AccumulatorState,
    BinaryTreeCounter,
    Budget,
    DeterministicReleaser,
    KnownKeys,
    Ledger,
    OpenDPReleaser,
    PaneAccumulator,
    PaneAggregate,
    PaneClock,
    PaneRecord,
    PaneReleaser,
    PaneSettings,
    PrivacySettings,
    ReleasePlan,
    ReleaseState,
    RunningTotals,
    StatisticSettings,
    WindowRecord,
    WithheldRecord,
    decode_record,
    encode_record,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
KNOWN = KnownKeys.build("ABC", rules=["R1"])


def _settings(**kw: Any) -> PrivacySettings:
    kw.setdefault("budget", Budget(1.0, window=4, delta=1e-6))
    kw.setdefault("panes", PaneSettings(HOUR))
    return PrivacySettings(**kw)


@cache
def _plan(eps: float = 1.0, w: int = 4, pane_eps: float | None = None, k: int = 8) -> ReleasePlan:
    s = _settings(
        budget=Budget(eps, window=w, delta=1e-6),
        pane_epsilon=pane_eps,
        max_panes_per_case=k,
        windows=(HOUR, 2 * HOUR, 3 * HOUR),
    )
    return ReleasePlan.build(s, KNOWN)


def _aggs(plan: ReleasePlan, counts: Sequence[int], start: int = 0) -> list[PaneAggregate]:
    clock = PaneClock(plan.settings.panes)
    out = []
    for i, n in enumerate(counts):
        p = clock.pane(start + i)
        values = (("activity", ((("A",), n), (("Z",), 10 * n))),) if n else ()
        firsts = (("cases", ((("started",), n),)),) if n else ()
        out.append(PaneAggregate(p.index, p.start, p.end, values, firsts))
    return out


class Counting:
    """Wraps a releaser and counts its draws."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.draws = 0

    def vector(self, mechanism: str, values: Sequence[int]) -> list[int]:
        self.draws += len(values)
        out: list[int] = self.inner.vector(mechanism, values)
        return out

    def threshold(self, mechanism: str, counts: Mapping[str, int]) -> dict[str, int]:
        self.draws += len(counts)
        out: dict[str, int] = self.inner.threshold(mechanism, counts)
        return out


# ---------------------------------------------------------------------------- the plan
@settings(max_examples=15, deadline=None)
@given(
    st.floats(0.05, 10.0),
    st.integers(1, 100),
    st.lists(st.floats(0.1, 10.0), min_size=8, max_size=8),
    st.sampled_from([None, 0.1, 0.5]),
)
def test_the_plan_never_splits_more_than_the_budget(
    eps: float, w: int, weights: list[float], share: float | None
) -> None:
    names = [
        "activity",
        "directly_follows",
        "cases",
        "deviation",
        "violation",
        "tokens",
        "case_duration",
        "df_duration",
    ]
    s = _settings(
        budget=Budget(eps, window=w, delta=1e-6),
        statistics=tuple(
            StatisticSettings(n, weight=x) for n, x in zip(names, weights, strict=True)
        ),
        running_totals=RunningTotals(share=share) if share else None,
    )
    plan = ReleasePlan.build(s, KNOWN)
    assert sum(Fraction(m.epsilon) for m in plan.statistics) <= Fraction(plan.pane_epsilon)
    per_case = min(s.max_panes_per_case, w)
    assert Fraction(plan.pane_epsilon) * per_case + Fraction(plan.totals_epsilon) <= Fraction(eps)
    assert sum(Fraction(m.delta) for m in plan.statistics) * per_case <= Fraction(1e-6)
    OpenDPReleaser(plan)  # OpenDP proves every mechanism, or this raises


def test_plan_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match=r"exceeds the .* left for panes"):
        ReleasePlan.build(_settings(pane_epsilon=0.9), KNOWN)
    with pytest.raises(ValueError, match="have no known keys"):
        ReleasePlan.build(
            _settings(running_totals=RunningTotals(("violation",))), KnownKeys.build("A")
        )


def test_without_delta_unknown_keys_are_never_released() -> None:
    plan = ReleasePlan.build(_settings(budget=Budget(1.0, window=4)), KNOWN)
    assert all(m.threshold is None for m in plan.statistics)
    rel = PaneReleaser(plan, DeterministicReleaser(plan, offset=10**9))
    (rec,) = rel.release(_aggs(plan, [5])[0])
    assert isinstance(rec, PaneRecord)
    assert all(not s.other for s in rec.statistics)


# ---------------------------------------------------------------------------- ledger
@settings(max_examples=300, deadline=timedelta(seconds=2))
@given(
    st.integers(1, 12),
    st.floats(0.1, 5.0),
    st.lists(st.tuples(st.integers(0, 3), st.floats(0, 2.0), st.floats(0, 1e-6)), max_size=60),
    st.floats(0, 0.5),
    st.none() | st.integers(1, 15),
    st.lists(st.lists(st.integers(0, 200), max_size=15), max_size=10),
)
def test_no_case_ever_loses_more_than_the_budget_over_w_panes(
    w: int,
    eps: float,
    ops: list[tuple[int, float, float]],
    reserve: float,
    k: int | None,
    cases: list[list[int]],
) -> None:
    """Whatever the sequence of requests (and restarts), any case (a set of at most k panes)
    loses at most ε (and δ) over any w consecutive panes, the running totals' reserve
    included."""
    reserved = eps * reserve
    ledger = Ledger(epsilon=eps, delta=1e-6, window=w, reserved=reserved, panes_per_case=k)
    charged: dict[int, tuple[float, float]] = {}
    pane = 0
    for gap, e, d in ops:
        pane += gap
        allowed = ledger.spend(pane, e, d)
        if allowed:
            assert pane not in charged
            charged[pane] = (e, d)
        if pane % 7 == 3:  # restarts change nothing
            ledger = Ledger(
                epsilon=eps,
                delta=1e-6,
                window=w,
                reserved=reserved,
                panes_per_case=k,
                state=ledger.snapshot(),
            )
    per_case = w if k is None else min(k, w)
    for start in range(-w, pane + 1):
        run = sorted((charged[p] for p in range(start, start + w) if p in charged), reverse=True)
        worst_e = sorted((Fraction(e) for e, _ in run), reverse=True)[:per_case]
        worst_d = sorted((Fraction(d) for _, d in run), reverse=True)[:per_case]
        assert Fraction(reserved) + sum(worst_e) <= Fraction(eps)
        assert sum(worst_d) <= Fraction(1e-6)
        for case in cases:  # explicit cases: each in at most k panes
            mine = sorted(set(case))[: k or None]
            inside = [charged[p] for p in mine if start <= p < start + w and p in charged]
            assert Fraction(reserved) + sum(Fraction(e) for e, _ in inside) <= Fraction(eps)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6),
    st.sampled_from([None, 0.3, 0.5, 0.8]),
    st.integers(1, 30),
    st.sampled_from([2, 8]),
)
def test_engine_withholds_and_reports_what_would_exceed_the_budget(
    w: int, pane_eps: float | None, n: int, k: int
) -> None:
    plan = _plan(1.0, w, pane_eps, k)
    rel = PaneReleaser(plan, DeterministicReleaser(plan))
    panes: list[PaneRecord | WithheldRecord] = []
    for agg in _aggs(plan, [1] * n):
        records = rel.release(agg)
        first = records[0]
        assert isinstance(first, PaneRecord | WithheldRecord)
        panes.append(first)
    assert [p.pane.index for p in panes] == [a.index for a in _aggs(plan, [1] * n)]
    spent = [p.epsilon if isinstance(p, PaneRecord) else 0.0 for p in panes]
    k = min(plan.settings.max_panes_per_case, w)
    for start in range(n):
        worst = sorted((Fraction(x) for x in spent[start : start + w]), reverse=True)[:k]
        assert sum(worst) + Fraction(plan.totals_epsilon) <= Fraction(1.0)
    if pane_eps is None:
        assert all(isinstance(p, PaneRecord) for p in panes)  # uniform never withholds
    elif n > 1 and min(w, k) > 1 and pane_eps > 0.5:
        assert any(isinstance(p, WithheldRecord) for p in panes)


def test_panes_must_come_in_order() -> None:
    plan = _plan()
    rel = PaneReleaser(plan, DeterministicReleaser(plan))
    a = _aggs(plan, [1, 1, 1])
    rel.release(a[0])
    with pytest.raises(ValueError, match="has not been released: release every pane in order"):
        rel.release(a[2])


# ---------------------------------------------------------------------------- totals
@given(st.lists(st.lists(st.integers(0, 50), min_size=3, max_size=3), max_size=70))
def test_tree_totals_are_exact_with_zero_noise_and_stop_at_the_horizon(
    xs: list[list[int]],
) -> None:
    plan = _plan()
    tree = BinaryTreeCounter(
        size=3, levels=6, mechanism="running_totals", releaser=DeterministicReleaser(plan)
    )
    running = [0, 0, 0]
    for t, x in enumerate(xs, start=1):
        running = [a + b for a, b in zip(running, x, strict=True)]
        out = tree.step(x)
        if t < 2**6:
            assert out == running
            back = BinaryTreeCounter(
                size=3,
                levels=6,
                mechanism="running_totals",
                releaser=DeterministicReleaser(plan),
                state=tree.snapshot(),
            )
            assert back.snapshot() == tree.snapshot()
        else:
            assert out is None


# ---------------------------------------------------------------------------- windows
def test_windows_are_sums_of_noisy_panes_and_survive_a_restart() -> None:
    plan = _plan(5.0, 1)
    opendp = OpenDPReleaser(plan)
    rel = PaneReleaser(plan, opendp)
    aggs = _aggs(plan, [3, 0, 8, 1, 0, 0, 5, 2])
    out: list[Any] = []
    for i, agg in enumerate(aggs):
        if i == 4:  # restart: windows come from the stored records
            blob = msgspec.msgpack.encode(rel.snapshot())
            rel = PaneReleaser(plan, opendp, msgspec.msgpack.decode(blob, type=ReleaseState))
        out.extend(rel.release(agg))
    panes = {r.pane.index: r for r in out if isinstance(r, PaneRecord)}
    windows = [r for r in out if isinstance(r, WindowRecord)]
    assert {w.panes for w in windows} == {2, 3}  # a window of one pane is the pane itself
    assert len(windows) == (len(aggs) - 1) + (len(aggs) - 2)
    for w in windows:
        for stat in w.statistics:
            for j, entry in enumerate(stat.known):
                expected = 0
                for p in range(w.first_pane, w.last_pane + 1):
                    ps = next(s for s in panes[p].statistics if s.name == stat.name)
                    expected += ps.known[j].value
                assert entry.value == expected
        assert w.withheld_panes == 0
        assert w.start == panes[w.first_pane].pane.start and w.end == panes[w.last_pane].pane.end


# ---------------------------------------------------------------------------- replay
def test_a_restart_mid_pane_republishes_exactly_the_drawn_values() -> None:
    """Vault + accumulator + release stage with OpenDP noise; the worker crashes in the middle
    of a pane after its last commit. The restarted stage republishes the stored records byte
    for byte, draws no new noise for them, and charges no pane twice."""
    from procvault.monitor.vault import Vault

    cn = sequence_net("ABC")
    settings = _settings(windows=(2 * HOUR,))
    known = KnownKeys.build(cn.labels)
    plan = ReleasePlan.build(settings, known)
    events: list[Event] = []
    for c in range(40):
        for j, a in enumerate("ABC"):
            events.append(Event.create(f"c{c}", a, T0 + timedelta(minutes=7 * c + 3 * j)))
        events.append(Event.case_end(f"c{c}", T0 + timedelta(minutes=7 * c + 9)))
    events.sort(key=lambda e: e.timestamp)
    crash_at = next(i for i, e in enumerate(events) if e.timestamp >= T0 + timedelta(minutes=150))

    def process(
        vault: Vault, acc: PaneAccumulator, rel: PaneReleaser, evs: list[Event]
    ) -> list[bytes]:
        published = []
        for e in evs:
            for agg in acc.observe_replayed(e, vault.update(e)):
                records = rel.release(agg)
                committed["release"] = msgspec.msgpack.encode(rel.snapshot())  # store first
                published.extend(encode_record(r) for r in records)  # then publish
        committed["acc"] = msgspec.msgpack.encode(acc.snapshot())
        return published

    committed: dict[str, bytes] = {}
    releaser = Counting(OpenDPReleaser(plan))
    vault = Vault(cn)
    acc = PaneAccumulator(settings, known)
    rel = PaneReleaser(plan, releaser)
    before = process(vault, acc, rel, events[:crash_at])
    assert before and acc.counters().open_panes == 1  # mid-pane
    last_commit = dict(committed)
    # the crash: events consumed after the last commit are lost with the process
    process(vault, acc, rel, events[crash_at : crash_at + 5])

    # restart from the last commit: the vault replays its input, the others load their state
    vault2 = Vault(cn)
    for e in events[:crash_at]:
        vault2.update(e)
    acc2 = PaneAccumulator(
        settings, known, msgspec.msgpack.decode(last_commit["acc"], type=AccumulatorState)
    )
    state = msgspec.msgpack.decode(last_commit["release"], type=ReleaseState)
    again = Counting(OpenDPReleaser(plan))
    rel2 = PaneReleaser(plan, again, state)
    republished = [encode_record(r) for r in rel2.records()]
    published_panes = [
        b for b in before if b.startswith((b'{"kind":"pane"', b'{"kind":"withheld"'))
    ]
    assert republished == published_panes[-len(republished) :]
    # a redelivered partial for a stored pane gets the stored record, not fresh noise
    last = decode_record(republished[-1])
    assert isinstance(last, PaneRecord)
    clock = PaneClock(settings.panes)
    p = clock.pane(last.pane.index)
    assert encode_record(rel2.release(PaneAggregate.empty(p))[0]) == republished[-1]
    assert again.draws == 0
    # the stream goes on; no pane is charged twice, every pane is released once
    after = process(vault2, acc2, rel2, events[crash_at:])
    after += [encode_record(r) for agg in acc2.flush() for r in rel2.release(agg)]
    indexes = [
        decode_record(b).pane.index  # type: ignore[union-attr]
        for b in published_panes + after
        if b.startswith((b'{"kind":"pane"', b'{"kind":"withheld"'))
    ]
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
