"""Online prefix alignments against three oracles.

* pm4py's optimal alignments of the complete traces (``conformance_diagnostics_alignments``):
  cost (``pm4py cost // 10000``) and fitness of every case of the shared logs with their models.
* An exact dynamic program over the whole reachability graph (below, :func:`_reference`): the
  optimal cost of every prefix of every variant, and of the complete trace.
* pm4py again on a "drained" copy of the net (one silent transition emptying each place, empty
  final marking), whose optimal alignments are exactly optimal prefix alignments: an oracle for
  prefix costs independent of ours, slow, so run on the small logs and a sample of Sepsis.

Then the documented behaviour: bounded windows, unknown activities, snapshots, settings, the case
lifecycle, and random workflow nets (Hypothesis).
"""

from __future__ import annotations

import copy
import functools
import heapq
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from random_nets import ALPHABET, process_tree, trees

from procvault.config.models import LoadedModel, load_model
from procvault.generators._pm4py import import_pm4py
from procvault.generators.xes import read_xes
from procvault.monitor.alignments import AlignmentResult, PrefixAlignments, PrefixStep
from procvault.monitor.petri import CompiledNet, compile_net

pm4py = import_pm4py()

DATA = Path("/work/shared/data")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared data is not available")

WORKLOADS = {
    "sepsis": ("logs/sepsis_cases.xes.gz", "models/promtee/pnml/sepsis.pnml"),
    "roadtraffic": ("logs/roadtraffic100traces.xes.gz", "models/pm4py/roadtraffic.pnml"),
    "trafficfines": ("logs/roadtraffic100traces.xes.gz", "models/promtee/pnml/trafficFines.pnml"),
    "running": ("logs/running-example.xes.gz", "models/pm4py/running-example.pnml"),
}

Marking = tuple[int, ...]
Graph = dict[Marking, list[tuple[int, Marking]]]


@dataclass(frozen=True)
class Workload:
    model: LoadedModel
    net: CompiledNet
    graph: Graph
    events: list[tuple[str, str]]  # (case, activity) in log order
    traces: dict[str, tuple[str, ...]]  # case -> activities

    @property
    def variants(self) -> list[tuple[str, ...]]:
        return sorted(set(self.traces.values()))


def _graph(net: CompiledNet, limit: int = 100_000) -> Graph | None:
    """The reachability graph; ``None`` if it has more than ``limit`` markings."""
    graph: Graph = {}
    stack = [net.initial_marking]
    while stack:
        m = stack.pop()
        if m in graph:
            continue
        if len(graph) >= limit:
            return None
        graph[m] = [(t, net.fire(t, m)) for t in range(net.n_transitions) if net.enabled(t, m)]
        stack.extend(m2 for _, m2 in graph[m] if m2 not in graph)
    return graph


@functools.cache
def _workload(name: str) -> Workload:
    log, model_path = WORKLOADS[name]
    model = load_model(DATA / model_path)
    net = compile_net(model.net, model.initial_marking, model.final_marking)
    graph = _graph(net)
    assert graph is not None
    events = [(e.case_id, e.activity) for e in read_xes(DATA / log).events]
    traces: dict[str, list[str]] = {}
    for case, activity in events:
        traces.setdefault(case, []).append(activity)
    return Workload(model, net, graph, events, {c: tuple(t) for c, t in traces.items()})


def _reference(
    net: CompiledNet, graph: Graph, trace: tuple[str, ...] | list[str]
) -> tuple[list[int], int | None]:
    """Optimal prefix costs and complete-trace cost, by a layer-by-layer dynamic program.

    ``best[m]`` is the cheapest alignment of the events so far ending in marking ``m``; each
    event maps it through synchronous and log moves, then model moves close each layer.
    """
    labels = net.transition_labels

    def close(best: dict[Marking, int]) -> dict[Marking, int]:
        heap = [(d, m) for m, d in best.items()]
        heapq.heapify(heap)
        while heap:
            d, m = heapq.heappop(heap)
            if d > best[m]:
                continue
            for t, m2 in graph[m]:
                nd = d + (labels[t] is not None)
                if nd < best.get(m2, nd + 1):
                    best[m2] = nd
                    heapq.heappush(heap, (nd, m2))
        return best

    best = close({net.initial_marking: 0})
    prefix = []
    for activity in trace:
        nxt: dict[Marking, int] = {}
        for m, d in best.items():
            if d + 1 < nxt.get(m, d + 2):
                nxt[m] = d + 1
            for t, m2 in graph[m]:
                if labels[t] == activity and d < nxt.get(m2, d + 1):
                    nxt[m2] = d
        best = close(nxt)
        prefix.append(min(best.values()))
    return prefix, best.get(net.final_marking)


def _quiet(call: Callable[[], Any]) -> Any:
    """Run a pm4py call with warnings muted: under ``filterwarnings = error`` numpy's
    ``PendingDeprecationWarning`` for ``np.matrix`` makes pm4py's easy-soundness check fail
    silently (it catches everything and answers "not easy sound")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


@functools.cache
def _optimal(name: str, trace: tuple[str, ...]) -> tuple[list[int], int | None]:
    """:func:`_reference` for a variant of a shared log (computed once per test session)."""
    w = _workload(name)
    return _reference(w.net, w.graph, trace)


def _log(traces: list[tuple[str, ...]]) -> Any:
    from pm4py.objects.log.obj import Event, EventLog, Trace

    return EventLog(
        [
            Trace([Event({"concept:name": a}) for a in t], attributes={"concept:name": f"v{i}"})
            for i, t in enumerate(traces)
        ]
    )


@functools.cache
def _pm4py_complete(name: str) -> dict[tuple[str, ...], tuple[int, float] | None]:
    """pm4py's optimal alignment (cost // 10000, fitness) of every variant; None: no alignment."""
    w = _workload(name)
    variants = w.variants
    m = w.model
    if name == "trafficfines":  # not easy sound: the default variant refuses, as checked below
        from pm4py.algo.conformance.alignments.petri_net import algorithm as alignments

        out = _quiet(
            lambda: alignments.apply(
                _log(variants),
                m.net,
                m.initial_marking,
                m.final_marking,
                variant=alignments.Variants.VERSION_DIJKSTRA_SEMANTICS,
            )
        )
    else:
        out = _quiet(
            lambda: pm4py.conformance_diagnostics_alignments(
                _log(variants), m.net, m.initial_marking, m.final_marking, multi_processing=False
            )
        )
    return {
        v: None if r is None else (r["cost"] // 10000, r["fitness"])
        for v, r in zip(variants, out, strict=True)
    }


def _run(engine: PrefixAlignments, case: str, trace: tuple[str, ...]) -> list[PrefixStep]:
    return [engine.update(case, a) for a in trace]


def _check_alignment(net: CompiledNet, trace: tuple[str, ...], pairs: Any, cost: int) -> None:
    """The moves are a prefix alignment of ``trace`` with cost ``cost``."""
    by_name = {name: t for t, name in enumerate(net.transition_names)}
    assert tuple(a for a, _ in pairs if a is not None) == trace
    marking = net.initial_marking
    deviations = 0
    for activity, name in pairs:
        if name is None:
            deviations += 1
            continue
        t = by_name[name]
        assert net.enabled(t, marking), (activity, name)
        marking = net.fire(t, marking)
        if activity is None:
            deviations += net.transition_labels[t] is not None
        else:
            assert net.transition_labels[t] == activity
    assert deviations == cost


# ------------------------------------------------------------------------------------------
# pm4py on complete traces
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_completed_cases_equal_pm4py(name: str) -> None:
    w = _workload(name)
    expected = _pm4py_complete(name)
    engine = PrefixAlignments(w.net)
    last: dict[str, int] = {}
    for case, activity in w.events:  # the log's order: cases interleaved
        step = engine.update(case, activity)
        assert step.cost >= last.get(case, 0), "prefix costs never decrease"
        last[case] = step.cost
    assert len(engine) == len(w.traces)
    wrong = []
    for case, trace in w.traces.items():
        result = engine.complete(case)
        assert result.events == len(trace)
        exp = expected[trace]
        if exp is None:
            assert result == AlignmentResult(None, len(trace), None, None)
            continue
        assert result.cost is not None and result.moves is not None
        assert last[case] <= result.cost, "a prefix never costs more than the whole trace"
        assert result.moves.sync + result.moves.log == len(trace)
        assert result.moves.deviations == result.cost
        if (result.cost, result.fitness) != exp:
            wrong.append((case, (result.cost, result.fitness), exp))
    assert not wrong, f"{len(wrong)} cases differ from pm4py, e.g. {wrong[0]}"
    assert len(engine) == 0


def test_trafficfines_has_no_alignment_to_its_final_marking() -> None:
    w = _workload("trafficfines")
    m = w.model
    with pytest.raises(Exception, match="not a easy sound net"):
        _quiet(
            lambda: pm4py.conformance_diagnostics_alignments(
                _log(w.variants[:1]), m.net, m.initial_marking, m.final_marking
            )
        )
    assert set(_pm4py_complete("trafficfines").values()) == {None}
    engine = PrefixAlignments(w.net)
    assert engine.final_reachable is False
    steps = _run(engine, "c", w.variants[0])
    assert steps[-1].cost == _optimal("trafficfines", w.variants[0])[0][-1]
    assert engine.complete("c").cost is None


# ------------------------------------------------------------------------------------------
# every prefix against the dynamic program
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_every_prefix_cost_is_optimal(name: str) -> None:
    w = _workload(name)
    engine = PrefixAlignments(w.net)
    for i, trace in enumerate(w.variants):
        case = f"v{i}"
        prefix, final = _optimal(name, trace)
        previous: tuple[Any, ...] = ()
        for k, activity in enumerate(trace):
            step = engine.update(case, activity)
            assert step.cost == prefix[k], (trace[: k + 1], step, prefix[k])
            pairs = engine.alignment(case)
            kept = 0  # ``revised`` counts the moves of the previous alignment not kept
            while kept < min(len(previous), len(pairs)) and previous[kept] == pairs[kept]:
                kept += 1
            assert step.revised == len(previous) - kept
            assert step.sync == (pairs[-1][1] is not None)
            previous = pairs
        _check_alignment(w.net, trace, previous, prefix[-1])
        assert engine.complete(case).cost == final


def _drained(model: LoadedModel) -> tuple[Any, Any, Any]:
    """A copy of the net where a silent transition can empty each place; final marking empty."""
    from pm4py.objects.petri_net.obj import Marking, PetriNet
    from pm4py.objects.petri_net.utils.petri_utils import add_arc_from_to

    net, im = copy.deepcopy((model.net, model.initial_marking))
    for place in list(net.places):
        drain = PetriNet.Transition(f"drain-{place.name}", None)
        net.transitions.add(drain)
        add_arc_from_to(place, drain, net)
    return net, im, Marking()


@pytest.mark.parametrize(("name", "sample"), [("running", 0), ("trafficfines", 0), ("sepsis", 12)])
def test_prefix_costs_equal_pm4py_on_the_drained_net(name: str, sample: int) -> None:
    from pm4py.algo.conformance.alignments.petri_net import algorithm as alignments

    w = _workload(name)
    prefixes = sorted({t[:k] for t in w.variants for k in range(1, len(t) + 1)})
    if sample:  # pm4py takes ~0.1 s per Sepsis prefix on the drained net
        prefixes = prefixes[:: len(prefixes) // sample][:sample]
    net, im, fm = _drained(w.model)
    expected = _quiet(
        lambda: alignments.apply(
            _log(prefixes), net, im, fm, variant=alignments.Variants.VERSION_DIJKSTRA_NO_HEURISTICS
        )
    )
    engine = PrefixAlignments(w.net)
    for i, (prefix, exp) in enumerate(zip(prefixes, expected, strict=True)):
        assert _run(engine, f"p{i}", prefix)[-1].cost == exp["cost"] // 10000, prefix


# ------------------------------------------------------------------------------------------
# documented behaviour
def test_unknown_activity_is_a_log_move() -> None:
    w = _workload("running")
    trace = w.traces[sorted(w.traces)[0]]
    engine = PrefixAlignments(w.net)
    _run(engine, "c", trace[:2])
    before = engine.cost("c")
    step = engine.update("c", "no such activity")
    assert step == PrefixStep(cost=before + 1, sync=False, revised=0)
    assert engine.alignment("c")[-1] == ("no such activity", None)
    _run(engine, "c", trace[2:])
    result = engine.complete("c")
    clean = PrefixAlignments(w.net)
    _run(clean, "c", trace)
    expected = clean.complete("c")
    assert result.cost is not None and expected.cost is not None
    assert result.moves is not None and expected.moves is not None
    assert result.cost == expected.cost + 1
    assert result.events == len(trace) + 1
    assert result.moves.log == expected.moves.log + 1


@pytest.mark.parametrize("window", [0, 1, 3])
@pytest.mark.parametrize("name", ["sepsis", "roadtraffic", "running"])
def test_bounded_window_guarantees(name: str, window: int) -> None:
    """Costs are upper bounds that never decrease, exact while the case is short enough; the
    engine keeps only the last ``window + 1`` events' moves."""
    w = _workload(name)
    engine = PrefixAlignments(w.net, window=window)
    for i, trace in enumerate(w.variants[:300]):
        case = f"v{i}"
        prefix, final = _optimal(name, trace)
        last = 0
        for k, activity in enumerate(trace, start=1):
            step = engine.update(case, activity)
            assert step.cost >= prefix[k - 1]
            if k <= window + 1:
                assert step.cost == prefix[k - 1]
            assert step.cost >= last
            last = step.cost
            if window == 0:
                assert step.revised == 0
            snap = engine.snapshot(case)
            assert snap.frozen_events == max(0, k - window - 1)
            assert len([a for a, _ in snap.moves if a is not None]) == min(k, window + 1)
        result = engine.complete(case)
        assert final is not None and result.cost is not None
        assert result.cost >= max(final, last)
        if len(trace) <= window:
            assert result.cost == final


@pytest.mark.parametrize("window", [None, 2])
def test_snapshot_restore_round_trip(window: int | None) -> None:
    w = _workload("sepsis")
    longest = sorted(w.variants, key=len)[-40:]
    a = PrefixAlignments(w.net, window=window)
    b = PrefixAlignments(w.net, window=window)
    for i, trace in enumerate(longest):
        case = f"v{i}"
        half = len(trace) // 2
        _run(a, case, trace[:half])
        snap = a.snapshot(case)
        b.restore(case, snap)
        assert b.snapshot(case) == snap
        assert b.events_of(case) == a.events_of(case) == half
        assert b.cost(case) == a.cost(case)
        assert _run(a, case, trace[half:]) == _run(b, case, trace[half:])
        assert a.alignment(case) == b.alignment(case)
        assert a.complete(case) == b.complete(case)


def test_restore_rejects_foreign_snapshots() -> None:
    w = _workload("running")
    trace = w.variants[0]
    windowed = PrefixAlignments(w.net, window=1)
    _run(windowed, "c", trace)
    snap = windowed.snapshot("c")
    assert snap.frozen_events > 0
    with pytest.raises(ValueError, match="needs a bounded window"):
        PrefixAlignments(w.net).restore("c", snap)
    other = _workload("sepsis").net
    with pytest.raises(ValueError, match="does not fit this net"):
        PrefixAlignments(other, window=1).restore("c", snap)
    bad = type(snap)(snap.marking, snap.frozen, snap.frozen_events, ((None, None),))
    with pytest.raises(ValueError, match="without activity and transition"):
        PrefixAlignments(w.net, window=1).restore("c", bad)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": -1}, ValueError, "window must be >= 0"),
        ({"window": 1.5}, TypeError, "window must be an int"),
        ({"window": True}, TypeError, "window must be an int"),
        ({"cache_size": 0}, ValueError, "cache_size must be >= 1"),
        ({"cache_size": "big"}, TypeError, "cache_size must be an int"),
    ],
)
def test_settings_are_checked(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        PrefixAlignments(_workload("running").net, **kwargs)


def test_case_lifecycle() -> None:
    w = _workload("running")
    trace = w.variants[-1]
    engine = PrefixAlignments(w.net)
    assert "c" not in engine and len(engine) == 0
    for k, activity in enumerate(trace, start=1):
        engine.update("c", activity)
        # peeking at the completed alignment does not disturb the case
        assert engine.result("c") == engine.result("c")
        assert engine.events_of("c") == k
    peeked = engine.result("c")
    assert "c" in engine and len(engine) == 1
    assert engine.complete("c") == peeked
    assert "c" not in engine
    with pytest.raises(KeyError):
        engine.complete("c")
    assert engine.update("c", trace[0]).cost == 0  # a new case under the same id
    assert engine.events_of("c") == 1
    assert engine.search_size("c") > 0
    assert engine.discard("c") and not engine.discard("c")


def test_a_tiny_cache_changes_nothing() -> None:
    w = _workload("roadtraffic")
    big, tiny = PrefixAlignments(w.net), PrefixAlignments(w.net, cache_size=3)
    for i, trace in enumerate(w.variants):
        assert _run(big, f"v{i}", trace) == _run(tiny, f"v{i}", trace)
        assert big.complete(f"v{i}") == tiny.complete(f"v{i}")
    assert tiny.cached_markings <= 3 < big.cached_markings


# ------------------------------------------------------------------------------------------
# random workflow nets
def _walk(net: CompiledNet, rng: random.Random, steps: int = 30) -> list[str]:
    """The labels of a random firing sequence (towards the final marking, at most ``steps``)."""
    marking, labels = net.initial_marking, []
    for _ in range(steps):
        if marking == net.final_marking:
            break
        enabled = [t for t in range(net.n_transitions) if net.enabled(t, marking)]
        if not enabled:
            break
        t = rng.choice(enabled)
        marking = net.fire(t, marking)
        if net.transition_labels[t] is not None:
            labels.append(str(net.transition_labels[t]))
    return labels


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
@given(
    tree=trees(3),
    traces=st.lists(
        st.lists(st.sampled_from([*ALPHABET, "zz"]), min_size=1, max_size=8), min_size=1, max_size=5
    ),
    played=st.integers(min_value=0, max_value=3),
    window=st.sampled_from([None, 0, 2]),
)
def test_random_workflow_nets(tree: Any, traces: list[list[str]], played: int, window: Any) -> None:
    pt = process_tree(tree)
    net, im, fm = _quiet(lambda: pm4py.convert_to_petri_net(pt))
    cn = compile_net(net, im, fm)
    rng = random.Random(played)
    for _ in range(played):  # traces the model can produce, so fitting behaviour is covered too
        walk = _walk(cn, rng)
        if walk:
            traces = [*traces, walk]
    graph = _graph(cn, limit=2_000)
    assume(graph is not None)  # nested parallel operators: too big for the reference
    assert graph is not None
    engine = PrefixAlignments(cn, window=window)
    for i, trace in enumerate(traces):
        prefix, final = _reference(cn, graph, trace)
        costs = [s.cost for s in _run(engine, f"c{i}", tuple(trace))]
        result = engine.complete(f"c{i}")
        if window is None:
            assert costs == prefix, (pt, trace)
            assert result.cost == final, (pt, trace)
        else:
            assert all(c >= p for c, p in zip(costs, prefix, strict=True))
            assert costs == sorted(costs)
            assert result.cost is not None and final is not None and result.cost >= final
    if window is None:  # and pm4py agrees on the complete traces
        expected = _quiet(
            lambda: pm4py.conformance_diagnostics_alignments(
                _log([tuple(t) for t in traces]), net, im, fm, multi_processing=False
            )
        )
        check = PrefixAlignments(cn)
        for i, (trace, exp) in enumerate(zip(traces, expected, strict=True)):
            _run(check, f"c{i}", tuple(trace))
            got = check.complete(f"c{i}")
            assert (got.cost, got.fitness) == (exp["cost"] // 10000, exp["fitness"]), (pt, trace)
