"""VaultTrust against the real broker and a real attestation responder: verified once, then
re-verified on a schedule and at a newer epoch (``keys rotate`` while it runs), distrusted with
the reason when the vault stops answering or answers with evidence that fails; work run under
it is cancelled then; an impersonator's answers change nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from procvault.organization.trust import (
    TrustSettings,
    TrustState,
    VaultDistrusted,
    VaultTrust,
    run_while_trusted,
)
from procvault.streams.attestation import (
    Evidence,
    KeyAnnouncement,
    SimulatedProvider,
    SimulatedVerifier,
)
from procvault.streams.frames import Topics
from procvault.streams.provisioning import AttestationResponder
from procvault.streams.secrets import VaultSecrets

pytestmark = pytest.mark.timeout(180)


@contextlib.asynccontextmanager
async def responding(
    bootstrap: str, topics: Topics, secrets: VaultSecrets, provider: object = None
) -> AsyncIterator[AttestationResponder]:
    responder = AttestationResponder(
        bootstrap,
        topics,
        secrets,
        provider or SimulatedProvider(secrets.identity),  # type: ignore[arg-type]
    )
    task = asyncio.create_task(responder.run())
    await asyncio.sleep(1.5)  # listening, startup announcement out
    try:
        yield responder
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _trust(bootstrap: str, topics: Topics, secrets: VaultSecrets, **kw: float) -> VaultTrust:
    pinned = secrets.identity_public
    settings = TrustSettings(**{"reattest_interval": 1.0, "timeout": 4.0, "retry": 1.0, **kw})
    return VaultTrust(bootstrap, topics, pinned, SimulatedVerifier(pinned, True), settings)


async def _until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def test_trust_is_kept_current_and_moves_to_a_rotated_epoch(
    kafka_bootstrap: str, topic: str
) -> None:
    topics = Topics(topic + ".")
    secrets = VaultSecrets.generate()

    async def run() -> None:
        async with responding(kafka_bootstrap, topics, secrets):
            trust = _trust(kafka_bootstrap, topics, secrets, reattest_interval=1.0)
            async with trust:
                assert trust.current == secrets.current.public()
                await _until(lambda: trust.status().verifications >= 3, 20)
                assert trust.state is TrustState.TRUSTED
                # keys rotate while it runs: a worker with the new epoch starts and announces
                rotated = secrets.rotate()
                async with responding(kafka_bootstrap, topics, rotated):
                    await _until(lambda: trust.current.epoch == 2, 20)
                assert trust.current == rotated.current.public()
                assert trust.state is TrustState.TRUSTED

    asyncio.run(run())


def test_a_newer_epoch_is_picked_up_at_once_not_at_the_next_interval(
    kafka_bootstrap: str, topic: str
) -> None:
    topics = Topics(topic + ".")
    secrets = VaultSecrets.generate()

    async def run() -> None:
        async with responding(kafka_bootstrap, topics, secrets):
            trust = _trust(kafka_bootstrap, topics, secrets, reattest_interval=600.0)
            async with trust:
                rotated = secrets.rotate()
                started = time.monotonic()
                async with responding(kafka_bootstrap, topics, rotated):
                    await _until(lambda: trust.current.epoch == 2, 15)
                assert time.monotonic() - started < 15  # not the 600 s interval

    asyncio.run(run())


def test_a_silent_vault_is_distrusted_and_work_under_it_cancelled(
    kafka_bootstrap: str, topic: str
) -> None:
    topics = Topics(topic + ".")
    secrets = VaultSecrets.generate()
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(120)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "finished"

    async def run() -> tuple[str, float]:
        trust = _trust(kafka_bootstrap, topics, secrets, reattest_interval=1.0, timeout=3.0)
        async with responding(kafka_bootstrap, topics, secrets):
            await trust.start()
        started = time.monotonic()  # the vault is gone from here on
        try:
            with pytest.raises(VaultDistrusted, match="no valid key announcement") as info:
                await run_while_trusted(trust, work())
            with pytest.raises(VaultDistrusted):
                trust.check()
            return str(info.value), time.monotonic() - started
        finally:
            await trust.stop()

    message, took = asyncio.run(run())
    assert cancelled.is_set()
    assert "the vault is no longer trusted" in message and "\n" not in message
    assert took < 1.0 + 3.0 + 3.0  # next round within the interval, then its timeout


def test_the_vaults_own_failing_evidence_distrusts_at_once(
    kafka_bootstrap: str, topic: str
) -> None:
    topics = Topics(topic + ".")
    secrets = VaultSecrets.generate()

    class Broken:
        """The vault's evidence stops binding its keys (say, its enclave was replaced)."""

        def evidence(self, report_data: bytes) -> Evidence:
            return SimulatedProvider(secrets.identity).evidence(bytes(64))

    async def run() -> str:
        trust = _trust(kafka_bootstrap, topics, secrets, reattest_interval=1.0, timeout=30.0)
        async with responding(kafka_bootstrap, topics, secrets):
            await trust.start()
        started = time.monotonic()
        try:
            async with responding(kafka_bootstrap, topics, secrets, Broken()):
                reason = await asyncio.wait_for(trust.wait_distrusted(), 20)
        finally:
            await trust.stop()
        assert time.monotonic() - started < 20  # at once, not after the round's 30 s timeout
        return reason

    reason = asyncio.run(run())
    assert reason.startswith("the vault's answer failed verification: evidence does not bind")


def test_an_impersonator_answering_our_nonces_changes_nothing(
    kafka_bootstrap: str, topic: str
) -> None:
    """Its answers (own identity) arrive on every nonce beside the genuine ones: counted as
    refused, never accepted, never a reason to distrust."""
    topics = Topics(topic + ".")
    secrets, mallory = VaultSecrets.generate(), VaultSecrets.generate()

    async def run() -> VaultTrust:
        async with (
            responding(kafka_bootstrap, topics, secrets),
            responding(kafka_bootstrap, topics, mallory),
        ):
            trust = _trust(kafka_bootstrap, topics, secrets, reattest_interval=1.0)
            async with trust:
                await _until(lambda: trust.status().verifications >= 3, 20)
                assert trust.current == secrets.current.public()
                # rounds until the impersonator's answer came first at least once (which one
                # comes first is a race: it does within a few rounds)
                await _until(
                    lambda: (
                        trust.status().refused.get("not_pinned", 0) >= 1
                        and trust.current == secrets.current.public()
                    ),
                    60,
                )
            return trust

    trust = asyncio.run(run())
    status = trust.status()
    assert status.state is TrustState.TRUSTED
    # (counted when they come first: once the genuine answer closed a round, a later answer to
    # its nonce is just an old announcement)
    assert status.refused.get("not_pinned", 0) >= 1


def test_start_fails_with_the_reason_when_only_an_impersonator_answers(
    kafka_bootstrap: str, topic: str
) -> None:
    topics = Topics(topic + ".")
    secrets, mallory = VaultSecrets.generate(), VaultSecrets.generate()

    async def run() -> None:
        async with responding(kafka_bootstrap, topics, mallory):
            trust = _trust(kafka_bootstrap, topics, secrets, timeout=4.0)
            await trust.start()

    from procvault.streams.attestation import AttestationError

    with pytest.raises(AttestationError, match="not certified by the pinned vault identity"):
        asyncio.run(run())


def test_an_old_genuine_announcement_replayed_proves_nothing(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    """Replaying the vault's earlier answers (another nonce) on every challenge: no trust."""
    from procvault.streams.attestation import AttestationError

    topics = Topics(topic + ".")
    secrets = VaultSecrets.generate()
    old = KeyAnnouncement.create(secrets, SimulatedProvider(secrets.identity), nonce=os.urandom(16))

    async def run() -> None:
        from aiokafka import AIOKafkaProducer

        from procvault.streams.kafka_io import ensure_topics

        await ensure_topics(kafka_bootstrap, [topics.keys, topics.attest])
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()

        async def replay() -> None:
            while True:
                await producer.send_and_wait(topics.keys, old.to_bytes())
                await asyncio.sleep(0.2)

        replaying = asyncio.create_task(replay())
        try:
            await _trust(kafka_bootstrap, topics, secrets, timeout=3.0).start()
        finally:
            replaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replaying
            await producer.stop()

    with pytest.raises(AttestationError, match="no valid key announcement bound to this nonce"):
        asyncio.run(run())
