"""When each event of a stream is due: as fast as possible, at a fixed rate, or on the original
clock scaled by a speed factor.

A pacing is pure: :meth:`Pacing.due` maps an event (and its position in the stream) to the
number of wall-clock seconds after the start of the replay at which it should be emitted.
The drivers :func:`paced` (blocking) and :func:`apaced` (asyncio) sleep on an absolute
schedule, so rounding and scheduling delays never accumulate into drift. Both take their clock
and sleep function as arguments, so tests can run them on a fake clock.

>>> from datetime import datetime, timedelta, UTC
>>> from procvault.monitor.event import Event
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> evs = [Event.create("c", "A", t0 + timedelta(hours=h)) for h in (0, 1, 3)]
>>> p = Scaled(speed=3600.0)
>>> [p.due(i, e) for i, e in enumerate(evs)]
[0.0, 1.0, 3.0]
>>> [FixedRate(rate=4.0).due(i, e) for i, e in enumerate(evs)]
[0.0, 0.25, 0.5]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from procvault.monitor.event import Event

__all__ = ["AsFastAsPossible", "FixedRate", "Pacing", "Scaled", "apaced", "paced", "parse_pacing"]


class Pacing(Protocol):
    """Decides when each event is due, in seconds after the start of the replay."""

    def due(self, index: int, event: Event) -> float:
        """Seconds after the start at which event number ``index`` (from 0) is due."""
        ...


@dataclass(frozen=True)
class AsFastAsPossible:
    """No waiting at all."""

    def due(self, index: int, event: Event) -> float:
        """Always 0: every event is due at once."""
        return 0.0


@dataclass(frozen=True)
class FixedRate:
    """``rate`` events per second, evenly spaced (markers count as events)."""

    rate: float

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 events/s, got {self.rate}")

    def due(self, index: int, event: Event) -> float:
        """``index / rate``."""
        return index / self.rate


@dataclass
class Scaled:
    """The log's own inter-arrival times divided by ``speed`` (``speed=60``: an hour per minute).

    The first event seen fixes the origin of the log's clock.
    """

    speed: float
    _origin: datetime | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise ValueError(f"speed must be > 0, got {self.speed}")

    def due(self, index: int, event: Event) -> float:
        """Event time since the first event, divided by ``speed``."""
        if self._origin is None:
            self._origin = event.timestamp
        return max(0.0, (event.timestamp - self._origin).total_seconds() / self.speed)


def parse_pacing(*, rate: float | None = None, speed: float | None = None) -> Pacing:
    """The pacing the CLI options ask for; at most one of ``rate`` and ``speed``.

    >>> parse_pacing()
    AsFastAsPossible()
    >>> parse_pacing(rate=10, speed=2)
    Traceback (most recent call last):
    ...
    ValueError: choose one pacing: --rate or --speed, not both
    """
    if rate is not None and speed is not None:
        raise ValueError("choose one pacing: --rate or --speed, not both")
    if rate is not None:
        return FixedRate(rate)
    if speed is not None:
        return Scaled(speed)
    return AsFastAsPossible()


def paced(
    events: Iterable[Event],
    pacing: Pacing,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Event]:
    """Yield ``events`` no earlier than their due time (blocking)."""
    if isinstance(pacing, AsFastAsPossible):
        yield from events
        return
    start = clock()
    for i, ev in enumerate(events):
        wait = start + pacing.due(i, ev) - clock()
        if wait > 0:
            sleep(wait)
        yield ev


async def apaced(
    events: Iterable[Event],
    pacing: Pacing,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[Event]:
    """Yield ``events`` no earlier than their due time, sleeping with :func:`asyncio.sleep`.

    As fast as possible still yields control to the event loop every 1,000 events.
    """
    fast = isinstance(pacing, AsFastAsPossible)
    start = clock()
    for i, ev in enumerate(events):
        if fast:
            if i % 1000 == 999:
                await asyncio.sleep(0)
        else:
            wait = start + pacing.due(i, ev) - clock()
            if wait > 0:
                await asyncio.sleep(wait)
        yield ev
