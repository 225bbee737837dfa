"""Optimal prefix alignments, one event at a time (van Zelst et al., 2019).

A *prefix alignment* of the events a case has produced so far is a sequence of moves whose log
part is exactly those events and whose model part is a firing sequence of the net from the
initial marking to *any* marking: the case may still be running. Moves are synchronous (event
and transition agree), log moves (an event the model cannot explain), model moves on a visible
transition (an activity the model needed that did not happen) and model moves on a silent
transition. With the standard costs (log move 1, visible model move 1, synchronous and silent
moves 0) the cost of an optimal prefix alignment counts the deviations a case has shown so far;
it never decreases as events arrive, and it never exceeds the cost of an optimal alignment of the
complete trace to the final marking, which :meth:`PrefixAlignments.complete` returns.

Costs and pm4py
---------------
pm4py's alignments cost 10000 per log move or visible model move, 1 per silent move and 0 per
synchronous move, and minimise the sum: the fewest deviations first, then the fewest silent
moves. This module minimises deviations only (a silent move is free), so for a complete trace
``result.cost == pm4py_cost // 10000`` and ``result.fitness`` equals pm4py's ``fitness`` field
(``1 - cost / (len(trace) + cost of aligning the empty trace)``). Among alignments with the
fewest deviations it may pick one with more silent moves than pm4py's, so ``result.moves.silent``
(the silent moves of the alignment found) can differ from ``pm4py_cost % 10000``. Not ranking
silent moves is what lets the search reach the next synchronous move through a net's silent
transitions without first visiting every marking a few silent moves away.

How it works
------------
Each marking becomes a state interned once per engine with its enabled transitions (a cache of
``cache_size`` markings shared by all cases). When the net has at most 10,000 reachable
markings, the engine also explores its reachability graph once at construction: whether the
final marking is reachable, how often each label can still fire from each marking (for the
heuristic below), and each marking's cheapest model-only path to the final marking (so that a
case is completed without searching for it).

Per case, the search space is the synchronous product's: nodes ``(marking, i)`` where ``i``
events have been consumed; model moves stay in layer ``i``, synchronous and log moves go to layer
``i + 1``. A new event only adds layer ``i + 1`` and the edges into it, so the distances already
settled stay exact: with ``window=None`` the engine keeps one A* search per case (heap,
distances, parents) and *continues* it for each event until the first node of the new last layer
is settled. A fitting event costs a couple of heap operations; a deviation settles only nodes
that no earlier event needed. See :class:`_Search` for the heuristic and the two reductions.

With a bounded ``window=w`` (the paper's maximal revert distance, counted in events) the
alignment of all but the last ``w`` events is frozen. An event that can be a synchronous move
from the current alignment's marking is appended as one; otherwise a fresh search from the
marking after the last frozen event aligns the last ``w`` events again together with the new one.
Per case the engine then keeps ``O(w)`` moves and every search covers at most ``w + 1`` events.

References
----------
S.J. van Zelst, A. Bolt, M. Hassani, B.F. van Dongen, W.M.P. van der Aalst. "Online conformance
checking: relating event streams to process models using prefix-alignments." International
Journal of Data Science and Analytics 8, 269-284 (2019). doi:10.1007/s41060-017-0078-6.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import Final

from .petri import CompiledNet

__all__ = [
    "AlignmentResult",
    "AlignmentSnapshot",
    "Move",
    "MoveCounts",
    "PrefixAlignments",
    "PrefixStep",
]

Marking = tuple[int, ...]

#: One move of an alignment: ``(activity, transition id)``. A synchronous move has both, a log
#: move has no transition (``None``), a model move has no activity (``None``).
Move = tuple[str | None, int | None]

#: Markings explored at construction (reachability of the final marking, firing bounds and
#: distances to the final marking are known only for nets with at most this many).
_REACHABILITY_LIMIT: Final = 10_000
#: An unbounded number of firings.
_INF: Final = 1 << 62


@dataclass(frozen=True, slots=True)
class PrefixStep:
    """What one event did to its case's optimal prefix alignment.

    Attributes
    ----------
    cost
        The cost of the case's prefix alignment after this event (log moves plus model moves on
        visible transitions).
    sync
        Whether the event is a synchronous move in that alignment (``False``: a log move).
    revised
        How many moves of the previous prefix alignment were replaced (its length minus the
        length of the prefix it shares with the new one). ``0`` when the event was appended.
    """

    cost: int
    sync: bool
    revised: int


@dataclass(frozen=True, slots=True)
class MoveCounts:
    """How many moves of each kind an alignment has.

    >>> MoveCounts(sync=3, log=1, model=0, silent=2).deviations
    1
    """

    sync: int
    log: int
    model: int
    silent: int

    @property
    def deviations(self) -> int:
        """Log moves plus model moves on visible transitions: the standard cost."""
        return self.log + self.model


@dataclass(frozen=True, slots=True)
class AlignmentResult:
    """The alignment of a complete trace to the final marking.

    Attributes
    ----------
    cost
        The alignment's cost (log moves plus visible model moves); optimal when the engine's
        window is ``None``. ``None`` if the final marking cannot be reached at all.
    events
        Events of the case, unknown activities included.
    moves
        The moves of the alignment found, by kind (``None`` when ``cost`` is).
    fitness
        pm4py's alignment fitness, ``1 - cost / (events + cost of the empty trace)`` (``0.0``
        if the denominator is 0, ``None`` when ``cost`` is).
    """

    cost: int | None
    events: int
    moves: MoveCounts | None
    fitness: float | None

    @property
    def is_fit(self) -> bool:
        """Whether the trace aligns without deviation."""
        return self.cost == 0


@dataclass(frozen=True, slots=True)
class AlignmentSnapshot:
    """The frozen state of one case, enough to rebuild it (:meth:`PrefixAlignments.restore`).

    Attributes
    ----------
    marking
        The marking the moves start from: the initial marking, or with a bounded window the
        marking after the frozen part of the alignment.
    frozen
        The moves of the frozen part by kind (all zero with ``window=None``).
    frozen_events
        Events aligned in the frozen part.
    moves
        The current prefix alignment after the frozen part.
    """

    marking: Marking
    frozen: MoveCounts
    frozen_events: int
    moves: tuple[Move, ...]


# ------------------------------------------------------------------------------------------
# The net, analysed once.
@dataclass(frozen=True, slots=True)
class _Analysis:
    """What exploring the reachability graph at construction found (see :func:`_analyse`).

    ``caps[m]``: ``(label index, n)`` pairs, transitions with that label can fire at most ``n``
    times in any firing sequence from ``m`` (labels with a finite bound only, plus the index of
    unknown activities with 0). ``to_final[m]``: the fewest visible transitions on a firing
    sequence from ``m`` to the final marking (markings that can reach it only), and
    ``next_hop[m]`` the first transition of such a sequence and the marking after it.
    """

    reachable: bool | None
    caps: dict[Marking, tuple[tuple[int, int], ...]]
    to_final: dict[Marking, int]
    next_hop: dict[Marking, tuple[int, Marking]]


_UNEXPLORED: Final = _Analysis(None, {}, {}, {})


def _analyse(net: CompiledNet) -> _Analysis:
    """Explore the reachability graph (unless it has more than ``_REACHABILITY_LIMIT`` markings).

    Firing bounds: a label is unbounded from a marking if one of its transitions lies on a cycle
    of the reachability graph reachable from it; otherwise the bound is a longest path over the
    strongly connected components. Distances to the final marking: a 0-1 breadth-first search
    backwards from it (silent transitions cost 0, visible ones 1).
    """
    start, final = net.initial_marking, net.final_marking
    index = {start: 0}
    markings = [start]
    edges: list[list[tuple[int, int]]] = []
    while len(edges) < len(markings):
        m = markings[len(edges)]
        out = []
        for t, places in enumerate(net.pre):
            if all(m[p] for p in places):
                nxt = net.fire(t, m)
                j = index.get(nxt)
                if j is None:
                    if len(markings) >= _REACHABILITY_LIMIT:
                        return _UNEXPLORED
                    j = index[nxt] = len(markings)
                    markings.append(nxt)
                out.append((t, j))
        edges.append(out)
    caps = _firing_bounds(net, markings, edges)
    to_final: dict[Marking, int] = {}
    next_hop: dict[Marking, tuple[int, Marking]] = {}
    target = index.get(final)
    if target is not None:
        back: list[list[tuple[int, int]]] = [[] for _ in markings]
        for v, out in enumerate(edges):
            for t, w in out:
                back[w].append((t, v))
        dist = {target: 0}
        queue = deque([target])
        labels = net.transition_labels
        while queue:
            w = queue.popleft()
            for t, v in back[w]:
                cost = 0 if labels[t] is None else 1
                d = dist[w] + cost
                if d < dist.get(v, _INF):
                    dist[v] = d
                    next_hop[markings[v]] = (t, markings[w])
                    if cost:
                        queue.append(v)
                    else:
                        queue.appendleft(v)
        to_final = {markings[v]: d for v, d in dist.items()}
    return _Analysis(target is not None, caps, to_final, next_hop)


def _firing_bounds(
    net: CompiledNet, markings: list[Marking], edges: list[list[tuple[int, int]]]
) -> dict[Marking, tuple[tuple[int, int], ...]]:
    """Per marking, how often each label can still fire (Tarjan's SCCs, then longest paths)."""
    label_index = {label: i for i, label in enumerate(net.labels)}
    label_of = [-1 if lab is None else label_index[lab] for lab in net.transition_labels]
    n_labels = len(label_index)
    count = len(markings)
    comp = [-1] * count
    caps_of: list[list[int]] = []
    low = [0] * count
    order = [-1] * count
    on_stack = [False] * count
    stack: list[int] = []
    counter = 0
    for root in range(count):
        if order[root] >= 0:
            continue
        work = [(root, 0)]
        order[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        while work:
            v, k = work[-1]
            if k < len(edges[v]):
                work[-1] = (v, k + 1)
                w = edges[v][k][1]
                if order[w] < 0:
                    order[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack[w] = True
                    work.append((w, 0))
                elif on_stack[w]:
                    low[v] = min(low[v], order[w])
                continue
            work.pop()
            if work:
                u = work[-1][0]
                low[u] = min(low[u], low[v])
            if low[v] != order[v]:
                continue
            # v roots a component; its successors' components are already done.
            members = []
            while True:
                w = stack.pop()
                on_stack[w] = False
                comp[w] = len(caps_of)
                members.append(w)
                if w == v:
                    break
            vec = [0] * n_labels
            for x in members:
                for t, y in edges[x]:
                    lab = label_of[t]
                    if comp[y] == comp[x]:  # an edge on a cycle
                        if lab >= 0:
                            vec[lab] = _INF
                        continue
                    succ = caps_of[comp[y]]
                    for j in range(n_labels):
                        c = min(succ[j] + (j == lab), _INF)
                        vec[j] = max(vec[j], c)
            caps_of.append(vec)
    unknown = ((n_labels, 0),)
    return {
        m: tuple((j, c) for j, c in enumerate(caps_of[comp[v]]) if c < _INF) + unknown
        for v, m in enumerate(markings)
    }


# ------------------------------------------------------------------------------------------
# Markings, interned with their successors.
class _State:
    """A marking with what the search needs about it (moves filled in by :meth:`_Graph.expand`)."""

    __slots__ = ("caps", "forced", "marking", "moves", "syncs", "to_final", "uid", "zero")

    def __init__(
        self,
        marking: Marking,
        uid: int,
        caps: tuple[tuple[int, int], ...],
        to_final: int | None,
    ) -> None:
        self.marking = marking
        self.uid = uid
        #: ``(label index, n)``: labels that can fire at most ``n`` more times from here.
        self.caps = caps
        #: The label indices that can no longer fire at all, as a tuple and as a bit mask.
        self.zero = tuple(label for label, n in caps if n == 0)
        self.forced = sum(1 << label for label in self.zero)
        #: Fewest visible transitions to the final marking (-1: unreachable, None: unknown).
        self.to_final = to_final
        #: ``(cost, transition, successor)`` for every enabled transition.
        self.moves: tuple[tuple[int, int, _State], ...] | None = None
        #: ``label -> ((transition, successor), ...)`` for the enabled visible transitions.
        self.syncs: dict[str, tuple[tuple[int, _State], ...]] = {}


class _Graph:
    """The reachability graph of one net, built on demand, at most ``cache_size`` markings.

    ``label_index`` numbers the visible labels; index ``unknown`` stands for every activity no
    transition carries.
    """

    __slots__ = (
        "analysis",
        "cache_size",
        "costs",
        "default_caps",
        "final_known",
        "label_index",
        "labels",
        "net",
        "next_uid",
        "states",
        "unknown",
    )

    def __init__(self, net: CompiledNet, cache_size: int, analysis: _Analysis) -> None:
        self.net = net
        self.cache_size = cache_size
        self.analysis = analysis
        self.states: dict[Marking, _State] = {}
        self.next_uid = 0
        self.labels = net.transition_labels
        self.costs = tuple(0 if lab is None else 1 for lab in net.transition_labels)
        self.label_index = {label: i for i, label in enumerate(net.labels)}
        self.unknown = len(self.label_index)
        self.default_caps = ((self.unknown, 0),)
        self.final_known = analysis.reachable is not None

    def intern(self, marking: Marking) -> _State:
        state = self.states.get(marking)
        if state is None:
            if len(self.states) >= self.cache_size:
                # Drop the cache: states held by searches stay valid (and keep their own
                # successors); a marking met again is interned anew. Results do not change.
                self.states = {}
            analysis = self.analysis
            caps = analysis.caps.get(marking, self.default_caps)
            to_final = analysis.to_final.get(marking, -1 if self.final_known else None)
            if self.final_known and marking not in analysis.caps:
                to_final = None  # not reachable from the initial marking: not analysed
            state = self.states[marking] = _State(marking, self.next_uid, caps, to_final)
            self.next_uid += 1
        return state

    def expand(self, state: _State) -> tuple[tuple[int, int, _State], ...]:
        net = self.net
        m = state.marking
        moves = []
        syncs: dict[str, list[tuple[int, _State]]] = {}
        for t, pre in enumerate(net.pre):
            if all(m[p] for p in pre):
                nxt = self.intern(net.fire(t, m))
                moves.append((self.costs[t], t, nxt))
                label = self.labels[t]
                if label is not None:
                    syncs.setdefault(label, []).append((t, nxt))
        state.syncs = {k: tuple(v) for k, v in syncs.items()}
        state.moves = tuple(moves)
        return state.moves

    def tail(self, marking: Marking) -> list[int]:
        """The transitions of a cheapest model-only firing sequence to the final marking."""
        out = []
        hops = self.analysis.next_hop
        final = self.net.final_marking
        while marking != final:
            t, marking = hops[marking]
            out.append(t)
        return out


# ------------------------------------------------------------------------------------------
# The search: A* over (marking, events consumed), continued as events arrive.
#
# A node is the int ``layer << _LAYER | state uid`` (uids stay below 2**40): the structures of a
# search hold ints and tuples of ints, which the cyclic garbage collector soon stops tracking,
# and its states sit in one small dict by uid. With tuple keys holding states, collector pauses
# dominated the run time.
_LAYER: Final = 40
_UID: Final = (1 << _LAYER) - 1


class _Search:
    """Shortest paths from one root over a growing trace (internal).

    ``dist`` holds the best known cost of each node, ``parent`` how it was reached (``t >= 0``:
    transition ``t``, synchronous if the layer changed; ``-1``: log move), ``done`` the settled
    nodes. Settled nodes of the last layer wait in ``frontier`` for the next event's edges. Heap
    entries are ``(f, -layer, sequence, node)``: among equally promising nodes the deepest
    (most events consumed) comes first. A settled node generates its synchronous moves at once
    and leaves a *token* (``~node``) behind for its model moves and its log move, generated
    only if that token reaches the top of the heap: on a fitting trace it rarely does.

    Three devices keep the search small; none changes the optimal cost:

    * **Heuristic.** For a node ``(m, i)`` and each label, the events after the ``i``-th with
      that label in excess of how often it can still fire from ``m`` must be log moves; ``h``
      counts them. It is consistent (no move lets it drop by more than the move costs) and only
      grows as events arrive, so heap keys are lower bounds, raised when popped (lazy A*). In the
      last layer, when completing a case, ``h`` is the exact distance to the final marking.
    * **Forced log moves first.** If no transition with the next event's label can fire from
      ``m`` or any marking reachable from it, that event is a log move in every continuation,
      and taking it before any model move costs the same: such a node gets only that edge.
    * **Dominance.** A continuation from ``(m, i)`` can be replayed from ``(m, j)``, ``j > i``:
      the events ``i+1..j`` it had to align are gone, which saves their log moves when they are
      forced and costs at most one model move each otherwise. So ``(m, i)`` is skipped when
      ``g(m, j) <= g(m, i) + forced - unforced`` for the deepest ``j`` known for ``m``.
    """

    __slots__ = (
        "deep",
        "dist",
        "done",
        "events",
        "frontier",
        "graph",
        "heap",
        "labels",
        "opened",
        "parent",
        "prefix",
        "root",
        "seq",
        "states",
        "totals",
    )

    def __init__(self, graph: _Graph, root: _State, g0: int, events: list[str]) -> None:
        self.graph = graph
        self.events: list[str] = []
        #: The label index of each event.
        self.labels: list[int] = []
        zeros = (0,) * (graph.unknown + 1)
        #: ``prefix[i]``: how many of the first ``i`` events carry each label index.
        self.prefix: list[tuple[int, ...]] = [zeros]
        self.totals = list(zeros)
        self.states: dict[int, _State] = {root.uid: root}
        key = root.uid
        self.root = key
        self.dist: dict[int, int] = {key: g0}
        #: The deepest layer holding a node of each state.
        self.deep: dict[int, int] = {key: 0}
        self.parent: dict[int, tuple[int, int]] = {}
        self.done: set[int] = set()
        #: Settled nodes whose token was processed (model moves and log move generated).
        self.opened: set[int] = set()
        self.frontier: list[int] = []
        self.heap: list[tuple[int, int, int, int]] = [(g0, 0, 0, key)]
        self.seq = 1
        for activity in events:
            self.add_event(activity)

    def copy(self) -> _Search:
        """An independent copy (to complete a case without disturbing it)."""
        other = _Search.__new__(_Search)
        other.graph = self.graph
        other.events = list(self.events)
        other.labels = list(self.labels)
        other.prefix = list(self.prefix)
        other.totals = list(self.totals)
        other.states = dict(self.states)
        other.root = self.root
        other.dist = dict(self.dist)
        other.deep = dict(self.deep)
        other.parent = dict(self.parent)
        other.done = set(self.done)
        other.opened = set(self.opened)
        other.frontier = list(self.frontier)
        other.heap = list(self.heap)
        other.seq = self.seq
        return other

    def add_event(self, activity: str) -> None:
        """Extend the trace by one event: settled nodes of the old last layer get its edges."""
        graph = self.graph
        index = graph.label_index.get(activity, graph.unknown)
        self.events.append(activity)
        self.labels.append(index)
        self.totals[index] += 1
        counts = self.prefix[-1]
        self.prefix.append((*counts[:index], counts[index] + 1, *counts[index + 1 :]))
        if not self.frontier:
            return
        dist, parent, heap, states, deep = self.dist, self.parent, self.heap, self.states, self.deep
        opened = self.opened
        push = heapq.heappush
        seq = self.seq
        layer = len(self.events)
        base = layer << _LAYER
        for key in self.frontier:
            state = states[key & _UID]
            g = dist[key]
            if not state.forced >> index & 1:
                for t, nxt in state.syncs.get(activity, ()):
                    uid = nxt.uid
                    nk = base | uid
                    old = dist.get(nk)
                    if old is None or g < old:
                        dist[nk] = g
                        parent[nk] = (key, t)
                        states[uid] = nxt
                        deep[uid] = layer
                        push(heap, (g, -layer, seq, nk))
                        seq += 1
            if key not in opened:
                continue  # its pending token will add the log move (and its model moves)
            uid = state.uid
            nk = base | uid
            ng = g + 1
            old = dist.get(nk)
            if old is None or ng < old:
                dist[nk] = ng
                parent[nk] = (key, -1)
                deep[uid] = layer
                push(heap, (ng, -layer, seq, nk))
                seq += 1
        self.seq = seq
        self.frontier = []

    def run(self, to_final: bool) -> int | None:
        """Settle nodes until the best one of the last layer and return it.

        With ``to_final`` the best node of the last layer to *complete* from (the final
        marking is then reached by :meth:`_Graph.tail`, or is the node's marking when the
        net was not analysed); ``None`` if there is none. A search run ``to_final`` must not
        be continued afterwards (it leaves nodes settled but not expanded).
        """
        events, labels = self.events, self.labels
        n = len(events)
        final = self.graph.net.final_marking
        expand = self.graph.expand
        dist, parent, done, heap, states = self.dist, self.parent, self.done, self.heap, self.states
        deep, prefix, totals, frontier = self.deep, self.prefix, self.totals, self.frontier
        opened = self.opened
        pop, push = heapq.heappop, heapq.heappush
        seq = self.seq
        found: int | None = None
        while heap:
            f, neg_layer, _, key = pop(heap)
            if key < 0:
                # A settled node's token: now generate its model moves and its log move.
                key = ~key
                opened.add(key)
                i = key >> _LAYER
                state = states[key & _UID]
                g = dist[key]
                h = f - g  # the heuristic when it was settled: a lower bound for its successors
                moves = state.moves
                if moves is None:  # pragma: no cover - expanded when settled
                    moves = expand(state)
                base = i << _LAYER
                for cost, t, nxt in moves:
                    uid = nxt.uid
                    nk = base | uid
                    ng = g + cost
                    old = dist.get(nk)
                    if old is None or ng < old:
                        dist[nk] = ng
                        parent[nk] = (key, t)
                        states[uid] = nxt
                        if i > deep.get(uid, -1):
                            deep[uid] = i
                        push(heap, (ng + h, neg_layer, seq, nk))
                        seq += 1
                if i < n:
                    layer = i + 1
                    uid = state.uid
                    nk = (layer << _LAYER) | uid
                    ng = g + 1
                    old = dist.get(nk)
                    if old is None or ng < old:
                        dist[nk] = ng
                        parent[nk] = (key, -1)
                        deep[uid] = max(deep[uid], layer)
                        push(heap, (g + max(h, 1), -layer, seq, nk))
                        seq += 1
                continue
            if key in done:
                continue
            i = key >> _LAYER
            uid = key & _UID
            state = states[uid]
            g = dist[key]
            h = 0
            if to_final and state.to_final == -1:  # the final marking cannot be reached
                done.add(key)
                continue
            if i < n:
                counts = prefix[i]
                j = deep[uid]
                if j > i:  # dominated by the deepest node of the same marking?
                    later = prefix[j]
                    forced = 0
                    for label in state.zero:
                        forced += later[label] - counts[label]
                    if dist[(j << _LAYER) | uid] - g <= 2 * forced - j + i:
                        continue
                for label, cap in state.caps:
                    excess = totals[label] - counts[label] - cap
                    if excess > 0:
                        h += excess
            elif to_final and state.to_final is not None:
                h = state.to_final
            if g + h > f:  # the key was a lower bound: put it back with the true one
                push(heap, (g + h, neg_layer, seq, key))
                seq += 1
                continue
            done.add(key)
            if i == n:
                if to_final and (state.to_final is not None or state.marking == final):
                    found = key
                    break
                if state.moves is None:
                    expand(state)
                frontier.append(key)
                push(heap, (g + h, neg_layer, seq, ~key))
                seq += 1
                if not to_final:
                    found = key
                    break
                continue
            if state.forced >> labels[i] & 1:
                # The next event is a log move whatever happens: take it first, alone.
                layer = i + 1
                nk = (layer << _LAYER) | uid
                ng = g + 1
                old = dist.get(nk)
                if old is None or ng < old:
                    dist[nk] = ng
                    parent[nk] = (key, -1)
                    deep[uid] = max(deep[uid], layer)
                    push(heap, (g + max(h, 1), -layer, seq, nk))
                    seq += 1
                continue
            if state.moves is None:
                expand(state)
            layer = i + 1
            base = layer << _LAYER
            for t, nxt in state.syncs.get(events[i], ()):
                uid = nxt.uid
                nk = base | uid
                old = dist.get(nk)
                if old is None or g < old:
                    dist[nk] = g
                    parent[nk] = (key, t)
                    states[uid] = nxt
                    if layer > deep.get(uid, -1):
                        deep[uid] = layer
                    push(heap, (g + h, -layer, seq, nk))
                    seq += 1
            # Model moves and the log move wait behind one token: often never needed.
            push(heap, (g + h, neg_layer, seq, ~key))
            seq += 1
        self.seq = seq
        return found

    def run_prefix(self) -> int:
        """The cheapest node of the last layer: the end of an optimal prefix alignment."""
        key = self.run(False)
        if key is None:  # pragma: no cover - a log move always reaches the last layer
            raise RuntimeError("prefix-alignment search exhausted")
        return key

    def run_final(self) -> tuple[int, list[Move]] | None:
        """An optimal alignment to the final marking: its cost and moves (ends the search)."""
        # The settled nodes of the last layer were never scored against the final marking.
        n = len(self.events)
        for node in self.frontier:
            self.done.discard(node)
            heapq.heappush(self.heap, (self.dist[node], -n, self.seq, node))
            self.seq += 1
        self.frontier = []
        key = self.run(True)
        if key is None:
            return None
        state = self.states[key & _UID]
        tail = self.graph.tail(state.marking) if state.to_final is not None else []
        moves = _moves_of(self.events, self.path(key))
        moves.extend((None, t) for t in tail)
        return self.dist[key] + (state.to_final or 0), moves

    def path(self, key: int, stop: dict[int, int] | None = None) -> list[tuple[int, int]]:
        """The nodes and moves from the root (or the first node in ``stop``) to ``key``.

        The first element is that starting node with move ``-2``.
        """
        chain: list[tuple[int, int]] = []
        parent = self.parent
        root = self.root
        while key != root and (stop is None or key not in stop):
            prev, code = parent[key]
            chain.append((key, code))
            key = prev
        chain.append((key, -2))
        chain.reverse()
        return chain

    def state(self, key: int) -> _State:
        """The state of a node."""
        return self.states[key & _UID]

    def __len__(self) -> int:
        return len(self.dist)


def _moves_of(events: list[str], path: list[tuple[int, int]]) -> list[Move]:
    """The alignment moves along a search path (as returned by :meth:`_Search.path`)."""
    out: list[Move] = []
    prev_layer = path[0][0] >> _LAYER
    for key, code in path[1:]:
        layer = key >> _LAYER
        if layer == prev_layer:
            out.append((None, code))
        else:
            out.append((events[prev_layer], None if code < 0 else code))
        prev_layer = layer
    return out


def _count(net: CompiledNet, moves: list[Move] | tuple[Move, ...]) -> MoveCounts:
    sync = log = model = silent = 0
    labels = net.transition_labels
    for activity, t in moves:
        if t is None:
            log += 1
        elif activity is not None:
            sync += 1
        elif labels[t] is None:
            silent += 1
        else:
            model += 1
    return MoveCounts(sync, log, model, silent)


def _add(a: MoveCounts, b: MoveCounts) -> MoveCounts:
    return MoveCounts(a.sync + b.sync, a.log + b.log, a.model + b.model, a.silent + b.silent)


_ZERO: Final = MoveCounts(0, 0, 0, 0)


# ------------------------------------------------------------------------------------------
# Per-case state.
class _Optimal:
    """A case with an unbounded window: one search, continued (internal)."""

    __slots__ = ("events", "index", "path", "search")

    def __init__(self, search: _Search) -> None:
        self.search = search
        self.events = 0
        #: The current prefix alignment as search nodes, root first, and their positions.
        self.path: list[int] = [search.root]
        self.index: dict[int, int] = {search.root: 0}


class _Segment:
    """The moves aligning one event of a windowed case: model moves, then the event's move."""

    __slots__ = ("activity", "codes", "end", "g")

    def __init__(self, activity: str, codes: tuple[int, ...], end: _State, g: int) -> None:
        self.activity = activity
        #: Transitions of the model moves, then the event's transition (``-1``: log move).
        self.codes = codes
        self.end = end
        self.g = g


class _Windowed:
    """A case with a bounded window: frozen totals and the last segments (internal)."""

    __slots__ = ("base", "base_g", "events", "frozen", "frozen_events", "segments")

    def __init__(self, base: _State, base_g: int) -> None:
        self.base = base
        self.base_g = base_g
        self.events = 0
        self.frozen = _ZERO
        self.frozen_events = 0
        self.segments: deque[_Segment] = deque()


def _segments(search: _Search, key: int) -> list[_Segment]:
    """Split a windowed search's path into one segment per event."""
    out: list[_Segment] = []
    codes: list[int] = []
    events = search.events
    dist = search.dist
    prev_layer = 0
    for node, code in search.path(key)[1:]:
        codes.append(code)
        layer = node >> _LAYER
        if layer != prev_layer:
            out.append(_Segment(events[prev_layer], tuple(codes), search.state(node), dist[node]))
            codes = []
            prev_layer = layer
    return out


# ------------------------------------------------------------------------------------------
class PrefixAlignments:
    """Online optimal prefix alignments of many cases against one compiled net.

    Parameters
    ----------
    net
        The compiled accepting Petri net.
    window
        How many of a case's last events may be revised when a new event arrives. ``None``
        (unbounded): every prefix alignment is optimal and :meth:`complete` returns an optimal
        alignment's cost; a case keeps its whole search space. An integer ``w >= 0``: the
        alignment of all but the last ``w`` events is frozen, a case keeps ``O(w)`` moves and each
        search covers at most ``w + 1`` events. Then each reported cost is an upper bound of the
        optimal one, costs still never decrease, and a case of at most ``w + 1`` events (at most
        ``w`` for :meth:`complete`) gets exactly the optimal costs.
    cache_size
        How many markings to keep with their enabled transitions. When full, the cache is
        dropped and rebuilt on demand (results do not change, only speed).

    Attributes
    ----------
    final_reachable
        Whether the final marking is reachable from the initial marking, found at construction
        (``None``: the net has more than 10,000 reachable markings and it was not checked). If
        it is not, :meth:`complete` returns a result whose ``cost`` is ``None``. If it was not
        checked and is not reachable, :meth:`complete` searches the whole reachable state
        space, which does not end for an unbounded net.

    Examples
    --------
    A sequence ``A; B; C; D`` and a case that skips ``B``:

    >>> from pm4py.objects.petri_net.obj import PetriNet, Marking
    >>> from pm4py.objects.petri_net.utils.petri_utils import add_arc_from_to
    >>> from procvault.monitor.petri import compile_net
    >>> net = PetriNet("seq")
    >>> p = [PetriNet.Place(f"p{i}") for i in range(5)]
    >>> t = [PetriNet.Transition(x, x) for x in "ABCD"]
    >>> for x in p: net.places.add(x)
    >>> for x in t: net.transitions.add(x)
    >>> for i in range(4):
    ...     _ = add_arc_from_to(p[i], t[i], net), add_arc_from_to(t[i], p[i + 1], net)
    >>> cn = compile_net(net, Marking({p[0]: 1}), Marking({p[4]: 1}))
    >>> pa = PrefixAlignments(cn)
    >>> pa.update("c1", "A")
    PrefixStep(cost=0, sync=True, revised=0)
    >>> pa.update("c1", "C")  # as good as "B was skipped": C is a log move for now
    PrefixStep(cost=1, sync=False, revised=0)
    >>> pa.update("c1", "D")  # now "B was skipped" is better: the log move is revised
    PrefixStep(cost=1, sync=True, revised=1)
    >>> pa.alignment("c1")
    (('A', 'A'), (None, 'B'), ('C', 'C'), ('D', 'D'))
    >>> result = pa.complete("c1")
    >>> result.cost, result.moves, round(result.fitness, 3)
    (1, MoveCounts(sync=3, log=0, model=1, silent=0), 0.857)

    With ``window=0`` nothing already aligned is revised, so the same case costs more:

    >>> greedy = PrefixAlignments(cn, window=0)
    >>> [greedy.update("c1", a).cost for a in "ACD"]
    [0, 1, 2]
    >>> greedy.complete("c1").cost  # C and D were log moves; B, C and D are model moves
    5

    References
    ----------
    S.J. van Zelst, A. Bolt, M. Hassani, B.F. van Dongen, W.M.P. van der Aalst. "Online
    conformance checking: relating event streams to process models using prefix-alignments."
    Int J Data Sci Anal 8, 269-284 (2019).
    """

    def __init__(
        self, net: CompiledNet, *, window: int | None = None, cache_size: int = 100_000
    ) -> None:
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
            raise TypeError(f"window must be an int or None, got {window!r}")
        if window is not None and window < 0:
            raise ValueError(f"window must be >= 0 or None, got {window}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int):
            raise TypeError(f"cache_size must be an int, got {cache_size!r}")
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.net: Final = net
        self.window: Final = window
        self.cache_size: Final = cache_size
        self._keep = 0 if window is None else window  # segments a windowed case keeps
        analysis = _analyse(net)
        self.final_reachable: Final = analysis.reachable
        self._graph = _Graph(net, cache_size, analysis)
        self._cases: dict[str, _Optimal | _Windowed] = {}
        self._empty_cost = analysis.to_final.get(net.initial_marking)

    # -- the hot path -------------------------------------------------------------------
    def update(self, case_id: str, activity: str) -> PrefixStep:
        """Align one more event of ``case_id``; the case starts on its first event.

        An activity that no transition carries can only be a log move.
        """
        case = self._cases.get(case_id)
        if case is None:
            case = self._new_case(case_id)
        case.events += 1
        if isinstance(case, _Optimal):
            return self._update_optimal(case, activity)
        return self._update_windowed(case, activity)

    def _new_case(self, case_id: str) -> _Optimal | _Windowed:
        root = self._graph.intern(self.net.initial_marking)
        case: _Optimal | _Windowed
        if self.window is None:
            case = _Optimal(_Search(self._graph, root, 0, []))
        else:
            case = _Windowed(root, 0)
        self._cases[case_id] = case
        return case

    def _update_optimal(self, case: _Optimal, activity: str) -> PrefixStep:
        search = case.search
        search.add_event(activity)
        key = search.run_prefix()
        prev, code = search.parent[key]
        path = case.path
        if prev == path[-1]:
            revised = 0
            case.index[key] = len(path)
            path.append(key)
        else:
            index = case.index
            chain = search.path(key, index)
            cut = index[chain[0][0]] + 1
            revised = len(path) - cut
            for old in path[cut:]:
                del index[old]
            del path[cut:]
            for node, _ in chain[1:]:
                index[node] = len(path)
                path.append(node)
        return PrefixStep(search.dist[key], code >= 0, revised)

    def _update_windowed(self, case: _Windowed, activity: str) -> PrefixStep:
        segments = case.segments
        while len(segments) > self._keep:
            self._freeze(case)
        end, g = (segments[-1].end, segments[-1].g) if segments else (case.base, case.base_g)
        if end.moves is None:
            self._graph.expand(end)
        syncs = end.syncs.get(activity)
        if syncs:
            t, nxt = syncs[0]
            segments.append(_Segment(activity, (t,), nxt, g))
            return PrefixStep(g, True, 0)
        if activity not in self.net.label_to_transitions:
            # Only a log move can align it, from any node: appending one is optimal.
            segments.append(_Segment(activity, (-1,), end, g + 1))
            return PrefixStep(g + 1, False, 0)
        events = [s.activity for s in segments]
        events.append(activity)
        search = _Search(self._graph, case.base, case.base_g, events)
        key = search.run_prefix()
        old = [(c, j == len(s.codes) - 1) for s in segments for j, c in enumerate(s.codes)]
        new_segments = _segments(search, key)
        new = [(c, j == len(s.codes) - 1) for s in new_segments for j, c in enumerate(s.codes)]
        same = 0
        for a, b in zip(old, new, strict=False):
            if a != b:
                break
            same += 1
        segments.clear()
        segments.extend(new_segments)
        last = new_segments[-1]
        return PrefixStep(last.g, last.codes[-1] >= 0, len(old) - same)

    def _freeze(self, case: _Windowed) -> None:
        seg = case.segments.popleft()
        labels = self.net.transition_labels
        model = sum(1 for c in seg.codes[:-1] if labels[c] is not None)
        silent = len(seg.codes) - 1 - model
        sync = 1 if seg.codes[-1] >= 0 else 0
        case.frozen = _add(case.frozen, MoveCounts(sync, 1 - sync, model, silent))
        case.frozen_events += 1
        case.base, case.base_g = seg.end, seg.g

    # -- completion ---------------------------------------------------------------------
    def cost(self, case_id: str) -> int:
        """The cost of the active case's current prefix alignment."""
        case = self._cases[case_id]
        if isinstance(case, _Optimal):
            return case.search.dist[case.path[-1]]
        return case.segments[-1].g if case.segments else case.base_g

    def result(self, case_id: str) -> AlignmentResult:
        """What :meth:`complete` would return now (the case stays active)."""
        return self._result(self._cases[case_id], keep=True)

    def complete(self, case_id: str) -> AlignmentResult:
        """Align ``case_id``'s whole trace to the final marking and forget the case.

        ``KeyError`` if the case is not active. An event for the same case id afterwards
        starts a new case.
        """
        result = self._result(self._cases[case_id], keep=False)
        del self._cases[case_id]
        return result

    def _result(self, case: _Optimal | _Windowed, keep: bool) -> AlignmentResult:
        events = case.events
        if self.final_reachable is False:
            return AlignmentResult(None, events, None, None)
        frozen = _ZERO
        if isinstance(case, _Optimal):
            search = case.search.copy() if keep else case.search
        else:
            while len(case.segments) > self._keep:
                self._freeze(case)
            tail = [s.activity for s in case.segments]
            search = _Search(self._graph, case.base, case.base_g, tail)
            frozen = case.frozen
        found = search.run_final()
        if found is None:
            return AlignmentResult(None, events, None, None)
        cost, moves = found
        counts = _add(frozen, _count(self.net, moves))
        return AlignmentResult(cost, events, counts, self._fitness(cost, events))

    def _fitness(self, cost: int, events: int) -> float | None:
        if self._empty_cost is None:
            root = self._graph.intern(self.net.initial_marking)
            found = _Search(self._graph, root, 0, []).run_final()
            if found is None:
                return None
            self._empty_cost = found[0]
        den = events + self._empty_cost
        return 1 - cost / den if den > 0 else 0.0

    def discard(self, case_id: str) -> bool:
        """Forget ``case_id`` without a result; whether it was active."""
        return self._cases.pop(case_id, None) is not None

    # -- state --------------------------------------------------------------------------
    def __contains__(self, case_id: object) -> bool:
        return case_id in self._cases

    def __len__(self) -> int:
        return len(self._cases)

    def events_of(self, case_id: str) -> int:
        """Events aligned so far for an active case."""
        return self._cases[case_id].events

    @property
    def cached_markings(self) -> int:
        """Markings currently in the cache."""
        return len(self._graph.states)

    def search_size(self, case_id: str) -> int:
        """Search nodes an active case holds (with a bounded window: its segments' moves)."""
        case = self._cases[case_id]
        if isinstance(case, _Optimal):
            return len(case.search)
        return sum(len(s.codes) for s in case.segments)

    def _current_moves(self, case_id: str) -> tuple[Marking, MoveCounts, int, list[Move]]:
        case = self._cases[case_id]
        if isinstance(case, _Optimal):
            search = case.search
            chain = [(key, search.parent[key][1]) for key in case.path[1:]]
            path = [(case.path[0], -2), *chain]
            return self.net.initial_marking, _ZERO, 0, _moves_of(search.events, path)
        moves: list[Move] = []
        for seg in case.segments:
            moves.extend((None, c) for c in seg.codes[:-1])
            last = seg.codes[-1]
            moves.append((seg.activity, None if last < 0 else last))
        return case.base.marking, case.frozen, case.frozen_events, moves

    def alignment(self, case_id: str) -> tuple[tuple[str | None, str | None], ...]:
        """The active case's current prefix alignment as ``(activity, transition name)`` pairs.

        ``None`` stands for "no move" on that side. With a bounded window only the moves after
        the frozen part are kept, so only those are returned.
        """
        names = self.net.transition_names
        _, _, _, moves = self._current_moves(case_id)
        return tuple((a, None if t is None else names[t]) for a, t in moves)

    def snapshot(self, case_id: str) -> AlignmentSnapshot:
        """The frozen state of an active case."""
        marking, frozen, frozen_events, moves = self._current_moves(case_id)
        return AlignmentSnapshot(marking, frozen, frozen_events, tuple(moves))

    def restore(self, case_id: str, snap: AlignmentSnapshot) -> None:
        """Rebuild a case from :meth:`snapshot` (replacing any active state).

        With ``window=None`` the snapshot's events are aligned again, which rebuilds the same
        search and the same alignment; with a bounded window the moves are replayed from the
        snapshot's marking. ``ValueError`` if the snapshot does not fit this engine.
        """
        net = self.net
        if len(snap.marking) != net.n_places:
            raise ValueError("the snapshot's marking does not fit this net")
        events = [a for a, _ in snap.moves if a is not None]
        if self.window is None:
            if snap.frozen != _ZERO or snap.marking != net.initial_marking:
                raise ValueError("a snapshot with a frozen part needs a bounded window")
            self.discard(case_id)
            self._new_case(case_id)
            for activity in events:
                self.update(case_id, activity)
            return
        case = _Windowed(self._graph.intern(snap.marking), snap.frozen.deviations)
        case.frozen, case.frozen_events = snap.frozen, snap.frozen_events
        case.events = snap.frozen_events + len(events)
        marking, g = snap.marking, case.base_g
        codes: list[int] = []
        for label, t in snap.moves:
            if t is not None:
                if not 0 <= t < net.n_transitions or not net.enabled(t, marking):
                    raise ValueError(f"the snapshot fires transition {t}, which is not enabled")
                marking = net.fire(t, marking)
            if label is None:
                if t is None:
                    raise ValueError("the snapshot has a move without activity and transition")
                g += 0 if net.transition_labels[t] is None else 1
                codes.append(t)
                continue
            if t is None:
                g += 1
            elif net.transition_labels[t] != label:
                raise ValueError(f"the snapshot aligns {label!r} with another transition")
            codes.append(-1 if t is None else t)
            case.segments.append(_Segment(label, tuple(codes), self._graph.intern(marking), g))
            codes = []
        if codes:
            raise ValueError("the snapshot ends with model moves")
        self._cases[case_id] = case
