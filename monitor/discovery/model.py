"""The discovered model as one versioned record: counts, heuristics net and Declare model.

A :class:`DiscoveredModel` is what a release of the exact models carries (signed by the vault
and sealed to the consortium's organizations by the release path): the
:class:`~.counts.DiscoveryCounts` it was derived from (no case ids), the heuristics net
(:mod:`.heuristics`) and the Declare model (:mod:`.declare`), each with the parameters used.
Its JSON form is ``msgspec``'s encoding of the struct (deterministic: the same model always
gives the same bytes; floats round-trip exactly), with ``schema`` naming the version.

Examples
--------
>>> from datetime import UTC, datetime
>>> from procvault.monitor.event import Event
>>> from procvault.monitor.discovery.tracker import DiscoveryTracker
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> tracker = DiscoveryTracker()
>>> for act in "AB":
...     tracker.update(Event.create("c1", act, t0))
>>> tracker.complete("c1")
True
>>> model = build_model(tracker.counts())
>>> [(a.source, a.target) for a in model.heuristics.arcs]
[('A', 'B')]
>>> data = encode_model(model)
>>> data[:44]
b'{"schema":"procvault.discovery/1","counts":{'
>>> decode_model(data) == model
True
>>> decode_model(b'{"schema": "procvault.discovery/1"}')
Traceback (most recent call last):
...
ValueError: not a procvault.discovery model: Object missing required field `counts`
"""

from __future__ import annotations

from typing import Final

import msgspec

from .counts import DiscoveryCounts
from .declare import DeclareResult, DeclareSettings, discover_declare
from .heuristics import HeuristicsResult, HeuristicsSettings, discover_heuristics

__all__ = ["SCHEMA", "DiscoveredModel", "build_model", "decode_model", "encode_model"]

#: The schema name and version every model record carries.
SCHEMA: Final = "procvault.discovery/1"


class DiscoveredModel(msgspec.Struct, frozen=True, kw_only=True):
    """The exact models of a set of cases: the counts, and what was derived from them.

    ``declare`` is ``None`` when the counts hold no Declare tallies.
    """

    schema: str = SCHEMA
    counts: DiscoveryCounts
    heuristics: HeuristicsResult
    declare: DeclareResult | None = None


def build_model(
    counts: DiscoveryCounts,
    *,
    heuristics: HeuristicsSettings | None = None,
    declare: DeclareSettings | None = None,
) -> DiscoveredModel:
    """Derive the heuristics net and (if tallied) the Declare model from ``counts``."""
    return DiscoveredModel(
        counts=counts,
        heuristics=discover_heuristics(counts, heuristics),
        declare=discover_declare(counts, declare) if counts.declare else None,
    )


_ENCODER: Final = msgspec.json.Encoder()
_DECODER: Final = msgspec.json.Decoder(DiscoveredModel)


def encode_model(model: DiscoveredModel) -> bytes:
    """The model's JSON."""
    return _ENCODER.encode(model)


def decode_model(data: bytes | str) -> DiscoveredModel:
    """Parse and validate a model's JSON; ``ValueError`` (one line) if it is not one."""
    try:
        model = _DECODER.decode(data)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a procvault.discovery model: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if model.schema != SCHEMA:
        raise ValueError(f"unsupported schema {model.schema!r} (this reader: {SCHEMA})")
    return model
