"""Reading the vault's model releases (``results.models.<org>``, see
:mod:`procvault.streams.models`): the announcements on ``vault.keys`` that chain to the pinned
vault identity first, then every release of the organization, each verified against the
announced key of its epoch and opened with the organization's key; anything else is counted
and skipped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from procvault.monitor.discovery import DiscoveredModel, decode_model
from procvault.monitor.errors import KafkaSetupError

__all__ = ["ReleasedModels", "read_models"]


@dataclass
class ReleasedModels:
    """What :func:`read_models` found: the newest verified release (``None``: none) and what
    was refused, by reason."""

    model: DiscoveredModel | None = None
    finished: bool = False
    partitions: int = 0
    sequence: int = 0
    releases: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


async def read_models(
    bootstrap: str,
    topics: Any,
    *,
    identity: bytes,
    verifier: Any,
    org_keys: Any,
    timeout: float = 30.0,
) -> ReleasedModels:
    """Read ``org_keys.org``'s model releases to the end of its topic (see the module
    docstring)."""
    import asyncio

    from aiokafka import TopicPartition

    from procvault.results.reader import start_committed_reader
    from procvault.streams.attestation import AnnouncedKeys
    from procvault.streams.envelope import RejectedRecord
    from procvault.streams.frames import open_result
    from procvault.streams.kafka_io import _stop_consumer
    from procvault.streams.models import decode_release, models_topic

    found = ReleasedModels()
    announced = AnnouncedKeys(identity, verifier)
    topic = models_topic(topics.prefix, org_keys.org)
    consumer = await start_committed_reader(bootstrap, "procvault-discover")
    try:
        existing = await consumer.topics()
        for t in (topics.keys, topic):
            if t not in existing:
                raise KafkaSetupError(
                    f"topic {t} does not exist at {bootstrap} (is `procvault models` running "
                    "with this --topic-prefix?)"
                )
        tps = [TopicPartition(topics.keys, 0), TopicPartition(topic, 0)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        values: list[bytes | None] = []
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while pending:
            if loop.time() > deadline:
                raise KafkaSetupError(f"the end of {topic} was not reached within {timeout:.0f} s")
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, recs in batch.items():
                for r in recs:
                    if r.offset >= ends[tp]:
                        continue
                    if tp.topic == topics.keys:
                        announced.add(r.value)
                    else:
                        values.append(r.value)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await _stop_consumer(consumer)
    for value in values:
        try:
            if value is None:
                raise RejectedRecord("malformed", "empty record")
            body = open_result(org_keys.alerts, value, topic=topic, keys=announced.epochs)
            release = decode_release(body)
            model = decode_model(release.model)
        except RejectedRecord as exc:
            found.rejected[exc.reason] += 1
            continue
        except ValueError:
            found.rejected["malformed"] += 1
            continue
        found.releases += 1
        if release.sequence > found.sequence:
            found.model, found.sequence = model, release.sequence
            found.finished, found.partitions = release.finished, release.partitions
    return found
