"""Codecs for :class:`~procvault.monitor.event.Event`: compact binary for the wire, JSON for people.

The binary form is MessagePack through ``msgspec``: one positional array (no field names), the
timestamp as a MessagePack timestamp extension, prefixed with one format-version byte so a
reader can refuse what it does not understand. It is what gets encrypted and sent.

The JSON form is one object per event with named fields, ISO-8601 timestamps and
``{"$datetime": ...}`` for date-valued attributes (``{"$float": "inf"}`` for non-finite
numbers), so it round-trips exactly (``jsonl`` files, ``--to stdout``).

>>> from datetime import datetime, UTC
>>> from procvault.monitor.event import Event
>>> e = Event.create("c1", "A", datetime(2024, 1, 1, tzinfo=UTC), attributes={"n": 1.5})
>>> decode(encode(e)) == e
True
>>> from_json(to_json(e)) == e
True
>>> to_json(e)
b'{"case_id":"c1","activity":"A","timestamp":"2024-01-01T00:00:00Z","org":"","resource":null,"attributes":{"n":1.5},"kind":"activity"}'
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final

import msgspec

from procvault.monitor.errors import CodecError
from procvault.monitor.event import Event, EventKind, to_utc

__all__ = ["FORMAT_VERSION", "decode", "encode", "from_json", "to_json"]

#: Version byte in front of every binary event.
FORMAT_VERSION: Final = 1
_PREFIX: Final = bytes([FORMAT_VERSION])

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Event)
_json_encoder: Final = msgspec.json.Encoder()
_json_decoder: Final = msgspec.json.Decoder()

_KIND_NAMES: Final = {
    EventKind.ACTIVITY: "activity",
    EventKind.CASE_END: "case_end",
    EventKind.PLACEHOLDER: "placeholder",
}
_KINDS_BY_NAME: Final = {v: k for k, v in _KIND_NAMES.items()}


def encode(event: Event) -> bytes:
    """The compact binary form of ``event``."""
    return _PREFIX + _encoder.encode(event)


def decode(data: bytes | bytearray | memoryview) -> Event:
    """Read an event written by :func:`encode`; raise :class:`CodecError` on anything else."""
    view = memoryview(data)
    if len(view) == 0 or view[0] != FORMAT_VERSION:
        got = "empty input" if len(view) == 0 else f"version byte {view[0]}"
        raise CodecError(f"not a procvault event (format {FORMAT_VERSION} expected, got {got})")
    try:
        return _decoder.decode(view[1:])
    except msgspec.DecodeError as exc:
        raise CodecError(f"malformed event: {exc}") from None


def _json_attr(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}  # JSON has no inf or nan
    return value


def _from_json_attr(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$datetime"}:
            return _parse_ts(value["$datetime"], f"attribute {key!r}")
        if set(value) == {"$float"} and value["$float"] in ("inf", "-inf", "nan"):
            return float(value["$float"])
    return value


def to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict with named fields."""
    return {
        "case_id": event.case_id,
        "activity": event.activity,
        "timestamp": event.timestamp,
        "org": event.org,
        "resource": event.resource,
        "attributes": {k: _json_attr(v) for k, v in event.attributes},
        "kind": _KIND_NAMES[event.kind],
    }


def to_json(event: Event) -> bytes:
    """One line of human-readable JSON (no trailing newline)."""
    return _json_encoder.encode(to_dict(event))


def _parse_ts(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise CodecError(f"{what} must be an ISO-8601 string")
    try:
        return to_utc(datetime.fromisoformat(value))
    except ValueError as exc:
        raise CodecError(f"{what}: {exc}") from None


def from_dict(obj: Any) -> Event:
    """The inverse of :func:`to_dict` (timestamps may be ISO-8601 strings)."""
    if not isinstance(obj, dict):
        raise CodecError("an event must be a JSON object")
    try:
        raw_attrs = obj.get("attributes") or {}
        if not isinstance(raw_attrs, dict):
            raise CodecError("attributes must be an object")
        attrs = {k: _from_json_attr(k, v) for k, v in raw_attrs.items()}
        ts = obj["timestamp"]
        kind_name = obj.get("kind", "activity")
        if kind_name not in _KINDS_BY_NAME:
            raise CodecError(f"unknown event kind {kind_name!r}")
        return Event.create(
            obj["case_id"],
            obj.get("activity", ""),
            ts if isinstance(ts, datetime) else _parse_ts(ts, "timestamp"),
            org=obj.get("org", ""),
            resource=obj.get("resource"),
            attributes=attrs,
            kind=_KINDS_BY_NAME[kind_name],
        )
    except KeyError as exc:
        raise CodecError(f"event lacks field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise CodecError(f"invalid event: {exc}") from None


def from_json(line: bytes | str) -> Event:
    """Read one JSON event written by :func:`to_json`."""
    try:
        obj = _json_decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise CodecError(f"malformed JSON event: {exc}") from None
    return from_dict(obj)
