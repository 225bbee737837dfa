"""Which real Kafka broker a test session uses, and the testcontainers one.

``choose_broker`` decides, in this order:

1. ``$KAFKA_BOOTSTRAP`` names a running broker: ``"external"``.
2. ``$PROCVAULT_TEST_BROKER``: ``jars`` forces the broker started from the cached Maven jars
   (``procvault.streams.kafka_local``), ``testcontainers`` forces a container (an error when no
   Docker engine answers); ``auto`` (the default) picks as follows.
3. A Docker engine answers testcontainers' own client (``DockerClient().client.ping()``, the
   check its containers start with): ``"testcontainers"``, testcontainers' Kafka module in
   KRaft mode (image ``$PROCVAULT_TEST_KAFKA_IMAGE``, default :data:`KAFKA_IMAGE`).
4. Otherwise ``"jars"``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Literal

BrokerKind = Literal["external", "testcontainers", "jars"]

#: Confluent Platform 7.9 is Apache Kafka 3.9 in KRaft mode (testcontainers' Kafka module
#: configures Confluent's images; the jar broker is Apache Kafka 4.4).
KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"


def docker_available(timeout: float = 5.0) -> bool:
    """Whether a Docker engine answers testcontainers' client (False on any failure)."""
    try:
        from testcontainers.core.docker_client import DockerClient, get_docker_host

        host = get_docker_host() or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if host.startswith("unix://"):
            # connect first: docker-py leaks its socket when the engine's socket refuses
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                probe.connect(host.removeprefix("unix://"))

        # a fixed API version: the default ("auto") asks the engine inside the constructor
        # and leaks that socket when nothing answers
        client = DockerClient(timeout=timeout, version="1.41").client
    except Exception:  # no socket, no permission, no engine: no Docker
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def choose_broker(
    env: Mapping[str, str], docker: Callable[[], bool] = docker_available
) -> BrokerKind:
    """The broker for a test session (see the module docstring); ``docker`` is only called
    when the choice depends on it."""
    if env.get("KAFKA_BOOTSTRAP"):
        return "external"
    forced = env.get("PROCVAULT_TEST_BROKER", "auto").strip().lower() or "auto"
    if forced == "jars":
        return "jars"
    if forced == "testcontainers":
        if not docker():
            raise RuntimeError(
                "PROCVAULT_TEST_BROKER=testcontainers but no Docker engine answers "
                "(docker info); unset it to use the Maven-jar broker"
            )
        return "testcontainers"
    if forced != "auto":
        raise ValueError(f"PROCVAULT_TEST_BROKER={forced!r}: expected auto, testcontainers or jars")
    return "testcontainers" if docker() else "jars"


@contextlib.contextmanager
def testcontainers_kafka(image: str | None = None) -> Iterator[str]:
    """A single-node KRaft broker in a container; yields its ``host:port``."""
    from testcontainers.community.kafka import KafkaContainer

    container = KafkaContainer(image or os.environ.get("PROCVAULT_TEST_KAFKA_IMAGE", KAFKA_IMAGE))
    # one broker: the transaction log (the vault and the agents write transactionally) and
    # its ISR must fit on it, as kafka_local configures the jar broker
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
    container.with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
    container.with_env("KAFKA_MIN_INSYNC_REPLICAS", "1")
    with container.with_kraft() as kafka:
        yield kafka.get_bootstrap_server()
