"""The columnar form of a parsed XES log, and the builder both XES readers fill.

A log is held as a few flat typed arrays (``array.array``), not as a Python object per event:
per event an ``int32`` case index, an ``int32`` activity code, an ``int32`` resource code
(``-1`` for none) and an ``int64`` timestamp in microseconds since the Unix epoch (UTC); every
string (case ids, activities, resources, attribute keys, string values) is stored once in one
table and referred to by its code. Attributes stay typed: each attribute is a key code, a type
tag (:class:`Tag`) and a 64-bit payload (a string code, the integer itself, an index into a
``float64`` array, 0/1, microseconds since the epoch, or an index into a small list of integers
too large for 64 bits). Event attributes are kept per event, sorted by key, in CSR layout
(``attr_start[i]:attr_start[i + 1]``); trace attributes once per case, already prefixed
``case:``.

:class:`ColumnsBuilder` turns one trace at a time (its attribute mapping and its events'
mappings, whichever parser produced them) into these columns and checks what replay needs: a
case id, no case id twice, an activity name and a timestamp per event. The first problem found
is kept, not raised, so that the caller can finish reading the file and report a malformed file
first, as pm4py's reader (which parses the whole file before anything is checked) does.

Examples
--------
>>> from datetime import datetime, UTC
>>> b = ColumnsBuilder("demo.xes")
>>> b.add_trace({"concept:name": "c1", "creator": "x"},
...             [{"concept:name": "A", "time:timestamp": datetime(2024, 1, 1, tzinfo=UTC),
...               "Age": 70, "org:resource": "Pete"}])
>>> cols = b.finish()
>>> cols.n_events, cols.n_cases, cols.strings[cols.activity[0]], cols.timestamp_us[0]
(1, 1, 'A', 1704067200000000)
>>> cols.event_attributes(0), cols.case_attributes(0)
([('Age', 70)], [('case:creator', 'x')])
"""

from __future__ import annotations

import enum
import os
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import itemgetter
from typing import Any, Final

from procvault.monitor.errors import InputError

__all__ = [
    "NESTED",
    "ColumnsBuilder",
    "Tag",
    "Unparseable",
    "XesColumns",
    "decode_value",
]

CASE_KEY: Final = "concept:name"
ACTIVITY_KEY: Final = "concept:name"
TIME_KEY: Final = "time:timestamp"
RESOURCE_KEY: Final = "org:resource"

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US: Final = timedelta(microseconds=1)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


class Tag(enum.IntEnum):
    """The type of an attribute value in the columns."""

    STR = 0
    INT = 1
    FLOAT = 2
    BOOL = 3
    DATE = 4
    NONE = 5
    #: An integer outside the int64 range (kept exactly, in a side list).
    BIGINT = 6


class Unparseable:
    """An attribute value the parser could not read (``<int value="x">``, a bad date).

    pm4py's reader drops such a value (it logs it at INFO level); so does procvault, but it
    counts it in :attr:`XesColumns.dropped_attributes` and, for ``time:timestamp``, says so.
    """

    __slots__ = ("raw", "xes_type")

    def __init__(self, xes_type: str, raw: str | None) -> None:
        self.xes_type = xes_type
        self.raw = raw

    def __repr__(self) -> str:
        return f"Unparseable({self.xes_type!r}, {self.raw!r})"


class _Nested:
    """An attribute with child attributes (XES nested attributes, non-empty lists)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NESTED"


#: The value the lxml reader stores for an attribute with children; pm4py's reader stores a
#: ``{"value": ..., "children": ...}`` dict instead. Both are dropped and counted.
NESTED: Final = _Nested()

#: A value as a reader encoded it for :meth:`ColumnsBuilder.add_encoded_trace`: the value, its
#: key's string code, its :class:`Tag` (``None``: it cannot be kept) and its payload.
Encoded = tuple[Any, int, "int | None", int]

_KCODE: Final = itemgetter(1)
_TAG: Final = itemgetter(2)
_PAYLOAD: Final = itemgetter(3)
#: The resource entry of an event without ``org:resource``.
_NO_RESOURCE: Final[Encoded] = (None, -1, None, -1)

_XES_TYPE: Final = {str: "string", int: "int", float: "float", bool: "boolean"}
#: No timestamp seen yet in a trace (``None`` would match an event without one).
_NOT_YET: Final = object()
#: Event keys that become fields of the event, not attributes.
_SPECIAL_KEYS: Final = frozenset({ACTIVITY_KEY, TIME_KEY, RESOURCE_KEY})


@dataclass(frozen=True, eq=False)
class XesColumns:
    """A parsed log as typed columns, events in file order (case by case).

    Attributes
    ----------
    path
        The file it came from.
    strings
        Every distinct string, once; codes index it.
    case_ids
        Per case (file order, empty traces included) the code of its id.
    case_of, activity, resource, timestamp_us
        Per event: case index, activity code, resource code (``-1``: none), microseconds since
        1970-01-01T00:00:00Z.
    attr_start, attr_key, attr_tag, attr_val
        Event attributes in CSR layout, sorted by key within an event.
    case_attr_start, case_attr_key, case_attr_tag, case_attr_val
        Trace attributes (keys prefixed ``case:``), the same layout per case.
    floats, big_ints
        Payload stores for :attr:`Tag.FLOAT` and :attr:`Tag.BIGINT` values.
    dropped_attributes
        Attribute values that could not be kept (key -> count): nested attributes, values of
        unsupported types, unparseable values.
    """

    path: str
    strings: Sequence[str]
    case_ids: array[int]
    case_of: array[int]
    activity: array[int]
    resource: array[int]
    timestamp_us: array[int]
    attr_start: array[int]
    attr_key: array[int]
    attr_tag: array[int]
    attr_val: array[int]
    case_attr_start: array[int]
    case_attr_key: array[int]
    case_attr_tag: array[int]
    case_attr_val: array[int]
    floats: array[float]
    big_ints: Sequence[int]
    dropped_attributes: Mapping[str, int]

    @property
    def n_events(self) -> int:
        """The number of events."""
        return len(self.activity)

    @property
    def n_cases(self) -> int:
        """The number of cases (traces), empty ones included."""
        return len(self.case_ids)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (not by the string table)."""
        arrays = (
            self.case_ids,
            self.case_of,
            self.activity,
            self.resource,
            self.timestamp_us,
            self.attr_start,
            self.attr_key,
            self.attr_tag,
            self.attr_val,
            self.case_attr_start,
            self.case_attr_key,
            self.case_attr_tag,
            self.case_attr_val,
            self.floats,
        )
        return sum(a.itemsize * len(a) for a in arrays)

    def event_attributes(self, i: int) -> list[tuple[str, Any]]:
        """Event ``i``'s own attributes, decoded, sorted by key."""
        s = self.strings
        return [
            (s[self.attr_key[j]], decode_value(self, self.attr_tag[j], self.attr_val[j]))
            for j in range(self.attr_start[i], self.attr_start[i + 1])
        ]

    def case_attributes(self, c: int) -> list[tuple[str, Any]]:
        """Case ``c``'s trace attributes (keys ``case:...``), decoded, sorted by key."""
        s = self.strings
        return [
            (
                s[self.case_attr_key[j]],
                decode_value(self, self.case_attr_tag[j], self.case_attr_val[j]),
            )
            for j in range(self.case_attr_start[c], self.case_attr_start[c + 1])
        ]


def decode_value(cols: XesColumns, tag: int, val: int) -> Any:  # noqa: PLR0911
    """The Python value of an attribute stored as ``(tag, val)``."""
    if tag == Tag.STR:
        return cols.strings[val]
    if tag == Tag.INT:
        return val
    if tag == Tag.FLOAT:
        return cols.floats[val]
    if tag == Tag.BOOL:
        return val == 1
    if tag == Tag.DATE:
        return EPOCH + timedelta(microseconds=val)
    if tag == Tag.NONE:
        return None
    return cols.big_ints[val]


def to_us(ts: datetime) -> int:
    """Microseconds since the epoch of ``ts`` (naive: taken as UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - EPOCH) // ONE_US


class ColumnsBuilder:
    """Collect traces into :class:`XesColumns` (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self._strings: list[str] = []
        self._codes: dict[str, int] = {}
        self._case_ids = array("i")
        self._seen_cases: set[str] = set()
        self._case_of = array("i")
        self._activity = array("i")
        self._resource = array("i")
        self._ts = array("q")
        self._attr_start = array("q", [0])
        self._attr_key = array("i")
        self._attr_tag = array("b")
        self._attr_val = array("q")
        self._case_attr_start = array("q", [0])
        self._case_attr_key = array("i")
        self._case_attr_tag = array("b")
        self._case_attr_val = array("q")
        self._floats = array("d")
        self._big_ints: list[int] = []
        self._dropped: dict[str, int] = {}
        self._prefixed: dict[str, str] = {}
        self._layouts: dict[tuple[str, ...], tuple[tuple[str, ...], Any, Any]] = {}
        #: The first problem found (a message without the file name), or ``None``.
        self.problem: str | None = None
        self.n_traces = 0

    # ------------------------------------------------------------------------- encoding
    def _code(self, s: str) -> int:
        code = self._codes.get(s)
        if code is None:
            code = self._codes[s] = len(self._strings)
            self._strings.append(s)
        return code

    def _encode(self, value: Any) -> tuple[int, int] | None:  # noqa: PLR0911
        """``(tag, payload)`` for a value, or ``None`` if it cannot be kept."""
        t = type(value)
        if t is str:
            return Tag.STR, self._code(value)
        if t is bool:
            return Tag.BOOL, 1 if value else 0
        if t is float:
            self._floats.append(value)
            return Tag.FLOAT, len(self._floats) - 1
        if t is int:
            if _INT64_MIN <= value <= _INT64_MAX:
                return Tag.INT, value
            self._big_ints.append(value)
            return Tag.BIGINT, len(self._big_ints) - 1
        if t is datetime:
            return Tag.DATE, to_us(value)
        if value is None:
            return Tag.NONE, 0
        return None

    def _drop(self, key: str) -> None:
        self._dropped[key] = self._dropped.get(key, 0) + 1

    # ------------------------------------------------------------------------- traces
    def add_trace(self, attributes: Mapping[Any, Any], events: Sequence[Mapping[Any, Any]]) -> None:
        """Add one trace: its attributes and its events' attributes, in file order.

        Values are Python values as a reader produced them (``str``, ``int``, ``float``,
        ``bool``, ``datetime``, ``None``), :data:`NESTED` or a pm4py nested-attribute dict,
        or :class:`Unparseable`. The checks run in the order pm4py-based replay ran them (case
        id, a second trace with that id, then each event's activity and timestamp); after the
        first problem (kept in :attr:`problem`) traces are counted but no longer stored.
        """
        case = self._begin_case(attributes)
        if case is None:
            return
        ci, case_id, case_keys = case
        self._add_events(ci, case_id, case_keys, events)

    def _begin_case(self, attributes: Mapping[Any, Any]) -> tuple[int, str, set[str]] | None:
        """Check a trace's case id and store its attributes: ``(case index, id, keys)``."""
        self.n_traces += 1
        if self.problem is not None:
            return None
        trace_no = self.n_traces
        case_id = attributes.get(CASE_KEY)
        if case_id is None or _is_not_a_value(case_id) or str(case_id) == "":
            self.problem = f"trace #{trace_no} has no case id ({CASE_KEY})"
            return None
        case_id = str(case_id)
        if case_id in self._seen_cases:
            self.problem = f"case id {case_id!r} appears in more than one trace"
            return None
        if None in attributes:
            self.problem = f"trace #{trace_no} (case {case_id!r}) has an attribute without a key"
            return None
        self._seen_cases.add(case_id)
        ci = len(self._case_ids)
        self._case_ids.append(self._code(case_id))

        # trace attributes, once per case
        case_keys: set[str] = set()
        pairs = []
        for key, value in attributes.items():
            if key == CASE_KEY:
                continue
            pkey = self._prefixed.get(key)
            if pkey is None:
                pkey = self._prefixed[key] = "case:" + key
            enc = self._encode(value)
            if enc is None:
                self._drop(pkey)
            else:
                pairs.append((pkey, enc))
                case_keys.add(pkey)
        pairs.sort()
        ck, ct, cv = self._case_attr_key, self._case_attr_tag, self._case_attr_val
        for pkey, (tag, val) in pairs:
            ck.append(self._code(pkey))
            ct.append(tag)
            cv.append(val)
        self._case_attr_start.append(len(ck))
        return ci, case_id, case_keys

    def _add_events(
        self, ci: int, case_id: str, case_keys: set[str], events: Sequence[Mapping[Any, Any]]
    ) -> None:
        """Add a case's events (values as :meth:`add_trace` takes them)."""
        codes, strings = self._codes, self._strings
        codes_get = codes.get
        floats, dropped = self._floats, self._dropped
        ak, at, av = self._attr_key, self._attr_tag, self._attr_val
        a_start, case_of, act_col = self._attr_start, self._case_of, self._activity
        res_col, ts_col = self._resource, self._ts
        t_str, t_int, t_float, t_bool, t_none = Tag.STR, Tag.INT, Tag.FLOAT, Tag.BOOL, Tag.NONE
        skipped = _SPECIAL_KEYS
        tag: int
        last_ts: Any = _NOT_YET  # the previous event's timestamp object (ties share one)
        last_us = 0
        for ei, ev in enumerate(events):
            activity = ev.get(ACTIVITY_KEY)
            if type(activity) is not str:
                activity = "" if activity is None or _is_not_a_value(activity) else str(activity)
            if not activity:
                where = f"event #{ei + 1} of case {case_id!r}"
                self.problem = f"{where} has no activity name ({ACTIVITY_KEY})"
                return
            ts = ev.get(TIME_KEY)
            if ts is not last_ts:
                if type(ts) is not datetime:
                    self.problem = _timestamp_problem(f"event #{ei + 1} of case {case_id!r}", ts)
                    return
                last_ts = ts
                last_us = to_us(ts)
            if None in ev:
                where = f"event #{ei + 1} of case {case_id!r}"
                self.problem = f"{where} has an attribute without a key"
                return
            for key in sorted(ev):
                if key in skipped:
                    continue
                value = ev[key]
                t = type(value)
                if t is str:
                    code = codes_get(value)
                    if code is None:
                        code = codes[value] = len(strings)
                        strings.append(value)
                    tag, val = t_str, code
                elif t is bool:
                    tag, val = t_bool, 1 if value else 0
                elif t is float:
                    floats.append(value)
                    tag, val = t_float, len(floats) - 1
                elif t is int and _INT64_MIN <= value <= _INT64_MAX:
                    tag, val = t_int, value
                elif value is None:
                    tag, val = t_none, 0
                else:
                    enc = self._encode(value)
                    if enc is None:
                        dropped[key] = dropped.get(key, 0) + 1
                        continue
                    tag, val = enc
                if case_keys and key in case_keys:
                    self.problem = (
                        f"event #{ei + 1} of case {case_id!r} has an attribute {key!r} "
                        "that is also a trace attribute"
                    )
                    return
                code = codes_get(key)
                if code is None:
                    code = codes[key] = len(strings)
                    strings.append(key)
                ak.append(code)
                at.append(tag)
                av.append(val)
            a_start.append(len(ak))
            case_of.append(ci)
            code = codes_get(activity)
            if code is None:
                code = codes[activity] = len(strings)
                strings.append(activity)
            act_col.append(code)
            resource = ev.get(RESOURCE_KEY)
            if resource is None or _is_not_a_value(resource):
                if resource is not None:
                    self._drop(RESOURCE_KEY)
                res_col.append(-1)
            else:
                res_col.append(self._code(resource if type(resource) is str else str(resource)))
            ts_col.append(last_us)

    def add_encoded_trace(
        self,
        attributes: Mapping[str, Encoded],
        events: Sequence[Mapping[str, Encoded]],
        plain: bool,
    ) -> None:
        """:meth:`add_trace` for values the reader has already encoded (see :data:`Encoded`).

        ``plain``: every value in the trace is one :meth:`is_plain` accepts. The same checks and
        the same columns as :meth:`add_trace` (up to the order of the string table); a trace
        that is not plain, or has an event without an activity or a timestamp or with an
        attribute that is also a trace attribute, is handed to :meth:`add_trace` whole.
        """
        if plain:
            layouts = self._layouts
            entries: list[Encoded] = []
            specials: list[Encoded] = []
            counts: list[int] = []
            n = len(self._attr_key)
            for ev in events:
                shape = tuple(ev)  # the keys in file order
                layout = layouts.get(shape)
                if layout is None:
                    layout = self._layout(shape)
                keys, getter, special = layout
                if special is None:  # no activity or no timestamp
                    break
                if keys:
                    entries.extend(getter(ev))
                    n += len(keys)
                counts.append(n)
                specials.extend(special(ev))
            else:
                case = self._begin_case({k: e[0] for k, e in attributes.items()})
                if case is None:
                    return
                ci, _case_id, case_keys = case
                if not case_keys or all(case_keys.isdisjoint(ev) for ev in events):
                    self._attr_start.extend(counts)
                    self._attr_key.extend(map(_KCODE, entries))
                    self._attr_tag.extend(map(_TAG, entries))
                    self._attr_val.extend(map(_PAYLOAD, entries))
                    self._case_of.extend(repeat(ci, len(events)))
                    self._activity.extend(map(_PAYLOAD, specials[0::3]))
                    self._ts.extend(map(_PAYLOAD, specials[1::3]))
                    self._resource.extend(map(_PAYLOAD, specials[2::3]))
                    return
                self._add_events(
                    ci, _case_id, case_keys, [{k: e[0] for k, e in ev.items()} for ev in events]
                )
                return
        self.add_trace(
            {k: e[0] for k, e in attributes.items()},
            [{k: e[0] for k, e in ev.items()} for ev in events],
        )

    def _layout(self, shape: tuple[str, ...]) -> tuple[tuple[str, ...], Any, Any]:
        """An event shape's attribute keys in column order and getters of their entries."""
        keys = tuple(k for k in sorted(shape) if k not in _SPECIAL_KEYS)
        getter = itemgetter(*keys) if len(keys) > 1 else (lambda ev, k=keys: (ev[k[0]],))
        special: Any = None
        if ACTIVITY_KEY in shape and TIME_KEY in shape:
            if RESOURCE_KEY in shape:
                special = itemgetter(ACTIVITY_KEY, TIME_KEY, RESOURCE_KEY)
            else:
                special = lambda ev: (ev[ACTIVITY_KEY], ev[TIME_KEY], _NO_RESOURCE)  # noqa: E731
        if len(self._layouts) >= 4096:
            self._layouts.clear()
        self._layouts[shape] = layout = (keys, getter, special)
        return layout

    def is_plain(self, key: str, enc: Encoded) -> bool:
        """Whether :meth:`add_encoded_trace` may take ``enc`` under ``key`` as it is.

        A value that can be kept; for the activity a non-empty string, for the timestamp a
        date, for the resource a string.
        """
        tag = enc[2]
        if key in _SPECIAL_KEYS:
            if key == ACTIVITY_KEY:
                return tag == Tag.STR and enc[0] != ""
            if key == TIME_KEY:
                return tag == Tag.DATE
            return tag == Tag.STR
        return tag is not None

    def code(self, s: str) -> int:
        """The string table's code for ``s`` (added if new)."""
        return self._code(s)

    def encode(self, key: str, value: Any) -> Encoded:
        """``value`` under ``key`` as :meth:`add_encoded_trace` takes it."""
        enc = self._encode(value)
        if enc is None:
            return (value, self._code(key), None, 0)
        return (value, self._code(key), enc[0], enc[1])

    def finish(self) -> XesColumns:
        """The columns; raises :class:`InputError` for the first problem found, if any."""
        if self.problem is not None:
            raise InputError(f"{self.path}: {self.problem}")
        if self.n_traces == 0:
            raise InputError(f"{self.path}: the log holds no traces")
        return XesColumns(
            path=self.path,
            strings=self._strings,
            case_ids=self._case_ids,
            case_of=self._case_of,
            activity=self._activity,
            resource=self._resource,
            timestamp_us=self._ts,
            attr_start=self._attr_start,
            attr_key=self._attr_key,
            attr_tag=self._attr_tag,
            attr_val=self._attr_val,
            case_attr_start=self._case_attr_start,
            case_attr_key=self._case_attr_key,
            case_attr_tag=self._case_attr_tag,
            case_attr_val=self._case_attr_val,
            floats=self._floats,
            big_ints=self._big_ints,
            dropped_attributes=dict(sorted(self._dropped.items())),
        )


def _timestamp_problem(where: str, ts: Any) -> str:
    """What is wrong with an event's ``time:timestamp`` value (not a ``datetime``)."""
    if type(ts) is Unparseable and ts.xes_type == "date":
        return f"{where} has an unparseable timestamp {ts.raw!r} ({TIME_KEY})"
    if ts is None or _is_not_a_value(ts):
        return f"{where} has no timestamp ({TIME_KEY})"
    kind = _XES_TYPE.get(type(ts), type(ts).__name__)
    return f"{where} has a {kind} {TIME_KEY} ({ts!r}), not a date"


def _is_not_a_value(v: Any) -> bool:
    """True for nested attributes (either reader's form) and unparseable values."""
    return type(v) in (_Nested, Unparseable, dict)


def add_pm4py_log(builder: ColumnsBuilder, traces: Iterable[Any]) -> None:
    """Feed a pm4py legacy ``EventLog`` (its traces) into ``builder``."""
    for trace in traces:
        builder.add_trace(trace.attributes, list(trace))
