"""``procvault models``: the exact consortium release of the discovered models (see
:mod:`procvault.streams.models`).

It runs in the vault's trust domain (it opens the vault's sealed partials with the vault's
state key and signs with its epoch key), reads ``vault.discovery`` from the beginning
(``read_committed``: only what the vault's transactions committed), keeps the newest partial
of every partition and, once every partition has reported and at most every ``every``
seconds while they change, publishes the merged models to each granted organization's
``results.models.<org>``, signed and sealed to it. With ``once`` it publishes when every
partition has finished and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from procvault.monitor.discovery import (
    DeclareSettings,
    HeuristicsSettings,
    build_model,
    encode_model,
)
from procvault.monitor.errors import ConfigError, KafkaSetupError

from .changelog import StateKeys
from .envelope import RejectedRecord
from .frames import Topics, seal_result
from .models import (
    DISCOVERY_TOPIC,
    ModelCombiner,
    ModelRelease,
    encode_release,
    models_topic,
    open_discovery,
)

if TYPE_CHECKING:
    from .secrets import Registry, VaultSecrets

__all__ = ["ModelPublisher"]

log = logging.getLogger("procvault.models")


class ModelPublisher:
    """Publish the consortium's exact models (see the module docstring).

    Parameters
    ----------
    bootstrap, topics
        Kafka and the deployment's topic names.
    secrets, registry
        The vault's keys (state key to open partials, epoch key to sign) and the registry
        (each organization's alert key, to seal to).
    orgs
        The organizations the consortium grants the models to.
    every
        Least seconds between two releases while the partials change.
    once
        Publish when every partition has finished, then return.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        secrets: VaultSecrets,
        registry: Registry,
        orgs: Sequence[str],
        *,
        every: float = 30.0,
        once: bool = False,
        heuristics: HeuristicsSettings | None = None,
        declare: DeclareSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = sorted(set(orgs) - set(registry.orgs))
        if unknown:
            raise ConfigError(f"--to names unregistered organizations: {', '.join(unknown)}")
        if not orgs:
            raise ConfigError("no organization to publish the models to")
        self.bootstrap = bootstrap
        self.topics = topics
        self.secrets = secrets
        self.registry = registry
        self.orgs = tuple(sorted(orgs))
        self.every = every
        self.once = once
        self.heuristics = heuristics
        self.declare = declare
        self.clock = clock
        self.keys = StateKeys(secrets)
        self.combiner = ModelCombiner()
        self.rejected: Counter[str] = Counter()
        self.releases = 0
        self._stopping = asyncio.Event()
        self._sequence = time.time_ns() // 1000

    def stop(self) -> None:
        """Ask :meth:`run` to return after its current step."""
        self._stopping.set()

    def receive(self, key: bytes | None, value: bytes | None) -> bool:
        """Take one ``vault.discovery`` record (counted and skipped if it does not open)."""
        try:
            partial = open_discovery(self.keys, key, value)
            return self.combiner.add(partial)
        except RejectedRecord as exc:
            self.rejected[exc.reason] += 1
            log.warning("refused a vault.discovery record: %s", exc)
        except ValueError as exc:
            self.rejected["mismatch"] += 1
            log.warning("refused a vault.discovery record: %s", exc)
        return False

    def release(self) -> list[tuple[str, bytes]]:
        """``(topic, value)`` of the release of what the combiner holds, one per organization."""
        c = self.combiner
        model = build_model(c.counts(), heuristics=self.heuristics, declare=self.declare)
        self._sequence += 1
        body = encode_release(
            ModelRelease(
                self._sequence,
                c.partitions or 0,
                c.finished,
                c.versions(),
                encode_model(model),
            )
        )
        keys = self.secrets.current
        out = []
        for org in self.orgs:
            topic = models_topic(self.topics.prefix, org)
            out.append((topic, seal_result(self.registry.orgs[org], body, topic=topic, keys=keys)))
        return out

    async def run(self, *, ready: Callable[[], None] | None = None) -> int:
        """Read and publish until :meth:`stop` (or, with ``once``, the finished release);
        returns the number of releases."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from .kafka_io import ensure_topics

        source = self.topics.prefix + DISCOVERY_TOPIC
        await ensure_topics(self.bootstrap, [source], compacted=True)
        await ensure_topics(
            self.bootstrap, [models_topic(self.topics.prefix, o) for o in self.orgs]
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="procvault-models",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id="procvault-models",
            enable_idempotence=True,
            acks="all",
            max_request_size=4 * 1024 * 1024,
        )
        try:
            await consumer.start()
            await producer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()
            raise KafkaSetupError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from None
        try:
            tp = TopicPartition(source, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            if ready is not None:
                ready()
            published: tuple[tuple[int, int], ...] | None = None
            last = -float("inf")
            while not self._stopping.is_set():
                batch = await consumer.getmany(tp, timeout_ms=500)
                for r in batch.get(tp, []):
                    self.receive(r.key, r.value)
                c = self.combiner
                if not c.complete or c.versions() == published:
                    continue
                if self.once and not c.finished:
                    continue
                if not self.once and self.clock() - last < self.every and not c.finished:
                    continue
                for topic, value in self.release():
                    await producer.send_and_wait(topic, value)
                self.releases += 1
                published, last = c.versions(), self.clock()
                log.info(
                    "released the models of %d partition(s)%s to %s",
                    c.partitions,
                    " (finished)" if c.finished else "",
                    ", ".join(self.orgs),
                )
                if self.once:
                    break
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await consumer.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await producer.stop()
        return self.releases
