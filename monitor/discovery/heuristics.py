"""The Heuristics Miner's measures and net, computed from counts exactly as pm4py does.

pm4py's ``discover_heuristics_net`` (``algo/discovery/heuristics/variants/classic.py``,
``calculate``, and ``objects/heuristics_net/node.py``) starts from five numbers per log: events
per activity, the directly-follows graph, start and end activities, and the ``a, b, a``
triples. :func:`discover_heuristics` repeats its steps on a :class:`~.counts.DiscoveryCounts`:

1. **Pre-cleaning** (``clean_dfg_based_on_noise_thresh``, threshold
   ``dfg_pre_cleaning_noise_thresh``, pm4py's default 0.05, which ``discover_heuristics_net``
   does not expose): with ``max(x)`` the largest count of an arc into or out of ``x``, the arc
   ``a -> b`` is dropped when ``|a>b| < min(max(a) * t, max(b) * t)``. Everything below uses the
   cleaned graph.
2. **Dependency** of every arc: ``(|a>b| - |b>a|) / (|a>b| + |b>a| + 1)`` for ``a != b``
   (``|a>b| / (|a>b| + 1)`` when ``b -> a`` is not an arc), ``|a>a| / (|a>a| + 1)`` for a
   self-loop.
3. **Arcs**: those with both activities' events ``>= min_act_count``, count
   ``>= min_dfg_occurrences`` and dependency ``>= dependency_threshold``; their activities are
   the nodes.
4. **AND measures** per node, over each two of its outputs ``b < c`` (by name):
   ``(|b>c| + |c>b|) / (|a>b| + |a>c| + 1)``, kept when ``>= and_threshold``; inputs likewise
   with ``|b>a| + |c>a|``.
5. **Length-two loops** per node ``a``, over the ``b`` with ``a, b, a`` triples:
   ``(|aba| + |bab|) / (|aba| + |bab| + 1) >= loop_two_threshold`` records ``b`` with ``|a>b|``.
6. **Loop arcs**: for a recorded loop ``a, b`` whose arc ``a -> b`` passes the count conditions
   and where neither ``a -> b`` nor ``b -> a`` passed the dependency threshold, the arcs
   ``a -> b`` and ``b -> a`` are added with dependency 0 (and node ``b`` if missing).
7. If no node was found, every activity is a node.

The floating-point expressions are pm4py's, in pm4py's order, so every value is bit-for-bit
the same.

References
----------
A.J.M.M. Weijters, W.M.P. van der Aalst, A.K. Alves de Medeiros. "Process Mining with the
HeuristicsMiner Algorithm." BETA Working Paper 166, TU Eindhoven, 2006.

Examples
--------
>>> from procvault.monitor.discovery.counts import ActivityStat, DiscoveryCounts, PairStat
>>> counts = DiscoveryCounts(
...     events=30, cases_started=10, cases_completed=10,
...     activities=(ActivityStat("A", 10, 10, 0), ActivityStat("B", 10, 0, 0),
...                 ActivityStat("C", 10, 0, 10)),
...     pairs=(PairStat("A", "B", 10, 0, 0, 0), PairStat("B", "C", 10, 0, 0, 0)),
...     declare=False,
... )
>>> net = discover_heuristics(counts)
>>> [(a.source, a.target, round(a.dependency, 3), a.count) for a in net.arcs]
[('A', 'B', 0.909, 10), ('B', 'C', 0.909, 10)]
>>> [n.name for n in net.nodes]
['A', 'B', 'C']
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from ..errors import ConfigError
from .counts import DiscoveryCounts

__all__ = [
    "AndMeasure",
    "HeuristicsArc",
    "HeuristicsNode",
    "HeuristicsResult",
    "HeuristicsSettings",
    "discover_heuristics",
]


class HeuristicsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The Heuristics Miner's parameters: pm4py's ``discover_heuristics_net`` ones with its
    defaults, and the pre-cleaning threshold it leaves at its default."""

    dependency_threshold: float = 0.5
    and_threshold: float = 0.65
    loop_two_threshold: float = 0.5
    min_act_count: int = 1
    min_dfg_occurrences: int = 1
    dfg_pre_cleaning_noise_thresh: float = 0.05

    def __post_init__(self) -> None:
        for name in ("dependency_threshold", "and_threshold", "loop_two_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number, not {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be finite, not {value!r}")
        for name in ("min_act_count", "min_dfg_occurrences"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, not {value!r}")
        t = self.dfg_pre_cleaning_noise_thresh
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 <= t <= 1.0:
            raise ConfigError(f"dfg_pre_cleaning_noise_thresh must be in [0, 1], not {t!r}")


class HeuristicsArc(msgspec.Struct, frozen=True, array_like=True):
    """An arc of the heuristics net: its dependency measure and directly-follows count;
    ``kind`` ``"loop_two"`` for the arcs added for a length-two loop (dependency 0)."""

    source: str
    target: str
    dependency: float
    count: int
    kind: Literal["dependency", "loop_two"] = "dependency"


class AndMeasure(msgspec.Struct, frozen=True, array_like=True):
    """Two outputs (or inputs) ``first < second`` of a node and their AND measure."""

    first: str
    second: str
    value: float


class HeuristicsNode(msgspec.Struct, frozen=True, array_like=True):
    """A node: its activity's events, how many cases it starts and ends, its AND measures
    (outputs, inputs) and length-two loops (``(b, |a>b|)``)."""

    name: str
    occurrences: int
    starts: int
    ends: int
    and_out: tuple[AndMeasure, ...] = ()
    and_in: tuple[AndMeasure, ...] = ()
    loops_two: tuple[tuple[str, int], ...] = ()


class HeuristicsResult(msgspec.Struct, frozen=True, kw_only=True):
    """The heuristics net derived from counts (every table sorted by name).

    Attributes
    ----------
    settings
        The parameters used.
    nodes, arcs
        The net.
    dependency
        ``(a, b, measure)`` for every arc of the cleaned directly-follows graph (pm4py's
        ``dependency_matrix``).
    dfg
        The cleaned directly-follows graph (pm4py's ``dfg_matrix``).
    """

    settings: HeuristicsSettings
    nodes: tuple[HeuristicsNode, ...]
    arcs: tuple[HeuristicsArc, ...]
    dependency: tuple[tuple[str, str, float], ...]
    dfg: tuple[tuple[str, str, int], ...]


def _clean(
    dfg: dict[tuple[str, str], int], activities: list[str], t: float
) -> dict[tuple[str, str], int]:
    """pm4py's ``clean_dfg_based_on_noise_thresh``."""
    if not dfg:
        return dfg
    top: dict[str, int] = dict.fromkeys(activities, -1)
    for (a, b), v in dfg.items():
        if v > top.get(a, -1):
            top[a] = v
        if v > top.get(b, -1):
            top[b] = v
    return {(a, b): v for (a, b), v in dfg.items() if not v < min(top[a] * t, top[b] * t)}


def discover_heuristics(
    counts: DiscoveryCounts, settings: HeuristicsSettings | None = None
) -> HeuristicsResult:
    """The heuristics net of ``counts`` (see the module docstring for every step)."""
    s = settings if settings is not None else HeuristicsSettings()
    occ = counts.activity_counts()
    starts = counts.start_activities()
    ends = counts.end_activities()
    activities = list(occ)
    dfg = counts.dfg()
    if s.dfg_pre_cleaning_noise_thresh > 0.0:
        dfg = _clean(dfg, activities, s.dfg_pre_cleaning_noise_thresh)
    dep: dict[tuple[str, str], float] = {}
    for (a, b), c1 in dfg.items():
        if a != b:
            c2 = dfg.get((b, a))
            dep[(a, b)] = (c1 - c2) / (c1 + c2 + 1) if c2 is not None else c1 / (c1 + 1)
        else:
            dep[(a, b)] = c1 / (c1 + 1)

    min_act, min_dfg, thr = s.min_act_count, s.min_dfg_occurrences, s.dependency_threshold

    def frequent(x: str) -> bool:
        return x in occ and occ[x] >= min_act

    arcs: dict[tuple[str, str], HeuristicsArc] = {}
    nodes: list[str] = []
    outs: dict[str, list[str]] = {}
    ins: dict[str, list[str]] = {}
    for (a, b), d in dep.items():
        if frequent(a) and frequent(b) and dfg[(a, b)] >= min_dfg and d >= thr:
            for x in (a, b):
                if x not in outs:
                    nodes.append(x)
                    outs[x] = []
                    ins[x] = []
            arcs[(a, b)] = HeuristicsArc(a, b, d, dfg[(a, b)])
            outs[a].append(b)
            ins[b].append(a)

    def df(x: str, y: str) -> int:
        return dfg.get((x, y), 0)

    and_out: dict[str, tuple[AndMeasure, ...]] = {}
    and_in: dict[str, tuple[AndMeasure, ...]] = {}
    loops: dict[str, dict[str, int]] = {}
    triples = counts.loops_two()
    by_first: dict[str, list[str]] = {}
    for a, b in triples:
        by_first.setdefault(a, []).append(b)
    at = s.and_threshold
    for n in nodes:
        found = []
        o = sorted(set(outs[n]))
        for i, b in enumerate(o):
            for c in o[i + 1 :]:
                value = (df(b, c) + df(c, b)) / (df(n, b) + df(n, c) + 1)
                if value >= at:
                    found.append(AndMeasure(b, c, value))
        and_out[n] = tuple(found)
        found = []
        o = sorted(set(ins[n]))
        for i, b in enumerate(o):
            for c in o[i + 1 :]:
                value = (df(b, c) + df(c, b)) / (df(b, n) + df(c, n) + 1)
                if value >= at:
                    found.append(AndMeasure(b, c, value))
        and_in[n] = tuple(found)
        mine: dict[str, int] = {}
        for b in by_first.get(n, ()):
            v1 = triples.get((n, b), 0)
            v2 = triples.get((b, n), 0)
            if (v1 + v2) / (v1 + v2 + 1) >= s.loop_two_threshold:
                mine[b] = df(n, b)
        loops[n] = mine

    main_nodes = list(nodes)
    for a in main_nodes:
        for b in loops[a]:
            if not (
                (a, b) in dfg
                and dfg[(a, b)] >= min_dfg
                and frequent(a)
                and frequent(b)
                and not (dep.get((a, b), -math.inf) >= thr or dep.get((b, a), -math.inf) >= thr)
            ):
                continue
            if b not in outs:
                nodes.append(b)
                outs[b] = []
                ins[b] = []
            for x, y in ((a, b), (b, a)):
                if (x, y) not in arcs:
                    arcs[(x, y)] = HeuristicsArc(x, y, 0, df(x, y), "loop_two")
    if not nodes:
        nodes = list(activities)

    return HeuristicsResult(
        settings=s,
        nodes=tuple(
            HeuristicsNode(
                n,
                occ.get(n, 0),
                starts.get(n, 0),
                ends.get(n, 0),
                and_out.get(n, ()),
                and_in.get(n, ()),
                tuple(sorted(loops.get(n, {}).items())),
            )
            for n in sorted(nodes)
        ),
        arcs=tuple(arcs[k] for k in sorted(arcs)),
        dependency=tuple((a, b, dep[(a, b)]) for a, b in sorted(dep)),
        dfg=tuple((a, b, dfg[(a, b)]) for a, b in sorted(dfg)),
    )
