"""Collection windows keep meaning the same wall-clock hours across daylight-saving changes,
in two time zones (Amsterdam and New York change on different dates), and apply per resource
or group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.event import Event
from procvault.organization.policy import PolicyEngine, is_placeholder, parse_policy
from procvault.organization.policy.windows import CollectionWindow, parse_days, week_mask

AMS = "Europe/Amsterdam"
NYC = "America/New_York"


def at(zone: str, y: int, mo: int, d: int, h: int, mi: int = 0, fold: int = 0) -> datetime:
    """The UTC instant of a local wall-clock time."""
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


def office(zone: str) -> CollectionWindow:
    return CollectionWindow(zone=zone, days=parse_days(["mon-fri"]), start=9 * 60, end=17 * 60)


# Working days just before and just after each change: (zone, before, after).
SPRING = [(AMS, (2024, 3, 29), (2024, 4, 1)), (NYC, (2024, 3, 8), (2024, 3, 11))]
AUTUMN = [(AMS, (2024, 10, 25), (2024, 10, 28)), (NYC, (2024, 11, 1), (2024, 11, 4))]


@pytest.mark.parametrize(("zone", "before", "after"), SPRING + AUTUMN)
def test_office_hours_are_wall_clock_hours_on_both_sides(
    zone: str, before: tuple[int, int, int], after: tuple[int, int, int]
) -> None:
    w = office(zone)
    for day in (before, after):
        assert not w.contains(at(zone, *day, 8, 59))
        assert w.contains(at(zone, *day, 9, 0))
        assert w.contains(at(zone, *day, 16, 59))
        assert not w.contains(at(zone, *day, 17, 0))
    # The window opens at a UTC time of day one hour apart on the two sides of the change, so
    # the earlier of the two UTC times is inside on one side and outside on the other.
    start_before, start_after = at(zone, *before, 9, 0), at(zone, *after, 9, 0)
    gap = datetime.combine(start_before.date(), start_after.time()) - datetime.combine(
        start_before.date(), start_before.time()
    )
    assert abs(gap) == timedelta(hours=1)
    early = min(start_before.time(), start_after.time())
    for opening in (start_before, start_after):
        instant = datetime.combine(opening.date(), early, UTC)
        assert w.contains(instant) == (opening.time() == early)


def test_spring_forward_night_window_in_amsterdam() -> None:
    # Saturday 22:00 to Sunday 06:00; on 31 March 2024 clocks jump from 02:00 to 03:00.
    night = CollectionWindow(zone=AMS, days=parse_days(["sat"]), start=22 * 60, end=6 * 60)
    assert night.contains(datetime(2024, 3, 30, 21, 0, tzinfo=UTC))  # 22:00 CET
    assert night.contains(datetime(2024, 3, 31, 0, 30, tzinfo=UTC))  # 01:30 CET
    assert night.contains(datetime(2024, 3, 31, 1, 30, tzinfo=UTC))  # 03:30 CEST
    assert night.contains(datetime(2024, 3, 31, 3, 59, tzinfo=UTC))  # 05:59 CEST
    assert not night.contains(datetime(2024, 3, 31, 4, 0, tzinfo=UTC))  # 06:00 CEST
    assert not night.contains(datetime(2024, 3, 30, 20, 59, tzinfo=UTC))  # 21:59 CET
    # The night lasted 7 hours of real time, not 8.
    inside = sum(
        night.contains(datetime(2024, 3, 30, 18, tzinfo=UTC) + timedelta(minutes=m))
        for m in range(12 * 60)
    )
    assert inside == 7 * 60


def test_fall_back_repeated_hour_in_new_york() -> None:
    # Sunday 3 November 2024: 01:00-02:00 EDT, then 01:00-02:00 EST again.
    w = CollectionWindow(zone=NYC, days=parse_days(["sun"]), start=60, end=120)
    first = at(NYC, 2024, 11, 3, 1, 30, fold=0)
    second = at(NYC, 2024, 11, 3, 1, 30, fold=1)
    assert second - first == timedelta(hours=1)
    assert w.contains(first) and w.contains(second)
    assert not w.contains(at(NYC, 2024, 11, 3, 2, 0))
    inside = sum(
        w.contains(datetime(2024, 11, 3, 4, tzinfo=UTC) + timedelta(minutes=m))
        for m in range(4 * 60)
    )
    assert inside == 2 * 60  # the wall-clock hour happened twice


def _engine(**extra: Any) -> PolicyEngine:
    doc = {
        "policy": "w",
        "version": 1,
        "org": "o",
        "mode": "denylist",
        "consent": {"scope": "s"},
        **extra,
    }
    return PolicyEngine(parse_policy(doc))


def _withheld(engine: PolicyEngine, ts: datetime, **kw: Any) -> bool:
    [out] = engine.apply(Event.create("c", "A", ts, org="o", **kw))
    return is_placeholder(out) and out.attr("pv:reason") == "OUTSIDE_WINDOW"


def test_engine_windows_per_group_in_two_zones_across_dst() -> None:
    engine = _engine(
        groups={"amsterdam-desk": [{"regex": "ams-.*"}]},
        group_attribute="team",
        windows=[
            {"groups": ["amsterdam-desk"], "zone": AMS, "days": "mon-fri", "hours": "09:00-17:00"},
            {"groups": ["ny"], "zone": NYC, "days": ["mon-fri"], "hours": "09:00-17:00"},
        ],
    )
    for zone, before, after in SPRING + AUTUMN:
        for day in (before, after):
            inside, outside = at(zone, *day, 9, 30), at(zone, *day, 8, 30)
            if zone == AMS:
                assert not _withheld(engine, inside, resource="ams-1")
                assert _withheld(engine, outside, resource="ams-1")
            else:
                assert not _withheld(engine, inside, attributes={"team": "ny"})
                assert _withheld(engine, outside, attributes={"team": "ny"})
            # Nobody else is restricted.
            assert not _withheld(engine, outside, resource="bob")
            assert not _withheld(engine, outside, attributes={"team": "other"})


def test_a_window_naming_resources_applies_only_to_them() -> None:
    engine = _engine(
        windows=[
            {"resources": ["night-nurse"], "zone": AMS, "days": "mon-sun", "hours": "22:00-06:00"},
            {"zone": "UTC", "days": "mon-sun", "hours": "00:00-24:00"},
        ]
    )
    noon = datetime(2024, 7, 1, 10, tzinfo=UTC)  # 12:00 in Amsterdam
    assert not _withheld(engine, noon, resource="day-nurse")  # the all-day window applies
    # The night nurse is covered by both windows (any of them suffices).
    assert not _withheld(engine, noon, resource="night-nurse")
    only_night = _engine(
        windows=[
            {"resources": ["night-nurse"], "zone": AMS, "days": "mon-sun", "hours": "22:00-06:00"}
        ]
    )
    assert _withheld(only_night, noon, resource="night-nurse")
    assert not _withheld(only_night, noon, resource="day-nurse")
    assert not _withheld(only_night, datetime(2024, 7, 1, 21, tzinfo=UTC), resource="night-nurse")


windows_st = st.builds(
    lambda days, start, length: CollectionWindow(
        zone="UTC",
        days=frozenset(days),
        start=start,
        end=(start + length - 1) % 1440 + 1,
    ),
    st.sets(st.integers(0, 6), min_size=1),
    st.integers(0, 1439),
    st.integers(1, 1439),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(windows_st, min_size=1, max_size=3), st.integers(0, 7 * 1440 - 1))
def test_week_mask_agrees_with_the_window_rule(
    windows: list[CollectionWindow], minute_of_week: int
) -> None:
    mask = week_mask(windows)
    wd, minute = divmod(minute_of_week, 1440)
    assert bool(mask[minute_of_week]) == any(w.contains_local(wd, minute) for w in windows)


def test_windows_reject_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown IANA time zone 'Nowhere/City'"):
        CollectionWindow(zone="Nowhere/City", days=frozenset({0}), start=0, end=60)
    with pytest.raises(ValueError, match="start == end"):
        CollectionWindow(zone="UTC", days=frozenset({0}), start=60, end=60)
    with pytest.raises(ValueError, match="days"):
        CollectionWindow(zone="UTC", days=frozenset({7}), start=0, end=60)
    with pytest.raises(ValueError, match="one time zone"):
        week_mask([office(AMS), office(NYC)])
