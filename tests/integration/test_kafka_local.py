"""The local Kafka broker (from Maven jars) and the aiokafka event I/O, against the real thing."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from procvault.monitor.errors import ConfigError, KafkaSetupError
from procvault.monitor.event import Event
from procvault.streams import codec
from procvault.streams.kafka_io import EventPublisher, ensure_topics, parse_kafka_url, read_topic
from procvault.streams.kafka_local import (
    LocalKafka,
    free_port,
    install_jars,
    wait_ready,
    wait_ready_async,
)

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
ORGS = ("hospital", "lab")


def _events(n: int) -> list[Event]:
    """``n`` events over 37 cases, alternating between two orgs, with a sequence attribute."""
    return [
        Event.create(
            f"case-{i % 37}",
            f"A{i % 5}",
            T0 + timedelta(seconds=i),
            org=ORGS[(i % 37) % 2],
            resource=f"r{i % 3}",
            attributes={"seq": i},
        )
        for i in range(n)
    ]


def _broker_on_free_ports(data_dir: Path) -> LocalKafka:
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    return LocalKafka(data_dir=data_dir, port=port, controller_port=controller_port)


def test_session_broker_is_ready(kafka_bootstrap: str) -> None:
    wait_ready(kafka_bootstrap, timeout=10.0)


async def test_session_broker_is_ready_async(kafka_bootstrap: str) -> None:
    await wait_ready_async(kafka_bootstrap, timeout=10.0)
    wait_ready(kafka_bootstrap, timeout=10.0)  # the sync form works inside a running loop too


async def test_publish_1000_events_to_org_topics_and_read_them_back(
    kafka_bootstrap: str, topic: str
) -> None:
    bootstrap, template = parse_kafka_url(f"kafka://{kafka_bootstrap}/{topic}-{{org}}")
    events = _events(1_000)
    async with EventPublisher(bootstrap, template, partitions=3) as pub:
        for event in events:
            await pub.send(event)
        await pub.flush()
    expected_counts = {f"{topic}-{org}": sum(e.org == org for e in events) for org in ORGS}
    assert pub.counts == expected_counts
    assert pub.delivered == expected_counts
    assert sum(expected_counts.values()) == 1_000
    assert all(count > 0 for count in expected_counts.values())

    for org in ORGS:
        org_topic = f"{topic}-{org}"
        sent = [e for e in events if e.org == org]
        records = await read_topic(bootstrap, org_topic, idle_timeout=10.0)
        assert len(records) == len(sent)
        assert {r.partition for r in records} <= {0, 1, 2}

        # Byte-identical values, keyed by case id.
        assert sorted(r.value for r in records) == sorted(codec.encode(e) for e in sent)
        for r in records:
            assert r.key == codec.decode(r.value).case_id.encode()

        # Per-key order: each case's values, in log order, are its events in send order.
        sent_by_case: dict[bytes, list[bytes]] = defaultdict(list)
        for e in sent:
            sent_by_case[e.case_id.encode()].append(codec.encode(e))
        got_by_case: dict[bytes, list[bytes]] = defaultdict(list)
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            got_by_case[r.key].append(r.value)
        assert got_by_case == sent_by_case


async def test_custom_value_fn_and_plain_topic(kafka_bootstrap: str, topic: str) -> None:
    events = _events(10)
    async with EventPublisher(kafka_bootstrap, topic, value_fn=codec.to_json) as pub:
        for event in events:
            await pub.send(event)
    assert pub.counts == {topic: 10}
    records = await read_topic(kafka_bootstrap, topic)
    assert [r.value for r in records] == [codec.to_json(e) for e in events]


async def test_read_topic_stops_at_max_records_and_on_empty_topics(
    kafka_bootstrap: str, topic: str
) -> None:
    await ensure_topics(kafka_bootstrap, [f"{topic}-empty", topic], partitions=2)
    await ensure_topics(kafka_bootstrap, [topic], partitions=2)  # already there: no error
    started = time.monotonic()
    assert await read_topic(kafka_bootstrap, f"{topic}-empty", idle_timeout=30.0) == []
    assert time.monotonic() - started < 10.0  # stops at the end offsets, not the idle timeout

    async with EventPublisher(kafka_bootstrap, topic) as pub:
        for event in _events(50):
            await pub.send(event)
    assert len(await read_topic(kafka_bootstrap, topic, max_records=7)) == 7
    assert await read_topic(kafka_bootstrap, topic, max_records=0) == []
    assert len(await read_topic(kafka_bootstrap, topic, max_records=500)) == 50


async def test_read_topic_refuses_a_missing_topic(kafka_bootstrap: str, topic: str) -> None:
    with pytest.raises(KafkaSetupError, match=r"does not exist.*ensure_topics"):
        await read_topic(kafka_bootstrap, f"{topic}-missing")
    with pytest.raises(ConfigError, match="idle_timeout must be positive"):
        await read_topic(kafka_bootstrap, topic, idle_timeout=0)


async def test_publisher_errors_are_clear(kafka_bootstrap: str, topic: str) -> None:
    with pytest.raises(ConfigError, match="not a legal Kafka topic name"):
        EventPublisher(kafka_bootstrap, "bad topic")
    with pytest.raises(ConfigError, match="partitions must be a positive integer"):
        EventPublisher(kafka_bootstrap, topic, partitions=0)
    pub = EventPublisher(kafka_bootstrap, f"{topic}-{{org}}")
    with pytest.raises(RuntimeError, match="not started"):
        await pub.send(_events(1)[0])
    async with pub:
        with pytest.raises(ConfigError, match="needs the event's org"):
            await pub.send(_events(1)[0].with_org(""))
    await pub.stop()  # a second stop is harmless


async def test_unreachable_broker_is_a_setup_error() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(KafkaSetupError, match=r"cannot reach Kafka at 127\.0\.0\.1"):
        async with EventPublisher(bootstrap, "t"):
            pass
    with pytest.raises(KafkaSetupError, match="cannot reach Kafka"):
        await ensure_topics(bootstrap, ["t"])
    with pytest.raises(KafkaSetupError, match=r"not ready within 0\.3 s"):
        wait_ready(bootstrap, timeout=0.3)


def test_stop_is_harmless_when_not_running(tmp_path: Path) -> None:
    broker = LocalKafka(data_dir=tmp_path / "never-started")
    broker.stop()
    broker.stop()
    assert broker.status() == {
        "running": False,
        "pid": None,
        "bootstrap": "127.0.0.1:19092",
        "data_dir": str(tmp_path / "never-started"),
    }


def test_settings_are_checked_up_front(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"port must be an integer in 1\.\.65535"):
        LocalKafka(data_dir=tmp_path, port=70000)
    with pytest.raises(ConfigError, match="must differ"):
        LocalKafka(data_dir=tmp_path, port=9000, controller_port=9000)
    with pytest.raises(ConfigError, match="heap must look like 512m"):
        LocalKafka(data_dir=tmp_path, heap="lots")


@pytest.mark.kafka
def test_install_is_offline_once_complete_and_missing_tools_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    libs = install_jars()  # already done for the session broker (or done now)
    assert libs.name == "libs" and any(libs.glob("kafka_2.13-*.jar"))
    monkeypatch.setenv("PATH", str(tmp_path))  # neither mvn nor java from here on
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert install_jars() == libs  # the marker is there: no Maven, no network
    with pytest.raises(KafkaSetupError, match=r"^`mvn` was not found on PATH; install Maven"):
        install_jars(tmp_path / "fresh-home")
    broker = LocalKafka(data_dir=tmp_path / "k", port=free_port(), controller_port=free_port())
    with pytest.raises(KafkaSetupError, match=r"^`java` was not found on PATH; install a Java 17"):
        broker.start()


@pytest.mark.kafka
def test_a_second_broker_on_an_occupied_port_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    host, _, port = kafka_bootstrap.rpartition(":")
    if host in {"127.0.0.1", "localhost"}:  # the session broker's own port
        taken = int(port)
        broker = LocalKafka(data_dir=tmp_path / "k", port=taken, controller_port=free_port())
        with pytest.raises(KafkaSetupError, match=rf"^port {taken} on 127\.0\.0\.1 is already"):
            broker.start()
        assert not broker.status()["running"]

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        broker = LocalKafka(data_dir=tmp_path / "k", port=busy, controller_port=free_port())
        with pytest.raises(KafkaSetupError, match=rf"^port {busy} .* already in use"):
            broker.start()
        broker = LocalKafka(data_dir=tmp_path / "k", port=free_port(), controller_port=busy)
        with pytest.raises(KafkaSetupError, match=rf"^controller port {busy} .* already in use"):
            broker.start()
    assert not (tmp_path / "k" / "kafka.pid").exists()


@pytest.mark.kafka
def test_local_kafka_lifecycle_and_restart(tmp_path: Path) -> None:
    broker = _broker_on_free_ports(tmp_path / "kafka")
    events = _events(20)
    with broker:
        status = broker.status()
        assert status["running"] is True
        assert isinstance(status["pid"], int)
        assert status["bootstrap"] == broker.bootstrap
        broker.start()  # already running: returns once ready
        # Another handle on the same data directory sees it through the pid file ...
        other = LocalKafka(
            data_dir=tmp_path / "kafka", port=broker.port, controller_port=broker.controller_port
        )
        assert other.status()["pid"] == status["pid"]
        other.start()  # ... and start() just waits for the running broker
        assert broker.log_file.exists()
        # `procvault kafka status` without --port finds the port this data folder's broker uses
        status_cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "procvault",
                "kafka",
                "status",
                "--data-dir",
                str(other.data_dir),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert status_cli.returncode == 0, status_cli.stderr
        assert json.loads(status_cli.stdout)["bootstrap"] == broker.bootstrap != "127.0.0.1:19092"

        async def publish() -> None:
            async with EventPublisher(broker.bootstrap, "kept") as pub:
                for event in events:
                    await pub.send(event)

        asyncio.run(publish())
    assert broker.status()["running"] is False
    assert other.status()["running"] is False
    broker.stop()  # stopping twice is harmless
    broker.stop()

    # Data survives a restart (the storage is formatted once, not again).
    with broker:
        records = asyncio.run(read_topic(broker.bootstrap, "kept"))
        assert [r.value for r in records] == [codec.encode(e) for e in events]
    assert "Kafka Server started" in broker.log_file.read_text()


@pytest.mark.kafka
def test_broker_death_during_startup_reports_its_log(tmp_path: Path) -> None:
    broker = _broker_on_free_ports(tmp_path / "kafka")
    broker = LocalKafka(
        data_dir=tmp_path / "kafka",
        port=broker.port,
        controller_port=broker.controller_port,
        heap="1k",  # the JVM refuses to start with so small a heap
    )
    with pytest.raises(
        KafkaSetupError, match=r"exited with code \d+ during start-up.*Last lines: "
    ):
        broker.start(timeout=60.0)
    assert broker.status()["running"] is False
    assert not (tmp_path / "kafka" / "kafka.pid").exists()
