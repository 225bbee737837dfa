"""Attacks on the pipeline, against the real broker and a real vault worker process: every
forged, tampered, replayed or misdirected record is refused and counted, never applied; an
agent refuses a vault whose attestation fails."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pipeline_harness import ORGS, Deployment

from procvault.monitor.event import Event
from procvault.streams import codec
from procvault.streams.attestation import (
    AttestationError,
    Evidence,
    KeyAnnouncement,
    SimulatedProvider,
    SimulatedVerifier,
)
from procvault.streams.envelope import ProducerSession, VaultKeys
from procvault.streams.frames import EVENT, Topics, encode_frame, encode_heartbeat
from procvault.streams.provisioning import attest_vault
from procvault.streams.secrets import OrgKeys, VaultSecrets

pytestmark = pytest.mark.timeout(300)

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


async def _send(bootstrap: str, records: list[tuple[str, bytes | None, bytes, int | None]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value, partition in records:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def test_forged_tampered_and_replayed_records_are_refused_and_counted(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    secrets = VaultSecrets.load(dep.keys / "vault.json")
    vault_pub = secrets.current.public()
    emergency = OrgKeys.load(dep.keys / "org-emergency.json")
    assert emergency.sender is not None
    topic = dep.topics.events("emergency")
    session = ProducerSession(vault_pub, emergency.sender, org="emergency", producer="agent-1")

    def event(i: int, activity: str) -> bytes:
        ev = Event.create("victim", activity, T0 + timedelta(minutes=i), org="emergency")
        frame = encode_frame(EVENT, i * 256, 0, codec.encode(ev))
        return session.seal(frame, topic=topic, partition=0)

    genuine = [event(0, "ER Registration"), event(1, "ER Triage"), event(2, "ER Sepsis Triage")]
    flipped = bytearray(event(3, "IV Liquid"))
    flipped[-20] ^= 1
    mallory = ProducerSession(vault_pub, X25519PrivateKey.generate(), org="mallory", producer="m")
    unregistered = mallory.seal(
        encode_frame(EVENT, 4, 0, codec.encode(Event.create("victim", "IV Liquid", T0))),
        topic=topic,
        partition=0,
    )
    retired = ProducerSession(
        VaultKeys.generate(epoch=99).public(), emergency.sender, org="emergency", producer="r"
    )
    old_epoch = retired.seal(
        encode_frame(EVENT, 5, 0, codec.encode(Event.create("victim", "IV Liquid", T0))),
        topic=topic,
        partition=0,
    )
    # a record copied to another organization's topic fails its tag (the topic is authenticated)
    moved = event(6, "Leucocytes")
    attacks: list[tuple[str, bytes | None, bytes, int | None]] = [
        (topic, None, genuine[0], 0),
        (topic, None, genuine[1], 0),
        (topic, None, genuine[0], 0),  # replayed
        (topic, None, bytes(flipped), 0),  # one ciphertext bit flipped
        (topic, None, unregistered, 0),  # an organization nobody registered
        (topic, None, old_epoch, 0),  # an epoch the vault does not accept
        (dep.topics.events("lab"), None, moved, 0),  # moved to another topic
        (topic, None, b"\x01garbage", 0),  # not an envelope at all
        (topic, None, genuine[2], 0),
    ]
    try:
        vault = dep.vault("--source-timeout", "0")
        asyncio.run(_send(kafka_bootstrap, attacks))
        # every organization closes its stream, so the merge lets everything through
        closing = []
        for org in ORGS:
            sender = OrgKeys.load(dep.keys / f"org-{org}.json").sender
            assert sender is not None
            s = ProducerSession(vault_pub, sender, org=org, producer="closer")
            t = dep.topics.events(org)
            beat = s.seal(encode_heartbeat(0, 0, 0, closed=True), topic=t, partition=0)
            closing.append((t, None, beat, 0))
        asyncio.run(_send(kafka_bootstrap, closing))
        results = _wait_case(dep, "emergency", "victim")
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["rejected"] == {
        "malformed": 1,
        "unknown_org": 1,
        "unknown_epoch": 1,
        "bad_tag": 2,
        "replay": 1,
        "bad_signature": 0,
        "future": 0,
        "wrong_org": 0,
    }
    assert stats["applied"] == 3  # the genuine events only, each once
    (case,) = [r for r in results if r["type"] == "case"]
    assert case["events"] == 3
    # rejected records never reach an organization's results
    assert all(r.get("activity") not in ("IV Liquid", "Leucocytes") for r in results)


def _wait_case(dep: Deployment, org: str, case_id: str, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = [i for i in dep.results(org) if i.get("case") == case_id]
        if any(i["type"] == "case" for i in items):
            return items
        time.sleep(0.5)
    raise AssertionError(f"no result for {case_id}")


# ----------------------------------------------------------------------------- attestation
class _FakeVault:
    """Answers attestation challenges with a crafted announcement."""

    def __init__(self, bootstrap: str, topics: Topics, answer: Any) -> None:
        self.bootstrap, self.topics, self.answer = bootstrap, topics, answer

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from procvault.streams.kafka_io import ensure_topics

        await ensure_topics(self.bootstrap, [self.topics.attest, self.topics.keys])
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        await producer.start()
        try:
            tp = TopicPartition(self.topics.attest, 0)
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            while True:
                batch = await consumer.getmany(tp, timeout_ms=200)
                for rec in batch.get(tp, ()):
                    await producer.send_and_wait(self.topics.keys, self.answer(rec.value))
        finally:
            await consumer.stop()
            await producer.stop()


async def _attest_against(
    bootstrap: str, topics: Topics, answer: Any, verifier: Any, timeout: float = 20
) -> Any:
    fake = asyncio.create_task(_FakeVault(bootstrap, topics, answer).run())
    await asyncio.sleep(1.0)  # the fake vault is listening
    try:
        return await attest_vault(bootstrap, topics, verifier, timeout=timeout, retry=1.0)
    finally:
        fake.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await fake


class _QuoteProvider:
    """Evidence made of a fixed (real) hardware quote, whatever the report data."""

    def __init__(self, kind: str, quote: bytes) -> None:
        self.kind, self.quote = kind, quote

    def evidence(self, report_data: bytes) -> Evidence:
        return Evidence(self.kind, report_data, self.quote)


def test_agent_refuses_simulated_evidence_without_opt_in(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    try:
        dep.vault()
        with pytest.raises(AttestationError, match="refused"):
            asyncio.run(attest_vault(kafka_bootstrap, dep.topics, SimulatedVerifier(), timeout=30))
        # with the explicit opt-in, the same vault is accepted
        keys = asyncio.run(
            attest_vault(
                kafka_bootstrap, dep.topics, SimulatedVerifier(allow_insecure=True), timeout=30
            )
        )
        assert keys == VaultSecrets.load(dep.keys / "vault.json").current.public()
        # and the agent process refuses it too, before sending anything
        agent = dep.start(
            "agent-noopt",
            "agent",
            *dep._common(),
            "--org",
            "lab",
            "--from",
            str(sepsis_log),
            "--control-dir",
            str(tmp_path / "agent-noopt"),
        )
        assert agent.popen.wait(60) == 1
        assert "simulated-INSECURE evidence refused" in agent.stderr()
        assert not agent.stderr().count("sent")
    finally:
        dep.stop_all()


def test_agent_refuses_wrong_key_binding_and_stale_nonce(kafka_bootstrap: str) -> None:
    topics = Topics(f"att{os.getpid()}{time.monotonic_ns() % 10**6}.")
    keys, other = VaultKeys.generate(epoch=1), VaultKeys.generate(epoch=1)
    provider = SimulatedProvider.development()
    verifier = SimulatedVerifier(allow_insecure=True)

    def wrong_binding(nonce: bytes) -> bytes:
        # signed by the announced keys, but the evidence binds other keys
        evidence = KeyAnnouncement.create(other, provider, nonce=nonce).evidence
        unsigned = KeyAnnouncement(keys.public(), nonce, time.time(), evidence, b"")
        signature = keys.sign(unsigned._payload())
        return KeyAnnouncement(
            keys.public(), nonce, unsigned.issued_at, evidence, signature
        ).to_bytes()

    with pytest.raises(AttestationError, match="does not bind"):
        asyncio.run(_attest_against(kafka_bootstrap, topics, wrong_binding, verifier))

    old = KeyAnnouncement.create(keys, provider, nonce=b"n" * 16).to_bytes()
    with pytest.raises(AttestationError, match="no key announcement bound"):
        # a genuine but old answer (another nonce) proves nothing about the vault now
        asyncio.run(_attest_against(kafka_bootstrap, topics, lambda _n: old, verifier, 6))


def test_agent_refuses_wrong_measurement_and_outdated_tdx_quote(
    kafka_bootstrap: str, shared_data: Path
) -> None:
    pytest.importorskip("dcap_qvl")
    from procvault.streams.attestation_hw import DcapPolicy, DcapVerifier, collateral_from_files

    d = shared_data / "attestation"
    quotes = {n: (d / n).read_bytes() for n in ("tdx_quote", "tdx_quote_outdated")}
    collateral = collateral_from_files({quotes[n]: d / f"{n}_collateral.json" for n in quotes})
    keys = VaultKeys.generate(epoch=1)
    topics = Topics(f"tdx{os.getpid()}{time.monotonic_ns() % 10**6}.")
    for name, now, policy, reason in (
        # a genuine, up-to-date TDX quote of a TD whose measurement is not the expected one
        ("tdx_quote", 1_750_330_000, DcapPolicy(measurements=["00" * 48]), "measurement"),
        # the outdated TDX quote: its TCB level is no longer acceptable
        ("tdx_quote_outdated", 1_771_412_400, DcapPolicy(measurements=["00"]), "TCB"),
    ):
        provider = _QuoteProvider("tdx-dcap", quotes[name])

        def answer(nonce: bytes, p: Any = provider) -> bytes:
            return KeyAnnouncement.create(keys, p, nonce=nonce).to_bytes()

        verifier = DcapVerifier(policy, collateral, clock=lambda now=now: now)
        with pytest.raises(AttestationError, match=reason):
            asyncio.run(_attest_against(kafka_bootstrap, topics, answer, verifier))
