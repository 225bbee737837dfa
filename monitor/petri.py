"""Compile an accepting Petri net once into compact integer tables.

Places and transitions become small integers; a marking becomes a tuple of token counts
indexed by place; each transition keeps the tuples of its input and output places. Labels map
to transition ids, silent transitions are listed apart, and the shortest connections between
places through silent transitions (the table pm4py's token-based replay walks) are computed
once, here, with pm4py's own routine so that the online replay makes the very same choices.

The net comes in as pm4py objects (``PetriNet``, initial and final ``Marking``); reading files
is the caller's job (``procvault.config.models.load_model``), so this module does no I/O.

Examples
--------
>>> from pm4py.objects.petri_net.obj import PetriNet, Marking
>>> from pm4py.objects.petri_net.utils.petri_utils import add_arc_from_to
>>> net = PetriNet("n")
>>> src, mid, sink = PetriNet.Place("src"), PetriNet.Place("mid"), PetriNet.Place("sink")
>>> a, tau = PetriNet.Transition("a", "A"), PetriNet.Transition("tau", None)
>>> for x in (src, mid, sink): net.places.add(x)
>>> for x in (a, tau): net.transitions.add(x)
>>> for x, y in ((src, a), (a, mid), (mid, tau), (tau, sink)): _ = add_arc_from_to(x, y, net)
>>> cn = compile_net(net, Marking({src: 1}), Marking({sink: 1}))
>>> cn.n_places, cn.n_transitions, cn.labels
(3, 2, ('A',))
>>> cn.marking_names(cn.initial_marking)
{'src': 1}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from .errors import ModelError

__all__ = ["CompiledNet", "ModelError", "compile_net"]

#: pm4py's recursion depth for the shortest paths through silent transitions
#: (``TechnicalParameters.MAX_REC_DEPTH`` of its token-based replay).
SILENT_PATH_DEPTH: Final = 50

Marking = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class CompiledNet:
    """An accepting Petri net as integer tables.

    Attributes
    ----------
    place_names, transition_names
        Names by id. Place ids follow the order of the place names.
    transition_labels
        Label by transition id (``None`` for a silent transition).
    pre, post
        Input and output place ids by transition id, in the order pm4py iterates the arcs.
    label_to_transitions
        Every transition carrying a label, in pm4py's iteration order of the net.
    identity_hashes
        ``hash()`` of each pm4py transition object. pm4py picks among enabled duplicates of a
        label in the iteration order of a ``set`` of transitions, which follows these hashes
        (object identities); keeping them lets the replay make the same pick for the same net.
    default_transition
        For each label, the transition pm4py's replay falls back to when none is enabled (the
        last one by transition name).
    silent_paths
        ``silent_paths[p][q]``: the shortest sequence of silent transitions from place ``p``
        leading to place ``q``, as pm4py's token-based replay computes it.
    initial_marking, final_marking
        Token counts by place id.
    initial_order
        The places of the initial marking in the order pm4py's ``Marking`` lists them (its
        replay is sensitive to that order in one place: reaching the sink at the end).

    Place ids follow the order of the place names, so sorting ids sorts by name as pm4py does.
    """

    name: str
    place_names: tuple[str, ...]
    transition_names: tuple[str, ...]
    transition_labels: tuple[str | None, ...]
    pre: tuple[tuple[int, ...], ...]
    post: tuple[tuple[int, ...], ...]
    label_to_transitions: Mapping[str, tuple[int, ...]]
    default_transition: Mapping[str, int]
    identity_hashes: tuple[int, ...]
    silent: frozenset[int]
    silent_paths: Mapping[int, Mapping[int, tuple[int, ...]]]
    initial_marking: Marking
    final_marking: Marking
    initial_order: tuple[int, ...]

    @property
    def n_places(self) -> int:
        """Number of places."""
        return len(self.place_names)

    @property
    def n_transitions(self) -> int:
        """Number of transitions."""
        return len(self.transition_names)

    @property
    def labels(self) -> tuple[str, ...]:
        """The visible labels, sorted."""
        return tuple(sorted(self.label_to_transitions))

    def marking_names(self, marking: Marking) -> dict[str, int]:
        """A marking as ``{place name: tokens}`` without empty places."""
        return {self.place_names[p]: n for p, n in enumerate(marking) if n}

    def enabled(self, t: int, marking: Marking) -> bool:
        """Whether transition ``t`` is enabled in ``marking``."""
        return all(marking[p] > 0 for p in self.pre[t])

    def fire(self, t: int, marking: Marking) -> Marking:
        """The marking after firing ``t`` (its input places must be marked)."""
        m = list(marking)
        for p in self.pre[t]:
            m[p] -= 1
        for p in self.post[t]:
            m[p] += 1
        return tuple(m)


def _to_vector(marking: Any, index: Mapping[Any, int], n: int, what: str) -> Marking:
    vec = [0] * n
    for place, count in marking.items():
        if place not in index:
            raise ModelError(f"the {what} marking names a place that is not in the net")
        if not isinstance(count, int) or count < 0:
            raise ModelError(f"the {what} marking puts {count!r} tokens on {place.name!r}")
        vec[index[place]] = count
    return tuple(vec)


def compile_net(net: Any, initial_marking: Any, final_marking: Any) -> CompiledNet:
    """Compile a pm4py accepting Petri net.

    Raises :class:`ModelError` for arc weights other than 1 (pm4py's replay adds a whole arc
    weight when tokens are missing, a quirk we refuse rather than copy), an empty initial or
    final marking, duplicate place names (pm4py orders places by name) or a net without
    transitions.
    """
    places = sorted(net.places, key=lambda p: str(p.name))
    names = [str(p.name) for p in places]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ModelError(f"place names must be unique; repeated: {', '.join(dup[:5])}")
    if not net.transitions:
        raise ModelError("the net has no transitions")
    p_index = {p: i for i, p in enumerate(places)}
    transitions = list(net.transitions)  # pm4py's iteration order, used for duplicate labels
    t_index = {t: i for i, t in enumerate(transitions)}
    pre: list[tuple[int, ...]] = []
    post: list[tuple[int, ...]] = []
    for t in transitions:
        for arc in list(t.in_arcs) + list(t.out_arcs):
            if arc.weight != 1:
                raise ModelError(
                    f"arc {arc.source.name} -> {arc.target.name} has weight {arc.weight}; "
                    "only weight 1 is supported"
                )
        # Arc order as pm4py iterates the arc sets: it decides the order in which places
        # enter a marking, which pm4py's end-of-trace step depends on.
        pre.append(tuple(p_index[a.source] for a in t.in_arcs))
        post.append(tuple(p_index[a.target] for a in t.out_arcs))
    labels: dict[str, list[int]] = {}
    for i, t in enumerate(transitions):
        if t.label is not None:
            labels.setdefault(str(t.label), []).append(i)
    default = {
        str(t.label): t_index[t]
        for t in sorted(transitions, key=lambda x: str(x.name))
        if t.label is not None
    }
    im = _to_vector(initial_marking, p_index, len(places), "initial")
    fm = _to_vector(final_marking, p_index, len(places), "final")
    if not any(im):
        raise ModelError("the initial marking is empty")
    if not any(fm):
        raise ModelError("the final marking is empty")

    from pm4py.objects.petri_net.utils.petri_utils import get_places_shortest_path_by_hidden

    raw_paths = get_places_shortest_path_by_hidden(net, SILENT_PATH_DEPTH)
    paths = {
        p_index[p]: {p_index[q]: tuple(t_index[t] for t in path) for q, path in targets.items()}
        for p, targets in raw_paths.items()
    }
    return CompiledNet(
        name=str(net.name),
        place_names=tuple(names),
        transition_names=tuple(str(t.name) for t in transitions),
        transition_labels=tuple(None if t.label is None else str(t.label) for t in transitions),
        pre=tuple(pre),
        post=tuple(post),
        label_to_transitions={k: tuple(v) for k, v in labels.items()},
        default_transition=default,
        identity_hashes=tuple(hash(t) for t in transitions),
        silent=frozenset(i for i, t in enumerate(transitions) if t.label is None),
        silent_paths=paths,
        initial_marking=im,
        final_marking=fm,
        initial_order=tuple(p_index[p] for p in initial_marking if initial_marking[p] > 0),
    )
