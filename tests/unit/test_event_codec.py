"""The event type and its two codecs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.errors import CodecError
from procvault.monitor.event import Event, EventKind
from procvault.streams import codec

_text = st.text(min_size=1, max_size=20)
_ts = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    _ts,
)
_events = st.builds(
    Event.create,
    _text,
    _text,
    _ts,
    org=st.text(max_size=10),
    resource=st.none() | st.text(max_size=10),
    attributes=st.dictionaries(st.text(max_size=10), _values, max_size=6),
)


@settings(max_examples=300, deadline=200)
@given(_events)
def test_binary_round_trip(event: Event) -> None:
    data = codec.encode(event)
    assert codec.decode(data) == event
    assert codec.encode(codec.decode(data)) == data


@settings(max_examples=300, deadline=200)
@given(_events)
def test_json_round_trip(event: Event) -> None:
    assert codec.from_json(codec.to_json(event)) == event


def test_binary_is_compact() -> None:
    e = Event.create(
        "case-000123",
        "ER Registration",
        datetime(2014, 10, 22, 9, 15, 41, tzinfo=UTC),
        org="hospital",
        attributes={"Age": 85, "org:group": "A"},
    )
    assert len(codec.encode(e)) < len(codec.to_json(e)) / 2


def test_timestamps_are_utc_with_microseconds() -> None:
    local = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=-5)))
    e = Event.create("c", "A", local)
    assert e.timestamp == local
    assert e.timestamp.utcoffset() == timedelta(0)
    assert codec.decode(codec.encode(e)).timestamp.microsecond == 123456


def test_event_is_immutable_and_hashable() -> None:
    e = Event.create("c", "A", datetime(2024, 1, 1, tzinfo=UTC), attributes={"x": 1})
    with pytest.raises(AttributeError):
        e.activity = "B"  # type: ignore[misc]
    assert hash(e) == hash(
        Event.create("c", "A", datetime(2024, 1, 1, tzinfo=UTC), attributes={"x": 1})
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"case_id": "", "activity": "A"}, ValueError, "case_id"),
        ({"case_id": "c", "activity": ""}, ValueError, "activity"),
        ({"case_id": "c", "activity": "A", "attributes": {"x": [1]}}, TypeError, "unsupported"),
    ],
)
def test_create_refuses_bad_fields(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Event.create(timestamp=datetime(2024, 1, 1, tzinfo=UTC), **kwargs)


def test_naive_timestamp_refused() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        Event.create("c", "A", datetime(2024, 1, 1))


def test_case_end_marker_round_trips() -> None:
    m = Event.case_end("c", datetime(2024, 1, 1, tzinfo=UTC), org="o")
    assert m.is_marker and m.kind is EventKind.CASE_END
    assert codec.decode(codec.encode(m)) == m
    assert codec.from_json(codec.to_json(m)) == m


@pytest.mark.parametrize(
    ("data", "match"),
    [(b"", "empty input"), (b"\x09abc", "version byte 9"), (b"\x01\xc1", "malformed")],
)
def test_decode_refuses_garbage(data: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        codec.decode(data)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"{", "malformed JSON"),
        (b"[]", "JSON object"),
        (b'{"activity": "A", "timestamp": "2024-01-01T00:00:00Z"}', "case_id"),
        (b'{"case_id": "c", "activity": "A", "timestamp": "2024-01-01T00:00:00"}', "no time zone"),
        (
            b'{"case_id": "c", "activity": "A", "timestamp": "2024-01-01T00:00:00Z", "kind": "x"}',
            "kind",
        ),
    ],
)
def test_from_json_refuses_bad_input(line: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        codec.from_json(line)
