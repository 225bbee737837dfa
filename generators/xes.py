"""Replay an XES event log as a stream of :class:`~procvault.monitor.event.Event`.

The log (``.xes`` or ``.xes.gz``) is read once, in one streaming pass, into typed columns
(:class:`~procvault.generators.xes_columns.XesColumns`: integer-coded cases, activities and
resources, int64 timestamps, typed attributes; no Python object per event). Events are built
from the columns as they are replayed, in global timestamp order with a deterministic
tie-break: events with equal timestamps keep the order of their case in the file, and within a
case the order of the file (real logs have many ties: in Sepsis 29% of events share the
timestamp of their predecessor). Timing (as fast as possible, fixed rate, scaled original gaps)
is the job of :mod:`procvault.generators.pacing`.

Mapping from XES: the case id is the trace's ``concept:name``, the activity the event's
``concept:name``, the timestamp ``time:timestamp`` (converted to UTC), the resource
``org:resource``. Every other event attribute is kept; trace attributes are copied onto each
event with a ``case:`` prefix, as pm4py's data frames do.

Two readers fill the columns: ``"lxml"`` (the default; lxml's streaming parser, see
:mod:`procvault.generators.xes_lxml`) and ``"pm4py"`` (``pm4py.read_xes``, the reference the
tests compare against; it imports pm4py and holds the whole log as pm4py objects while reading).
``$PROCVAULT_XES_READER`` picks one for every command.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, Literal, overload

from procvault.monitor.errors import ConfigError, InputError
from procvault.monitor.event import Event, EventKind

from .xes_columns import EPOCH, ColumnsBuilder, Tag, XesColumns, add_pm4py_log

__all__ = ["READERS", "XesLog", "read_xes"]

#: The readers :func:`read_xes` knows.
READERS: Final = ("scan", "lxml", "pm4py")
Reader = Literal["scan", "lxml", "pm4py"]
_READER_ENV: Final = "PROCVAULT_XES_READER"
_DAY_US: Final = 86_400_000_000
_first = itemgetter(0)


class XesLog:
    """A parsed log, ready to replay.

    Parameters
    ----------
    path
        The file it came from.
    columns
        The parsed log (events in file order).

    Attributes
    ----------
    path
        The file it came from.
    columns
        The typed columns.
    case_ids
        Case ids in file order.
    activities
        The distinct activity names.
    dropped_attributes
        Attribute values that could not be represented (key -> count), reported, not hidden.
    """

    __slots__ = ("_is_last", "_order", "activities", "case_ids", "columns", "path")

    def __init__(self, path: Path, columns: XesColumns) -> None:
        import numpy as np

        self.path = path
        self.columns = columns
        strings = columns.strings
        self.case_ids: tuple[str, ...] = tuple(strings[c] for c in columns.case_ids)
        n = columns.n_events
        ts = np.frombuffer(columns.timestamp_us, dtype=np.int64) if n else np.zeros(0, np.int64)
        order = np.argsort(ts, kind="stable")  # ties: file order = (case, event) order
        self._order: Sequence[int] = memoryview(order.astype(np.int64).tobytes()).cast("q")
        codes = np.unique(np.frombuffer(columns.activity, dtype=np.int32)) if n else ()
        self.activities: frozenset[str] = frozenset(strings[int(c)] for c in codes)
        # The last event of each case in replay order (where an end marker follows).
        is_last = np.zeros(n, dtype=np.uint8)
        if n:
            case_of = np.frombuffer(columns.case_of, dtype=np.int32)
            position = np.empty(n, dtype=np.int64)
            position[order] = np.arange(n, dtype=np.int64)
            starts = np.flatnonzero(np.r_[True, case_of[1:] != case_of[:-1]])
            is_last[order[np.maximum.reduceat(position, starts)]] = 1
        self._is_last = is_last.tobytes()

    @property
    def dropped_attributes(self) -> Mapping[str, int]:
        """Attribute values that could not be kept (key -> count)."""
        return self.columns.dropped_attributes

    @property
    def n_events(self) -> int:
        """The number of activity events."""
        return self.columns.n_events

    @property
    def n_cases(self) -> int:
        """The number of cases."""
        return self.columns.n_cases

    @property
    def events(self) -> _EventSequence:
        """Every event in replay order, as a sequence built on access (not held)."""
        return _EventSequence(self)

    def replay(
        self,
        *,
        end_markers: bool = False,
        org: str | None = None,
        repeat: int = 1,
        attributes: bool = True,
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
        attributes
            ``False``: leave every event's attributes empty (for a consumer that reads only the
            case, activity, time and resource, such as the conformance engine); faster.

        To split the stream across organizations, pass it through :func:`.split.assign`.
        """
        if repeat < 1:
            raise ValueError("repeat must be >= 1")
        return self._replay(end_markers, "" if org is None else org, repeat, attributes)

    def _replay(
        self, end_markers: bool, org: str, repeat: int, attributes: bool
    ) -> Iterator[Event]:
        cols = self.columns
        order = self._order
        if not order:
            return
        strings = cols.strings
        act, res, tsa, cof = cols.activity, cols.resource, cols.timestamp_us, cols.case_of
        ast, ak, at, av = cols.attr_start, cols.attr_key, cols.attr_tag, cols.attr_val
        cas = cols.case_attr_start
        floats, big = cols.floats, cols.big_ints
        has_case_attrs = attributes and len(cols.case_attr_key) > 0
        no_attrs = not attributes
        is_last = self._is_last
        step = tsa[order[-1]] - tsa[order[0]] + _DAY_US
        base_names = self.case_ids
        make, kind, end_kind = Event, EventKind.ACTIVITY, EventKind.CASE_END
        epoch, td = EPOCH, timedelta
        t_str, t_int, t_float, t_bool, t_date = Tag.STR, Tag.INT, Tag.FLOAT, Tag.BOOL, Tag.DATE
        t_none = Tag.NONE
        case_cache: dict[int, list[tuple[str, Any]]] = {}
        for k in range(repeat):
            names = base_names if k == 0 else [f"{c}#{k}" for c in base_names]
            shift = step * k
            last_us = -1 << 70
            dt = epoch
            for i in order:
                us = tsa[i] + shift
                if us != last_us:
                    dt = epoch + td(microseconds=us)
                    last_us = us
                a0, a1 = ast[i], ast[i + 1]
                if (a0 == a1 and not has_case_attrs) or no_attrs:
                    attrs: tuple[tuple[str, Any], ...] = ()
                else:
                    pairs: list[tuple[str, Any]] = []
                    for j in range(a0, a1):
                        t, v = at[j], av[j]
                        value: Any
                        if t == t_str:
                            value = strings[v]
                        elif t == t_int:
                            value = v
                        elif t == t_float:
                            value = floats[v]
                        elif t == t_bool:
                            value = v == 1
                        elif t == t_date:
                            value = epoch + td(microseconds=v)
                        elif t == t_none:
                            value = None
                        else:
                            value = big[v]
                        pairs.append((strings[ak[j]], value))
                    if has_case_attrs:
                        c = cof[i]
                        if cas[c] < cas[c + 1]:
                            extra = case_cache.get(c)
                            if extra is None:
                                extra = cols.case_attributes(c)
                                if len(case_cache) > 4096:
                                    case_cache.clear()
                                case_cache[c] = extra
                            pairs.extend(extra)
                            pairs.sort(key=_first)
                    attrs = tuple(pairs)
                r = res[i]
                case_id = names[cof[i]]
                yield make(
                    case_id,
                    strings[act[i]],
                    dt,
                    org,
                    None if r < 0 else strings[r],
                    attrs,
                    kind,
                )
                if end_markers and is_last[i]:
                    yield make(case_id, "", dt, org, None, (), end_kind)

    def _event_at(self, i: int) -> Event:
        """The event stored at file position ``i`` (as :meth:`replay` builds it)."""
        cols = self.columns
        strings = cols.strings
        pairs = cols.event_attributes(i) + cols.case_attributes(cols.case_of[i])
        pairs.sort(key=_first)
        r = cols.resource[i]
        return Event(
            self.case_ids[cols.case_of[i]],
            strings[cols.activity[i]],
            EPOCH + timedelta(microseconds=cols.timestamp_us[i]),
            "",
            None if r < 0 else strings[r],
            tuple(pairs),
            EventKind.ACTIVITY,
        )


class _EventSequence(Sequence[Event]):
    """A read-only view of a log's events in replay order; each access builds the event."""

    __slots__ = ("_log",)

    def __init__(self, log: XesLog) -> None:
        self._log = log

    def __len__(self) -> int:
        return self._log.n_events

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Event, ...]: ...
    def __getitem__(self, index: int | slice) -> Event | tuple[Event, ...]:
        order = self._log._order
        if isinstance(index, slice):
            return tuple(self._log._event_at(i) for i in order[index])
        return self._log._event_at(order[index])

    def __iter__(self) -> Iterator[Event]:
        return self._log.replay()


def _reader(reader: str | None) -> str:
    chosen = reader or os.environ.get(_READER_ENV) or "scan"
    if chosen not in READERS:
        where = f"${_READER_ENV}" if reader is None else "reader"
        raise ConfigError(f"{where}: unknown XES reader {chosen!r}; choose one of {READERS}")
    return chosen


def read_xes(
    path: str | os.PathLike[str],
    *,
    reader: Reader | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> XesLog:
    """Read an XES log into replay order.

    Parameters
    ----------
    path
        The ``.xes`` file, gzip-compressed if its name ends in ``.gz``.
    reader
        ``"lxml"`` (default: streaming, a few arrays per event) or ``"pm4py"``
        (``pm4py.read_xes``, the reference); default ``$PROCVAULT_XES_READER`` or ``"lxml"``.
    progress
        ``progress(done, total)``: bytes of the file read so far and its size, after each chunk
        (the lxml reader; the pm4py reader reports nothing).

    Raises :class:`InputError` with a one-line message naming the file when it is missing,
    truncated, not XML, not XES, or holds a trace without a case id, a case id used twice, an
    event without an activity name or without a (parseable) timestamp, or an empty log.

    Examples
    --------
    >>> read_xes("no/such.xes")
    Traceback (most recent call last):
    ...
    procvault.monitor.errors.InputError: no/such.xes: file not found
    """
    chosen = _reader(reader)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    if chosen == "pm4py":
        from .xes_pm4py import read_pm4py_log

        builder = ColumnsBuilder(p)
        add_pm4py_log(builder, read_pm4py_log(p))
        columns = builder.finish()
    else:
        scanned = None
        if chosen == "scan":
            from .xes_scan import read_columns as scan_columns

            scanned = scan_columns(p, progress)
        if scanned is None:  # outside the scanner's subset, or the lxml reader was asked for
            from .xes_lxml import read_columns

            scanned = read_columns(p, progress)
        columns = scanned
    return XesLog(p, columns)
