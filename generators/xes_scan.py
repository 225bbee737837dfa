"""A fast XES reader for the common subset of XES, with lxml's reader as the fallback.

Most XES files (those OpenXES, ProM and pm4py write) use a small, regular subset of XML in
their traces: ``<trace>``, ``<event>``, their end tags, and self-closed attribute elements
``<TYPE key="K" value="V"/>`` separated by whitespace. This reader splits the decompressed text
on ``<`` (one C call per chunk) and looks each piece up in a dictionary of the pieces seen
before (``string key="org:group" value="A"/>`` recurs millions of times), so the common case
costs one dictionary lookup per element instead of a parser callback, an attribute mapping and
a conversion. A piece not seen before is matched against a strict pattern and converted exactly
as :mod:`~procvault.generators.xes_lxml` converts values.

The subset is checked, not assumed: every piece must be one of those tokens (followed by
whitespace only), the nesting must be log / trace / event, and the part before the first
``<trace>`` (prolog, ``<log>``, extensions, globals, classifiers, log attributes) is parsed by
lxml's reader itself. Anything else (comments, CDATA or text among the traces, entities other
than the predefined ones and character references, a literal tab or line break inside a value,
single quotes, attributes in another order, nested attributes, lists, a ``DOCTYPE``, a
malformed or truncated file, a structural problem) makes :func:`read_columns` return ``None``,
and the caller reads the file with lxml's reader, which gives the usual result or the usual
error. A file this reader accepts is well-formed XML whose lxml reading is what this reader
produced (``tests/unit/test_xes_scan.py`` compares the two on every shared log and on each
construct outside the subset).
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from lxml import etree  # type: ignore[import-untyped]

from .xes_columns import ColumnsBuilder, Tag, Unparseable, XesColumns, to_us
from .xes_lxml import _XesTarget, parse_date

__all__ = ["read_columns"]

_CHUNK: Final = 4 << 20
#: Pieces remembered at most (the cache is emptied when it grows past this).
_CACHE_MAX: Final = 1 << 18
#: How far into the file the first ``<trace>`` is looked for before giving up.
_HEADER_MAX: Final = 64 << 20

_WS: Final = "[ \t\n\r]"
# A value: no quote, no '<', no literal control character (libxml2 normalises tab, CR and LF
# in attribute values to spaces, and refuses the others), no non-character; '&' only as a
# predefined entity or a character reference (checked again when it is decoded).
_PLAIN: Final = '[^"<&\x00-\x1f\ufffe\uffff]*'
_VALUE: Final = f"{_PLAIN}(?:&(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);{_PLAIN})*"
_ATTR: Final = re.compile(
    f'(string|id|date|int|float|boolean){_WS}+key="({_VALUE})"{_WS}+value="({_VALUE})"'
    f"{_WS}*/>{_WS}*"
)
_TS_KEY: Final = "time:timestamp"
_DATE_TAG: Final = int(Tag.DATE)
_fromisoformat = datetime.fromisoformat
_TS_PIECE: Final = f'date key="{_TS_KEY}" value="'
_TS_AT: Final = len(_TS_PIECE)
_TAIL: Final = re.compile(f'"{_WS}*/>{_WS}*')
_TAG: Final = re.compile(f"(/?)(event|trace|log){_WS}*>{_WS}*")
_REF: Final = re.compile("&(?:(amp|lt|gt|quot|apos)|#([0-9]+)|#x([0-9a-fA-F]+));")
_NAMED: Final = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}

# Piece kinds.
_GOOD: Final = 0  # an attribute with a value
_BAD: Final = 1  # an attribute whose value does not convert (kept only if the key is new)
_ODD: Final = 7  # a value the builder's fast path does not take (a non-string activity...)
_EVENT: Final = 2
_EVENT_END: Final = 3
_TRACE: Final = 4
_TRACE_END: Final = 5
_LOG_END: Final = 6


class _Fallback(Exception):
    """The file is outside the subset: read it with lxml's reader."""


def _char_ok(c: int) -> bool:
    """XML 1.0's ``Char`` production."""
    return (
        c in (0x9, 0xA, 0xD)
        or 0x20 <= c <= 0xD7FF
        or 0xE000 <= c <= 0xFFFD
        or 0x10000 <= c <= 0x10FFFF
    )


def _unescape(text: str) -> str:
    """Expand the predefined entities and character references (libxml2's reading)."""

    def one(m: re.Match[str]) -> str:
        if m.group(1):
            return _NAMED[m.group(1)]
        c = int(m.group(2), 10) if m.group(2) else int(m.group(3), 16)
        if not _char_ok(c):
            raise _Fallback
        return chr(c)

    return _REF.sub(one, text) if "&" in text else text


def _convert(kind: str, raw: str) -> tuple[int, Any]:
    """``(piece kind, value)`` as the lxml reader converts a value of this XES type."""
    if kind in {"string", "id"}:
        return _GOOD, raw
    if kind == "boolean":
        return _GOOD, raw.lower() == "true"
    try:
        if kind == "date":
            return _GOOD, parse_date(raw)
        if kind == "int":
            return _GOOD, int(raw)
        return _GOOD, float(raw)
    except (ValueError, TypeError, OverflowError):
        return _BAD, Unparseable(kind, raw)


class _Pieces:
    """Classify pieces (the text between two ``<``), remembering the ones seen before."""

    def __init__(self, builder: ColumnsBuilder) -> None:
        self.encode = builder.encode
        self.is_plain = builder.is_plain
        self.ts_code = builder.code(_TS_KEY)
        self.cache: dict[str, tuple[Any, ...]] = {}
        self.last_date: tuple[str, tuple[Any, ...]] = ("", ())
        self.tails: set[str] = set()

    def _timestamp(self, raw: str) -> tuple[Any, ...]:
        """The entry of an event's ``time:timestamp`` (what :func:`parse_date` reads).

        Its value keeps the offset it was written with (only its payload, microseconds since
        the epoch, is used for a timestamp): converting it to UTC costs more than the parse.
        """
        try:
            dt = _fromisoformat(raw[:-1] + "+00:00" if raw.endswith("Z") else raw)
        except ValueError:
            dt = None
        if dt is None or not 1 < dt.year < 9999:  # bad, or UTC might leave the range
            return self._entry(*_convert("date", raw), _TS_KEY)
        return (_GOOD, _TS_KEY, (dt, self.ts_code, _DATE_TAG, to_us(dt)))

    def _entry(self, code: int, value: Any, key: str) -> tuple[Any, ...]:
        enc = self.encode(key, value)
        if code == _GOOD and not self.is_plain(key, enc):
            code = _ODD
        return (code, key, enc)

    def _tail_ok(self, tail: str) -> bool:
        """Whether ``tail`` (from a value's closing quote on) ends an attribute element."""
        if tail in self.tails:
            return True
        if _TAIL.fullmatch(tail) is None:
            return False
        self.tails.add(tail)
        return True

    def classify(self, piece: str) -> tuple[Any, ...]:
        """The entry for a piece not in :attr:`cache` (added to it unless it is a date)."""
        if piece == self.last_date[0]:
            return self.last_date[1]
        if piece.startswith(_TS_PIECE):  # an event's timestamp: nearly every one is new
            end = piece.find('"', _TS_AT)
            raw = piece[_TS_AT:end]
            tail = piece[end:]
            # printable: no control character, no non-character; no entity to expand
            if end > 0 and raw.isprintable() and "&" not in raw and self._tail_ok(tail):
                entry: tuple[Any, ...] = self._timestamp(raw)
                self.last_date = (piece, entry)
                return entry
        m = _ATTR.fullmatch(piece)
        if m is not None:
            kind, key, raw = m.group(1), _unescape(m.group(2)), _unescape(m.group(3))
            entry = self._entry(*_convert(kind, raw), key)
            if kind == "date":  # mostly distinct: remember the last one only (ties repeat)
                self.last_date = (piece, entry)
                return entry
        else:
            m = _TAG.fullmatch(piece)
            if m is None:
                raise _Fallback
            close, name = m.group(1), m.group(2)
            if name == "log":
                if not close:
                    raise _Fallback
                entry = (_LOG_END,)
            elif name == "event":
                entry = (_EVENT_END,) if close else (_EVENT,)
            else:
                entry = (_TRACE_END,) if close else (_TRACE,)
        cache = self.cache
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[piece] = entry
        return entry


class _Traces:
    """The state machine over the pieces after the header; traces go to the builder."""

    def __init__(self, builder: ColumnsBuilder) -> None:
        self.builder = builder
        self.pieces = _Pieces(builder)
        self.trace: dict[Any, Any] | None = None
        self.event: dict[Any, Any] | None = None
        self.events: list[dict[Any, Any]] = []
        self.plain = True
        self.ended = False

    def feed(self, pieces: list[str]) -> None:
        """Consume pieces (each the text after a ``<``); raises :class:`_Fallback`."""
        get = self.pieces.cache.get
        classify = self.pieces.classify
        add_trace = self.builder.add_encoded_trace
        trace, event, events, plain = self.trace, self.event, self.events, self.plain
        store = event if event is not None else trace
        if self.ended and pieces:
            raise _Fallback
        for p in pieces:
            e = get(p)
            if e is None:
                e = classify(p)
            op = e[0]
            if op == _GOOD:
                if store is not None:
                    store[e[1]] = e[2]
            elif op == _EVENT_END:
                if event is None:
                    raise _Fallback
                events.append(event)
                event = None
                store = trace
            elif op == _EVENT:
                if event is not None or trace is None:
                    raise _Fallback
                event = store = {}
            elif op == _TRACE:
                if trace is not None:
                    raise _Fallback
                trace = store = {}
                events = []
                plain = True
            elif op == _TRACE_END:
                if trace is None or event is not None:
                    raise _Fallback
                add_trace(trace, events, plain)
                trace = store = None
                events = []
            elif op == _BAD:
                if store is not None and e[1] not in store:
                    store[e[1]] = e[2]
                    plain = False
            elif op == _ODD:
                if store is not None:
                    store[e[1]] = e[2]
                    plain = False
            else:  # </log>: only whitespace may follow
                if trace is not None:
                    raise _Fallback
                self.ended = True
                if p is not pieces[-1]:
                    raise _Fallback
        self.trace, self.event, self.events, self.plain = trace, event, events, plain


def _header_columns(header: bytes, builder: ColumnsBuilder) -> None:
    """Parse the part before the first ``<trace>`` with lxml's reader (closing ``<log>``).

    Raises :class:`_Fallback` unless it is a well-formed start of an XES log with no trace or
    event in it: then the cut is inside ``<log>``, between two elements.
    """
    if b"<!DOCTYPE" in header:
        raise _Fallback
    target = _XesTarget(builder)
    parser = etree.XMLParser(target=target, encoding="utf-8")
    try:
        parser.feed(header + b"</log>")
        parser.close()
    except Exception:  # anything: lxml's reader will say what is wrong
        raise _Fallback from None
    if not target.seen_log() or target.structure is not None or builder.n_traces:
        raise _Fallback


def read_columns(
    path: Path, progress: Callable[[int, int], None] | None = None
) -> XesColumns | None:
    """Read ``path`` into columns, or ``None`` if it is outside the subset (or not readable).

    ``progress(done, total)`` as :func:`.xes_lxml.read_columns` reports it. Problems with the
    traces (a missing case id or timestamp...) are raised as :class:`InputError` by the builder
    as in the lxml reader; everything about the XML itself is left to that reader.
    """
    builder = ColumnsBuilder(path)
    traces = _Traces(builder)
    try:
        with open(path, "rb") as raw:
            total = os.fstat(raw.fileno()).st_size
            gz = path.name.lower().endswith(".gz")
            fh = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            read = fh.read
            buf = b""
            # the header: up to the first <trace>
            while (cut := buf.find(b"<trace")) < 0:
                chunk = read(_CHUNK)
                if not chunk or len(buf) > _HEADER_MAX:
                    return None
                buf += chunk
            _header_columns(buf[:cut], builder)
            buf = buf[cut:]
            while True:
                chunk = read(_CHUNK)
                if chunk:
                    buf += chunk
                    cut = buf.rfind(b"<")
                    body, buf = buf[1:cut], buf[cut:]
                else:
                    body, buf = buf[1:], b""
                if body:
                    traces.feed(body.decode("utf-8").split("<"))
                if progress is not None:
                    progress(raw.tell(), total)
                if not chunk:
                    break
    except (_Fallback, OSError, EOFError, zlib.error, UnicodeDecodeError):
        return None
    if not traces.ended:
        return None
    return builder.finish()
