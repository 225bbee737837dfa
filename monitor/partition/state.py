"""The partition engine's state as typed, versioned values (no pickle anywhere).

:class:`PartitionMeta` is what a partition keeps besides its cases: per organization the merge
position, the replay guard and the offsets, the released and ticked keys, the DP
accumulator's shared part, the revocations, the exact counters. :class:`CaseRecord` is one
case: its replay and rule states while active, its share of the DP accumulator, its
participants, or only the fact that it completed. Both are ``msgspec`` structs with a
``format`` field; :func:`decode_meta` and :func:`decode_case` refuse anything else with one
line (a value of an older procvault, or not a partition record) instead of misreading it.

Compliance rules keep heterogeneous values per case (tuples, lists, sets, datetimes, events);
:func:`pack_value` and :func:`unpack_value` carry them with their exact types.

>>> from datetime import datetime, UTC
>>> v = (1, [2.5, "x"], frozenset({"a"}), {"b"}, datetime(2024, 1, 1, tzinfo=UTC), None)
>>> unpack_value(pack_value(v)) == v
True
>>> type(unpack_value(pack_value((1, 2)))).__name__, type(unpack_value(pack_value([1]))).__name__
('tuple', 'list')
>>> decode_case(b"junk")
Traceback (most recent call last):
...
procvault.monitor.errors.CodecError: not a case record of format 3 (a value of an older ...)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import msgspec

from ..discovery.tracker import CaseState as TrackerCaseState
from ..discovery.tracker import TrackerState
from ..errors import CodecError
from ..event import Event
from ..privacy.panes import AccumulatorState, CaseAccState
from ..revocation import RevocationState

__all__ = [
    "STATE_FORMAT",
    "CaseRecord",
    "EngineCounters",
    "GuardState",
    "OrgState",
    "PartitionMeta",
    "ReplayState",
    "RulesState",
    "decode_case",
    "decode_meta",
    "encode_record",
    "pack_value",
    "unpack_value",
]

#: The format of the records this version writes and reads.
STATE_FORMAT: Final = 3

# -- typed values ------------------------------------------------------------------------------
_TUPLE: Final = 1
_FROZENSET: Final = 2
_SET: Final = 3
_EVENT: Final = 4
_EVENT_ENC: Final = msgspec.msgpack.Encoder()
_EVENT_DEC: Final = msgspec.msgpack.Decoder(Event)


def _pack(value: Any) -> Any:  # noqa: PLR0911 - one exit per type
    if isinstance(value, tuple):
        return msgspec.msgpack.Ext(_TUPLE, _VALUE_ENC.encode([_pack(v) for v in value]))
    if isinstance(value, list):
        return [_pack(v) for v in value]
    if isinstance(value, frozenset):
        items = sorted((_pack(v) for v in value), key=repr)
        return msgspec.msgpack.Ext(_FROZENSET, _VALUE_ENC.encode(items))
    if isinstance(value, set):
        items = sorted((_pack(v) for v in value), key=repr)
        return msgspec.msgpack.Ext(_SET, _VALUE_ENC.encode(items))
    if isinstance(value, Event):
        return msgspec.msgpack.Ext(_EVENT, _EVENT_ENC.encode(value))
    if isinstance(value, dict):
        return {k: _pack(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str | bytes | datetime):
        return value
    raise TypeError(f"cannot store a value of type {type(value).__name__} in a case record")


def _ext(code: int, data: memoryview) -> Any:
    if code == _TUPLE:
        return tuple(_VALUE_DEC.decode(data))
    if code == _FROZENSET:
        return frozenset(_VALUE_DEC.decode(data))
    if code == _SET:
        return set(_VALUE_DEC.decode(data))
    if code == _EVENT:
        return _EVENT_DEC.decode(data)
    raise CodecError(f"unknown value type {code} in a case record")


_VALUE_ENC: Final = msgspec.msgpack.Encoder()
_VALUE_DEC: Final = msgspec.msgpack.Decoder(ext_hook=_ext)


def pack_value(value: Any) -> bytes:
    """``value`` (None, bool, int, float, str, bytes, datetime, tuple, list, set, frozenset,
    dict with string keys, :class:`~procvault.monitor.event.Event`, nested) as bytes that
    :func:`unpack_value` reads back with the same types."""
    return _VALUE_ENC.encode(_pack(value))


def unpack_value(data: bytes) -> Any:
    """The inverse of :func:`pack_value`."""
    try:
        return _VALUE_DEC.decode(data)
    except msgspec.DecodeError as exc:
        raise CodecError(f"unreadable value in a case record: {exc}") from None


# -- records -----------------------------------------------------------------------------------
class GuardState(msgspec.Struct, frozen=True, array_like=True):
    """One replay-guard lane of an organization: the last ``(generation, sequence)`` accepted
    (the head of its chain: ``(0, 0)`` before the first frame), and, for the event lane, the
    last merge key ``(timestamp µs, order)``, the key epoch of its last frame and the offset
    after that frame."""

    generation: int = 0
    sequence: int = 0
    ts_us: int = -(1 << 62)
    order: int = -1
    epoch: int = 0
    next_offset: int = 0


class OrgState(msgspec.Struct, frozen=True):
    """What a partition keeps about one organization's stream."""

    org: str
    #: its merge position: nothing later of it sorts at or below ``(ts_us, order)``
    position_us: int
    position_order: int
    closed: bool
    #: whether anything of it was ever read (an organization never heard holds the merge)
    heard: bool
    #: the next offset read from its topic partition when this was written
    consumed: int
    #: where a restart resumes reading (never past a record still waiting in the merge)
    committed: int
    #: its replay guard as of ``committed``: the event lane and the revocation lane
    stream: GuardState
    revoke: GuardState
    silent: bool = False


class EngineCounters(msgspec.Struct):
    """Exact operational counters of a partition (never published: they describe data)."""

    frames: int = 0
    applied: int = 0
    heartbeats: int = 0
    late: int = 0
    redelivered: int = 0
    replay: int = 0
    future: int = 0
    wrong_org: int = 0
    #: events of a case whose id places it on another partition
    misplaced: int = 0
    #: frames that did not continue their organization's chain (held back, read again)
    gaps: int = 0
    #: frames under an older key epoch than their organization's stream had moved to
    old_epoch: int = 0
    #: events whose merge key was not new (their agent sent them before)
    resent: int = 0
    after_completion: int = 0
    completed: int = 0
    alerts: int = 0
    revocations: int = 0
    revocations_refused: int = 0
    revoked_events: int = 0


class PartitionMeta(msgspec.Struct, frozen=True, tag="partition-meta", tag_field="record"):
    """A partition's state apart from its cases (see the module docstring)."""

    partition: int
    orgs: tuple[OrgState, ...]
    released_us: int
    released_order: int
    released_org: str
    clock_us: int | None
    finished: bool
    last_event_us: int | None
    accumulator: AccumulatorState | None
    revocations: RevocationState
    counters: EngineCounters
    format: int = STATE_FORMAT
    #: the discovery tracker's shared part (:meth:`DiscoveryTracker.shared_snapshot`), if any
    discovery: TrackerState | None = None


class ReplayState(msgspec.Struct, frozen=True, array_like=True):
    """A case's token-replay state (:class:`~procvault.monitor.tbr.CaseSnapshot`)."""

    marking: tuple[tuple[int, int], ...]
    consumed: int
    produced: int
    missing: int
    events: int
    unknown: int


class RulesState(msgspec.Struct, frozen=True, array_like=True):
    """A case's rule states (:class:`~procvault.monitor.compliance.engine.CaseSnapshot`);
    ``data`` is the rules' own values, packed with :func:`pack_value`."""

    verdicts: tuple[int, ...]
    data: bytes
    last: Event | None
    watch: tuple[int, ...] | None


class CaseRecord(msgspec.Struct, frozen=True, tag="case", tag_field="record"):
    """One case of a partition.

    Attributes
    ----------
    case
        The case id.
    participants
        ``(organization, events of it)`` for every organization with an event (or a
        placeholder) in the case.
    completed
        The case completed (nothing else is kept then but its participants).
    replay, rules, events, last_seen_us
        The vault's state of an active case (``events``: without a model).
    accumulator
        Its share of the DP accumulator: its bookkeeping while active and the keys it counted
        in each open pane, which cap what it may still count there.
    silent
        Organizations that were silent while the case ran.
    discovery
        Its share of the partition's discovery tracker while active.
    """

    case: str
    participants: tuple[tuple[str, int], ...]
    completed: bool
    replay: ReplayState | None = None
    rules: RulesState | None = None
    events: int = 0
    last_seen_us: int | None = None
    accumulator: CaseAccState | None = None
    silent: tuple[str, ...] = ()
    format: int = STATE_FORMAT
    #: its share of the discovery tracker while active (:meth:`DiscoveryTracker.case_state`)
    discovery: TrackerCaseState | None = None


_RECORD_ENC: Final = msgspec.msgpack.Encoder()
_META_DEC: Final = msgspec.msgpack.Decoder(PartitionMeta)
_CASE_DEC: Final = msgspec.msgpack.Decoder(CaseRecord)


def encode_record(record: PartitionMeta | CaseRecord) -> bytes:
    """A record as bytes (seal them before storing: they name cases)."""
    return _RECORD_ENC.encode(record)


def _decode(dec: msgspec.msgpack.Decoder[Any], data: bytes, what: str) -> Any:
    try:
        record = dec.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise CodecError(
            f"not a {what} of format {STATE_FORMAT} (a value of an older procvault, or not a "
            "partition record)"
        ) from None
    if record.format != STATE_FORMAT:
        raise CodecError(f"{what} of format {record.format}; this procvault reads format 2")
    return record


def decode_meta(data: bytes) -> PartitionMeta:
    """A :class:`PartitionMeta`, or a one-line :class:`~procvault.monitor.errors.CodecError`."""
    meta: PartitionMeta = _decode(_META_DEC, data, "partition metadata record")
    return meta


def decode_case(data: bytes) -> CaseRecord:
    """A :class:`CaseRecord`, or a one-line :class:`~procvault.monitor.errors.CodecError`."""
    record: CaseRecord = _decode(_CASE_DEC, data, "case record")
    return record
