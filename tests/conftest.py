"""Shared test fixtures: the shared data folder and (for integration tests) one Kafka broker."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

# ----------------------------------------------------------------------------- shared data
#: The shared data folder (logs, models, rules): ``$PROCVAULT_SHARED_DATA`` or ``../shared/data``
#: next to the repository, as the project's README describes.
SHARED_DATA = Path(
    os.environ.get(
        "PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"
    )
)


def _shared(rel: str) -> Path:
    path = SHARED_DATA / rel
    if not path.exists():
        pytest.fail(f"shared data file {path} is missing (set PROCVAULT_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def sepsis_log() -> Path:
    """Sepsis Cases: 15,214 events, 1,050 cases."""
    return _shared("logs/sepsis_cases.xes.gz")


@pytest.fixture(scope="session")
def running_example_log() -> Path:
    """The 6-case running example."""
    return _shared("logs/running-example.xes.gz")


# ----------------------------------------------------------------------------- Kafka
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the broker ``kafka``, so ``-m "not kafka"`` skips them all."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka broker for this test session.

    ``$KAFKA_BOOTSTRAP`` names an existing broker; otherwise one real single-node broker:
    testcontainers' Kafka module where a Docker engine answers, else one started from its
    Maven jars (see ``procvault.streams.kafka_local``) on free ports in a temporary directory
    (the choice: ``tests/kafka_broker.py``, ``$PROCVAULT_TEST_BROKER``), stopped when the
    session ends.
    """
    from kafka_broker import choose_broker, testcontainers_kafka

    from procvault.streams.kafka_local import LocalKafka, free_port, install_jars, wait_ready

    kind = choose_broker(os.environ)
    if kind == "external":
        external = os.environ["KAFKA_BOOTSTRAP"]
        wait_ready(external, timeout=30.0)
        yield external
        return
    if kind == "testcontainers":
        with testcontainers_kafka() as bootstrap:
            wait_ready(bootstrap, timeout=60.0)
            yield bootstrap
        return
    install_jars()
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    broker = LocalKafka(
        data_dir=tmp_path_factory.mktemp("kafka"), port=port, controller_port=controller_port
    )
    broker.start(timeout=120.0)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses (Kafka-legal characters only)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name[:40]).strip("-.")
    return f"t-{name}-{uuid4().hex[:8]}"


# ----------------------------------------------------------------------------- pm4py logs
@pytest.fixture(scope="session")
def make_pm4py_log() -> Callable[[list[list[str]]], Any]:
    """Build a pm4py ``EventLog`` from activity lists: case ``c<i>``, one minute per event."""

    def build(traces: list[list[str]]) -> Any:
        from datetime import UTC, datetime, timedelta

        from procvault.generators._pm4py import import_pm4py

        import_pm4py()
        from pm4py.objects.log.obj import Event, EventLog, Trace

        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        log = EventLog()
        for i, acts in enumerate(traces):
            trace = Trace(attributes={"concept:name": f"c{i}"})
            for j, activity in enumerate(acts):
                trace.append(
                    Event({"concept:name": activity, "time:timestamp": t0 + timedelta(minutes=j)})
                )
            log.append(trace)
        return log

    return build
