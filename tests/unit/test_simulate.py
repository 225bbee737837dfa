"""The Petri-net simulator: reproducibility, limits, ordering, replay fitness, noise, markers."""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.config.models import LoadedModel, load_model
from procvault.generators.simulate import SimulationStats, Simulator
from procvault.monitor.errors import ConfigError
from procvault.monitor.event import Event, EventKind

MODELS = Path("/work/shared/data/models")

pytestmark = pytest.mark.skipif(not MODELS.is_dir(), reason="shared models are not available")


@pytest.fixture(scope="module")
def running() -> LoadedModel:
    return load_model(MODELS / "pm4py/running-example.pnml")


@pytest.fixture(scope="module")
def sepsis() -> LoadedModel:
    return load_model(MODELS / "promtee/pnml/sepsis.pnml")


@pytest.fixture(scope="module")
def roadtraffic() -> LoadedModel:
    return load_model(MODELS / "pm4py/roadtraffic.pnml")


def sim(model: LoadedModel, **settings: Any) -> Simulator:
    """A simulator with test defaults: ten cases an hour, ten minutes per activity."""
    settings.setdefault("seed", 1)
    settings.setdefault("arrival_rate", 10.0)
    settings.setdefault("mean_duration", 600.0)
    return Simulator(model, **settings)


def key(events: Iterable[Event]) -> list[tuple[str, str, datetime, int]]:
    return [(e.case_id, e.activity, e.timestamp, e.kind) for e in events]


def tiny_net(
    arcs: Iterable[tuple[str, str]], labels: Mapping[str, str | None], initial: str, final: str
) -> LoadedModel:
    """A net from ``(source, target)`` pairs; the keys of ``labels`` are its transitions."""
    from pm4py.objects.petri_net.obj import Marking, PetriNet
    from pm4py.objects.petri_net.utils.petri_utils import add_arc_from_to

    net = PetriNet("tiny")
    arcs = list(arcs)
    nodes: dict[str, Any] = {}
    for name, label in labels.items():
        nodes[name] = PetriNet.Transition(name, label)
        net.transitions.add(nodes[name])
    for name in {n for arc in arcs for n in arc} | {initial, final}:
        if name not in nodes:
            nodes[name] = PetriNet.Place(name)
            net.places.add(nodes[name])
    for source, target in arcs:
        add_arc_from_to(nodes[source], nodes[target], net)
    return LoadedModel(
        net, Marking({nodes[initial]: 1}), Marking({nodes[final]: 1}), "option", None
    )


# -- reproducibility ---------------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["running", "sepsis", "roadtraffic"])
def test_same_seed_same_stream(model_name: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(model_name)
    settings = {"seed": 42, "max_events": 2_000, "noise": 0.2, "end_markers": True}
    first = list(sim(model, **settings))
    again = list(sim(model, **settings))
    assert len([e for e in first if not e.is_marker]) == 2_000
    assert first == again
    other = list(sim(model, **{**settings, "seed": 43}))
    assert key(other) != key(first)


def test_iterating_twice_restarts(running: LoadedModel) -> None:
    simulator = sim(running, max_events=500)
    assert list(simulator) == list(simulator)


def test_stream_is_pinned(sepsis: LoadedModel) -> None:
    # Pins the stream: a change to the sampling scheme must be deliberate.
    events = list(sim(sepsis, seed=5, max_events=4))
    assert [(e.case_id, e.activity, e.timestamp.isoformat()) for e in events] == [
        ("sim-1", "ER Registration", "2024-01-01T00:00:00+00:00"),
        ("sim-2", "ER Registration", "2024-01-01T00:02:04.061984+00:00"),
        ("sim-2", "Leucocytes", "2024-01-01T00:05:28.352673+00:00"),
        ("sim-3", "ER Registration", "2024-01-01T00:16:05.340828+00:00"),
    ]


@settings(max_examples=25, deadline=timedelta(seconds=2))
@given(seed=st.integers(min_value=-(2**63), max_value=2**63))
def test_seed_determines_the_stream(seed: int) -> None:
    model = load_model(MODELS / "pm4py/running-example.pnml")
    first = list(sim(model, seed=seed, max_events=300, noise=0.1))
    assert first == list(sim(model, seed=seed, max_events=300, noise=0.1))
    assert len(first) == 300


@settings(max_examples=10, deadline=timedelta(seconds=2))
@given(seeds=st.lists(st.integers(0, 10**9), min_size=2, max_size=2, unique=True))
def test_different_seeds_differ(seeds: list[int]) -> None:
    model = load_model(MODELS / "pm4py/running-example.pnml")
    a, b = (key(sim(model, seed=s, max_events=200)) for s in seeds)
    assert a != b


# -- limits and ordering -----------------------------------------------------------------------


@pytest.mark.parametrize("max_cases", [0, 1, 7, 250])
def test_max_cases_is_exact(sepsis: LoadedModel, max_cases: int) -> None:
    run = iter(sim(sepsis, max_cases=max_cases, end_markers=True))
    events = list(run)
    assert len({e.case_id for e in events}) == max_cases
    assert sum(e.is_marker for e in events) == max_cases
    assert run.stats.cases_started == max_cases
    assert run.stats.cases_completed == max_cases  # sepsis.pnml is sound: every case completes


@pytest.mark.parametrize("max_events", [0, 1, 2, 999, 5_000])
@pytest.mark.parametrize("end_markers", [False, True])
def test_max_events_is_exact(roadtraffic: LoadedModel, max_events: int, end_markers: bool) -> None:
    run = iter(sim(roadtraffic, max_events=max_events, end_markers=end_markers, noise=0.3))
    events = list(run)
    assert sum(not e.is_marker for e in events) == max_events == run.stats.events
    if events:
        assert not events[-1].is_marker  # the stream stops right after the last counted event


def test_both_limits_apply_whichever_comes_first(running: LoadedModel) -> None:
    assert len(list(sim(running, max_cases=1_000, max_events=10))) == 10
    few = list(sim(running, max_cases=2, max_events=10_000))
    assert len({e.case_id for e in few}) == 2


def test_endless_without_limits(running: LoadedModel) -> None:
    events = list(itertools.islice(sim(running, arrival_rate=1_000.0), 20_000))
    assert len(events) == 20_000
    assert int(events[-1].case_id.removeprefix("sim-")) > 1_000


@pytest.mark.parametrize("model_name", ["sepsis", "roadtraffic"])
def test_timestamps_are_utc_and_non_decreasing(
    model_name: str, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(model_name)
    start = datetime(2024, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    events = list(
        sim(model, start=start, max_events=20_000, arrival_rate=200.0, noise=0.3, end_markers=True)
    )
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)
    assert stamps[0] == start
    assert all(ts.tzinfo is UTC for ts in stamps)
    per_case: dict[str, list[datetime]] = defaultdict(list)
    for e in events:
        per_case[e.case_id].append(e.timestamp)
    assert all(ts == sorted(ts) for ts in per_case.values())


def test_arrival_rate_and_mean_duration(running: LoadedModel) -> None:
    events = list(sim(running, arrival_rate=30.0, mean_duration=90.0, max_cases=4_000))
    firsts: dict[str, datetime] = {}
    gaps: list[float] = []
    last: dict[str, datetime] = {}
    for e in events:
        firsts.setdefault(e.case_id, e.timestamp)
        if e.case_id in last:
            gaps.append((e.timestamp - last[e.case_id]).total_seconds())
        last[e.case_id] = e.timestamp
    arrivals = sorted(firsts.values())
    inter = [(b - a).total_seconds() for a, b in itertools.pairwise(arrivals)]
    assert statistics.fmean(inter) == pytest.approx(120.0, rel=0.1)  # 30 cases an hour
    assert statistics.fmean(gaps) == pytest.approx(90.0, rel=0.1)


def test_mean_duration_per_activity(running: LoadedModel) -> None:
    durations = dict.fromkeys(running.visible_labels, 0.0)
    durations["decide"] = 3_600.0
    events = list(sim(running, mean_duration=durations, max_cases=500))
    previous: dict[str, datetime] = {}
    gaps: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.case_id in previous:
            gaps[e.activity].append((e.timestamp - previous[e.case_id]).total_seconds())
        previous[e.case_id] = e.timestamp
    assert statistics.fmean(gaps.pop("decide")) == pytest.approx(3_600.0, rel=0.2)
    assert all(g == 0.0 for values in gaps.values() for g in values)


# -- fidelity to the model ---------------------------------------------------------------------


@pytest.mark.parametrize("model_name", ["running", "sepsis", "roadtraffic"])
def test_activities_are_visible_labels(model_name: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(model_name)
    events = list(sim(model, max_events=10_000))
    seen = {e.activity for e in events}
    assert seen <= model.visible_labels
    assert seen == model.visible_labels  # 10,000 events visit every activity of these nets


@pytest.mark.parametrize("model_name", ["running", "roadtraffic"])
def test_completed_cases_replay_perfectly(
    model_name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd
    import pm4py
    from pm4py.util import constants

    monkeypatch.setattr(constants, "SHOW_PROGRESS_BAR", False)
    model = request.getfixturevalue(model_name)
    run = iter(sim(model, seed=11, max_cases=150))
    events = list(run)
    assert run.stats.cases_completed == 150
    frame = pd.DataFrame(
        {
            "case:concept:name": [e.case_id for e in events],
            "concept:name": [e.activity for e in events],
            "time:timestamp": [e.timestamp for e in events],
        }
    )
    diagnostics = pm4py.conformance_diagnostics_token_based_replay(
        frame, model.net, model.initial_marking, model.final_marking
    )
    assert len(diagnostics) == 150
    assert all(d["trace_is_fit"] for d in diagnostics)
    assert pm4py.fitness_token_based_replay(
        frame, model.net, model.initial_marking, model.final_marking
    )["perc_fit_traces"] == pytest.approx(100.0)


def test_silent_transitions_emit_nothing() -> None:
    # start -> a -> p -> (tau | b) -> end
    model = tiny_net(
        [("start", "ta"), ("ta", "p"), ("p", "tau"), ("p", "tb"), ("tau", "end"), ("tb", "end")],
        {"ta": "a", "tb": "b", "tau": None},
        "start",
        "end",
    )
    traces = Counter(tuple(t) for t in traces_of(sim(model, max_cases=2_000)))
    assert set(traces) == {("a",), ("a", "b")}
    assert traces[("a",)] == pytest.approx(1_000, abs=150)  # uniform choice


def test_livelock_is_cut_at_max_case_length() -> None:
    # start -> a -> start forever; the final place is never marked.
    model = tiny_net([("start", "ta"), ("ta", "start")], {"ta": "a"}, "start", "end")
    run = iter(sim(model, max_cases=3, max_case_length=5))
    assert Counter(e.case_id for e in run) == {"sim-1": 5, "sim-2": 5, "sim-3": 5}
    assert run.stats.cases_truncated == 3


def test_silent_livelock_is_cut_too() -> None:
    model = tiny_net(
        [("start", "ta"), ("ta", "loop"), ("loop", "tau"), ("tau", "loop")],
        {"ta": "a", "tau": None},
        "start",
        "end",
    )
    run = iter(sim(model, max_cases=2, max_case_length=50, end_markers=True))
    assert [(e.case_id, e.kind) for e in run] == [
        ("sim-1", EventKind.ACTIVITY),
        ("sim-1", EventKind.CASE_END),
        ("sim-2", EventKind.ACTIVITY),
        ("sim-2", EventKind.CASE_END),
    ]
    assert run.stats.cases_truncated == 2


def test_deadlock_ends_the_case() -> None:
    # start -> a -> stuck; "end" is never marked
    model = tiny_net([("start", "ta"), ("ta", "stuck")], {"ta": "a"}, "start", "end")
    run = iter(sim(model, max_cases=4))
    assert [e.activity for e in run] == ["a"] * 4
    assert run.stats == SimulationStats(
        cases_started=4,
        cases_completed=0,
        cases_deadlocked=4,
        cases_truncated=0,
        events=4,
        noise_skipped=0,
        noise_swapped=0,
        noise_inserted=0,
    )


def traces_of(events: Iterable[Event]) -> list[list[str]]:
    per_case: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if not e.is_marker:
            per_case[e.case_id].append(e.activity)
    return list(per_case.values())


# -- noise -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.05, 0.3])
def test_noise_rate_is_as_configured(sepsis: LoadedModel, rate: float) -> None:
    run = iter(sim(sepsis, noise=rate, noise_kinds={"skip", "insert"}, max_cases=1_500))
    events = list(run)
    stats = run.stats
    model_events = stats.events - stats.noise_inserted + stats.noise_skipped
    assert model_events > 10_000
    assert stats.noise_applied / model_events == pytest.approx(rate, abs=0.02)
    assert stats.noise_skipped == pytest.approx(stats.noise_inserted, rel=0.25)
    assert sum(e.activity == "NOISE" for e in events) == stats.noise_inserted


def test_no_noise_means_no_noise(sepsis: LoadedModel) -> None:
    run = iter(sim(sepsis, max_events=5_000))
    list(run)
    assert run.stats.noise_applied == 0


def test_skip_only_drops_events(roadtraffic: LoadedModel) -> None:
    clean = key(sim(roadtraffic, max_cases=300))
    noisy = key(sim(roadtraffic, max_cases=300, noise=0.2, noise_kinds=["skip"]))
    assert 0.7 * len(clean) < len(noisy) < 0.9 * len(clean)
    remaining = iter(clean)
    assert all(event in remaining for event in noisy)  # a subsequence


def test_insert_only_adds_foreign_events(sepsis: LoadedModel) -> None:
    alphabet = ("Coffee", "Lunch")
    clean = key(sim(sepsis, max_cases=300))
    run = iter(
        sim(sepsis, max_cases=300, noise=0.2, noise_kinds=["insert"], noise_alphabet=alphabet)
    )
    noisy = list(run)
    foreign = [e for e in noisy if e.activity not in sepsis.visible_labels]
    assert {e.activity for e in foreign} == set(alphabet)
    assert len(foreign) == run.stats.noise_inserted > 0
    assert key(e for e in noisy if e.activity in sepsis.visible_labels) == clean


def test_swap_only_keeps_times_and_activities(running: LoadedModel) -> None:
    clean = list(sim(running, max_cases=400))
    run = iter(sim(running, max_cases=400, noise=0.3, noise_kinds=["swap"]))
    noisy = list(run)
    assert run.stats.noise_swapped > 100
    assert [(e.case_id, e.timestamp) for e in noisy] == [(e.case_id, e.timestamp) for e in clean]
    assert sorted(map(sorted, traces_of(noisy))) == sorted(map(sorted, traces_of(clean)))
    assert traces_of(noisy) != traces_of(clean)


# -- markers, attributes -----------------------------------------------------------------------


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_one_end_marker_per_case_after_its_last_event(sepsis: LoadedModel, noise: float) -> None:
    events = list(sim(sepsis, max_cases=300, end_markers=True, org="hospital", noise=noise))
    markers = [e for e in events if e.is_marker]
    assert len(markers) == len({e.case_id for e in markers}) == 300
    last_index: dict[str, int] = {}
    for i, e in enumerate(events):
        if not e.is_marker:
            last_index[e.case_id] = i
    for i, e in enumerate(events):
        if e.is_marker:
            assert e.kind == EventKind.CASE_END and e.activity == "" and e.org == "hospital"
            assert i > last_index.get(e.case_id, -1)
            if e.case_id in last_index:
                last = events[last_index[e.case_id]].timestamp
                # Same time as the last event; later if noise skipped the last event.
                assert last == e.timestamp if noise == 0 else last <= e.timestamp


def test_no_markers_by_default(running: LoadedModel) -> None:
    assert not any(e.is_marker for e in sim(running, max_cases=50))


def test_org_prefix_and_resources(running: LoadedModel) -> None:
    events = list(
        sim(running, max_cases=100, org="insurer", case_prefix="claim-", resources=["ann", "bo"])
    )
    assert {e.org for e in events} == {"insurer"}
    assert all(e.case_id.startswith("claim-") for e in events)
    assert {e.resource for e in events} == {"ann", "bo"}
    assert all(e.attributes == () for e in events)
    assert all(e.resource is None for e in sim(running, max_cases=5))


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"seed": 1.5}, "seed must be an integer"),
        ({"seed": True}, "seed must be an integer"),
        ({"arrival_rate": 0}, "arrival_rate must be positive"),
        ({"arrival_rate": float("inf")}, "arrival_rate must be positive and finite"),
        ({"arrival_rate": "fast"}, "arrival_rate must be a number"),
        ({"mean_duration": -1.0}, "mean_duration must be finite and not negative"),
        ({"mean_duration": float("nan")}, "mean_duration must be finite"),
        ({"mean_duration": {"decide": 5.0}}, r"mean_duration has no entry for activities \["),
        ({"mean_duration": {"lunch": 5.0}}, r"mean_duration names activities not in the model"),
        ({"start": datetime(2024, 1, 1)}, "start must be a timezone-aware datetime"),
        ({"noise": 1.5}, "noise must be between 0 and 1"),
        ({"noise": -0.1}, "noise must be between 0 and 1"),
        ({"noise_kinds": ["skip", "shuffle"]}, "noise_kinds must be a subset of"),
        ({"noise_kinds": "skip"}, "noise_kinds must be a subset of"),
        ({"noise_kinds": []}, "noise_kinds must not be empty"),
        ({"noise": 1, "noise_kinds": ["skip"]}, "would drop every event"),
        ({"noise_alphabet": ()}, "noise_alphabet must not be empty"),
        (
            {"noise_alphabet": ("decide",)},
            r"noise_alphabet holds activities of the model: \['decide'\]",
        ),
        ({"noise_alphabet": ("",)}, "noise_alphabet must hold non-empty strings"),
        ({"max_cases": -1}, "max_cases must be at least 0"),
        ({"max_events": 2.0}, "max_events must be an integer"),
        ({"max_case_length": 0}, "max_case_length must be at least 1"),
        ({"org": None}, "org must be a string"),
        ({"end_markers": 1}, "end_markers must be True or False"),
        ({"resources": "ann"}, "resources must be a sequence of strings"),
    ],
)
def test_bad_settings(running: LoadedModel, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sim(running, **settings)


def test_model_must_be_loaded() -> None:
    with pytest.raises(ConfigError, match="model must be a LoadedModel"):
        Simulator("running-example.pnml", seed=1, arrival_rate=1.0, mean_duration=1.0)  # type: ignore[arg-type]


def test_net_without_visible_transitions() -> None:
    model = tiny_net([("start", "tau"), ("tau", "end")], {"tau": None}, "start", "end")
    with pytest.raises(ConfigError, match="no visible transition"):
        sim(model)


def test_zero_mean_duration_gives_equal_timestamps(running: LoadedModel) -> None:
    for trace_times in _times_per_case(sim(running, mean_duration=0.0, max_cases=20)).values():
        assert len(set(trace_times)) == 1


def _times_per_case(events: Iterable[Event]) -> dict[str, list[datetime]]:
    out: dict[str, list[datetime]] = defaultdict(list)
    for e in events:
        out[e.case_id].append(e.timestamp)
    return out
