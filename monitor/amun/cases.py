"""Cases as the anonymizer sees them: an activity sequence and integer timestamps.

The anonymizer releases only the control flow and the timestamps of each case. Every other
attribute (resource, organization, lab values, ...) is dropped here, on purpose: nothing in the
method protects them.

Examples
--------
>>> from datetime import datetime, UTC
>>> t = lambda m: datetime(2024, 1, 1, 8, m, tzinfo=UTC)
>>> evs = [Event.create("2", "R", t(1)), Event.create("1", "R", t(0)), Event.create("1", "V", t(5))]
>>> log = CaseLog.from_events(evs)
>>> [(c.case_id, c.activities) for c in log.cases]
[('2', ('R',)), ('1', ('R', 'V'))]
>>> log.variants, log.variant_of
((('R',), ('R', 'V')), (0, 1))
>>> log.cases[1].times[1] - log.cases[1].times[0]
300000000
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from ..event import Event

__all__ = ["Case", "CaseLog", "from_micros", "to_micros"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_micros(ts: datetime) -> int:
    """Microseconds since the Unix epoch of a UTC datetime.

    >>> to_micros(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
    1000000
    """
    return (ts - _EPOCH) // _US


def from_micros(us: int) -> datetime:
    """The UTC datetime ``us`` microseconds after the Unix epoch.

    >>> from_micros(1_000_000).isoformat()
    '1970-01-01T00:00:01+00:00'
    """
    return _EPOCH + timedelta(microseconds=us)


class Case(NamedTuple):
    """One case: its id, its activities in order and their timestamps (µs since the epoch)."""

    case_id: str
    activities: tuple[str, ...]
    times: tuple[int, ...]


@dataclass(frozen=True)
class CaseLog:
    """A log grouped into cases, with its variants indexed.

    Attributes
    ----------
    cases
        Cases in order of first appearance; events of a case keep their given order.
    variants
        Distinct activity sequences, in order of first appearance.
    variant_of
        For each case, the index of its variant in :attr:`variants`.
    """

    cases: tuple[Case, ...]
    variants: tuple[tuple[str, ...], ...]
    variant_of: tuple[int, ...]

    @classmethod
    def from_cases(cls, cases: Iterable[Case]) -> CaseLog:
        """Index the variants of ``cases``."""
        case_tuple = tuple(cases)
        index: dict[tuple[str, ...], int] = {}
        variant_of = tuple(index.setdefault(c.activities, len(index)) for c in case_tuple)
        return cls(case_tuple, tuple(index), variant_of)

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> CaseLog:
        """Group activity events by case id (control markers are skipped)."""
        acts: dict[str, list[str]] = {}
        times: dict[str, list[int]] = {}
        for ev in events:
            if ev.is_marker:
                continue
            acts.setdefault(ev.case_id, []).append(ev.activity)
            times.setdefault(ev.case_id, []).append(to_micros(ev.timestamp))
        return cls.from_cases(Case(cid, tuple(acts[cid]), tuple(times[cid])) for cid in acts)

    @property
    def n_events(self) -> int:
        """The number of events."""
        return sum(len(c.activities) for c in self.cases)

    def to_events(self) -> tuple[Event, ...]:
        """Every event, in global timestamp order (ties: case order, then event order)."""
        keyed = [
            (t, ci, ei, c.case_id, a)
            for ci, c in enumerate(self.cases)
            for ei, (a, t) in enumerate(zip(c.activities, c.times, strict=True))
        ]
        keyed.sort(key=lambda k: (k[0], k[1], k[2]))
        return tuple(Event(cid, a, from_micros(t)) for t, _, _, cid, a in keyed)
