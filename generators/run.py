"""Drive a stream of events into a sink on a pacing, with progress and a summary.

>>> import asyncio
>>> from datetime import datetime, UTC
>>> from procvault.monitor.event import Event
>>> from procvault.streams.sinks import NullSink
>>> from procvault.generators.pacing import AsFastAsPossible
>>> evs = [Event.create(f"c{i % 3}", "A", datetime(2024, 1, 1, tzinfo=UTC)) for i in range(10)]
>>> stats = asyncio.run(run_to_sink(evs, NullSink(), AsFastAsPossible()))
>>> stats.events, stats.cases
(10, 3)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from procvault.monitor.event import Event
from procvault.streams.sinks import EventSink

from .pacing import Pacing, apaced

__all__ = ["RunStats", "run_to_sink"]

#: How often (in events) the progress callback is called.
PROGRESS_EVERY = 1000


@dataclass
class RunStats:
    """What a run produced."""

    events: int = 0
    markers: int = 0
    cases: int = 0
    seconds: float = 0.0
    per_destination: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Events (markers included) per second of wall-clock time."""
        total = self.events + self.markers
        return total / self.seconds if self.seconds > 0 else float("inf")


async def run_to_sink(
    events: Iterable[Event],
    sink: EventSink,
    pacing: Pacing,
    *,
    progress: Callable[[int], None] | None = None,
    count_cases: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> RunStats:
    """Send ``events`` to ``sink`` on ``pacing``; the sink is started and stopped here.

    ``progress(n)`` is called with the number of events sent since its last call, every
    :data:`PROGRESS_EVERY` events and at the end. Cases are counted by distinct case id
    when ``count_cases`` is true; that set grows with the stream, so endless sources turn it off.
    """
    stats = RunStats()
    cases: set[str] = set()
    start = clock()
    pending = 0
    await sink.start()
    try:
        async for ev in apaced(events, pacing, clock=clock):
            await sink.send(ev)
            if ev.is_marker:
                stats.markers += 1
            else:
                stats.events += 1
                if count_cases:
                    cases.add(ev.case_id)
            pending += 1
            if progress is not None and pending >= PROGRESS_EVERY:
                progress(pending)
                pending = 0
    finally:
        await sink.stop()
    if progress is not None and pending:
        progress(pending)
    stats.seconds = clock() - start
    stats.cases = len(cases)
    stats.per_destination = dict(sink.counts)
    return stats


def first_events(events: Iterable[Event], n: int) -> Iterator[Event]:
    """The first ``n`` activity events of ``events`` (and, with markers, the markers of their
    cases; placeholders and markers of other cases are left out).

    >>> from datetime import datetime, UTC
    >>> t = datetime(2024, 1, 1, tzinfo=UTC)
    >>> evs = [Event.create("a", "A", t), Event.create("b", "A", t), Event.case_end("a", t)]
    >>> [(e.case_id, e.kind.name) for e in first_events(evs, 1)]
    [('a', 'ACTIVITY'), ('a', 'CASE_END')]
    """
    seen: set[str] = set()
    count = 0
    for ev in events:
        if ev.kind:
            if ev.case_id in seen:
                yield ev
            continue
        if count >= n:
            continue
        count += 1
        seen.add(ev.case_id)
        yield ev
