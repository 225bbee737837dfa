"""Process discovery over a stream: counts per event, models equal to pm4py's on the same cases.

* :class:`DiscoveryTracker` (:mod:`.tracker`): per event, the directly-follows counts, start and
  end activities, per-pair durations, the ``a, b, a`` triples of length-two loops and, per
  completed case, the Declare relations; O(1) work per event, memory bounded by the activities
  and the active cases; ``snapshot``/``restore`` as frozen values; ``merge`` of trackers that
  saw disjoint cases.
* :class:`DiscoveryCounts` (:mod:`.counts`): what a tracker counted, without case ids;
  mergeable (commutative, associative).
* :func:`discover_heuristics` (:mod:`.heuristics`) and :func:`discover_declare`
  (:mod:`.declare`): pm4py's Heuristics Miner and Declare discovery, formula for formula, on
  counts; :func:`build_model` bundles them into a versioned :class:`DiscoveredModel`
  (:mod:`.model`).

Pure: no I/O, no clock, no pm4py. ``procvault.discovery`` turns the results into pm4py objects,
files and pictures. See ``docs/discovery.md``.

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> from procvault.monitor.event import Event
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> parts = [DiscoveryTracker(), DiscoveryTracker()]
>>> whole = DiscoveryTracker()
>>> for i, acts in enumerate(["ABC", "ACB", "ABC"]):
...     for j, act in enumerate(acts):
...         e = Event.create(f"c{i}", act, t0 + timedelta(minutes=j))
...         parts[i % 2].update(e)
...         whole.update(e)
>>> _ = [p.flush() for p in parts], whole.flush()
>>> parts[0].merge(parts[1])
>>> parts[0].counts() == whole.counts()
True
>>> model = build_model(whole.counts())
>>> [(a.source, a.target, a.count) for a in model.heuristics.arcs]
[('A', 'B', 2), ('A', 'C', 1)]
>>> [c.activities for c in model.declare.constraints if c.template == "response"]
[('A', 'B'), ('A', 'C')]
"""

from .counts import (
    DECLARE_RELATIONS,
    ActivityStat,
    DeclareActivityStat,
    DeclarePairStat,
    DiscoveryCounts,
    LoopStat,
    PairStat,
)
from .declare import (
    TEMPLATES,
    Constraint,
    DeclareResult,
    DeclareSettings,
    candidate_rules,
    discover_declare,
)
from .heuristics import (
    AndMeasure,
    HeuristicsArc,
    HeuristicsNode,
    HeuristicsResult,
    HeuristicsSettings,
    discover_heuristics,
)
from .model import SCHEMA, DiscoveredModel, build_model, decode_model, encode_model
from .tracker import CaseActivity, CaseState, DiscoveryTracker, TrackerSettings, TrackerState

__all__ = [
    "DECLARE_RELATIONS",
    "SCHEMA",
    "TEMPLATES",
    "ActivityStat",
    "AndMeasure",
    "CaseActivity",
    "CaseState",
    "Constraint",
    "DeclareActivityStat",
    "DeclarePairStat",
    "DeclareResult",
    "DeclareSettings",
    "DiscoveredModel",
    "DiscoveryCounts",
    "DiscoveryTracker",
    "HeuristicsArc",
    "HeuristicsNode",
    "HeuristicsResult",
    "HeuristicsSettings",
    "LoopStat",
    "PairStat",
    "TrackerSettings",
    "TrackerState",
    "build_model",
    "candidate_rules",
    "decode_model",
    "discover_declare",
    "discover_heuristics",
    "encode_model",
]
