"""A sequential Petri net for tests: one transition per label, in order (``"ABC"``: A → B → C)."""

from __future__ import annotations

from typing import Any

from procvault.monitor.petri import CompiledNet, compile_net


def sequence_petri(labels: str = "ABC") -> tuple[Any, Any, Any]:
    """``(net, initial marking, final marking)`` as pm4py objects."""
    from pm4py.objects.petri_net.obj import Marking, PetriNet
    from pm4py.objects.petri_net.utils.petri_utils import add_arc_from_to

    net = PetriNet("seq")
    places = [PetriNet.Place(f"p{i}") for i in range(len(labels) + 1)]
    for p in places:
        net.places.add(p)
    for i, label in enumerate(labels):
        t = PetriNet.Transition(label, label)
        net.transitions.add(t)
        add_arc_from_to(places[i], t, net)
        add_arc_from_to(t, places[i + 1], net)
    return net, Marking({places[0]: 1}), Marking({places[-1]: 1})


def sequence_net(labels: str = "ABC") -> CompiledNet:
    """The same, compiled for the vault."""
    return compile_net(*sequence_petri(labels))
