r"""Write events as an XES log (``.xes`` or gzip-compressed ``.xes.gz``).

Traces appear in the order of their first event, events in the order given. The writer streams
(no DOM), escapes every value, and writes gzip with a zero modification time, so the same
events always give the same bytes. Attributes of the types an :class:`Event` may hold are
written with their XES type; ``org:resource`` comes from :attr:`Event.resource`.

Examples
--------
>>> import io
>>> from datetime import datetime, UTC
>>> from procvault.monitor.event import Event
>>> ev = Event.create("c<1>", "Triage & co", datetime(2024, 5, 1, 9, 30, tzinfo=UTC))
>>> buf = io.StringIO()
>>> write_xes_text([ev], buf)
1
>>> print(buf.getvalue().splitlines()[-3].replace("><", ">\n<"))
<event>
<string key="concept:name" value="Triage &amp; co"/>
<date key="time:timestamp" value="2024-05-01T09:30:00.000+00:00"/>
</event>
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from xml.sax.saxutils import quoteattr

from procvault.monitor.event import Event

__all__ = ["write_xes", "write_xes_text"]

_HEADER = """<?xml version="1.0" encoding="UTF-8" ?>
<log xes.version="1.0" xes.features="nested-attributes" xmlns="http://www.xes-standard.org/">
<extension name="Concept" prefix="concept" uri="http://www.xes-standard.org/concept.xesext"/>
<extension name="Time" prefix="time" uri="http://www.xes-standard.org/time.xesext"/>
<extension name="Organizational" prefix="org" uri="http://www.xes-standard.org/org.xesext"/>
<global scope="trace"><string key="concept:name" value="__INVALID__"/></global>
<global scope="event"><string key="concept:name" value="__INVALID__"/></global>
<classifier name="Activity" keys="concept:name"/>
"""


def _date(ts: datetime) -> str:
    spec = "milliseconds" if ts.microsecond % 1000 == 0 else "microseconds"
    return ts.isoformat(timespec=spec)


def _attr(key: str, value: Any) -> str:
    k = quoteattr(key)
    if isinstance(value, bool):
        return f"<boolean key={k} value={quoteattr(str(value).lower())}/>"
    if isinstance(value, int):
        return f"<int key={k} value={quoteattr(str(value))}/>"
    if isinstance(value, float):
        return f"<float key={k} value={quoteattr(repr(value))}/>"
    if isinstance(value, datetime):
        return f"<date key={k} value={quoteattr(_date(value))}/>"
    if value is None:
        return ""
    return f"<string key={k} value={quoteattr(str(value))}/>"


def write_xes_text(events: Iterable[Event], out: TextIO) -> int:
    """Write ``events`` as XES text to ``out``; return the number of traces."""
    traces: dict[str, list[Event]] = {}
    for ev in events:
        if not ev.is_marker:
            traces.setdefault(ev.case_id, []).append(ev)
    out.write(_HEADER)
    for case_id, evs in traces.items():
        out.write(f"<trace>{_attr('concept:name', case_id)}\n")
        for ev in evs:
            parts = [_attr("concept:name", ev.activity), _attr("time:timestamp", ev.timestamp)]
            if ev.resource is not None:
                parts.append(_attr("org:resource", ev.resource))
            parts.extend(_attr(k, v) for k, v in ev.attributes)
            out.write("<event>" + "".join(parts) + "</event>\n")
        out.write("</trace>\n")
    out.write("</log>\n")
    return len(traces)


def write_xes(events: Iterable[Event], path: str | os.PathLike[str]) -> int:
    """Write ``events`` to ``path`` (gzip when it ends in ``.gz``); return the number of traces.

    The file is written next to its destination and renamed into place, so a failed write never
    leaves a truncated log behind.
    """
    target = Path(path)
    tmp = target.with_name(target.name + ".part")
    try:
        with open(tmp, "wb") as raw:
            if target.name.endswith(".gz"):
                with (
                    gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
                    io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as text,
                ):
                    n = write_xes_text(events, text)
            else:
                with io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as text:
                    n = write_xes_text(events, text)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n
