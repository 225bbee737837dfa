"""Load a process model (PNML or BPMN) as an accepting Petri net.

:func:`load_model` reads a ``.pnml`` file with :func:`pm4py.read_pnml` or a ``.bpmn`` file with
:func:`pm4py.read_bpmn` and :func:`pm4py.convert_to_petri_net`, checks that procvault can run it
(plain arcs of weight 1, a non-empty initial marking) and settles the final marking. Every
problem becomes a one-line :class:`~procvault.monitor.errors.InputError` (the file) or
:class:`~procvault.monitor.errors.ConfigError` (the ``final_marking`` option) that names the file.

pm4py is imported on the first call, not when this module is imported: it takes about a second.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from xml.etree import ElementTree

from procvault.generators._pm4py import import_pm4py
from procvault.monitor.errors import ConfigError, InputError

if TYPE_CHECKING:
    from pm4py.objects.petri_net.obj import Marking, PetriNet

__all__ = ["FinalMarkingSource", "LoadedModel", "load_model"]

#: Where a :class:`LoadedModel`'s final marking came from.
FinalMarkingSource = Literal["file", "option", "sink place"]

_SOURCES: Final = ("file", "option", "sink place")
_SUFFIXES: Final = (".pnml", ".bpmn")
# pm4py warns (a UserWarning) when a PNML file has no <finalmarkings>; we handle that case.
_NO_FINAL_MARKING_WARNING: Final = "the Petri net has been imported without a specified final"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """An accepting Petri net read from a model file.

    Parameters
    ----------
    net
        The pm4py ``PetriNet``.
    initial_marking
        The pm4py ``Marking`` a case starts in; never empty.
    final_marking
        The pm4py ``Marking`` a completed case ends in; never empty.
    final_marking_source
        ``"file"`` if the file gave it (BPMN files always do), ``"option"`` if the caller named
        the place, ``"sink place"`` if it is the net's unique place without outgoing arcs.
    path
        The file the model came from, or ``None`` for a net built in code.

    Examples
    --------
    >>> model = load_model("/no/such/model.pnml")
    Traceback (most recent call last):
    ...
    procvault.monitor.errors.InputError: /no/such/model.pnml: no such file
    """

    net: PetriNet
    initial_marking: Marking
    final_marking: Marking
    final_marking_source: FinalMarkingSource
    path: Path | None

    def __post_init__(self) -> None:
        if self.final_marking_source not in _SOURCES:
            raise ValueError(
                f"final_marking_source must be one of {_SOURCES}, not {self.final_marking_source!r}"
            )

    @property
    def visible_labels(self) -> frozenset[str]:
        """The labels of the net's visible transitions (those whose label is not ``None``)."""
        return frozenset(t.label for t in self.net.transitions if t.label is not None)


def load_model(path: str | os.PathLike[str], *, final_marking: str | None = None) -> LoadedModel:
    """Read a ``.pnml`` or ``.bpmn`` model as an accepting Petri net.

    Parameters
    ----------
    path
        The model file. The suffix (``.pnml`` or ``.bpmn``, any case) picks the reader.
    final_marking
        The id or the name of the place that holds the single token of the final marking. When
        given it replaces the file's final marking. When not given and the file has no final
        marking, or an empty one (ProM exports often write ``<finalmarkings/>``), the net's
        unique sink place (a place without outgoing arcs) is used.

    Returns
    -------
    LoadedModel
        The net, both markings, where the final marking came from, and the path.

    Raises
    ------
    InputError
        The file is missing or cannot be parsed, it is not a plain P/T net with arcs of weight
        1, it has no initial marking, or it has no final marking and no unique sink place; or
        it is not a workflow net as monitoring needs one: the initial or the final marking is
        not exactly one token (two marked sources, say), or the sink place taken as the final
        marking cannot be reached from the initial place along the arcs.
    ConfigError
        ``final_marking`` names no place of the net, or more than one.

    Examples
    --------
    >>> import tempfile
    >>> pnml = '''<pnml><net id="n" type="http://www.pnml.org/version-2009/grammar/pnmlcoremodel">
    ...   <page id="p"><place id="start"><initialMarking><text>1</text></initialMarking></place>
    ...   <place id="end"/><transition id="t"><name><text>A</text></name></transition>
    ...   <arc id="a1" source="start" target="t"/><arc id="a2" source="t" target="end"/>
    ... </page></net></pnml>'''
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     file = Path(tmp, "tiny.pnml")
    ...     _ = file.write_text(pnml)
    ...     model = load_model(file)
    >>> model.final_marking_source, sorted(model.visible_labels)
    ('sink place', ['A'])
    >>> [(place.name, tokens) for place, tokens in model.final_marking.items()]
    [('end', 1)]
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file}: no such file")
    suffix = file.suffix.lower()
    if suffix not in _SUFFIXES:
        raise InputError(f"{file}: unknown model format {file.suffix!r}; expected .pnml or .bpmn")
    net, im, fm = _read(file, suffix)
    _check_net(file, net)
    if not im:
        raise InputError(f"{file}: the net has no initial marking")
    if final_marking is not None:
        fm = _marking_of(_find_place(file, net, final_marking))
        source: FinalMarkingSource = "option"
    elif fm:
        source = "file"
    else:
        sinks = [p for p in net.places if not p.out_arcs]
        if len(sinks) != 1:
            found = f"{len(sinks)} sink places" if sinks else "no sink place"
            raise InputError(
                f"{file}: the model has no final marking and {found}; "
                "pass final_marking= (a place id or name)"
            )
        fm = _marking_of(sinks[0])
        source = "sink place"
    _check_workflow(file, im, fm, source)
    return LoadedModel(net, im, fm, source, file)


def _tokens(marking: Any) -> str:
    return ", ".join(f"{tokens} on {place.name}" for place, tokens in marking.items())


def _check_workflow(file: Path, im: Any, fm: Any, source: str) -> None:
    """Refuse what is not a workflow net in the sense monitoring needs.

    A case starts with one token in one place and ends with one token in one place; when
    procvault picked the end itself (the unique sink place), that place must also be reachable
    from the start along the net's arcs. A final marking the file or the option names is taken
    as given, reachable or not: pm4py's BPMN conversion of some diagrams (two of ProMTEE's)
    leaves fragments the start does not reach, and such a net still monitors (its cases never
    fit). This is a structural check, not soundness.
    """
    start_tokens = sum(im.values())
    if start_tokens != 1:
        raise InputError(
            f"{file}: not a workflow net: the initial marking has {start_tokens} tokens "
            f"({_tokens(im)}); a case must start with one token in one place"
        )
    end_tokens = sum(fm.values())
    if end_tokens != 1:
        raise InputError(
            f"{file}: not a workflow net: the final marking ({source}) has {end_tokens} tokens "
            f"({_tokens(fm)}); a case must end with one token in one place"
        )
    if source != "sink place":
        return
    (start,) = im.keys()
    (end,) = fm.keys()
    seen = {start}
    todo = [start]
    while todo and end not in seen:
        node = todo.pop()
        for arc in node.out_arcs:
            if arc.target not in seen:
                seen.add(arc.target)
                todo.append(arc.target)
    if end not in seen:
        raise InputError(
            f"{file}: not a workflow net: the sink place {end.name} (the final marking) cannot "
            f"be reached from the initial place {start.name}, so no case can end; "
            "pass final_marking= (a place id or name) if another place is the end"
        )


def _read(file: Path, suffix: str) -> tuple[Any, Any, Any]:
    """Call pm4py, turning whatever it raises into an :class:`InputError`."""
    pm4py = import_pm4py()

    # pm4py leaves its file handle open when the XML is malformed (a ResourceWarning), so the
    # well-formedness check comes first.
    try:
        ElementTree.parse(file)
    except (ElementTree.ParseError, OSError) as exc:
        raise InputError(f"{file}: not a well-formed XML file: {exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=_NO_FINAL_MARKING_WARNING, category=UserWarning
            )
            if suffix == ".pnml":
                return pm4py.read_pnml(str(file))  # type: ignore[no-any-return]
            bpmn = pm4py.read_bpmn(str(file))
            return pm4py.convert_to_petri_net(bpmn)  # type: ignore[no-any-return]
    except Exception as exc:  # pm4py raises anything from XMLSyntaxError to KeyError
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"{file}: cannot parse the {suffix[1:].upper()} model: {first_line}"
        ) from exc


def _check_net(file: Path, net: Any) -> None:
    """Refuse what the token game and the monitors do not support."""
    if not net.places or not net.transitions:
        raise InputError(f"{file}: the model has no places or no transitions")
    for arc in net.arcs:
        arc_type = arc.properties.get("arctype")
        if arc_type is not None:
            raise InputError(
                f"{file}: {arc_type} arc {arc.source.name} -> {arc.target.name} is not supported; "
                "only plain arcs are"
            )
        if arc.weight != 1:
            raise InputError(
                f"{file}: arc {arc.source.name} -> {arc.target.name} has weight {arc.weight}; "
                "only weight 1 is supported"
            )


def _find_place(file: Path, net: Any, wanted: str) -> Any:
    """The place whose id (else whose name) is ``wanted``."""
    by_id = [p for p in net.places if p.name == wanted]
    if by_id:
        return by_id[0]
    by_name = [
        p for p in net.places if str(p.properties.get("place_name_tag", "")).strip() == wanted
    ]
    if len(by_name) == 1:
        return by_name[0]
    if by_name:
        ids = ", ".join(sorted(p.name for p in by_name))
        raise ConfigError(
            f"{file}: final_marking {wanted!r} names {len(by_name)} places ({ids}); use a place id"
        )
    raise ConfigError(f"{file}: final_marking {wanted!r} is neither a place id nor a place name")


def _marking_of(place: Any) -> Marking:
    """A marking with one token on ``place``."""
    from pm4py.objects.petri_net.obj import Marking

    return Marking({place: 1})
