"""The vault worker honours signed revocations (in-process, no broker): verified against the
registry, applied in merge order, persisted in the shard's state, acknowledged; a bad
signature is refused and counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from procvault.monitor.compliance import Compliance, DeclareRule
from procvault.monitor.event import Event
from procvault.monitor.vault import Vault
from procvault.streams import codec
from procvault.streams.envelope import ProducerSession
from procvault.streams.frames import EVENT, REVOKE, Topics, encode_frame, encode_heartbeat
from procvault.streams.revocation import Revocation, sign_revocation
from procvault.streams.secrets import OrgKeys, Registry, VaultSecrets, init_keyring
from procvault.streams.vault_worker import VaultWorker, WorkerSettings

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
TOPICS = Topics("t.")


class Rec(NamedTuple):
    offset: int
    value: bytes
    key: bytes | None = None


def _worker(keys: Path) -> VaultWorker:
    rules = [DeclareRule("has_c", "existence", "C")]
    worker = VaultWorker(
        WorkerSettings("localhost:1", 1, TOPICS, source_timeout=None),
        VaultSecrets.load(keys / "vault.json"),
        Registry.load(keys / "registry.json"),
        lambda: Vault(compliance=Compliance(rules)),
    )
    worker.shards[0] = worker._new_shard(0)
    return worker


def test_a_revoked_case_leaves_the_vault_and_the_ack_reaches_its_org(tmp_path: Path) -> None:
    init_keyring(tmp_path, ["lab"])
    lab = OrgKeys.load(tmp_path / "org-lab.json")
    assert lab.signing is not None
    worker = _worker(tmp_path)
    session = ProducerSession(worker.secrets.current.public(), org="lab", producer="a")
    topic = TOPICS.events("lab")

    def ev(i: int, case: str, act: str, resource: str | None = None) -> bytes:
        e = Event.create(case, act, T0 + timedelta(minutes=i), org="lab", resource=resource)
        return session.seal(encode_frame(EVENT, i, 0, codec.encode(e)), topic=topic)

    def revoke(rev: Revocation, key: Ed25519PrivateKey) -> bytes:
        wire = sign_revocation(rev, key)
        return session.seal(encode_frame(REVOKE, 0, 0, wire), topic=topic)

    good = Revocation.for_case("lab", "victim", policy="p", issued_at=T0)
    by_resource = Revocation.for_resource("lab", "rx", policy="p", issued_at=T0)
    forged = Revocation.for_case("lab", "other", policy="p", issued_at=T0)
    values = [
        ev(0, "victim", "A"),
        ev(1, "other", "A"),
        revoke(good, lab.signing),
        revoke(by_resource, lab.signing),
        revoke(forged, Ed25519PrivateKey.generate()),  # not the registered key
        ev(2, "victim", "B"),
        ev(3, "other", "B", resource="rx"),
        ev(4, "other", "C"),
        revoke(good, lab.signing),  # a repeat
        session.seal(encode_heartbeat(9, 0, 1 << 60, closed=True), topic=topic),
    ]
    records: Any = {TopicPartition(topic, 0): [Rec(i, v) for i, v in enumerate(values)]}
    out = worker.process(records)
    stats = worker.stats
    assert stats.rejected["bad_signature"] == 1
    assert stats.revocations == 2 and stats.revoked_events == 2
    assert stats.applied == 3  # victim's A (before the revocation), other's A and C
    items = out.per_org["lab"]
    acks = [i for i in items if i["type"] == "revocation"]
    assert [(a["id"], a["status"]) for a in acks] == [
        (good.id, "applied"),
        (by_resource.id, "applied"),
        (good.id, "repeated"),
    ]
    assert acks[0]["case"] == "victim" and acks[0]["state_dropped"] is True
    cases = {i["case"]: i for i in items if i["type"] == "case"}
    assert set(cases) == {"other"} and cases["other"]["events"] == 2  # rx's B was dropped
    assert not any(i.get("case") == "victim" for i in items if i["type"] != "revocation")

    # the changelog forgets the case, and a restored shard keeps the revocations
    state = worker.state_records()
    tombstones = [k for _, k, v in state if v is None]
    assert tombstones == [worker._case_key("victim")]
    restored = _worker(tmp_path)._rebuild(0, {k: v for _, k, v in state})
    assert good.id in restored.revocations and by_resource.id in restored.revocations
    assert restored.revocations.covers(Event.create("victim", "C", T0))


def test_a_keyring_without_signing_keys_is_a_clear_error(tmp_path: Path) -> None:
    import json

    import pytest

    from procvault.monitor.errors import ConfigError

    init_keyring(tmp_path, ["lab"])
    path = tmp_path / "org-lab.json"
    data = json.loads(path.read_text())
    del data["signing_ed25519"]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="'signing_ed25519' is missing"):
        OrgKeys.load(path)
    reg = json.loads((tmp_path / "registry.json").read_text())
    del reg["orgs"]["lab"]["signing_ed25519"]
    (tmp_path / "registry.json").write_text(json.dumps(reg))
    with pytest.raises(ConfigError, match="'signing_ed25519' is missing"):
        Registry.load(tmp_path / "registry.json")
