"""Attested key provisioning over Kafka: an agent's challenge, the vault's signed answer.

The agent writes a fresh 16-byte nonce to ``vault.attest``; every vault worker answers on
``vault.keys`` with a :class:`~.attestation.KeyAnnouncement` of the current epoch whose
evidence binds that nonce. The agent accepts only an announcement bound to *its* nonce (an old
announcement, however valid, proves nothing about the vault running now), checks the signature,
the evidence (its :class:`~.attestation.Verifier`) and the age, and only then learns the keys
it encrypts to. Announcements for other agents' nonces are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import TYPE_CHECKING, Any

from procvault.monitor.errors import KafkaSetupError

from .attestation import AttestationError, KeyAnnouncement, Provider, Verifier
from .envelope import VaultPublicKeys
from .frames import Topics

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from .secrets import VaultSecrets

__all__ = ["AttestationResponder", "attest_vault"]


async def attest_vault(
    bootstrap: str,
    topics: Topics,
    verifier: Verifier,
    *,
    timeout: float = 60.0,
    retry: float = 2.0,
    max_age: float = 300.0,
) -> VaultPublicKeys:
    """Challenge the vault and return its verified public keys; :class:`AttestationError` if
    the answer fails verification or no answer bound to our nonce comes within ``timeout``."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    nonce = os.urandom(16)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await consumer.start()
        await producer.start()
    except Exception as exc:
        await _stop(consumer, producer)
        raise KafkaSetupError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    try:
        tp = TopicPartition(topics.keys, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        deadline = time.monotonic() + timeout
        next_ask = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise AttestationError(
                    f"no key announcement bound to this agent's nonce within {timeout:.0f} s "
                    "(is a vault running, and answering on the attestation topic?)"
                )
            if now >= next_ask:
                await producer.send_and_wait(topics.attest, nonce)
                next_ask = now + retry
            batch = await consumer.getmany(tp, timeout_ms=200)
            for rec in batch.get(tp, ()):
                try:
                    ann = KeyAnnouncement.from_bytes(rec.value)
                except AttestationError:
                    continue
                if ann.nonce != nonce:
                    continue  # another agent's challenge, or an old answer
                return ann.check(verifier, nonce=nonce, max_age=max_age)
    finally:
        await _stop(consumer, producer)


async def _stop(*clients: Any) -> None:
    for c in clients:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await c.stop()


class AttestationResponder:
    """The vault's side: answer each nonce on ``vault.attest`` with a fresh announcement.

    Runs as a background task beside the vault worker (:meth:`run`).
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        secrets: VaultSecrets,
        provider: Provider,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.secrets = secrets
        self.provider = provider
        self.answered = 0

    async def announce(self, producer: AIOKafkaProducer, nonce: bytes) -> None:
        """Publish an announcement of the current epoch bound to ``nonce``."""
        ann = KeyAnnouncement.create(self.secrets.current, self.provider, nonce=nonce)
        await producer.send_and_wait(self.topics.keys, ann.to_bytes())
        self.answered += 1

    async def run(self) -> None:
        """Answer challenges until cancelled. An announcement with a random nonce goes out at
        start, so readers of results can learn the public keys without a challenge.

        No consumer group: every worker reads every challenge from the moment it starts (a
        group would leave challenges unanswered while a dead member's session times out);
        an agent takes the first valid answer bound to its nonce.
        """
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from .kafka_io import ensure_topics

        await ensure_topics(self.bootstrap, [self.topics.attest, self.topics.keys])
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None
        )
        await producer.start()
        try:
            await consumer.start()
            tp = TopicPartition(self.topics.attest, 0)
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            await consumer.position(tp)
            await self.announce(producer, os.urandom(16))
            while True:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for rec in batch.get(tp, ()):
                    if isinstance(rec.value, bytes) and len(rec.value) == 16:
                        await self.announce(producer, rec.value)
        finally:
            await _stop(consumer, producer)
