"""The crypto envelope (version 2) and sealing (key announcements: test_attestation.py)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.streams.envelope import (
    ProducerSession,
    RejectedRecord,
    SessionOpener,
    VaultKeys,
    case_pseudonym,
    open_sealed,
    open_state,
    public_bytes,
    seal_state,
    seal_to,
)

KEYS = VaultKeys.generate(epoch=7)
TOPIC = "events.hospital"
SENDERS = {"hospital": X25519PrivateKey.generate(), "lab": X25519PrivateKey.generate()}


def _opener(**kw: object) -> SessionOpener:
    senders = {org: public_bytes(k) for org, k in SENDERS.items()}
    return SessionOpener({7: KEYS}, senders=senders, **kw)  # type: ignore[arg-type]


def _sender(org: str = "hospital", producer: str = "a", **kw: object) -> ProducerSession:
    key = SENDERS.get(org) or X25519PrivateKey.generate()
    return ProducerSession(KEYS.public(), key, org=org, producer=producer, **kw)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=500)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20), st.integers(0, 7))
def test_round_trip_in_order(payloads: list[bytes], partition: int) -> None:
    sender = _sender(producer="agent", generation=5)
    opener = _opener()
    for i, p in enumerate(payloads):
        record = sender.seal(p, topic=TOPIC, partition=partition)
        header, plain = opener.open(record, topic=TOPIC, partition=partition)
        assert plain == p and header.sequence == i and header.org == "hospital"
        assert header.generation == 5


@settings(max_examples=300, deadline=500)
@given(st.data())
def test_any_flipped_bit_is_rejected(data: st.DataObject) -> None:
    record = bytearray(_sender().seal(b"secret", topic=TOPIC, partition=0))
    i = data.draw(st.integers(0, len(record) - 1))
    record[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(RejectedRecord) as info:
        _opener().open(bytes(record), topic=TOPIC, partition=0)
    assert info.value.reason in {"bad_tag", "malformed", "unknown_org", "unknown_epoch"}
    assert "secret" not in str(info.value)


def test_record_bound_to_topic_partition_and_org() -> None:
    record = _sender().seal(b"x", topic=TOPIC, partition=1)
    for topic, partition in (("events.lab", 1), (TOPIC, 0), (TOPIC, 2)):
        with pytest.raises(RejectedRecord, match="bad_tag"):
            _opener().open(record, topic=topic, partition=partition)
    assert _opener().open(record, topic=TOPIC, partition=1)[1] == b"x"


def test_a_record_without_the_organizations_sender_key_is_refused_before_any_key_agreement() -> (
    None
):
    """Anyone can encrypt to the vault's public key; only the organization can make the
    header tag. A forgery costs one HMAC and leaves no session behind."""
    opener = _opener()
    mallory = ProducerSession(
        KEYS.public(), X25519PrivateKey.generate(), org="hospital", producer="a"
    )
    for i in range(50):
        forged = ProducerSession(
            KEYS.public(), X25519PrivateKey.generate(), org="hospital", producer=f"m{i}"
        ).seal(b"x", topic=TOPIC, partition=0)
        with pytest.raises(RejectedRecord, match="bad_tag"):
            opener.open(forged, topic=TOPIC, partition=0)
    with pytest.raises(RejectedRecord, match="bad_tag"):
        opener.open(mallory.seal(b"x", topic=TOPIC, partition=0), topic=TOPIC, partition=0)
    assert opener.sessions == 0


def test_a_genuine_header_with_a_forged_body_keeps_one_session_only() -> None:
    sender = _sender()
    opener = _opener()
    record = bytearray(sender.seal(b"payload", topic=TOPIC, partition=0))
    record[-1] ^= 1
    for _ in range(10):
        with pytest.raises(RejectedRecord, match="bad_tag"):
            opener.open(bytes(record), topic=TOPIC, partition=0)
    assert opener.sessions == 1


def test_unknown_org_and_retired_epoch() -> None:
    stranger = _sender(org="intruder")
    with pytest.raises(RejectedRecord, match="unknown_org"):
        _opener().open(stranger.seal(b"x", topic=TOPIC, partition=0), topic=TOPIC, partition=0)
    sender = _sender(org="lab")
    opener = _opener()
    opener.open(sender.seal(b"x", topic=TOPIC, partition=0), topic=TOPIC, partition=0)
    opener.retire_epoch(7)
    with pytest.raises(RejectedRecord, match="unknown_epoch"):
        opener.open(sender.seal(b"y", topic=TOPIC, partition=0), topic=TOPIC, partition=0)


def test_truncated_records_are_malformed() -> None:
    record = _sender().seal(b"x", topic=TOPIC, partition=0)
    for n in (0, 1, 10, 60, len(record) - 17):
        with pytest.raises(RejectedRecord, match="malformed"):
            _opener().open(record[:n], topic=TOPIC, partition=0)


def test_an_all_zero_ephemeral_key_in_a_sealed_message_is_refused_not_a_crash() -> None:
    org = X25519PrivateKey.generate()
    with pytest.raises(RejectedRecord, match="malformed"):
        open_sealed(org, b"\0" * 76, context=b"c")


def test_keys_never_in_repr() -> None:
    assert repr(KEYS) == "VaultKeys(epoch=7)"


def test_pseudonyms_and_sealing() -> None:
    key = b"k" * 32
    assert case_pseudonym(key, "c") == case_pseudonym(key, "c") != case_pseudonym(key, "d")
    with pytest.raises(ValueError, match="at least 16"):
        case_pseudonym(b"short", "c")
    state_key = b"s" * 32
    sealed = seal_state(state_key, b"state", context=b"case-pseudonym")
    assert open_state(state_key, sealed, context=b"case-pseudonym") == b"state"
    with pytest.raises(RejectedRecord, match="bad_tag"):
        open_state(state_key, sealed, context=b"another-case")
    org = X25519PrivateKey.generate()
    other = X25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    pub = org.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    blob = seal_to(pub, b"alert", context=b"results.alerts.hospital")
    assert open_sealed(org, blob, context=b"results.alerts.hospital") == b"alert"
    with pytest.raises(RejectedRecord):
        open_sealed(other, blob, context=b"results.alerts.hospital")
