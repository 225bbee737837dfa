"""Panes and the capped accumulator: pane assignment, lateness, caps, sensitivity, state."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqnet import sequence_net

from procvault.monitor.event import Event
from procvault.monitor.privacy import (
    AccumulatorState,
    Budget,
    KnownKeys,
    PaneAccumulator,
    PaneAggregate,
    PaneClock,
    PaneSettings,
    PrivacySettings,
    StatisticSettings,
)
from procvault.monitor.privacy.settings import STATISTICS
from procvault.monitor.vault import CaseResult, Vault

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
KNOWN = KnownKeys.build("ABC", rules=["R1", "R2"])


def _settings(**kw: Any) -> PrivacySettings:
    kw.setdefault("budget", Budget(1.0, window=4, delta=1e-6))
    kw.setdefault("panes", PaneSettings(HOUR))
    return PrivacySettings(**kw)


def _ev(case: str, act: str, minutes: float) -> Event:
    return Event.create(case, act, T0 + timedelta(minutes=minutes))


def _result(case: str, *, fit: bool = True, missing: int = 0, remaining: int = 0) -> CaseResult:
    return CaseResult(case, 3, 4, 4, missing, remaining, 1.0 if fit else 0.5, fit, 0, "end_marker")


def _run(acc: PaneAccumulator, events: list[Event]) -> list[PaneAggregate]:
    out: list[PaneAggregate] = []
    for e in events:
        out.extend(acc.observe_event(e))
    out.extend(acc.flush())
    return out


# ---------------------------------------------------------------------------- pane clock
@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(1, 10**10),
)
def test_each_timestamp_lands_in_the_pane_that_holds_it(ts: datetime, length_us: int) -> None:
    clock = PaneClock(PaneSettings(timedelta(microseconds=length_us)))
    pane = clock.pane(clock.index(ts))
    assert pane.start <= ts < pane.end
    assert pane.end - pane.start == timedelta(microseconds=length_us)


def test_panes_close_with_allowed_lateness_and_late_events_are_dropped() -> None:
    acc = PaneAccumulator(_settings(panes=PaneSettings(HOUR, timedelta(minutes=10))), KNOWN)
    assert acc.observe_event(_ev("a", "A", 30)) == ()
    assert acc.observe_event(_ev("b", "A", 65)) == ()  # pane 0 still open (lateness)
    assert acc.observe_event(_ev("c", "B", 55)) == ()  # late but within the lateness: counted
    (p0,) = acc.observe_event(_ev("d", "A", 70))  # watermark 70 = end 60 + 10: pane 0 closes
    assert p0.statistic("activity") == {("A",): 1, ("B",): 1}
    assert acc.observe_event(_ev("e", "C", 59)) == ()  # pane 0 has closed: dropped
    assert acc.counters().late_events == 1
    (p1,) = acc.flush()
    assert p1.statistic("activity") == {("A",): 2}
    assert p1.statistic("cases") == {("started",): 2}


def test_empty_panes_are_emitted_in_order() -> None:
    acc = PaneAccumulator(_settings(), KNOWN)
    acc.observe_event(_ev("a", "A", 0))
    closed = acc.observe_event(_ev("a", "B", 5 * 60 + 1))
    assert [p.index - closed[0].index for p in closed] == [0, 1, 2, 3, 4]
    assert [p.is_empty for p in closed] == [False, True, True, True, True]
    assert closed[1].statistic("activity") == {}


def test_watermark_never_moves_back() -> None:
    acc = PaneAccumulator(_settings(), KNOWN)
    acc.observe_event(_ev("a", "A", 200))
    acc.advance(T0)
    assert acc.watermark == T0 + timedelta(minutes=200)


# ---------------------------------------------------------------------------- statistics
def test_directly_follows_and_durations_per_case() -> None:
    acc = PaneAccumulator(_settings(), KNOWN)
    events = [_ev("a", "A", 0), _ev("a", "B", 90), _ev("b", "A", 70), _ev("a", "Z", 100)]
    closed: list[PaneAggregate] = []
    for e in events:
        closed.extend(acc.observe_event(e))
    acc.observe_completed(_result("a", fit=False, missing=50, remaining=2), T0 + HOUR * 2)
    p0, p1, p2 = closed + list(acc.flush())
    assert p0.statistic("directly_follows") == {}
    assert p1.statistic("directly_follows") == {("A", "B"): 1, ("B", "Z"): 1}
    assert p1.statistic("df_duration") == {("A", "B"): 1}  # 90 min in whole hours; (B, Z) unknown
    assert p1.statistic("activity") == {("A",): 1, ("B",): 1, ("Z",): 1}
    assert p2.statistic("cases") == {("completed_unfit",): 1}
    assert p2.statistic("tokens") == {("missing",): 10, ("remaining",): 2}  # clamped to 10
    assert p2.statistic("case_duration") == {("completed",): 1}  # 0 to 100 min, in hours


def test_vault_wiring_counts_deviations_completions_and_violations() -> None:
    cn = sequence_net("ABC")
    vault = Vault(cn)
    acc = PaneAccumulator(_settings(), KnownKeys.build(cn.labels, rules=["R1"]))
    stream = [
        (_ev("fit", "A", 1), ()),
        (_ev("bad", "C", 2), (("R1", "bad", T0),)),  # missing tokens at C, violates R1
        (_ev("fit", "B", 3), ()),
        (_ev("fit", "C", 4), ()),
        (Event.case_end("fit", T0 + timedelta(minutes=5)), ()),
        (Event.case_end("bad", T0 + timedelta(minutes=6)), (("R1", "bad", T0),)),  # again
        (_ev("fit", "A", 7), ()),  # after completion: not applied, not counted
    ]
    for event, violated in stream:
        acc.observe_replayed(event, vault.update(event), violations=violated)
    (pane,) = acc.flush()
    assert pane.statistic("cases") == {
        ("started",): 2,
        ("completed_fit",): 1,
        ("completed_unfit",): 1,
    }
    assert pane.statistic("deviation") == {("C",): 1}
    assert pane.statistic("violation") == {("R1",): 1}
    assert pane.statistic("activity") == {("A",): 1, ("B",): 1, ("C",): 2}
    assert pane.statistic("tokens") == {("missing",): 1, ("remaining",): 1}
    assert acc.counters().active_cases == 0


def test_violation_of_an_unknown_case_is_dropped() -> None:
    acc = PaneAccumulator(_settings(), KNOWN)
    acc.observe_event(_ev("a", "A", 0))
    acc.observe_violation("R1", "ghost", T0)
    assert acc.counters().orphans == 1


def test_disabled_statistics_are_not_counted() -> None:
    acc = PaneAccumulator(
        _settings(statistics=(StatisticSettings("activity"),), running_totals=None), KNOWN
    )
    (pane,) = _run(acc, [_ev("a", "A", 0), _ev("a", "B", 1)])
    assert [name for name, _ in pane.values] == ["activity"]


# ---------------------------------------------------------------------------- caps
def test_a_case_with_1000_events_moves_each_count_by_at_most_its_cap() -> None:
    s = _settings()
    background = [_ev(f"bg{i}", "ABC"[i % 3], i % 60) for i in range(30)]
    acts = itertools.cycle(["A", "B", "C", "X", "Y", "A", "C"])
    adversary = [_ev("adv", next(acts), i * 0.05) for i in range(1000)]
    with_adv = _run(PaneAccumulator(s, KNOWN), sorted(background + adversary, key=_ts))
    without = _run(PaneAccumulator(s, KNOWN), background)
    (a,), (b,) = with_adv, without
    for stat in s.statistics:
        da, db = a.statistic(stat.name), b.statistic(stat.name)
        diffs = [abs(da.get(k, 0) - db.get(k, 0)) for k in set(da) | set(db)]
        assert sum(diffs) <= stat.sensitivity(), stat.name
        assert max(diffs, default=0) <= stat.c, stat.name


def _ts(e: Event) -> datetime:
    return e.timestamp


def test_a_case_contributes_to_at_most_k_panes() -> None:
    acc = PaneAccumulator(_settings(max_panes_per_case=2), KNOWN)
    panes = _run(acc, [_ev("a", "A", 60 * i) for i in range(5)])
    assert [p.statistic("activity").get(("A",), 0) for p in panes] == [1, 1, 0, 0, 0]
    assert acc.counters().capped > 0


_events = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "c3", "adv"]),
        st.sampled_from(["A", "B", "C", "X", "Y"]),
        st.integers(0, 6 * 60),
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=timedelta(seconds=2))
@given(_events, st.integers(1, 4), st.integers(1, 3))
def test_neighbouring_streams_differ_within_the_caps(
    raw: list[tuple[str, str, int]], k: int, m: int
) -> None:
    """Removing any one case moves every pane's statistics by at most the sensitivity, in at
    most k panes, and the running totals' first contributions by at most max_keys per
    statistic over the whole stream."""
    stats = tuple(
        StatisticSettings(n, max_keys=m) if STATISTICS[n].max_keys is None else StatisticSettings(n)
        for n in STATISTICS
    )
    from procvault.monitor.privacy import RunningTotals

    s = _settings(
        max_panes_per_case=k,
        statistics=stats,
        running_totals=RunningTotals(("activity", "cases", "directly_follows")),
    )
    events = sorted((_ev(c, a, t) for c, a, t in raw), key=_ts)
    results = {c: _result(c, fit=c != "c2", missing=7, remaining=3) for c, _, _ in raw}

    def run(drop: str | None) -> dict[int, PaneAggregate]:
        acc = PaneAccumulator(s, KNOWN)
        out = []
        for e in events:
            if e.case_id != drop:
                out.extend(acc.observe_event(e))
        for c, r in sorted(results.items()):
            if c != drop:
                acc.observe_completed(r, T0 + timedelta(minutes=6 * 60))
        out.extend(acc.flush())
        return {p.index: p for p in out}

    full = run(None)
    for case in results:
        nb = run(case)
        touched = 0
        lifetime: dict[str, int] = {}
        for idx in set(full) | set(nb):
            a = full.get(idx)
            b = nb.get(idx)
            moved = False
            for stat in s.statistics:
                da = a.statistic(stat.name) if a else {}
                db = b.statistic(stat.name) if b else {}
                diffs = [abs(da.get(x, 0) - db.get(x, 0)) for x in set(da) | set(db)]
                assert sum(diffs) <= stat.sensitivity()
                assert max(diffs, default=0) <= stat.c
                moved = moved or any(diffs)
            for name in ("activity", "cases", "directly_follows"):
                fa = a.first_contributions(name) if a else {}
                fb = b.first_contributions(name) if b else {}
                lifetime[name] = lifetime.get(name, 0) + sum(
                    abs(fa.get(x, 0) - fb.get(x, 0)) for x in set(fa) | set(fb)
                )
            touched += moved
        assert touched <= k
        for name, total in lifetime.items():
            assert total <= min(s.statistic(name).m, len(KNOWN.keys(name)))


# ---------------------------------------------------------------------------- state
@settings(max_examples=60, deadline=timedelta(seconds=2))
@given(_events, st.integers(0, 120), st.lists(st.integers(0, 6 * 60), max_size=10))
def test_snapshot_restore_and_extra_watermarks_do_not_change_the_panes(
    raw: list[tuple[str, str, int]], cut: int, ticks: list[int]
) -> None:
    s = _settings(panes=PaneSettings(HOUR, timedelta(minutes=15)))
    events = [_ev(c, a, t) for c, a, t in raw]  # arrival order: some are late
    reference = _run(PaneAccumulator(s, KNOWN), events)

    # restart from a snapshot (through msgpack) at any point
    acc = PaneAccumulator(s, KNOWN)
    out = []
    for e in events[:cut]:
        out.extend(acc.observe_event(e))
    blob = msgspec.msgpack.encode(acc.snapshot())
    state = msgspec.msgpack.decode(blob, type=AccumulatorState)
    acc2 = PaneAccumulator(s, KNOWN, state=state)
    assert acc2.snapshot() == acc.snapshot()
    out.extend(_run(acc2, events[cut:]))
    assert out == reference

    # watermarks given between events that never pass a later event's time change nothing
    acc3 = PaneAccumulator(s, KNOWN)
    out3: list[PaneAggregate] = []
    for i, e in enumerate(events):
        for t in ticks:
            wm = T0 + timedelta(minutes=t)
            if i and wm <= min(x.timestamp for x in events[i:]):
                out3.extend(acc3.advance(wm))
        out3.extend(acc3.observe_event(e))
    out3.extend(acc3.flush())
    assert out3 == reference


def test_merge_of_two_workers_equals_one_worker() -> None:
    s = _settings()
    events = [_ev(f"c{i}", "ABC"[i % 3], i) for i in range(20)]
    one = _run(PaneAccumulator(s, KNOWN), events)
    a = _run(PaneAccumulator(s, KNOWN), [e for e in events if int(e.case_id[1:]) % 2])
    b = _run(PaneAccumulator(s, KNOWN), [e for e in events if not int(e.case_id[1:]) % 2])
    assert [x.merge(y) for x, y in zip(a, b, strict=True)] == one
    with pytest.raises(ValueError, match="cannot merge pane"):
        a[0].merge(PaneAggregate.empty(PaneClock(s.panes).pane(a[0].index + 1)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_panes_per_case": 0}, "max_panes_per_case must be >= 1"),
        ({"windows": (timedelta(minutes=90),)}, "not a positive multiple of the pane length"),
        ({"statistics": ()}, "at least one statistic"),
        ({"pane_epsilon": 2.0}, r"pane_epsilon must be in \(0, 1.0\]"),
        (
            {"statistics": (StatisticSettings("activity"),)},
            "running totals of statistics not released: cases",
        ),
    ],
)
def test_settings_refuse_bad_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _settings(**kwargs)


def test_statistic_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="a count takes no clamp"):
        StatisticSettings("activity", clamp=5)
    with pytest.raises(ValueError, match="not a duration, it takes no unit"):
        StatisticSettings("tokens", unit=HOUR)
    with pytest.raises(ValueError, match="weight must be positive"):
        StatisticSettings("cases", weight=0)


def test_a_case_completed_without_a_model_counts_as_unchecked() -> None:
    from typing import NamedTuple

    class RulesOnlyResult(NamedTuple):  # what a vault without a model reports
        case_id: str
        is_fit: bool = False
        missing: int = 0
        remaining: int = 0
        conformance: bool = False

    acc = PaneAccumulator(_settings(), KNOWN)
    acc.observe_event(_ev("a", "A", 0))
    acc.observe_completed(RulesOnlyResult("a"), T0)  # type: ignore[arg-type]
    (pane,) = acc.flush()
    assert pane.statistic("cases") == {("started",): 1, ("completed_unchecked",): 1}
    assert pane.statistic("tokens") == {}


def test_forget_drops_a_revoked_case() -> None:
    acc = PaneAccumulator(_settings(), KNOWN)
    acc.observe_event(_ev("a", "A", 0))
    assert acc.forget("a") and not acc.forget("a")
    assert acc.counters().active_cases == 0


def test_vault_with_rules_only_feeds_violations_and_unchecked_completions() -> None:
    from procvault.monitor.compliance import Compliance, DeclareRule, Window

    rule = DeclareRule("iv_within_1h", "response", "Triage", "IV", window=Window(within=HOUR))
    vault = Vault(compliance=Compliance([rule]))
    acc = PaneAccumulator(_settings(), KnownKeys.build(["Triage", "IV"], rules=[rule.name]))
    closed: list[PaneAggregate] = []
    for event in [_ev("slow", "Triage", 0), _ev("fast", "Triage", 5), _ev("fast", "IV", 20)]:
        closed += acc.observe_replayed(event, vault.update(event))
    wm = T0 + timedelta(minutes=90)  # slow's deadline passes by the watermark
    closed += acc.observe_tick(wm, vault.tick(wm))
    for case in ("slow", "fast"):
        end = Event.case_end(case, wm)
        closed += acc.observe_replayed(end, vault.update(end))
    closed += acc.flush()
    p0, p1 = closed
    assert p0.statistic("violation") == {}
    assert p1.statistic("violation") == {("iv_within_1h",): 1}  # counted at the deadline
    assert p1.statistic("cases") == {("completed_unchecked",): 2}
    assert p0.statistic("directly_follows") == {("Triage", "IV"): 1}


_stream = st.lists(
    st.tuples(
        st.sampled_from(["c1", "c2", "c3", "c4"]),
        st.sampled_from(["A", "B", "C", "end", "withheld"]),
        st.integers(0, 5 * 60),
        st.booleans(),  # the batch ends after this item
    ),
    max_size=80,
)


@settings(max_examples=60, deadline=timedelta(seconds=2))
@given(_stream, st.integers(0, 80))
def test_a_shared_snapshot_and_the_touched_cases_states_restore_the_whole(
    raw: list[tuple[str, str, int, bool]], cut: int
) -> None:
    """What the vault worker stores: per batch the shared snapshot, and the state of each case
    the batch touched (its events, its completions) — earlier case states are not rewritten.
    Restarting from that store at any batch boundary gives the panes of a run without one."""
    from procvault.monitor.compliance import Compliance, DeclareRule
    from procvault.monitor.event import PLACEHOLDER_ACTIVITY, EventKind

    s = _settings(panes=PaneSettings(HOUR, timedelta(minutes=15)))
    vault = Vault(compliance=Compliance([DeclareRule("R1", "existence", "B")]))
    steps = []  # (event, the vault's update, ends a batch)
    for case, act, minute, ends in raw:
        ts = T0 + timedelta(minutes=minute)
        if act == "end":
            ev = Event.case_end(case, ts)
        elif act == "withheld":
            ev = Event.create(case, PLACEHOLDER_ACTIVITY, ts, kind=EventKind.PLACEHOLDER)
        else:
            ev = Event.create(case, act, ts)
        steps.append((ev, vault.update(ev), ends))

    def run(acc: PaneAccumulator, part: list[Any]) -> list[PaneAggregate]:
        return [p for ev, up, _ in part for p in acc.observe_replayed(ev, up)]

    ref_acc = PaneAccumulator(s, KNOWN)
    reference = [*run(ref_acc, steps), *ref_acc.flush()]

    acc = PaneAccumulator(s, KNOWN)
    shared = acc.shared_snapshot()
    cases: dict[str, Any] = {}
    touched: set[str] = set()
    out: list[PaneAggregate] = []
    cut_at = 0
    for i, (ev, up, ends) in enumerate(steps):
        out.extend(acc.observe_replayed(ev, up))
        touched.add(ev.case_id)
        touched.update(a.case_id for a in up.alerts)
        touched.update(r.case_id for r in up.completed)
        if ends or i == len(steps) - 1:
            blob = msgspec.msgpack.encode(acc.shared_snapshot())
            shared = msgspec.msgpack.decode(blob, type=AccumulatorState)
            for case in touched:
                cases[case] = acc.case_state(case)
            touched.clear()
            cut_at = i + 1
            if i + 1 >= cut:
                break
    assert shared.cases == () and all(not p.seen for p in shared.panes)
    back = PaneAccumulator(s, KNOWN, shared)
    for case, state in cases.items():
        if state is not None:
            back.restore_case(case, state)
    assert back.snapshot() == acc.snapshot()
    out.extend(run(back, steps[cut_at:]))
    out.extend(back.flush())
    assert out == reference
