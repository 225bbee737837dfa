"""The one duration grammar of procvault's files and options.

A duration is a number of seconds, or one or more ``<number><unit>`` parts (``us``, ``ms``,
``s``, ``m``, ``h``, ``d``, ``w``), summed: ``500ms``, ``30s``, ``5m``, ``1.5h``, ``1h30m``,
``2w``.

>>> parse_duration("1h30m"), parse_duration(90)
(datetime.timedelta(seconds=5400), datetime.timedelta(seconds=90))
>>> parse_duration("500ms")
datetime.timedelta(microseconds=500000)
>>> parse_duration("soon", "panes.length")
Traceback (most recent call last):
...
ValueError: panes.length: 'soon' is not a duration (write e.g. 500ms, 30s, 5m, 1h, 1h30m, 1d, 1w)
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Final

__all__ = ["parse_duration"]

_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d|w)")
_UNITS: Final = {
    "us": timedelta(microseconds=1),
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def parse_duration(value: object, where: str = "") -> timedelta:
    """``value`` as a :class:`~datetime.timedelta`; ``ValueError`` naming ``where`` (the
    setting) and what to write otherwise."""
    prefix = f"{where}: " if where else ""
    problem = ValueError(
        f"{prefix}{value!r} is not a duration (write e.g. 500ms, 30s, 5m, 1h, 1h30m, 1d, 1w)"
    )
    if isinstance(value, bool):
        raise problem
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise problem
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise problem
    text = value.replace(" ", "")
    pos, total = 0, timedelta(0)
    for m in _PART.finditer(text):
        if m.start() != pos:
            raise problem
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(text):
        try:
            return timedelta(seconds=float(text))  # a number written as a string
        except ValueError:
            raise problem from None
    return total
