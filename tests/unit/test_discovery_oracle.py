"""The discovery tracker against pm4py on every shared log: the whole log, and the log split into
three random case partitions tracked separately and merged.

pm4py is the oracle: ``discover_dfg`` (with start and end activities),
``discover_performance_dfg``, ``discover_heuristics_net`` (default and other parameters:
dependency matrix, nodes, arcs, AND measures, length-two loops) and ``discover_declare``
(pm4py's automatic thresholds, and every rule of every template with ratios 0), all on pm4py's
own data frame of the log.
"""

from __future__ import annotations

import functools
import math
import random
from pathlib import Path
from typing import Any

import pytest

from procvault.discovery.convert import heuristics_net, to_declare
from procvault.generators._pm4py import import_pm4py
from procvault.generators.xes import read_xes
from procvault.monitor.discovery import (
    DeclareSettings,
    DiscoveryCounts,
    DiscoveryTracker,
    HeuristicsResult,
    HeuristicsSettings,
    build_model,
    discover_declare,
    discover_heuristics,
)
from procvault.monitor.event import Event

LOGS = ("helpdesk", "receipt", "roadtraffic100traces", "running-example", "sepsis_cases")

#: Heuristics Miner parameters besides the defaults (each key is a pm4py keyword).
HEURISTICS_VARIANTS: list[dict[str, Any]] = [
    {},
    {"dependency_threshold": 0.9},
    {"dependency_threshold": 0.0, "and_threshold": 0.1, "loop_two_threshold": 0.1},
    {"min_act_count": 20, "min_dfg_occurrences": 5},
    {"dependency_threshold": -1.0, "loop_two_threshold": 0.0},
]


def _track(events: list[Event]) -> DiscoveryTracker:
    tracker = DiscoveryTracker()
    for e in events:
        tracker.update(e)
    return tracker


@functools.cache
def _log(path: Path) -> dict[str, Any]:
    """pm4py's data frame of the log, and the tracker's counts for the whole log and for three
    random case partitions merged (both with the trackers' merge and the counts' merge)."""
    pm4py = import_pm4py()
    name = path.name
    df = pm4py.read_xes(str(path))
    events = list(read_xes(path).replay(end_markers=True))
    cases = sorted({e.case_id for e in events})
    random.Random(name).shuffle(cases)  # three random partitions of the cases, none empty
    part = {c: i % 3 for i, c in enumerate(cases)}
    trackers = [_track([e for e in events if part[e.case_id] == k]) for k in range(3)]
    by_counts = DiscoveryCounts.merge_all(t.counts() for t in trackers)
    trackers[0].merge(trackers[1])
    trackers[0].merge(trackers[2].snapshot())
    return {
        "df": df,
        "whole": _track(events).counts(),
        "merged": trackers[0].counts(),
        "merged_counts": by_counts,
        "parts": [sum(1 for c in part.values() if c == k) for k in range(3)],
    }


def _path(shared_data: Path, name: str) -> Path:
    path = shared_data / "logs" / f"{name}.xes.gz"
    if not path.exists():
        pytest.fail(f"shared data file {path} is missing (set PROCVAULT_SHARED_DATA)")
    return path


@pytest.fixture(params=LOGS)
def log(request: pytest.FixtureRequest, shared_data: Path) -> dict[str, Any]:
    return _log(_path(shared_data, request.param))


WHICH = ("whole", "merged")


def test_every_shared_log_is_covered(shared_data: Path) -> None:
    present = {p.name.removesuffix(".xes.gz") for p in (shared_data / "logs").glob("*.xes.gz")}
    assert present == set(LOGS), "a shared log was added or removed: update LOGS"


def test_three_partitions_merge_into_the_whole_log(log: dict[str, Any]) -> None:
    assert all(n > 0 for n in log["parts"]), log["parts"]
    assert log["merged"] == log["whole"]
    assert log["merged_counts"] == log["whole"]


@pytest.mark.parametrize("which", WHICH)
def test_dfg_and_start_end_activities_equal_pm4py(log: dict[str, Any], which: str) -> None:
    pm4py = import_pm4py()
    counts: DiscoveryCounts = log[which]
    df = log["df"]
    dfg, start, end = pm4py.discover_dfg(df)
    assert counts.dfg() == dict(dfg)
    assert counts.start_activities() == dict(start)
    assert counts.end_activities() == dict(end)
    assert counts.activity_counts() == dict(df["concept:name"].value_counts())
    assert counts.events == len(df)
    assert counts.cases_completed == counts.cases_started == df["case:concept:name"].nunique()


@pytest.mark.parametrize("which", WHICH)
def test_pair_durations_equal_pm4py_performance_dfg(log: dict[str, Any], which: str) -> None:
    pm4py = import_pm4py()
    counts: DiscoveryCounts = log[which]
    perf, _, _ = pm4py.discover_performance_dfg(log["df"])
    assert set(perf) == set(counts.dfg())
    for (a, b), stats in perf.items():
        p = counts.pair(a, b)
        assert p is not None
        assert math.isclose(p.mean_seconds, stats["mean"], rel_tol=1e-9, abs_tol=1e-6)
        assert math.isclose(p.min_us / 1e6, stats["min"], abs_tol=1e-6)
        assert math.isclose(p.max_us / 1e6, stats["max"], abs_tol=1e-6)


def _pm4py_view(hn: Any) -> dict[str, Any]:
    arcs: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for name, node in hn.nodes.items():
        for other, edges in node.output_connections.items():
            for e in edges:
                arcs.setdefault((name, other.node_name), []).append(
                    (e.dependency_value, e.dfg_value)
                )
    return {
        "dependency": {
            (a, b): v for a, row in hn.dependency_matrix.items() for b, v in row.items()
        },
        "nodes": {name: node.node_occ for name, node in hn.nodes.items()},
        "arcs": arcs,
        "and_out": {name: node.and_measures_out for name, node in hn.nodes.items()},
        "and_in": {name: node.and_measures_in for name, node in hn.nodes.items()},
        "loops_two": {name: node.loop_length_two for name, node in hn.nodes.items()},
    }


def _our_view(h: HeuristicsResult) -> dict[str, Any]:
    def nested(measures: Any) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for m in measures:
            out.setdefault(m.first, {})[m.second] = m.value
        return out

    return {
        "dependency": {(a, b): v for a, b, v in h.dependency},
        "nodes": {n.name: n.occurrences for n in h.nodes},
        "arcs": {(a.source, a.target): [(a.dependency, a.count)] for a in h.arcs},
        "and_out": {n.name: nested(n.and_out) for n in h.nodes},
        "and_in": {n.name: nested(n.and_in) for n in h.nodes},
        "loops_two": {n.name: dict(n.loops_two) for n in h.nodes},
    }


@functools.cache
def _pm4py_heuristics(path: Path, variant: int) -> dict[str, Any]:
    pm4py = import_pm4py()
    return _pm4py_view(
        pm4py.discover_heuristics_net(_log(path)["df"], **HEURISTICS_VARIANTS[variant])
    )


@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize(
    "variant",
    range(len(HEURISTICS_VARIANTS)),
    ids=[str(p) if p else "defaults" for p in HEURISTICS_VARIANTS],
)
def test_heuristics_net_equals_pm4py(
    request: pytest.FixtureRequest,
    shared_data: Path,
    log: dict[str, Any],
    which: str,
    variant: int,
) -> None:
    params = HEURISTICS_VARIANTS[variant]
    counts: DiscoveryCounts = log[which]
    path = _path(shared_data, request.node.callspec.params["log"])
    expected = _pm4py_heuristics(path, variant)
    ours = discover_heuristics(counts, HeuristicsSettings(**params))
    assert _our_view(ours) == expected
    if not params:
        assert ours.arcs, "the default net has arcs"
    # pm4py's own HeuristicsNet object, built from the tracker's counts, is the same net
    model = build_model(counts, heuristics=HeuristicsSettings(**params))
    assert _pm4py_view(heuristics_net(model)) == expected


@functools.cache
def _rules_table(path: Path) -> Any:
    """pm4py's Declare rules table of the log (``discover_declare`` builds it, then selects)."""
    import_pm4py()
    from pm4py.algo.discovery.declare.variants import classic

    return classic.form_rules_table(_log(path)["df"])


@functools.cache
def _pm4py_declare(path: Path, ratios: tuple[tuple[str, float], ...]) -> Any:
    import_pm4py()
    from pm4py.algo.discovery.declare.variants import classic

    return classic.get_rules_from_rules_df(_rules_table(path), parameters=dict(ratios))


@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize(
    "ratios",
    [{}, {"min_support_ratio": 0.0, "min_confidence_ratio": 0.0}, {"min_support_ratio": 0.3}],
    ids=["auto", "every-rule", "support-0.3"],
)
def test_declare_equals_pm4py(
    request: pytest.FixtureRequest,
    shared_data: Path,
    log: dict[str, Any],
    which: str,
    ratios: dict[str, Any],
) -> None:
    path = _path(shared_data, request.node.callspec.params["log"])
    expected = _pm4py_declare(path, tuple(sorted(ratios.items())))
    result = discover_declare(log[which], DeclareSettings(**ratios))
    assert to_declare(result) == expected
    assert result.constraints


@pytest.mark.parametrize(
    "templates",
    [
        ("response", "precedence", "chainresponse"),
        ("succession", "nonsuccession", "response"),
        ("altresponse", "altprecedence", "altsuccession", "chainsuccession"),
        ("absence", "existence", "noncoexistence", "coexistence", "responded_existence"),
    ],
)
def test_declare_with_some_templates_equals_pm4py(
    sepsis_log: Path, templates: tuple[str, ...]
) -> None:
    pm4py = import_pm4py()
    log = _log(sepsis_log)
    ratios: dict[str, Any]
    for ratios in ({}, {"min_support_ratio": 0.0, "min_confidence_ratio": 0.0}):
        expected = pm4py.discover_declare(log["df"], allowed_templates=set(templates), **ratios)
        ours = discover_declare(log["whole"], DeclareSettings(templates=templates, **ratios))
        assert to_declare(ours) == expected


def test_the_rules_table_path_is_pm4pys_discover_declare(running_example_log: Path) -> None:
    """The shortcut above (one rules table, several selections) is what discover_declare does."""
    pm4py = import_pm4py()
    from pm4py.algo.discovery.declare.variants import classic

    log = _log(running_example_log)
    assert pm4py.discover_declare(log["df"]) == classic.get_rules_from_rules_df(
        _rules_table(running_example_log)
    )
