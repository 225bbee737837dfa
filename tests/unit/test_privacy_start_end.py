"""The ``start_end`` statistic: a case's first activity counted once as a start in the pane of
that event, its last activity once as an end in the pane its completion is filed under, within
the case's caps; released (without noise, through the ``DeterministicReleaser``) it gives the
exact start and end activities of the stream."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from seqnet import sequence_net

from procvault.monitor.event import PLACEHOLDER_ACTIVITY, Event, EventKind
from procvault.monitor.privacy import (
    Budget,
    DeterministicReleaser,
    KnownKeys,
    PaneAccumulator,
    PaneAggregate,
    PaneRecord,
    PaneReleaser,
    PaneSettings,
    PrivacySettings,
    ReleasePlan,
    RunningTotals,
    StatisticSettings,
)
from procvault.monitor.privacy.settings import OPT_IN, STATISTICS
from procvault.monitor.vault import Vault, VaultSettings

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
KNOWN = KnownKeys.build("ABC", rules=["R1"])
WITH = (
    StatisticSettings("activity", max_keys=3),
    StatisticSettings("directly_follows", max_keys=3),
    StatisticSettings("cases"),
    StatisticSettings("start_end"),
)


def _settings(statistics: tuple[StatisticSettings, ...] = WITH, **kw: Any) -> PrivacySettings:
    kw.setdefault("budget", Budget(1.0, window=4, delta=1e-6))
    kw.setdefault("panes", PaneSettings(HOUR, start=T0))
    kw.setdefault("running_totals", None)
    return PrivacySettings(statistics=statistics, **kw)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _ev(case: str, act: str, minutes: float) -> Event:
    if act == "end":
        return Event.case_end(case, _at(minutes))
    if act == "withheld":
        return Event.create(case, PLACEHOLDER_ACTIVITY, _at(minutes), kind=EventKind.PLACEHOLDER)
    return Event.create(case, act, _at(minutes))


def _replay(
    settings: PrivacySettings, events: list[Event], vault: Vault | None = None
) -> list[PaneAggregate]:
    """The exact panes of a sorted stream through the vault and the accumulator (offline
    replay: the events' own times are the clock), the stream's end included."""
    vault = vault if vault is not None else Vault(sequence_net("ABC"))
    acc = PaneAccumulator(settings, KNOWN)
    out: list[PaneAggregate] = []
    for ev in events:
        out.extend(acc.observe_replayed(ev, vault.update(ev)))
    if events:
        out.extend(acc.observe_tick(events[-1].timestamp, vault.flush_update()))
    out.extend(acc.flush())
    return out


def _by_pane(panes: list[PaneAggregate]) -> dict[int, dict[tuple[str, ...], int]]:
    return {p.index - panes[0].index: p.statistic("start_end") for p in panes}


def _stream(seed: int, cases: int = 40) -> tuple[list[Event], dict[str, list[str]]]:
    """Random cases over A, B, C across ~10 hours, each ended by its marker; the traces."""
    rng = random.Random(seed)
    events: list[Event] = []
    traces: dict[str, list[str]] = {}
    for i in range(cases):
        case = f"c{i}"
        t = rng.uniform(0, 500)
        trace = [rng.choice("ABC") for _ in range(rng.randint(1, 6))]
        traces[case] = trace
        for act in trace:
            events.append(Event.create(case, act, _at(t)))
            t += rng.uniform(1, 90)
        events.append(Event.case_end(case, _at(t)))
    events.sort(key=lambda e: (e.timestamp, e.case_id))
    return events, traces


# ---------------------------------------------------------------------------- the catalog
def test_start_end_is_opt_in_with_sensitivity_two_and_the_model_activities_as_keys() -> None:
    assert "start_end" in STATISTICS and set(OPT_IN) == {"start_end"}
    default = PrivacySettings(Budget(1.0, window=4), PaneSettings(HOUR))
    assert "start_end" not in [s.name for s in default.statistics]
    assert [s.name for s in default.statistics] == [n for n in STATISTICS if n != "start_end"]
    s = StatisticSettings("start_end", max_keys=7)  # the cap is implied: one start, one end
    assert (s.m, s.c, s.sensitivity()) == (2, 1, 2)
    keys = KNOWN.keys("start_end")
    assert keys == tuple(sorted((e, a) for a in "ABC" for e in ("start", "end")))
    assert all(PLACEHOLDER_ACTIVITY not in k for k in keys)
    spec = ReleasePlan.build(_settings(), KNOWN).spec("start_end")
    assert (spec.sensitivity, spec.max_keys, spec.linf) == (2, 2, 1)
    assert spec.threshold is not None  # keys of activities outside the model: thresholded


# ---------------------------------------------------------------------------- filing
def test_a_start_is_filed_with_the_first_event_and_an_end_with_the_completion() -> None:
    events = [
        _ev("a", "A", 10),
        _ev("a", "B", 70),
        _ev("a", "C", 130),
        _ev("a", "end", 200),  # completion filed at its marker: pane 3
        _ev("b", "B", 20),
        _ev("b", "C", 30),
        _ev("b", "end", 40),  # start and end in pane 0
    ]
    events.sort(key=lambda e: e.timestamp)
    panes = _replay(_settings(), events)
    assert _by_pane(panes) == {
        0: {("start", "A"): 1, ("start", "B"): 1, ("end", "C"): 1},
        1: {},
        2: {},
        3: {("end", "C"): 1},
    }
    # the same panes as the case's completion in ``cases``
    assert panes[3].statistic("cases") == {("completed_fit",): 1}


def test_the_end_follows_the_idle_timeout_as_the_completion_does() -> None:
    vault = Vault(sequence_net("ABC"), VaultSettings(idle_timeout=timedelta(minutes=90)))
    acc = PaneAccumulator(_settings(), KNOWN)
    out: list[PaneAggregate] = []
    for ev in [_ev("a", "A", 5), _ev("a", "B", 50)]:
        out.extend(acc.observe_replayed(ev, vault.update(ev)))
    # the case's own time: its last event (50) plus the idle timeout = minute 140, pane 2
    out.extend(acc.observe_tick(_at(200), vault.tick(_at(200))))
    out.extend(acc.flush())
    assert _by_pane(out) == {0: {("start", "A"): 1}, 1: {}, 2: {("end", "B"): 1}, 3: {}}
    assert out[2].statistic("cases") == {("completed_unfit",): 1}


def test_placeholders_are_never_a_start_or_an_end() -> None:
    events = [
        _ev("p", "withheld", 1),  # the case starts (``cases``) but has no step yet
        _ev("p", "A", 65),  # its first activity: the start, in pane 1
        _ev("p", "withheld", 70),  # last observation, but no step
        _ev("p", "end", 80),
        _ev("q", "withheld", 2),  # only placeholders: no start, no end
        _ev("q", "end", 3),
    ]
    events.sort(key=lambda e: e.timestamp)
    panes = _replay(_settings(), events)
    assert _by_pane(panes) == {0: {}, 1: {("start", "A"): 1, ("end", "A"): 1}}
    assert panes[0].statistic("cases") == {("started",): 2}
    assert panes[0].statistic("activity") == {(PLACEHOLDER_ACTIVITY,): 2}


def test_events_after_completion_and_revoked_cases_count_as_for_activity() -> None:
    vault = Vault(sequence_net("ABC"))
    settings = _settings()
    acc = PaneAccumulator(settings, KNOWN)
    out: list[PaneAggregate] = []
    for ev in [_ev("a", "A", 1), _ev("a", "end", 2), _ev("a", "B", 3), _ev("r", "C", 4)]:
        out.extend(acc.observe_replayed(ev, vault.update(ev)))  # "a"'s B: after completion
    vault.forget("r")
    assert acc.forget("r")  # revoked: what it counted stays, nothing more comes
    out.extend(acc.observe_tick(_at(5), vault.flush_update()))
    out.extend(acc.flush())
    (pane,) = out
    assert pane.statistic("start_end") == {("start", "A"): 1, ("end", "A"): 1, ("start", "C"): 1}
    assert pane.statistic("activity") == {("A",): 1, ("C",): 1}  # B was not applied


def test_the_k_panes_cap_drops_a_late_end_as_it_drops_the_completion() -> None:
    settings = _settings(max_panes_per_case=2)
    events = [_ev("a", "A", 5), _ev("a", "B", 65), _ev("a", "C", 125), _ev("a", "end", 130)]
    panes = _replay(settings, events)
    assert _by_pane(panes) == {0: {("start", "A"): 1}, 1: {}, 2: {}}
    assert panes[2].statistic("cases") == {}  # the completion's pane was a third one: dropped


def test_one_case_moves_a_pane_by_at_most_one_start_and_one_end() -> None:
    base = [_ev("o", "A", 1), _ev("o", "end", 2)]
    busy = [_ev("x", act, 10 + i) for i, act in enumerate("ABCABCABC")] + [_ev("x", "end", 30)]
    with_x = _replay(_settings(), sorted(base + busy, key=lambda e: e.timestamp))
    without = _replay(_settings(), base)
    a, b = with_x[0].statistic("start_end"), without[0].statistic("start_end")
    moved = {k: a.get(k, 0) - b.get(k, 0) for k in a.keys() | b.keys()}
    assert {k: v for k, v in moved.items() if v} == {("start", "A"): 1, ("end", "C"): 1}


def test_adding_start_end_to_a_policy_leaves_the_other_statistics_as_they_were() -> None:
    events, _ = _stream(3)
    without = _settings(WITH[:3], max_panes_per_case=3)
    with_it = _settings(WITH, max_panes_per_case=3)
    a, b = _replay(without, events), _replay(with_it, events)
    assert [p.index for p in a] == [p.index for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert "start_end" not in dict(pa.values)
        assert pa.values == tuple(v for v in pb.values if v[0] != "start_end")


def test_running_totals_count_a_case_s_start_and_end_once_in_its_life() -> None:
    settings = _settings(running_totals=RunningTotals(("cases", "start_end"), levels=6))
    events = [_ev("a", "A", 5), _ev("a", "C", 65), _ev("a", "end", 70), _ev("b", "B", 80)]
    panes = _replay(settings, events)
    firsts = Counter[tuple[str, ...]]()
    for p in panes:
        firsts.update(p.first_contributions("start_end"))
    assert firsts == {("start", "A"): 1, ("end", "C"): 1, ("start", "B"): 1}


# ---------------------------------------------------------------------------- the release
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_released_without_noise_the_counts_are_the_stream_s_start_and_end_activities(
    seed: int,
) -> None:
    """Summed over the released panes (no noise: ``DeterministicReleaser``), ``start_end``
    equals pm4py's start and end activities of the stream's traces."""
    from procvault.generators._pm4py import import_pm4py

    events, traces = _stream(seed)
    settings = _settings(max_panes_per_case=8, budget=Budget(8.0, window=8, delta=1e-6))
    plan = ReleasePlan.build(settings, KNOWN)
    releaser = PaneReleaser(plan, DeterministicReleaser(plan))
    starts: Counter[str] = Counter()
    ends: Counter[str] = Counter()
    released = 0
    for agg in _replay(settings, events):
        for record in releaser.release(agg):
            if not isinstance(record, PaneRecord):
                continue
            released += 1
            (stat,) = [s for s in record.statistics if s.name == "start_end"]
            assert not stat.other
            for entry in stat.known:
                which, act = entry.key
                (starts if which == "start" else ends)[act] += entry.value
    assert released > 5
    pm4py = import_pm4py()
    import pandas as pd

    rows = [
        {"case:concept:name": c, "concept:name": a, "time:timestamp": T0 + timedelta(seconds=i)}
        for c, trace in traces.items()
        for i, a in enumerate(trace)
    ]
    _, start, end = pm4py.discover_dfg(pd.DataFrame(rows))
    assert +starts == dict(start)
    assert +ends == dict(end)
    assert sum(starts.values()) == sum(ends.values()) == len(traces)


def test_an_activity_outside_the_model_passes_the_threshold_as_in_activity() -> None:
    settings = _settings()
    plan = ReleasePlan.build(settings, KNOWN)
    tau = plan.spec("start_end").threshold
    assert tau is not None
    (agg,) = _replay(settings, [_ev("x", "X", 1), _ev("x", "end", 2)])
    assert agg.statistic("start_end") == {("start", "X"): 1, ("end", "X"): 1}
    below = PaneReleaser(plan, DeterministicReleaser(plan, offset=tau - 2)).release(agg)[0]
    above = PaneReleaser(plan, DeterministicReleaser(plan, offset=tau - 1)).release(agg)[0]
    assert isinstance(below, PaneRecord) and isinstance(above, PaneRecord)
    (sb,) = [s for s in below.statistics if s.name == "start_end"]
    (sa,) = [s for s in above.statistics if s.name == "start_end"]
    assert sb.other == ()
    assert [(e.key, e.value) for e in sa.other] == [(("end", "X"), tau), (("start", "X"), tau)]
