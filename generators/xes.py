"""Replay an XES event log as a stream of :class:`~procvault.monitor.event.Event`.

The log (``.xes`` or ``.xes.gz``) is parsed once with pm4py, every event is turned into an
immutable :class:`Event`, and the stream is emitted in global timestamp order with a
deterministic tie-break: events with equal timestamps keep the order of their case in the file,
and within a case the order of the file (real logs have many ties: in Sepsis 29% of events share
the timestamp of their predecessor). Timing (as fast as possible, fixed rate, scaled original
gaps) is the job of :mod:`procvault.generators.pacing`.

Mapping from XES: the case id is the trace's ``concept:name``, the activity the event's
``concept:name``, the timestamp ``time:timestamp`` (converted to UTC), the resource
``org:resource``. Every other event attribute is kept; trace attributes are copied onto each
event with a ``case:`` prefix, as pm4py's data frames do.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from procvault.monitor.errors import InputError
from procvault.monitor.event import Event

from ._pm4py import import_pm4py

__all__ = ["XesLog", "read_xes"]

_CASE_KEY = "concept:name"
_ACTIVITY_KEY = "concept:name"
_TIME_KEY = "time:timestamp"
_RESOURCE_KEY = "org:resource"


@dataclass(frozen=True)
class XesLog:
    """A parsed log, ready to replay.

    Attributes
    ----------
    path
        The file it came from.
    events
        Every event in replay order (global timestamp order, ties broken by case order in the
        file, then by event order within the case).
    case_ids
        Case ids in file order.
    dropped_attributes
        Attribute values that could not be represented (key -> count), reported, not hidden.
    """

    path: Path
    events: tuple[Event, ...]
    case_ids: tuple[str, ...]
    dropped_attributes: Mapping[str, int] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        """The number of activity events."""
        return len(self.events)

    @property
    def n_cases(self) -> int:
        """The number of cases."""
        return len(self.case_ids)

    def replay(
        self, *, end_markers: bool = False, org: str | None = None, repeat: int = 1
    ) -> Iterator[Event]:
        """Yield the events in replay order.

        Parameters
        ----------
        end_markers
            After the last event of each case, also yield :meth:`Event.case_end` with the same
            timestamp.
        org
            Set this organization on every event (default: leave the events as read, org ``""``).
        repeat
            Replay the log this many times in a row (a longer stream of the same process):
            round ``k > 0`` suffixes case ids with ``#k`` and shifts its timestamps past the
            end of round ``k - 1`` (by ``k`` times the log's span plus one day), so event time
            keeps increasing.

        To split the stream across organizations, pass it through :func:`.split.assign`.
        """
        if repeat < 1:
            raise ValueError("repeat must be >= 1")
        last_index: dict[str, int] = {}
        if end_markers:
            for i, ev in enumerate(self.events):
                last_index[ev.case_id] = i
        step = (
            self.events[-1].timestamp - self.events[0].timestamp + timedelta(days=1)
            if self.events
            else timedelta(0)
        )
        for k in range(repeat):
            shift = step * k
            for i, ev in enumerate(self.events):
                out = ev if org is None else ev.with_org(org)
                if k:
                    out = msgspec.structs.replace(
                        out, case_id=f"{out.case_id}#{k}", timestamp=out.timestamp + shift
                    )
                yield out
                if end_markers and last_index[ev.case_id] == i:
                    yield Event.case_end(out.case_id, out.timestamp, org=out.org)


def _convert_value(value: Any) -> Any:
    """An XES attribute value as an :data:`AttrValue`, or ``_UNSUPPORTED``."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    return _UNSUPPORTED


_UNSUPPORTED = object()


def _parse(path: Path) -> Any:
    """Parse ``path`` with pm4py into a legacy EventLog, turning its failures into InputError."""
    pm4py = import_pm4py()
    # pm4py warns when reading (optional faster parsers): not about the log, so muted.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pm4py.read_xes(str(path), return_legacy_log_object=True)
        except EOFError:
            problem = "truncated file (compressed data ends early)"
        except OSError as exc:
            problem = f"cannot read: {exc.strerror or exc}"
        except Exception as exc:  # lxml and pm4py raise many types on malformed input
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problem = f"not a valid XES log: {first}"
        # pm4py leaves the file open when parsing fails: close it now, quietly.
        gc.collect()
    raise InputError(f"{path}: {problem}")


def read_xes(path: str | os.PathLike[str]) -> XesLog:
    """Read an XES log into replay order.

    Raises :class:`InputError` with a one-line message naming the file when it is missing,
    truncated, not XES, or holds a trace without a case id or an event without an activity
    name or a timestamp.

    Examples
    --------
    >>> read_xes("no/such.xes")
    Traceback (most recent call last):
    ...
    procvault.monitor.errors.InputError: no/such.xes: file not found
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    log = _parse(p)
    if len(log) == 0:
        raise InputError(f"{p}: the log holds no traces")

    keyed: list[tuple[datetime, int, int, Event]] = []
    case_ids: list[str] = []
    seen_cases: set[str] = set()
    dropped: dict[str, int] = {}
    for ci, trace in enumerate(log):
        case_id = trace.attributes.get(_CASE_KEY)
        if case_id is None or str(case_id) == "":
            raise InputError(f"{p}: trace #{ci + 1} has no case id ({_CASE_KEY})")
        case_id = str(case_id)
        if case_id in seen_cases:
            raise InputError(f"{p}: case id {case_id!r} appears in more than one trace")
        seen_cases.add(case_id)
        case_ids.append(case_id)
        case_attrs: list[tuple[str, Any]] = []
        for key, value in trace.attributes.items():
            if key == _CASE_KEY:
                continue
            conv = _convert_value(value)
            if conv is _UNSUPPORTED:
                dropped["case:" + key] = dropped.get("case:" + key, 0) + 1
            else:
                case_attrs.append(("case:" + key, conv))
        for ei, raw in enumerate(trace):
            activity = raw.get(_ACTIVITY_KEY)
            if activity is None or str(activity) == "":
                raise InputError(
                    f"{p}: event #{ei + 1} of case {case_id!r} "
                    f"has no activity name ({_ACTIVITY_KEY})"
                )
            ts = raw.get(_TIME_KEY)
            if not isinstance(ts, datetime):
                raise InputError(
                    f"{p}: event #{ei + 1} of case {case_id!r} has no timestamp ({_TIME_KEY})"
                )
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            resource = raw.get(_RESOURCE_KEY)
            attrs = list(case_attrs)
            for key, value in raw.items():
                if key in (_ACTIVITY_KEY, _TIME_KEY, _RESOURCE_KEY):
                    continue
                conv = _convert_value(value)
                if conv is _UNSUPPORTED:
                    dropped[key] = dropped.get(key, 0) + 1
                else:
                    attrs.append((key, conv))
            event = Event.create(
                case_id,
                str(activity),
                ts,
                resource=None if resource is None else str(resource),
                attributes=attrs,
            )
            keyed.append((event.timestamp, ci, ei, event))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return XesLog(
        path=p,
        events=tuple(k[3] for k in keyed),
        case_ids=tuple(case_ids),
        dropped_attributes=dropped,
    )
