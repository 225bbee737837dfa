"""``kafka://HOST:PORT/TOPIC`` URLs and topic templates."""

from __future__ import annotations

import pytest

from procvault.monitor.errors import ConfigError
from procvault.streams.kafka_io import parse_kafka_url, topic_for


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("kafka://127.0.0.1:19092/events", ("127.0.0.1:19092", "events")),
        ("kafka://broker.example:9092/events-{org}", ("broker.example:9092", "events-{org}")),
        ("kafka://localhost:1/a.b_c-D", ("localhost:1", "a.b_c-D")),
        ("kafka://[::1]:9092/t", ("[::1]:9092", "t")),
        ("kafka://h:9092/{org}", ("h:9092", "{org}")),
    ],
)
def test_valid_urls(url: str, expected: tuple[str, str]) -> None:
    assert parse_kafka_url(url) == expected


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://127.0.0.1:9092/events", "must start with kafka://"),
        ("127.0.0.1:9092/events", "must start with kafka://"),
        ("kafka://127.0.0.1/events", "lacks a port"),
        ("kafka://:9092/events", "lacks a host"),
        ("kafka://127.0.0.1:9092", "lacks a topic"),
        ("kafka://127.0.0.1:9092/", "lacks a topic"),
        ("kafka://127.0.0.1:0/events", "has port 0"),
        ("kafka://127.0.0.1:notaport/events", "is malformed"),
        ("kafka://127.0.0.1:99999/events", "is malformed"),
        ("kafka://user:pw@127.0.0.1:9092/events", "must not hold credentials"),
        ("kafka://127.0.0.1:9092/events?x=1", "must not have a query"),
        ("kafka://127.0.0.1:9092/events#frag", "must not have a query"),
        ("kafka://127.0.0.1:9092/a/b", "not a legal Kafka topic name"),
        ("kafka://127.0.0.1:9092/ev ents", "not a legal Kafka topic name"),
        ("kafka://127.0.0.1:9092/events-{tenant}", "not a legal Kafka topic name"),
        ("kafka://127.0.0.1:9092/" + "x" * 250, "not a legal Kafka topic name"),
        ("kafka://127.0.0.1:9092/..", "not a legal Kafka topic name"),
    ],
)
def test_invalid_urls_name_the_url_and_the_fix(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        parse_kafka_url(url)
    message = str(info.value)
    assert "\n" not in message
    assert "kafka://HOST:PORT/TOPIC" in message or "legal Kafka topic name" in message
    if url.startswith("kafka://"):
        assert repr(url) in message


def test_non_string_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        parse_kafka_url(b"kafka://h:1/t")  # type: ignore[arg-type]


def test_topic_for_replaces_org() -> None:
    assert topic_for("ev-{org}", "lab") == "ev-lab"
    assert topic_for("{org}.{org}", "a") == "a.a"
    assert topic_for("plain", "anything at all") == "plain"


@pytest.mark.parametrize(
    ("org", "match"),
    [("", "needs the event's org"), ("bad org", "not a legal Kafka topic name")],
)
def test_topic_for_refuses_unusable_orgs(org: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        topic_for("ev-{org}", org)
