"""Pacing modes: on a fake clock exactly, and on the real clock within 5%."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from procvault.generators.pacing import (
    AsFastAsPossible,
    FixedRate,
    Scaled,
    apaced,
    paced,
    parse_pacing,
)
from procvault.monitor.event import Event

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _events(offsets_s: list[float]) -> list[Event]:
    return [Event.create(f"c{i}", "A", T0 + timedelta(seconds=s)) for i, s in enumerate(offsets_s)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def _emit_times(pacing: object, offsets: list[float]) -> list[float]:
    clock = FakeClock()
    out = []
    for _ in paced(_events(offsets), pacing, clock=clock, sleep=clock.sleep):  # type: ignore[arg-type]
        out.append(round(clock.now - 100.0, 9))
    return out


def test_fixed_rate_on_fake_clock() -> None:
    assert _emit_times(FixedRate(10.0), [0, 0, 0, 0]) == [0.0, 0.1, 0.2, 0.3]


def test_scaled_on_fake_clock() -> None:
    assert _emit_times(Scaled(60.0), [0, 60, 60, 600]) == [0.0, 1.0, 1.0, 10.0]


def test_as_fast_as_possible_never_sleeps() -> None:
    clock = FakeClock()
    assert (
        len(list(paced(_events([0, 1e6]), AsFastAsPossible(), clock=clock, sleep=clock.sleep))) == 2
    )
    assert clock.sleeps == []


def test_schedule_is_absolute_so_slow_consumers_do_not_drift() -> None:
    clock = FakeClock()
    times = []
    for _ in paced(_events([0] * 5), FixedRate(10.0), clock=clock, sleep=clock.sleep):
        times.append(round(clock.now - 100.0, 9))
        clock.now += 0.05  # the consumer takes half the interval
    assert times == [0.0, 0.1, 0.2, 0.3, 0.4]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": 0}, "rate must be > 0"),
        ({"speed": -1}, "speed must be > 0"),
        ({"rate": 1, "speed": 1}, "not both"),
    ],
)
def test_bad_pacing_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_pacing(**kwargs)


def _real_rate(pacing: object, events: list[Event]) -> float:
    async def run() -> float:
        start = time.monotonic()
        n = 0
        async for _ in apaced(events, pacing):  # type: ignore[arg-type]
            n += 1
        return (n - 1) / (time.monotonic() - start)

    return asyncio.run(run())


def test_fixed_rate_real_clock_within_5_percent() -> None:
    rate = 1_000.0
    measured = _real_rate(FixedRate(rate), _events([0.0] * 3_001))  # 3 s
    assert abs(measured - rate) / rate < 0.05, measured


def test_scaled_real_clock_within_5_percent() -> None:
    # 2,001 events one simulated minute apart, 1,000 minutes of log in 2.5 s (speed 24,000).
    events = _events([60.0 * i for i in range(1_001)])
    speed = 24_000.0
    expected_rate = 1_000 / (60_000 / speed)
    measured = _real_rate(Scaled(speed), events)
    assert abs(measured - expected_rate) / expected_rate < 0.05, measured
