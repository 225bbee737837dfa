"""Stream an XES file through lxml's parser into :class:`~.xes_columns.XesColumns`.

lxml's feed parser with a *target* (https://lxml.de/parsing.html#the-target-parser-interface)
calls :meth:`_XesTarget.start` and :meth:`_XesTarget.end` for each element as the bytes arrive
(1 MiB at a time, decompressed on the fly for ``.gz``), and builds no tree: one trace's
attributes and events are held as dicts until the trace closes, then handed to the
:class:`~.xes_columns.ColumnsBuilder`, and freed.

What is read is what pm4py's ``iterparse`` importer reads (libxml2 underneath, forced UTF-8,
the same error texts for malformed XML): ``string``, ``id``, ``date``, ``int``, ``float``,
``boolean`` and ``list`` attributes of traces and events, by their local name with or without the
XES namespace; log-level attributes, ``<global>``, ``<extension>`` and ``<classifier>`` are
skipped. Values are converted as pm4py converts them: ``int()``, ``float()``, ``value.lower() ==
"true"``, dates by :meth:`datetime.fromisoformat` (a final ``Z`` read as ``+00:00``) converted
to UTC, naive ones taken as UTC. An attribute with child elements (a nested attribute, a
non-empty list) is :data:`~.xes_columns.NESTED`; a value that does not convert is
:class:`~.xes_columns.Unparseable`. As in pm4py, the last occurrence of a key wins, except that
an unparseable value never replaces a good one.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from lxml import etree  # type: ignore[import-untyped]

from .xes_columns import NESTED, ColumnsBuilder, Unparseable, XesColumns

__all__ = ["read_columns"]

_CHUNK: Final = 1 << 20

# Element kinds.
_OTHER: Final = 0
_LOG: Final = 1
_TRACE: Final = 2
_EVENT: Final = 3
_STRING: Final = 4
_DATE: Final = 5
_INT: Final = 6
_FLOAT: Final = 7
_BOOLEAN: Final = 8
_LIST: Final = 9

_LOCAL_KINDS: Final = {
    "log": _LOG,
    "trace": _TRACE,
    "event": _EVENT,
    "string": _STRING,
    "id": _STRING,
    "date": _DATE,
    "int": _INT,
    "float": _FLOAT,
    "boolean": _BOOLEAN,
    "list": _LIST,
}
_XES_TYPE: Final = {_DATE: "date", _INT: "int", _FLOAT: "float"}

_fromisoformat = datetime.fromisoformat


def parse_date(text: str) -> datetime:
    """An XES date as pm4py reads it: ISO 8601, ``Z`` for UTC, converted to UTC.

    >>> parse_date("2014-10-22T11:15:41.000+02:00").isoformat()
    '2014-10-22T09:15:41+00:00'
    >>> parse_date("2014-10-22T11:15:41Z").isoformat(), parse_date("2014-10-22").isoformat()
    ('2014-10-22T11:15:41+00:00', '2014-10-22T00:00:00+00:00')
    """
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    dt = _fromisoformat(text)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


class _XesTarget:
    """The parser target: a small state machine over XES's log / trace / event nesting.

    lxml calls ``start``, ``end`` and ``close``; they are closures over the parse state (faster
    than attribute lookups on ``self`` in the per-element path).
    """

    def __init__(self, builder: ColumnsBuilder) -> None:
        kinds: dict[str, int] = {}
        kinds_get = kinds.get
        skip = 0  # > 0 while inside an ignored subtree
        seen_log = False
        trace: dict[Any, Any] | None = None
        events: list[dict[Any, Any]] = []
        event: dict[Any, Any] | None = None
        store: dict[Any, Any] | None = None  # where attributes go now
        attr_key: Any = None  # the open attribute element's key
        attr_open = False
        last_date_text: str | None = None
        last_date: Any = None
        add_trace = builder.add_trace
        nested, unparseable = NESTED, Unparseable
        k_string, k_boolean, k_list, k_date, k_int = _STRING, _BOOLEAN, _LIST, _DATE, _INT
        self.structure: str | None = None  # the first structural problem

        def classify(tag: str) -> int:
            if not isinstance(tag, str):  # a comment or PI reported as an element
                return _OTHER
            local = tag.rpartition("}")[2] if tag[:1] == "{" else tag
            kind = kinds[tag] = _LOCAL_KINDS.get(local, _OTHER)
            return kind

        def start(tag: str, attrib: Any) -> None:
            nonlocal skip, seen_log, trace, events, event, store, attr_key, attr_open
            nonlocal last_date_text, last_date
            if skip:
                skip += 1
                return
            kind = kinds_get(tag)
            if kind is None:
                kind = classify(tag)
            if attr_open:
                # A child of an attribute element: the attribute is nested; skip its children.
                if store is not None:
                    store[attr_key] = nested
                skip = 1
                return
            if kind >= k_string:
                if store is None:  # log-level attribute, or inside <global>
                    skip = 1
                    return
                attr_key = key = attrib.get("key")
                attr_open = True
                raw = attrib.get("value")
                if kind == k_string:
                    store[key] = raw
                elif kind == k_boolean:
                    store[key] = str(raw).lower() == "true"
                elif kind == k_list:
                    store[key] = None
                else:
                    try:
                        if kind == k_date:
                            if raw != last_date_text:
                                last_date = parse_date(raw)
                                last_date_text = raw
                            store[key] = last_date
                        elif kind == k_int:
                            store[key] = int(raw)
                        else:
                            store[key] = float(raw)
                    except (ValueError, TypeError, OverflowError):
                        if key not in store:
                            store[key] = unparseable(_XES_TYPE[kind], raw)
                return
            if kind == _EVENT:
                if event is not None:
                    self._structure("file contains <event> in another <event> tag")
                elif trace is None:
                    self._structure("file contains an <event> outside a <trace>")
                event = store = {}
            elif kind == _TRACE:
                if trace is not None:
                    self._structure("file contains <trace> in another <trace> tag")
                trace = store = {}
                events = []
            elif kind == _LOG:
                if seen_log:
                    self._structure("file contains > 1 <log> tags")
                seen_log = True
            elif not seen_log:
                raise _NotXes(tag)
            else:  # extension, global, classifier, container, unknown: skip it whole
                skip = 1

        def end(tag: str) -> None:
            nonlocal skip, attr_open, trace, events, event, store
            if skip:
                skip -= 1
                return
            if attr_open:
                attr_open = False
                return
            kind = kinds_get(tag, _OTHER)
            if kind == _EVENT:
                if event is not None and trace is not None:
                    events.append(event)
                event = None
                store = trace
            elif kind == _TRACE:
                if trace is not None:
                    add_trace(trace, events)
                trace = event = store = None
                events = []

        def close() -> None:
            return None

        self.start = start
        self.end = end
        self.close = close

        def log_seen() -> bool:
            return seen_log

        self.seen_log = log_seen

    def _structure(self, problem: str) -> None:
        if self.structure is None:
            self.structure = problem


class _NotXes(Exception):
    def __init__(self, tag: str) -> None:
        super().__init__(tag)
        self.tag = tag


def read_columns(path: Path, progress: Callable[[int, int], None] | None = None) -> XesColumns:
    """Parse ``path`` (``.xes``, or gzip if the name ends in ``.gz``) into columns.

    ``progress(done, total)``, if given, is called after each chunk with the bytes of the file
    read so far (compressed bytes for ``.gz``) and its size.

    Raises :class:`~procvault.monitor.errors.InputError` (one line, naming the file) for an
    unreadable, truncated, malformed or non-XES file, and for the first trace or event replay
    cannot use.
    """
    from procvault.monitor.errors import InputError

    builder = ColumnsBuilder(path)
    target = _XesTarget(builder)
    parser = etree.XMLParser(target=target, encoding="utf-8")
    problem: str | None = None
    try:
        with open(path, "rb") as raw:
            total = os.fstat(raw.fileno()).st_size
            gz = path.name.lower().endswith(".gz")
            fh = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            read, feed = fh.read, parser.feed
            while chunk := read(_CHUNK):
                feed(chunk)
                if progress is not None:
                    progress(raw.tell(), total)
        parser.close()
    except _NotXes as exc:
        local = str(exc.tag).rpartition("}")[2]
        problem = f"not an XES log: the root element is <{local}>, not <log>"
    except EOFError:
        problem = "truncated file (compressed data ends early)"
    except OSError as exc:
        problem = f"cannot read: {exc.strerror or exc}"
    except (etree.XMLSyntaxError, zlib.error) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # The feed parser has no file name; pm4py's iterparse names the file it was given.
        first = first.replace("(<string>, line ", f"({path.name}, line ")
        problem = f"not a valid XES log: {first}"
    if problem is None and not target.seen_log():
        problem = "not an XES log: no <log> element"
    if problem is None and target.structure is not None:
        problem = f"not a valid XES log: {target.structure}"
    if problem is not None:
        raise InputError(f"{path}: {problem}")
    return builder.finish()
