"""The one event type that flows through procvault.

An :class:`Event` is immutable: a case id, an activity, a timezone-aware UTC timestamp with
microsecond precision, the organization that produced it, the resource that performed it and
a sorted tuple of ``(key, value)`` attribute pairs. Control markers (the end of a case) are
events too, with ``kind == EventKind.CASE_END`` and an empty activity, so that they travel
through every sink and transport like any other event.

The class is a ``msgspec.Struct`` declared ``array_like``: its binary form is a positional
MessagePack array without field names (see :mod:`procvault.streams.codec`).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final

import msgspec

__all__ = [
    "PLACEHOLDER_ACTIVITY",
    "AttrValue",
    "Event",
    "EventKind",
    "normalize_attributes",
    "to_utc",
]

#: The activity of a placeholder (an event an organization's policy or reviewer withheld).
PLACEHOLDER_ACTIVITY: Final = "pv:withheld"

#: Values an attribute may hold. Dates are normalised to UTC like event timestamps.
AttrValue = str | int | float | bool | datetime | None

_ATTR_TYPES: Final = (str, int, float, bool, datetime, type(None))


class EventKind(enum.IntEnum):
    """What an event stands for on the stream."""

    #: An activity executed in a case.
    ACTIVITY = 0
    #: A marker: the case has no further events.
    CASE_END = 1
    #: A placeholder: an event of the case was withheld at its source (activity
    #: :data:`PLACEHOLDER_ACTIVITY`; why, by whom and under which policy in ``pv:``
    #: attributes). It fires no transition, is no deviation, is not seen by compliance rules
    #: and touches no case state; the DP release counts it per pane as activity
    #: ``pv:withheld``.
    PLACEHOLDER = 2


def to_utc(ts: datetime) -> datetime:
    """Return ``ts`` converted to UTC; refuse naive datetimes.

    >>> from datetime import timedelta, timezone
    >>> to_utc(datetime(2024, 1, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))).isoformat()
    '2024-01-01T08:00:00+00:00'
    >>> to_utc(datetime(2024, 1, 1))
    Traceback (most recent call last):
    ...
    ValueError: timestamp 2024-01-01 00:00:00 has no time zone
    """
    if ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
        raise ValueError(f"timestamp {ts} has no time zone")
    return ts.astimezone(UTC)


def normalize_attributes(
    attributes: Mapping[str, Any] | Iterable[tuple[str, Any]],
) -> tuple[tuple[str, AttrValue], ...]:
    """Turn a mapping (or pairs) into the sorted, typed attribute tuple an :class:`Event` holds.

    Dates become UTC datetimes; ``date`` values become midnight UTC. Any other type is refused,
    because it could not cross the wire unchanged.

    >>> normalize_attributes({"b": 2, "a": "x"})
    (('a', 'x'), ('b', 2))
    >>> normalize_attributes({"a": [1]})
    Traceback (most recent call last):
    ...
    TypeError: attribute 'a' has unsupported type list
    """
    items = attributes.items() if isinstance(attributes, Mapping) else attributes
    out: list[tuple[str, AttrValue]] = []
    for key, raw in items:
        if not isinstance(key, str):
            raise TypeError(f"attribute key {key!r} is not a string")
        value: AttrValue
        if isinstance(raw, datetime):
            value = to_utc(raw)
        elif isinstance(raw, date):
            value = datetime(raw.year, raw.month, raw.day, tzinfo=UTC)
        elif isinstance(raw, _ATTR_TYPES):
            value = raw
        else:
            raise TypeError(f"attribute {key!r} has unsupported type {type(raw).__name__}")
        out.append((key, value))
    out.sort(key=lambda kv: kv[0])
    for (k1, _), (k2, _) in itertools.pairwise(out):
        if k1 == k2:
            raise ValueError(f"attribute {k1!r} appears twice")
    return tuple(out)


class Event(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One event of a business process.

    Parameters
    ----------
    case_id
        The case (process instance) the event belongs to.
    activity
        The activity name; empty for a :attr:`EventKind.CASE_END` marker.
    timestamp
        When it happened: timezone-aware, UTC, microsecond precision.
    org
        The organization that produced the event.
    resource
        Who or what performed it, if known.
    attributes
        Further data as sorted ``(key, value)`` pairs (see :func:`normalize_attributes`).
    kind
        An activity, or a control marker.

    Examples
    --------
    >>> from datetime import datetime, UTC
    >>> e = Event.create("c1", "Triage", datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    ...                  org="hospital", attributes={"Age": 70})
    >>> e.attr("Age"), e.attr("missing", "-")
    (70, '-')
    >>> e.with_org("lab").org
    'lab'
    >>> Event.case_end("c1", e.timestamp, org="hospital").kind
    <EventKind.CASE_END: 1>
    """

    case_id: str
    activity: str
    timestamp: datetime
    org: str = ""
    resource: str | None = None
    attributes: tuple[tuple[str, Any], ...] = ()
    kind: EventKind = EventKind.ACTIVITY

    @classmethod
    def create(
        cls,
        case_id: str,
        activity: str,
        timestamp: datetime,
        *,
        org: str = "",
        resource: str | None = None,
        attributes: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        kind: EventKind = EventKind.ACTIVITY,
    ) -> Event:
        """Build an event, checking and normalising every field."""
        if not isinstance(case_id, str) or not case_id:
            raise ValueError("case_id must be a non-empty string")
        if not isinstance(activity, str):
            raise TypeError("activity must be a string")
        if kind == EventKind.ACTIVITY and not activity:
            raise ValueError("an activity event needs a non-empty activity name")
        return cls(
            case_id=case_id,
            activity=activity,
            timestamp=to_utc(timestamp),
            org=org,
            resource=resource,
            attributes=normalize_attributes(attributes),
            kind=EventKind(kind),
        )

    @classmethod
    def case_end(cls, case_id: str, timestamp: datetime, *, org: str = "") -> Event:
        """An end-of-case marker for ``case_id`` at ``timestamp``."""
        return cls(case_id, "", to_utc(timestamp), org, None, (), EventKind.CASE_END)

    @property
    def is_marker(self) -> bool:
        """True for control markers such as the end of a case (not for placeholders: they
        stand for events)."""
        return self.kind == EventKind.CASE_END

    def attr(self, key: str, default: AttrValue = None) -> AttrValue:
        """The value of attribute ``key``, or ``default``."""
        for k, v in self.attributes:
            if k == key:
                return v  # type: ignore[no-any-return]
        return default

    def attributes_dict(self) -> dict[str, AttrValue]:
        """The attributes as a fresh ``dict``."""
        return dict(self.attributes)

    def with_org(self, org: str) -> Event:
        """A copy of this event attributed to ``org``."""
        return msgspec.structs.replace(self, org=org)
