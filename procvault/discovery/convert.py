"""A discovered model as pm4py objects: the DFG, the heuristics net and its Petri net, Declare.

Every object here is built by pm4py itself from the model's counts, so what pm4py does with a
log it does here with the counts: :func:`heuristics_net` calls pm4py's ``apply_heu_dfg`` (the
same ``calculate`` that ``discover_heuristics_net`` runs) with the activity counts, the
directly-follows graph, start and end activities and the ``a, b, a`` triples of the model;
:func:`heuristics_petri_net` is pm4py's heuristics-net-to-Petri-net conversion. The heuristics
net pm4py builds equals the one :func:`procvault.monitor.discovery.discover_heuristics`
computed without pm4py (tests check both against pm4py on the log).

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> from procvault.monitor.event import Event
>>> from procvault.monitor.discovery import DiscoveryTracker, build_model
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> tracker = DiscoveryTracker()
>>> for i, acts in enumerate(["ABC", "ABC", "AC"]):
...     for j, act in enumerate(acts):
...         tracker.update(Event.create(f"c{i}", act, t0 + timedelta(minutes=j)))
>>> _ = tracker.flush()
>>> model = build_model(tracker.counts())
>>> dfg, start, end = to_dfg(model)
>>> dfg, start, end
({('A', 'B'): 2, ('A', 'C'): 1, ('B', 'C'): 2}, {'A': 3}, {'C': 3})
>>> sorted(heuristics_net(model).nodes)
['A', 'B', 'C']
>>> net, im, fm = heuristics_petri_net(model)
>>> sorted(t.label for t in net.transitions if t.label)
['A', 'B', 'C']
>>> to_declare(model)["init"]
{'A': {'support': 3, 'confidence': 3}}
"""

from __future__ import annotations

from typing import Any

from procvault.generators._pm4py import import_pm4py
from procvault.monitor.discovery import DiscoveredModel
from procvault.monitor.discovery.declare import DeclareResult

__all__ = ["heuristics_net", "heuristics_petri_net", "to_declare", "to_dfg", "to_pm4py_dfg"]


def to_dfg(
    model: DiscoveredModel,
) -> tuple[dict[tuple[str, str], int], dict[str, int], dict[str, int]]:
    """``(dfg, start_activities, end_activities)`` as pm4py's ``discover_dfg`` returns them."""
    c = model.counts
    return c.dfg(), c.start_activities(), c.end_activities()


def to_pm4py_dfg(model: DiscoveredModel) -> Any:
    """pm4py's typed DFG object (``pm4py.objects.dfg.obj.DFG``), e.g. for the inductive miner."""
    import_pm4py()
    from pm4py.objects.dfg.obj import DFG

    dfg, start, end = to_dfg(model)
    return DFG(dfg, start, end)


def heuristics_net(model: DiscoveredModel) -> Any:
    """pm4py's ``HeuristicsNet`` for the model's counts and heuristics parameters."""
    import_pm4py()
    from pm4py.algo.discovery.heuristics.variants import classic

    p = classic.Parameters
    s = model.heuristics.settings
    c = model.counts
    occ = c.activity_counts()
    return classic.apply_heu_dfg(
        c.dfg(),
        activities=list(occ),
        activities_occurrences=occ,
        start_activities=c.start_activities(),
        end_activities=c.end_activities(),
        freq_triples={(a, b, a): n for (a, b), n in c.loops_two().items()},
        parameters={
            p.DEPENDENCY_THRESH: s.dependency_threshold,
            p.AND_MEASURE_THRESH: s.and_threshold,
            p.LOOP_LENGTH_TWO_THRESH: s.loop_two_threshold,
            p.MIN_ACT_COUNT: s.min_act_count,
            p.MIN_DFG_OCCURRENCES: s.min_dfg_occurrences,
            p.DFG_PRE_CLEANING_NOISE_THRESH: s.dfg_pre_cleaning_noise_thresh,
        },
    )


def heuristics_petri_net(model: DiscoveredModel) -> tuple[Any, Any, Any]:
    """``(net, initial_marking, final_marking)``: the heuristics net as pm4py converts it."""
    import_pm4py()
    from pm4py.objects.conversion.heuristics_net import converter

    net, im, fm = converter.apply(heuristics_net(model))
    return net, im, fm


def to_declare(model: DiscoveredModel | DeclareResult) -> dict[str, dict[Any, dict[str, int]]]:
    """The Declare model as pm4py's ``discover_declare`` returns it: template -> activity (or
    ``(a, b)``) -> ``{"support": .., "confidence": ..}``. Empty without Declare tallies."""
    result = model.declare if isinstance(model, DiscoveredModel) else model
    out: dict[str, dict[Any, dict[str, int]]] = {}
    if result is None:
        return out
    for c in result.constraints:
        key: Any = c.activities[0] if len(c.activities) == 1 else c.activities
        out.setdefault(c.template, {})[key] = {"support": c.support, "confidence": c.confidence}
    return out
