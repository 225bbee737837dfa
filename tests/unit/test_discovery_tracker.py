"""The discovery tracker's behaviour: properties under Hypothesis (pm4py as the oracle on random
logs; merge associative, commutative and equal to one tracker; snapshot/restore round-trips
mid-stream; results independent of the summary cache and of the expansion path), and its
edges and errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import procvault.monitor.discovery.tracker as tracker_module
from procvault.discovery.convert import to_declare
from procvault.generators._pm4py import import_pm4py
from procvault.monitor.discovery import (
    CaseState,
    DeclareSettings,
    DiscoveryCounts,
    DiscoveryTracker,
    HeuristicsSettings,
    TrackerSettings,
    TrackerState,
    build_model,
    decode_model,
    discover_declare,
    discover_heuristics,
    encode_model,
)
from procvault.monitor.errors import ConfigError
from procvault.monitor.event import Event, EventKind

T0 = datetime(2024, 1, 1, tzinfo=UTC)

#: Random logs: up to 12 cases of 1 to 9 events over five activities, with per-event gaps of
#: 0 to 3 minutes (0: ties, which real logs have).
traces = st.lists(
    st.lists(st.tuples(st.sampled_from("ABCDE"), st.integers(0, 3)), min_size=1, max_size=9),
    min_size=1,
    max_size=12,
)


def _events(log: Sequence[Sequence[tuple[str, int]]], order: Sequence[int] = ()) -> list[Event]:
    """One event per (activity, gap) and an end marker per case; cases interleaved in the order
    ``order`` picks from (each entry: the case whose next event comes next)."""
    per_case: list[list[Event]] = []
    for i, trace in enumerate(log):
        t = T0 + timedelta(hours=i)
        evs = []
        for act, gap in trace:
            t += timedelta(minutes=gap)
            evs.append(Event.create(f"c{i}", act, t))
        evs.append(Event.case_end(f"c{i}", t))
        per_case.append(evs)
    out: list[Event] = []
    pos = [0] * len(per_case)
    for k in order:
        i = k % len(per_case)
        if pos[i] < len(per_case[i]):
            out.append(per_case[i][pos[i]])
            pos[i] += 1
    for i, evs in enumerate(per_case):
        out.extend(evs[pos[i] :])
    return out


def _track(events: Sequence[Event], tracker_settings: TrackerSettings | None = None) -> Any:
    tracker = DiscoveryTracker(tracker_settings)
    for e in events:
        tracker.update(e)
    return tracker


def _pm4py_df(log: Sequence[Sequence[tuple[str, int]]]) -> Any:
    pm4py = import_pm4py()
    from pm4py.objects.log.obj import Event as PEvent
    from pm4py.objects.log.obj import EventLog, Trace

    elog = EventLog()
    for i, trace in enumerate(log):
        tr = Trace(attributes={"concept:name": f"c{i}"})
        t = T0 + timedelta(hours=i)
        for act, gap in trace:
            t += timedelta(minutes=gap)
            tr.append(PEvent({"concept:name": act, "time:timestamp": t}))
        elog.append(tr)
    return pm4py.convert_to_dataframe(elog)


def _heuristics_view(hn: Any) -> Any:
    return (
        {(a, b): v for a, row in hn.dependency_matrix.items() for b, v in row.items()},
        {
            (n, o.node_name): [(e.dependency_value, e.dfg_value) for e in es]
            for n, node in hn.nodes.items()
            for o, es in node.output_connections.items()
        },
        {
            n: (x.and_measures_out, x.and_measures_in, x.loop_length_two)
            for n, x in hn.nodes.items()
        },
    )


def _our_heuristics_view(h: Any) -> Any:
    def nested(ms: Any) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for m in ms:
            out.setdefault(m.first, {})[m.second] = m.value
        return out

    return (
        {(a, b): v for a, b, v in h.dependency},
        {(a.source, a.target): [(a.dependency, a.count)] for a in h.arcs},
        {n.name: (nested(n.and_out), nested(n.and_in), dict(n.loops_two)) for n in h.nodes},
    )


# ------------------------------------------------------------------------------ the oracle
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=traces, order=st.lists(st.integers(0, 11), max_size=60))
def test_random_logs_equal_pm4py_whatever_the_interleaving(
    log: list[list[tuple[str, int]]], order: list[int]
) -> None:
    pm4py = import_pm4py()
    from pm4py.algo.discovery.declare.variants import classic

    counts = _track(_events(log, order)).counts()
    df = _pm4py_df(log)
    dfg, start, end = pm4py.discover_dfg(df)
    assert (counts.dfg(), counts.start_activities(), counts.end_activities()) == (
        dict(dfg),
        dict(start),
        dict(end),
    )
    heuristics: list[dict[str, Any]] = [
        {},
        {"dependency_threshold": 0.0, "loop_two_threshold": 0.0},
    ]
    for params in heuristics:
        expected = _heuristics_view(pm4py.discover_heuristics_net(df, **params))
        ours = discover_heuristics(counts, HeuristicsSettings(**params))
        assert _our_heuristics_view(ours) == expected
    table = classic.form_rules_table(df)
    selections: list[dict[str, Any]] = [{}, {"min_support_ratio": 0.0, "min_confidence_ratio": 0.0}]
    for ratios in selections:
        expected_rules = classic.get_rules_from_rules_df(table, parameters=ratios)
        assert to_declare(discover_declare(counts, DeclareSettings(**ratios))) == expected_rules


# ------------------------------------------------------------------------------ merging
@settings(max_examples=80, deadline=2000)
@given(
    log=traces,
    assign=st.lists(st.integers(0, 2), min_size=12, max_size=12),
    cut=st.integers(0, 200),
)
def test_merge_is_associative_commutative_and_equals_one_tracker(
    log: list[list[tuple[str, int]]], assign: list[int], cut: int
) -> None:
    """Three trackers see disjoint cases (the first ``cut`` events, so some cases are still
    active when they merge); the merged tracker takes the rest of the stream. Every merge order
    and grouping gives the single tracker's state."""
    events = _events(log)
    cut = min(cut, len(events))
    whole = _track(events)
    parts = [_track([e for e in events[:cut] if assign[int(e.case_id[1:])] == k]) for k in range(3)]
    a, b, c = (p.snapshot() for p in parts)

    def merged(first: TrackerState, *others: TrackerState) -> DiscoveryTracker:
        t = DiscoveryTracker.restore(first)
        for o in others:
            t.merge(o)
        return t

    def grouped(x: TrackerState, y: TrackerState) -> TrackerState:
        return merged(x, y).snapshot()

    candidates = [
        merged(a, b, c),
        merged(c, b, a),
        merged(b, a, c),
        merged(grouped(a, b), c),
        merged(a, grouped(b, c)),
        merged(grouped(c, a), b),
    ]
    snapshots = {msgspec.msgpack.encode(t.snapshot()) for t in candidates}
    assert len(snapshots) == 1
    for t in candidates:
        for e in events[cut:]:
            t.update(e)
        assert t.snapshot() == whole.snapshot()
    counts = [p.counts() for p in parts]
    x, y, z = counts
    assert x.merge(y).merge(z) == x.merge(y.merge(z)) == z.merge(x).merge(y)
    assert x.merge(y) == y.merge(x)
    assert x.merge(DiscoveryCounts.empty()) == x
    if cut == len(events):
        assert x.merge(y).merge(z) == whole.counts()


def test_merge_refuses_a_case_active_in_both() -> None:
    a, b = DiscoveryTracker(), DiscoveryTracker()
    a.update(Event.create("c1", "A", T0))
    b.update(Event.create("c1", "B", T0))
    with pytest.raises(ValueError, match="case 'c1' is active in both trackers"):
        a.merge(b)


def test_merge_refuses_trackers_with_and_without_declare() -> None:
    with pytest.raises(ValueError, match="with and without Declare"):
        DiscoveryTracker().merge(DiscoveryTracker(TrackerSettings(declare=False)))
    with pytest.raises(ValueError, match="with and without Declare tallies"):
        DiscoveryCounts.empty().merge(DiscoveryCounts.empty(declare=False))


def test_counts_of_another_version_do_not_merge() -> None:
    other = msgspec.structs.replace(DiscoveryCounts.empty(), version=2)
    with pytest.raises(ValueError, match="version 2"):
        DiscoveryCounts.empty().merge(other)


# ------------------------------------------------------------------------------ state
@settings(max_examples=80, deadline=2000)
@given(log=traces, cut=st.integers(0, 120), declare=st.booleans())
def test_snapshot_restore_round_trips_mid_stream(
    log: list[list[tuple[str, int]]], cut: int, declare: bool
) -> None:
    """A tracker rebuilt from its snapshot (through msgpack and JSON bytes) at any point of the
    stream ends exactly where the uninterrupted one does."""
    events = _events(log, order=list(range(cut)))
    cut = min(cut, len(events))
    s = TrackerSettings(declare=declare)
    whole = _track(events, s)
    first = _track(events[:cut], s)
    state = first.snapshot()
    for codec in (msgspec.msgpack, msgspec.json):
        back = codec.decode(codec.encode(state), type=TrackerState)
        assert back == state
        resumed = DiscoveryTracker.restore(back)
        assert resumed.snapshot() == state
        for e in events[cut:]:
            resumed.update(e)
        assert resumed.snapshot() == whole.snapshot()


@settings(max_examples=60, deadline=2000)
@given(log=traces, cut=st.integers(0, 120), declare=st.booleans())
def test_shared_snapshot_and_case_states_restore_the_whole_tracker(
    log: list[list[tuple[str, int]]], cut: int, declare: bool
) -> None:
    """The vault-worker layout: the shared part once, each active case's share on its own
    (through msgpack bytes), then the rest of the stream."""
    events = _events(log, order=list(range(cut)))
    cut = min(cut, len(events))
    s = TrackerSettings(declare=declare)
    whole = _track(events, s)
    first = _track(events[:cut], s)
    shared = first.shared_snapshot()
    assert shared.cases == ()
    shares = [first.case_state(c.case_id) for c in first.snapshot().cases]
    assert first.case_state("nobody") is None
    back = DiscoveryTracker.restore(shared)
    for share in shares:
        assert share is not None
        back.restore_case(msgspec.msgpack.decode(msgspec.msgpack.encode(share), type=CaseState))
    assert back.snapshot() == first.snapshot()
    for e in events[cut:]:
        back.update(e)
    assert back.snapshot() == whole.snapshot()
    if shares and shares[0] is not None:
        again = DiscoveryTracker.restore(shared)
        again.restore_case(shares[0])
        with pytest.raises(ValueError, match="is active already"):
            again.restore_case(shares[0])


def test_restore_refuses_another_version() -> None:
    state = msgspec.structs.replace(DiscoveryTracker().snapshot(), version=9)
    with pytest.raises(ValueError, match="unsupported tracker state version 9"):
        DiscoveryTracker.restore(state)


@settings(max_examples=50, deadline=2000)
@given(log=traces, cap=st.integers(1, 5))
def test_counts_do_not_depend_on_the_summary_cache_or_the_expansion_path(
    log: list[list[tuple[str, int]]], cap: int
) -> None:
    events = _events(log)
    expected = _track(events).counts()
    assert _track(events, TrackerSettings(summary_cache=cap)).counts() == expected
    saved = tracker_module._NUMPY_MAX_ACTIVITIES
    setattr(tracker_module, "_NUMPY_MAX_ACTIVITIES", 0)  # noqa: B010 (the plain-Python path)
    try:
        assert _track(events, TrackerSettings(summary_cache=cap)).counts() == expected
    finally:
        setattr(tracker_module, "_NUMPY_MAX_ACTIVITIES", saved)  # noqa: B010


def test_more_activities_than_an_int64_holds(
    make_pm4py_log: Callable[[list[list[str]]], Any],
) -> None:
    """70 activities: bit sets beyond 63 bits take the plain-Python expansion; still pm4py's."""
    pm4py = import_pm4py()
    acts = [f"a{i:02d}" for i in range(70)]
    log = [acts[i : i + 8] + acts[i : i + 3] for i in range(0, 63, 3)]
    tracker = DiscoveryTracker()
    for i, trace in enumerate(log):  # each case completes before the next starts, so rows
        for j, act in enumerate(trace):  # are waiting when the 63rd activity shows up
            tracker.update(Event.create(f"c{i}", act, T0 + timedelta(minutes=j)))
        tracker.complete(f"c{i}")
    df = pm4py.convert_to_dataframe(make_pm4py_log(log))
    ratios: dict[str, Any] = {"min_support_ratio": 0.0, "min_confidence_ratio": 0.0}
    expected = pm4py.discover_declare(df, **ratios)
    assert to_declare(discover_declare(tracker.counts(), DeclareSettings(**ratios))) == expected


# ------------------------------------------------------------------------------ edges
def test_markers_complete_cases_and_placeholders_are_not_steps() -> None:
    tracker = DiscoveryTracker()
    tracker.update(Event.create("c1", "A", T0))
    tracker.update(Event.create("c1", "pv:withheld", T0, kind=EventKind.PLACEHOLDER))
    tracker.update(Event.create("c1", "B", T0 + timedelta(seconds=90)))
    assert tracker.active_cases == 1 and tracker.is_active("c1")
    tracker.update(Event.case_end("c1", T0))
    tracker.update(Event.case_end("nobody", T0))  # nothing to complete
    assert not tracker.is_active("c1")
    counts = tracker.counts()
    assert counts.dfg() == {("A", "B"): 1}
    assert counts.activity_counts() == {"A": 1, "B": 1}
    assert counts.pair("A", "B") is not None
    assert counts.pair("A", "B").total_us == 90_000_000  # type: ignore[union-attr]
    assert (counts.cases_started, counts.cases_completed) == (1, 1)
    assert (counts.first_time, counts.last_time) == (T0, T0 + timedelta(seconds=90))


def test_complete_and_flush() -> None:
    tracker = DiscoveryTracker()
    for case in ("c2", "c1", "c3"):
        tracker.update(Event.create(case, "A", T0))
    assert tracker.complete("c2") is True
    assert tracker.complete("c2") is False
    assert tracker.flush() == 2
    assert tracker.active_cases == 0
    assert tracker.counts().end_activities() == {"A": 3}


def test_an_event_after_completion_starts_a_new_case() -> None:
    tracker = DiscoveryTracker()
    tracker.update(Event.create("c1", "A", T0))
    tracker.complete("c1")
    tracker.update(Event.create("c1", "B", T0))
    counts = tracker.counts()
    assert counts.dfg() == {}
    assert counts.start_activities() == {"A": 1, "B": 1}


def test_durations_sum_min_max_in_microseconds() -> None:
    tracker = DiscoveryTracker()
    for case, gaps in (("c1", (5, 7)), ("c2", (2,))):
        t = T0
        tracker.update(Event.create(case, "A", t))
        for g in gaps:
            t += timedelta(microseconds=g)
            tracker.update(Event.create(case, "A", t))
    p = tracker.counts().pair("A", "A")
    assert p is not None
    assert (p.count, p.total_us, p.min_us, p.max_us) == (3, 14, 2, 7)


def test_empty_tracker() -> None:
    counts = DiscoveryTracker().counts()
    assert counts == DiscoveryCounts.empty()
    model = build_model(counts)
    assert model.heuristics.nodes == () and model.declare is not None
    assert model.declare.constraints == ()


def test_a_tracker_without_declare_has_no_declare_model() -> None:
    tracker = DiscoveryTracker(TrackerSettings(declare=False))
    tracker.update(Event.create("c1", "A", T0))
    tracker.flush()
    counts = tracker.counts()
    assert not counts.declare and counts.declare_pairs == ()
    assert build_model(counts).declare is None
    with pytest.raises(ValueError, match="no Declare tallies"):
        discover_declare(counts)


def test_model_json_round_trips_and_refuses_other_records() -> None:
    tracker = DiscoveryTracker()
    for i, acts in enumerate(["ABC", "ACB"]):
        for j, act in enumerate(acts):
            tracker.update(Event.create(f"c{i}", act, T0 + timedelta(minutes=j)))
    tracker.flush()
    model = build_model(tracker.counts())
    assert decode_model(encode_model(model)) == model
    with pytest.raises(ValueError, match="not JSON"):
        decode_model(b"{")
    with pytest.raises(ValueError, match="unsupported schema 'x/1'"):
        decode_model(encode_model(msgspec.structs.replace(model, schema="x/1")))


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: TrackerSettings(summary_cache=0), ValueError, "summary_cache must be >= 1"),
        (lambda: TrackerSettings(declare="yes"), TypeError, "declare must be True or False"),  # type: ignore[arg-type]
        (lambda: HeuristicsSettings(dependency_threshold="x"), ConfigError, "must be a number"),  # type: ignore[arg-type]
        (lambda: HeuristicsSettings(and_threshold=float("nan")), ConfigError, "must be finite"),
        (lambda: HeuristicsSettings(min_act_count=1.5), ConfigError, "must be an integer"),  # type: ignore[arg-type]
        (
            lambda: HeuristicsSettings(dfg_pre_cleaning_noise_thresh=2),
            ConfigError,
            r"must be in \[0, 1\]",
        ),
        (lambda: DeclareSettings(templates=("nope",)), ConfigError, "unknown Declare templates"),
        (lambda: DeclareSettings(templates="response"), ConfigError, "not a string"),  # type: ignore[arg-type]
        (lambda: DeclareSettings(min_support_ratio="a"), ConfigError, "a number or None"),  # type: ignore[arg-type]
    ],
)
def test_settings_are_checked_once(build: Callable[[], object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()


def test_derived_templates_need_their_parts_as_pm4py_does() -> None:
    s = DeclareSettings(templates=("succession", "response", "nonsuccession", "absence"))
    assert s.computed() == ("response",)
