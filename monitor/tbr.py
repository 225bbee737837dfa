"""Token-based replay, one event at a time, with results equal to pm4py's offline replay.

pm4py's ``conformance_diagnostics_token_based_replay`` replays a whole trace: for each event it
fires the transition with that label, first trying to enable it through silent transitions
(following the shortest silent paths between places, with a bounded recursion), and inserting
the missing tokens when that fails; at the end it walks silent paths towards the final marking
and counts the remaining tokens. Every step depends only on the marking and the activity, so
the same computation runs online: :class:`TokenReplay` keeps one marking and four counters per
case and, per event, looks up the step ``(marking, activity)`` in a cache of markings. A step
is computed once (by the exact port of pm4py's heuristics in :func:`replay_step`) and then
costs one dictionary lookup; memory is bounded by the active cases plus ``cache_size`` cached
markings.

pm4py's markings are insertion-ordered dictionaries, and in one place (the last attempt to
reach a single-place final marking) its choices follow that order. The port keeps markings as
ordered ``((place, tokens), ...)`` tuples so that even that choice matches.

References
----------
A. Berti, W.M.P. van der Aalst. "Reviving Token-based Replay: Increasing Speed While Improving
Diagnostics." ATAED 2019. The implementation followed is pm4py 2.7's
``algo/conformance/tokenreplay/variants/token_replay.py`` (default parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from .petri import CompiledNet

__all__ = [
    "UNKNOWN",
    "CaseCounters",
    "CaseSnapshot",
    "Finish",
    "OrderedMarking",
    "Outcome",
    "TokenReplay",
    "finish_case",
    "replay_step",
]

#: A marking as pm4py holds it: places with tokens, in insertion order.
OrderedMarking = tuple[tuple[int, int], ...]

#: pm4py ``TechnicalParameters``: recursion depth when enabling through silent transitions,
#: and the two bounded loops that try to reach the final marking.
_MAX_REC_DEPTH_HIDDEN: Final = 2
_MAX_IT_FINAL1: Final = 5
_MAX_IT_FINAL2: Final = 5


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one event did to its case (shared between all events with the same step).

    Attributes
    ----------
    kind
        ``"fit"`` (the transition was enabled, possibly through silent transitions),
        ``"missing"`` (tokens had to be inserted) or ``"unknown"`` (no transition has this label;
        the marking is unchanged, as in pm4py).
    transition
        The name of the transition fired, if any.
    missing_places
        Names of the places that lacked a token (``kind == "missing"``).
    silent_fired
        How many silent transitions fired to enable it.
    """

    kind: Literal["fit", "missing", "unknown"]
    transition: str | None
    missing_places: tuple[str, ...] = ()
    silent_fired: int = 0
    #: ``kind != "fit"``, stored so the hot path reads a slot instead of comparing strings.
    deviates: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "deviates", self.kind != "fit")

    @property
    def fit(self) -> bool:
        """Whether the event replayed without inserting tokens."""
        return not self.deviates


@dataclass(frozen=True, slots=True)
class Finish:
    """The end-of-case step from a marking: silent moves towards the final marking, then counts."""

    consumed: int
    produced: int
    final_missing: int
    remaining: int


@dataclass(frozen=True, slots=True)
class CaseCounters:
    """Token counts of a case, as pm4py reports them once the case is complete.

    >>> CaseCounters(produced=10, consumed=10, missing=1, remaining=1).fitness
    0.9
    """

    produced: int
    consumed: int
    missing: int
    remaining: int
    is_fit: bool = False

    @property
    def fitness(self) -> float:
        """pm4py's trace fitness: (1 - missing/consumed)/2 + (1 - remaining/produced)/2."""
        if self.consumed > 0 and self.produced > 0:
            return 0.5 * (1.0 - self.missing / self.consumed) + 0.5 * (
                1.0 - self.remaining / self.produced
            )
        return 1.0


#: The outcome of an event whose activity no transition carries.
UNKNOWN: Final = Outcome("unknown", None)


# ------------------------------------------------------------------------------------------
# The exact port of pm4py's per-event heuristics, on ordered dict markings (slow, cached).
def _enabled(net: CompiledNet, t: int, m: dict[int, int]) -> bool:
    for p in net.pre[t]:  # noqa: SIM110 (a plain loop is faster than all() over a generator)
        if p not in m:  # markings hold only places with tokens, as pm4py's do
            return False
    return True


def _fire(net: CompiledNet, t: int, m: dict[int, int]) -> dict[int, int]:
    out = dict(m)
    for p in net.pre[t]:
        out[p] -= 1
        if out[p] == 0:
            del out[p]
    for p in net.post[t]:
        out[p] = out.get(p, 0) + 1
    return out


def _paths_between(
    net: CompiledNet, m: dict[int, int], targets: list[int]
) -> list[tuple[int, ...]]:
    """pm4py ``get_hidden_transitions_to_enable`` / ``get_req_transitions_for_final_marking``."""
    found = []
    paths = net.silent_paths
    for p1 in sorted(m):
        from_p1 = paths.get(p1)
        if from_p1 is None:
            continue
        for p2 in targets:
            path = from_p1.get(p2)
            if path is not None:
                found.append(path)
    found.sort(key=len)
    return found


def _enable_hidden(
    net: CompiledNet,
    m: dict[int, int],
    fired: list[int],
    visited: set[int],
    groups: list[tuple[int, ...]],
    t: int,
) -> dict[int, int]:
    """pm4py ``enable_hidden_transitions`` (non-exhaustive variant)."""
    j = [0] * len(groups)
    z = 0
    while True:
        changed = False
        g = z % len(groups)
        group = groups[g]
        for _ in range(j[g], len(group)):
            t3 = group[j[g]]
            if t3 != t and _enabled(net, t3, m) and t3 not in visited:
                m = _fire(net, t3, m)
                fired.append(t3)
                visited.add(t3)
                changed = True
            j[g] += 1
            if _enabled(net, t, m):
                break
        if _enabled(net, t, m) or not changed:
            return m
        z += 1


def _apply_hidden(
    net: CompiledNet,
    t: int,
    m: dict[int, int],
    fired: list[int],
    depth: int,
    visited: set[int],
) -> dict[int, int]:
    """pm4py ``apply_hidden_trans``."""
    if depth >= _MAX_REC_DEPTH_HIDDEN or t in visited:
        return m
    visited.add(t)
    at_start = m
    lacking = sorted(p for p in net.pre[t] if m.get(p, 0) < 1)
    groups = _paths_between(net, m, lacking)
    if groups:
        m = _enable_hidden(net, m, fired, visited, groups, t)
        if not _enabled(net, t, m):
            for group in _paths_between(net, m, lacking):
                for t4 in group:
                    if t4 != t and t4 not in visited:
                        if not _enabled(net, t4, m):
                            m = _apply_hidden(net, t4, m, fired, depth + 1, visited)
                        if _enabled(net, t4, m):
                            m = _fire(net, t4, m)
                            fired.append(t4)
                            visited.add(t4)
        if not _enabled(net, t, m) and at_start != m:
            m = _apply_hidden(net, t, m, fired, depth + 1, visited)
    return m


def _choose(net: CompiledNet, candidates: tuple[int, ...], m: dict[int, int], activity: str) -> int:
    """pm4py's choice of transition for a label: the first enabled one, else the default."""
    if len(candidates) == 1:
        return candidates[0]
    # pm4py: [x for x in enabled_transitions(net, marking) if x.label == a][0], where
    # enabled_transitions builds a set of transition objects in the net's iteration order.
    # A set of the same hash values, inserted in the same order, iterates in the same order.
    hashes = net.identity_hashes
    by_hash = {hashes[i]: i for i in range(len(hashes))}
    enabled = {hashes[i] for i in range(len(hashes)) if _enabled(net, i, m)}
    for h in enabled:
        i = by_hash[h]
        if net.transition_labels[i] == activity:
            return i
    return net.default_transition[activity]


def replay_step(
    net: CompiledNet, marking: OrderedMarking, activity: str
) -> tuple[OrderedMarking, int, int, int, Outcome]:
    """One event of pm4py's token replay: ``(marking', consumed, produced, missing, outcome)``.

    Examples
    --------
    See :class:`TokenReplay`; this is its uncached step.
    """
    candidates = net.label_to_transitions.get(activity)
    if candidates is None:
        return marking, 0, 0, 0, UNKNOWN
    m = dict(marking)
    t = _choose(net, candidates, m, activity)
    consumed = produced = missing = 0
    fired: list[int] = []
    if _enabled(net, t, m):  # the common case: nothing to search
        m = _fire(net, t, m)
        outcome = Outcome("fit", net.transition_names[t])
        return tuple(m.items()), len(net.pre[t]), len(net.post[t]), 0, outcome
    m = _apply_hidden(net, t, m, fired, 0, set())
    for tt in fired:
        consumed += len(net.pre[tt])
        produced += len(net.post[tt])
    lacking: tuple[str, ...] = ()
    if not _enabled(net, t, m):
        gaps = [p for p in net.pre[t] if m.get(p, 0) < 1]
        # in pm4py's arc order, which decides where the new places enter the marking
        for p in gaps:
            m[p] = m.get(p, 0) + 1
        missing = len(gaps)
        lacking = tuple(net.place_names[p] for p in gaps)
    consumed += len(net.pre[t])
    produced += len(net.post[t])
    m = _fire(net, t, m)
    name = net.transition_names[t]
    outcome = (
        Outcome("missing", name, lacking, len(fired))
        if missing
        else Outcome("fit", name, (), len(fired))
    )
    return tuple(m.items()), consumed, produced, missing, outcome


def finish_case(net: CompiledNet, marking: OrderedMarking) -> Finish:
    """The end of pm4py's trace replay from ``marking``: reach the final marking, then count."""
    m = dict(marking)
    fm = {p: n for p, n in enumerate(net.final_marking) if n}
    fm_places = sorted(fm)
    consumed = produced = 0

    def reached(mk: dict[int, int]) -> bool:
        return all(mk.get(p, 0) > 0 for p in fm_places)

    for _ in range(_MAX_IT_FINAL1):
        if reached(m):
            break
        for group in _paths_between(net, m, fm_places):
            for t in group:
                if _enabled(net, t, m):
                    m = _fire(net, t, m)
                    consumed += len(net.pre[t])
                    produced += len(net.post[t])
            if reached(m):
                break
    if not reached(m) and len(fm_places) == 1:
        sink = fm_places[0]
        connections = [
            net.silent_paths[p][sink]
            for p in m  # insertion order, as pm4py iterates its Marking
            if p in net.silent_paths and sink in net.silent_paths[p]
        ]
        connections.sort(key=len)
        for _ in range(_MAX_IT_FINAL2):
            for path in connections:
                for t in path:
                    if not _enabled(net, t, m):
                        break
                    m = _fire(net, t, m)
                    consumed += len(net.pre[t])
                    produced += len(net.post[t])
    final_missing = sum(max(0, n - m.get(p, 0)) for p, n in fm.items())
    remaining = sum(max(0, n - fm[p]) if p in fm else n for p, n in m.items())
    return Finish(consumed, produced, final_missing, remaining)


# ------------------------------------------------------------------------------------------
# The online engine: markings interned as nodes, steps cached on them.
class _Node:
    """An interned marking with its cached successors."""

    __slots__ = ("finish", "marking", "succ")

    def __init__(self, marking: OrderedMarking) -> None:
        self.marking = marking
        self.succ: dict[str, tuple[_Node, int, int, int, Outcome]] = {}
        self.finish: Finish | None = None


class _Case:
    """Running state of one case (internal; see :meth:`TokenReplay.snapshot`)."""

    __slots__ = ("consumed", "events", "missing", "node", "produced", "unknown")

    def __init__(self, node: _Node, produced: int) -> None:
        self.node = node
        self.consumed = 0
        self.produced = produced
        self.missing = 0
        self.events = 0
        self.unknown = 0


@dataclass(frozen=True, slots=True)
class CaseSnapshot:
    """The frozen state of one case, enough to rebuild it (:meth:`TokenReplay.restore`)."""

    marking: OrderedMarking
    consumed: int
    produced: int
    missing: int
    events: int
    unknown: int


class TokenReplay:
    """Online token-based replay of many cases against one compiled net.

    Parameters
    ----------
    net
        The compiled accepting Petri net.
    cache_size
        How many markings to keep with their cached steps. When full, the cache is dropped
        and rebuilt on demand (results do not change, only speed).

    Examples
    --------
    >>> from pm4py.objects.petri_net.obj import PetriNet, Marking
    >>> from pm4py.objects.petri_net.utils.petri_utils import add_arc_from_to
    >>> from procvault.monitor.petri import compile_net
    >>> net = PetriNet("seq")
    >>> p = [PetriNet.Place(f"p{i}") for i in range(3)]
    >>> t = [PetriNet.Transition(x, x) for x in "AB"]
    >>> for x in p + t: _ = (net.places if x in p else net.transitions).add(x)
    >>> for x, y in ((p[0], t[0]), (t[0], p[1]), (p[1], t[1]), (t[1], p[2])):
    ...     _ = add_arc_from_to(x, y, net)
    >>> tbr = TokenReplay(compile_net(net, Marking({p[0]: 1}), Marking({p[2]: 1})))
    >>> tbr.update("c1", "A").kind, tbr.update("c1", "B").kind
    ('fit', 'fit')
    >>> tbr.complete("c1")
    CaseCounters(produced=3, consumed=3, missing=0, remaining=0, is_fit=True)
    >>> tbr.update("c2", "B").missing_places
    ('p1',)
    >>> r = tbr.complete("c2"); (r.missing, r.remaining, r.is_fit, round(r.fitness, 3))
    (1, 1, False, 0.5)
    """

    def __init__(self, net: CompiledNet, *, cache_size: int = 100_000) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        self.net: Final = net
        self.cache_size: Final = cache_size
        self._initial = tuple((p, net.initial_marking[p]) for p in net.initial_order)
        self._initial_tokens = sum(net.initial_marking)
        self._final_tokens = sum(net.final_marking)
        self._nodes: dict[OrderedMarking, _Node] = {}
        self._root = self._intern(self._initial)
        self._cases: dict[str, _Case] = {}

    # -- the hot path -------------------------------------------------------------------
    def update(self, case_id: str, activity: str) -> Outcome:
        """Replay one event of ``case_id``; the case starts on its first event."""
        case = self._cases.get(case_id)
        if case is None:
            case = self._cases[case_id] = _Case(self._root, self._initial_tokens)
        step = case.node.succ.get(activity)
        if step is None:
            step = self._step(case.node, activity)
        node, consumed, produced, missing, outcome = step
        case.node = node
        case.consumed += consumed
        case.produced += produced
        case.missing += missing
        case.events += 1
        if outcome is UNKNOWN:
            case.unknown += 1
        return outcome

    def _step(self, node: _Node, activity: str) -> tuple[_Node, int, int, int, Outcome]:
        marking, consumed, produced, missing, outcome = replay_step(
            self.net, node.marking, activity
        )
        step = (self._intern(marking), consumed, produced, missing, outcome)
        node.succ[activity] = step
        return step

    def _intern(self, marking: OrderedMarking) -> _Node:
        node = self._nodes.get(marking)
        if node is None:
            if len(self._nodes) >= self.cache_size:
                # Drop the cache: nodes still held by cases stay valid and are re-expanded.
                self._nodes = {}
            node = self._nodes[marking] = _Node(marking)
        return node

    # -- completion ---------------------------------------------------------------------
    def counters(self, case_id: str) -> CaseCounters:
        """What pm4py would report if the case ended now (the case stays active)."""
        case = self._cases.get(case_id)
        if case is None:
            raise KeyError(case_id)
        fin = case.node.finish
        if fin is None:
            fin = case.node.finish = finish_case(self.net, case.node.marking)
        return CaseCounters(
            produced=case.produced + fin.produced,
            consumed=case.consumed + fin.consumed + self._final_tokens,
            missing=case.missing + fin.final_missing,
            remaining=fin.remaining,
            is_fit=case.missing == 0 and fin.remaining == 0,
        )

    def complete(self, case_id: str) -> CaseCounters:
        """Finish ``case_id`` and forget it; ``KeyError`` if it is not active."""
        result = self.counters(case_id)
        del self._cases[case_id]
        return result

    def discard(self, case_id: str) -> bool:
        """Forget ``case_id`` without a result; whether it was active."""
        return self._cases.pop(case_id, None) is not None

    # -- state --------------------------------------------------------------------------
    def __contains__(self, case_id: object) -> bool:
        return case_id in self._cases

    def __len__(self) -> int:
        return len(self._cases)

    def active_cases(self) -> list[str]:
        """The ids of the active cases, oldest first."""
        return list(self._cases)

    def events_of(self, case_id: str) -> int:
        """Events replayed so far for an active case."""
        return self._cases[case_id].events

    def unknown_of(self, case_id: str) -> int:
        """Events of an active case whose activity the model does not know."""
        return self._cases[case_id].unknown

    def in_final_marking(self, case_id: str) -> bool:
        """Whether the case's marking is exactly the final marking."""
        marking = self._cases[case_id].node.marking
        fm = self.net.final_marking
        return sum(n for _, n in marking) == self._final_tokens and all(
            fm[p] == n for p, n in marking
        )

    @property
    def cached_markings(self) -> int:
        """Markings currently in the step cache."""
        return len(self._nodes)

    def snapshot(self, case_id: str) -> CaseSnapshot:
        """The frozen state of an active case."""
        c = self._cases[case_id]
        return CaseSnapshot(c.node.marking, c.consumed, c.produced, c.missing, c.events, c.unknown)

    def restore(self, case_id: str, snap: CaseSnapshot) -> None:
        """Rebuild a case from :meth:`snapshot` (replacing any active state)."""
        case = _Case(self._intern(snap.marking), snap.produced)
        case.consumed, case.missing = snap.consumed, snap.missing
        case.events, case.unknown = snap.events, snap.unknown
        self._cases[case_id] = case
