"""Collection windows: when an organization lets its events leave, in local wall-clock time.

A window is a set of weekdays and a span of local hours in an IANA time zone, for example
Monday to Friday 09:00-17:00 in ``Europe/Amsterdam``. The event's UTC instant is converted with
:mod:`zoneinfo` before the weekday and the hour are read, so a window keeps meaning the same
wall-clock hours on both sides of a daylight-saving change (09:00 local is 08:00 UTC in winter
and 07:00 UTC in summer in Amsterdam). A window starts at ``start`` (included) and ends at
``end`` (excluded); ``end <= start`` means the window runs past midnight into the next day
(``22:00-06:00``), and the weekday is the day on which it starts. Hours repeated when clocks go
back are inside a window if their wall-clock time is; hours skipped when clocks go forward
never happen.

>>> from datetime import datetime, UTC
>>> w = CollectionWindow(zone="Europe/Amsterdam", days=parse_days(["mon-fri"]),
...                      start=9 * 60, end=17 * 60)
>>> w.contains(datetime(2024, 3, 29, 8, 30, tzinfo=UTC))   # Friday 09:30 CET
True
>>> w.contains(datetime(2024, 4, 2, 7, 30, tzinfo=UTC))    # Tuesday 09:30 CEST
True
>>> w.contains(datetime(2024, 3, 29, 7, 30, tzinfo=UTC))   # Friday 08:30 CET
False
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .patterns import Pattern

__all__ = ["WEEKDAYS", "CollectionWindow", "load_zone", "parse_days", "parse_hours", "week_mask"]

#: Weekday names as a policy writes them, Monday first (``datetime.weekday()`` order).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_INDEX = {name: i for i, name in enumerate(WEEKDAYS)}
_MINUTES_PER_DAY = 24 * 60


def load_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or ``ValueError`` naming it.

    >>> load_zone("Europe/Amsterdam").key
    'Europe/Amsterdam'
    >>> load_zone("Mars/Olympus_Mons")
    Traceback (most recent call last):
    ...
    ValueError: unknown IANA time zone 'Mars/Olympus_Mons'
    """
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"unknown IANA time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown IANA time zone {name!r}") from None


def parse_days(items: Iterable[str]) -> frozenset[int]:
    """Weekday names or ranges (``mon-fri``, ``sat``) as weekday numbers, Monday = 0.

    >>> sorted(parse_days(["mon-wed", "sun"]))
    [0, 1, 2, 6]
    >>> sorted(parse_days(["fri-mon"]))
    [0, 4, 5, 6]
    >>> parse_days(["monday"])
    Traceback (most recent call last):
    ...
    ValueError: unknown weekday 'monday' (use mon, tue, wed, thu, fri, sat, sun or a range ...)
    """
    days: set[int] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"a weekday must be a name like 'mon', got {item!r}")
        first, sep, last = item.strip().lower().partition("-")
        if first not in _DAY_INDEX or (sep and last not in _DAY_INDEX):
            raise ValueError(
                f"unknown weekday {item!r} (use {', '.join(WEEKDAYS)} or a range like mon-fri)"
            )
        a = _DAY_INDEX[first]
        b = _DAY_INDEX[last] if sep else a
        days.add(a)
        while a != b:
            a = (a + 1) % 7
            days.add(a)
    if not days:
        raise ValueError("a window needs at least one weekday")
    return frozenset(days)


def _minutes(text: str, *, allow_24: bool) -> int:
    hh, sep, mm = text.strip().partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or len(mm) != 2 or len(hh) > 2:
        raise ValueError
    h, m = int(hh), int(mm)
    if m > 59 or h > 24 or (h == 24 and (m or not allow_24)):
        raise ValueError
    return h * 60 + m


def parse_hours(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` as minutes after midnight ``(start, end)``; ``24:00`` may end a span.

    >>> parse_hours("09:00-17:30"), parse_hours("22:00-06:00"), parse_hours("00:00-24:00")
    ((540, 1050), (1320, 360), (0, 1440))
    >>> parse_hours("9-17")
    Traceback (most recent call last):
    ...
    ValueError: hours must look like '09:00-17:00', got '9-17'
    """
    if not isinstance(text, str):
        raise ValueError(f"hours must be a quoted string like '09:00-17:00', got {text!r}")
    first, sep, last = text.partition("-")
    try:
        if not sep:
            raise ValueError
        start, end = _minutes(first, allow_24=False), _minutes(last, allow_24=True)
    except ValueError:
        raise ValueError(f"hours must look like '09:00-17:00', got {text!r}") from None
    if start == end % _MINUTES_PER_DAY and end != _MINUTES_PER_DAY:
        raise ValueError(f"hours {text!r} are empty (start equals end)")
    return start, end


@dataclass(frozen=True)
class CollectionWindow:
    """Weekdays and local hours in one IANA zone during which events may be collected.

    Parameters
    ----------
    zone
        An IANA time zone name (``Europe/Amsterdam``); checked against the zone database here.
    days
        Weekday numbers, Monday = 0 (see :func:`parse_days`).
    start, end
        Minutes after local midnight; ``start`` is included, ``end`` excluded. ``end <= start``
        makes the window run past midnight; ``end`` may be 1440 (24:00).
    resources
        Resource patterns the window applies to (empty and no ``groups``: it applies to
        everyone).
    groups
        Group names the window applies to.
    name
        A label for messages and summaries.
    """

    zone: str
    days: frozenset[int]
    start: int
    end: int
    resources: tuple[Pattern, ...] = ()
    groups: tuple[str, ...] = ()
    name: str = ""
    tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tz", load_zone(self.zone))
        days = frozenset(self.days)
        if not days or not days <= frozenset(range(7)):
            raise ValueError("days must be a non-empty set of weekday numbers 0-6")
        object.__setattr__(self, "days", days)
        if not 0 <= self.start < _MINUTES_PER_DAY:
            raise ValueError(f"start must be in [0, 1440) minutes, got {self.start}")
        if not 0 < self.end <= _MINUTES_PER_DAY:
            raise ValueError(f"end must be in (0, 1440] minutes, got {self.end}")
        if self.start == self.end:
            raise ValueError("a window with start == end is empty")
        object.__setattr__(self, "resources", tuple(self.resources))
        object.__setattr__(self, "groups", tuple(self.groups))

    @property
    def applies_to_everyone(self) -> bool:
        """True when the window names neither resources nor groups."""
        return not self.resources and not self.groups

    @property
    def wraps(self) -> bool:
        """True when the window runs past local midnight."""
        return self.end <= self.start

    def contains_local(self, weekday: int, minute: int) -> bool:
        """Whether local ``weekday`` (Monday = 0) at ``minute`` after midnight is inside."""
        if self.end > self.start:
            return self.start <= minute < self.end and weekday in self.days
        if minute >= self.start:
            return weekday in self.days
        return minute < self.end and (weekday - 1) % 7 in self.days

    def contains(self, ts: datetime) -> bool:
        """Whether the instant ``ts`` (timezone-aware) falls inside the window."""
        local = ts.astimezone(self.tz)
        return self.contains_local(local.weekday(), local.hour * 60 + local.minute)

    def describe(self) -> str:
        """``mon,tue 09:00-17:00 Europe/Amsterdam``-style text."""
        days = ",".join(WEEKDAYS[d] for d in sorted(self.days))
        end = f"{self.end // 60:02d}:{self.end % 60:02d}"
        return f"{days} {self.start // 60:02d}:{self.start % 60:02d}-{end} {self.zone}"


def week_mask(windows: Iterable[CollectionWindow]) -> bytes:
    """One byte per minute of the local week (Monday 00:00 first): 1 inside any of ``windows``.

    The policy stage checks an event with one index, ``mask[weekday * 1440 + minute]``, after
    converting its instant to the windows' zone (all of ``windows`` must share it).

    >>> w = CollectionWindow(zone="UTC", days=frozenset({4}), start=22 * 60, end=2 * 60)
    >>> m = week_mask([w])
    >>> m[4 * 1440 + 23 * 60], m[5 * 1440 + 60], m[5 * 1440 + 120], m[4 * 1440 + 60]
    (1, 1, 0, 0)
    """
    mask = bytearray(7 * _MINUTES_PER_DAY)
    zones = set()
    for w in windows:
        zones.add(w.zone)
        for d in w.days:
            base = d * _MINUTES_PER_DAY
            if w.end > w.start:
                mask[base + w.start : base + w.end] = b"\x01" * (w.end - w.start)
            else:
                mask[base + w.start : base + _MINUTES_PER_DAY] = b"\x01" * (
                    _MINUTES_PER_DAY - w.start
                )
                nxt = ((d + 1) % 7) * _MINUTES_PER_DAY
                mask[nxt : nxt + w.end] = b"\x01" * w.end
    if len(zones) > 1:
        raise ValueError("week_mask needs windows of one time zone")
    return bytes(mask)
