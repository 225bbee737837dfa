"""Attacks on the pipeline, against the real broker and a real vault worker process: every
forged, tampered, replayed or misdirected record is refused and counted, never applied (an
agent refusing a vault whose attestation fails: tests/adversary/test_impersonation.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pipeline_harness import ORGS, Deployment

from procvault.monitor.event import Event
from procvault.streams import codec
from procvault.streams.envelope import ProducerSession, VaultKeys
from procvault.streams.frames import EVENT, FrameChain, encode_frame
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
    topic = dep.topics.events("emergency")
    session = ProducerSession(vault_pub, emergency.sender, org="emergency", producer="agent-1")
    chain = FrameChain(1)

    def event(i: int, activity: str, *, chained: bool = True) -> bytes:
        ev = Event.create("victim", activity, T0 + timedelta(minutes=i), org="emergency")
        if not chained:  # a record that never reaches the vault's chain (refused on opening)
            frame = encode_frame(EVENT, i * 256, 0, codec.encode(ev), prev=chain.heads[0])
            return session.seal(frame, topic=topic, partition=0)
        return chain.event(session, i * 256, 0, codec.encode(ev), topic=topic, partition=0)

    genuine = [event(0, "ER Registration"), event(1, "ER Triage"), event(2, "ER Sepsis Triage")]
    flipped = bytearray(event(3, "IV Liquid", chained=False))
    flipped[-20] ^= 1
    mallory = ProducerSession(vault_pub, X25519PrivateKey.generate(), org="mallory", producer="m")
    unregistered = mallory.seal(
        encode_frame(
            EVENT, 4, 0, codec.encode(Event.create("victim", "IV Liquid", T0)), prev=(0, 0)
        ),
        topic=topic,
        partition=0,
    )
    retired = ProducerSession(
        VaultKeys.generate(epoch=99).public(), emergency.sender, org="emergency", producer="r"
    )
    old_epoch = retired.seal(
        encode_frame(
            EVENT, 5, 0, codec.encode(Event.create("victim", "IV Liquid", T0)), prev=(0, 0)
        ),
        topic=topic,
        partition=0,
    )
    # a record copied to another organization's topic fails its tag (the topic is authenticated)
    moved = event(6, "Leucocytes", chained=False)
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
            s = ProducerSession(vault_pub, sender, org=org, producer="closer")
            t = dep.topics.events(org)
            links = chain if org == "emergency" else FrameChain(1)  # (emergency's goes on)
            beat = links.heartbeat(s, 0, 0, 0, closed=True, topic=t, partition=0)
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
        "gap": 0,
        "old_epoch": 0,
        "resent": 0,
        "bad_signature": 0,
        "future": 0,
        "wrong_org": 0,
        "misplaced": 0,
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
