"""Discovered models as files: the model record, PNML, BPMN, Declare, pm4py's DFG, pictures.

:func:`write_models` writes, into one folder:

``model.json``
    The :class:`~procvault.monitor.discovery.DiscoveredModel` record (counts, heuristics net,
    Declare model; ``procvault.discovery/1``): what ``procvault discover --compare`` reads.
``dfg.dfg``
    The directly-follows graph in pm4py's ``write_dfg`` format (``pm4py.read_dfg`` reads it).
``heuristics.pnml``, ``heuristics.bpmn``
    The heuristics net converted by pm4py to a Petri net (PNML) and on to BPMN.
``declare.json``
    The Declare model (:class:`DeclareFile`, ``procvault.declare/1``; pm4py 2.7 has no Declare
    writer): every kept constraint with its template, activities, support and confidence, and
    the thresholds that kept it.
``dfg.<fmt>``, ``heuristics.<fmt>``, ``heuristics-petri.<fmt>``, ``heuristics-bpmn.<fmt>``
    Pictures, for each format asked for (``png``, ``svg``).

Every file is written to a temporary name and then moved into place.

Examples
--------
>>> decl = DeclareFile(cases=2, templates=("init",), min_support_ratio=0.8,
...                    min_confidence_ratio=0.8,
...                    constraints=(DeclareEntry("init", ("A",), 2, 2),))
>>> encode_declare(decl)[:62]
b'{"schema":"procvault.declare/1","cases":2,"templates":["init"]'
>>> decode_declare(encode_declare(decl)) == decl
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec

from procvault.discovery._io import atomic, atomic_bytes
from procvault.discovery.convert import heuristics_petri_net
from procvault.discovery.draw import (
    FORMATS,
    draw_bpmn,
    draw_dfg,
    draw_heuristics,
    draw_petri_net,
)
from procvault.generators._pm4py import import_pm4py
from procvault.monitor.discovery import DiscoveredModel, decode_model, encode_model
from procvault.monitor.discovery.declare import DeclareResult
from procvault.monitor.errors import ConfigError, InputError

__all__ = [
    "DECLARE_SCHEMA",
    "DeclareEntry",
    "DeclareFile",
    "declare_file",
    "decode_declare",
    "encode_declare",
    "read_model",
    "write_declare",
    "write_models",
]

#: The schema of ``declare.json``.
DECLARE_SCHEMA: Final = "procvault.declare/1"


class DeclareEntry(msgspec.Struct, frozen=True):
    """One constraint: JSON ``{"template", "activities", "support", "confidence"}``."""

    template: str
    activities: tuple[str, ...]
    support: int
    confidence: int


class DeclareFile(msgspec.Struct, frozen=True, kw_only=True):
    """``declare.json``: the kept constraints of ``cases`` completed cases (sorted by
    template, then activities), the allowed templates and the ratios that kept them."""

    schema: str = DECLARE_SCHEMA
    cases: int
    templates: tuple[str, ...]
    min_support_ratio: float
    min_confidence_ratio: float
    constraints: tuple[DeclareEntry, ...]


_ENC: Final = msgspec.json.Encoder()
_DEC: Final = msgspec.json.Decoder(DeclareFile)


def declare_file(result: DeclareResult) -> DeclareFile:
    """The file form of a Declare model."""
    return DeclareFile(
        cases=result.cases,
        templates=result.settings.templates,
        min_support_ratio=result.min_support_ratio,
        min_confidence_ratio=result.min_confidence_ratio,
        constraints=tuple(
            DeclareEntry(c.template, c.activities, c.support, c.confidence)
            for c in result.constraints
        ),
    )


def encode_declare(decl: DeclareFile) -> bytes:
    """``declare.json``'s bytes."""
    return _ENC.encode(decl)


def decode_declare(data: bytes | str) -> DeclareFile:
    """Parse ``declare.json``; ``ValueError`` (one line) if it is not one."""
    try:
        decl = _DEC.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"not a procvault.declare file: {exc}") from None
    if decl.schema != DECLARE_SCHEMA:
        raise ValueError(f"unsupported schema {decl.schema!r} (this reader: {DECLARE_SCHEMA})")
    return decl


def write_declare(result: DeclareResult, path: str | os.PathLike[str]) -> Path:
    """Write ``declare.json``."""
    data = encode_declare(declare_file(result))
    return atomic_bytes(path, data)


def read_model(path: str | os.PathLike[str]) -> DiscoveredModel:
    """Read a ``model.json`` (or the ``model.json`` in a folder); ``InputError`` (one line)
    if it is missing or not a model."""
    p = Path(path)
    if p.is_dir():
        p = p / "model.json"
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        return decode_model(data)
    except ValueError as exc:
        raise InputError(f"{p}: {exc}") from None


def write_models(
    model: DiscoveredModel,
    out_dir: str | os.PathLike[str],
    *,
    pictures: Sequence[str] = ("png",),
) -> list[Path]:
    """Write the model's files (see the module docstring) into ``out_dir`` (created if
    needed); returns their paths in the order written."""
    bad = sorted(set(pictures) - set(FORMATS))
    if bad:
        raise ConfigError(f"picture formats are {list(FORMATS)}, not {bad}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the folder: {exc.strerror}") from None
    pm4py = import_pm4py()
    written: list[Path] = []
    written.append(atomic_bytes(out / "model.json", encode_model(model)))
    c = model.counts
    written.append(
        atomic(
            out / "dfg.dfg",
            lambda tmp: pm4py.write_dfg(c.dfg(), c.start_activities(), c.end_activities(), tmp),
        )
    )
    net, im, fm = heuristics_petri_net(model)
    written.append(atomic(out / "heuristics.pnml", lambda tmp: pm4py.write_pnml(net, im, fm, tmp)))
    bpmn = pm4py.convert_to_bpmn(net, im, fm)
    written.append(atomic(out / "heuristics.bpmn", lambda tmp: pm4py.write_bpmn(bpmn, tmp)))
    if model.declare is not None:
        written.append(write_declare(model.declare, out / "declare.json"))
    for fmt in pictures:
        written.append(draw_dfg(model, out / f"dfg.{fmt}"))
        written.append(draw_heuristics(model, out / f"heuristics.{fmt}"))
        written.append(draw_petri_net(net, im, fm, out / f"heuristics-petri.{fmt}"))
        written.append(draw_bpmn(bpmn, out / f"heuristics-bpmn.{fmt}"))
    return written
