"""The crypto envelope, replay guard and sealing (key announcements: test_attestation.py)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.streams.envelope import (
    ProducerSession,
    RejectedRecord,
    ReplayWindow,
    SessionOpener,
    VaultKeys,
    case_pseudonym,
    open_sealed,
    open_state,
    seal_state,
    seal_to,
)

KEYS = VaultKeys.generate(epoch=7)
TOPIC = "events.hospital"


def _opener(**kw: object) -> SessionOpener:
    return SessionOpener({7: KEYS}, orgs={"hospital", "lab"}, **kw)  # type: ignore[arg-type]


@settings(max_examples=100, deadline=500)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_round_trip_in_order(payloads: list[bytes]) -> None:
    sender = ProducerSession(KEYS.public(), org="hospital", producer="agent")
    opener = _opener()
    for i, p in enumerate(payloads):
        header, plain = opener.open(sender.seal(p, topic=TOPIC), topic=TOPIC)
        assert plain == p and header.sequence == i and header.org == "hospital"


@settings(max_examples=200, deadline=500)
@given(st.data())
def test_any_flipped_bit_is_rejected(data: st.DataObject) -> None:
    record = bytearray(
        ProducerSession(KEYS.public(), org="hospital", producer="a").seal(b"secret", topic=TOPIC)
    )
    i = data.draw(st.integers(0, len(record) - 1))
    record[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(RejectedRecord) as info:
        _opener().open(bytes(record), topic=TOPIC)
    assert info.value.reason in {"bad_tag", "malformed", "unknown_org", "unknown_epoch"}
    assert "secret" not in str(info.value)


def test_replay_is_rejected_and_counted_by_reason() -> None:
    sender = ProducerSession(KEYS.public(), org="hospital", producer="a")
    opener = _opener()
    first = sender.seal(b"x", topic=TOPIC)
    opener.open(first, topic=TOPIC)
    opener.open(sender.seal(b"y", topic=TOPIC), topic=TOPIC)
    with pytest.raises(RejectedRecord) as info:
        opener.open(first, topic=TOPIC)
    assert info.value.reason == "replay"
    # a vault that guards replays in case state turns the window off
    assert _opener(replay_window=0).open(first, topic=TOPIC)[1] == b"x"


def test_unknown_org_and_retired_epoch() -> None:
    stranger = ProducerSession(KEYS.public(), org="intruder", producer="a")
    with pytest.raises(RejectedRecord, match="unknown_org"):
        _opener().open(stranger.seal(b"x", topic=TOPIC), topic=TOPIC)
    sender = ProducerSession(KEYS.public(), org="lab", producer="a")
    opener = _opener()
    opener.open(sender.seal(b"x", topic=TOPIC), topic=TOPIC)
    opener.retire_epoch(7)
    with pytest.raises(RejectedRecord, match="unknown_epoch"):
        opener.open(sender.seal(b"y", topic=TOPIC), topic=TOPIC)


def test_record_bound_to_topic_and_org() -> None:
    record = ProducerSession(KEYS.public(), org="hospital", producer="a").seal(b"x", topic=TOPIC)
    with pytest.raises(RejectedRecord, match="bad_tag"):
        _opener().open(record, topic="events.lab")


def test_resumed_session_continues_its_sequence() -> None:
    s1 = ProducerSession(KEYS.public(), org="hospital", producer="a")
    opener = _opener()
    for _ in range(3):
        opener.open(s1.seal(b"x", topic=TOPIC), topic=TOPIC)
    # the agent restarts: a new key agreement, the same session id and the next sequence
    s2 = ProducerSession(
        KEYS.public(),
        org="hospital",
        producer="a",
        session=s1.session,
        start_sequence=s1.next_sequence,
    )
    header, _ = opener.open(s2.seal(b"y", topic=TOPIC), topic=TOPIC)
    assert header.sequence == 3


def test_replay_window() -> None:
    w = ReplayWindow(size=64)
    assert all(w.accept(s) for s in range(100))
    assert not any(w.accept(s) for s in range(100))
    assert w.accept(200) and not w.accept(100) and w.accept(199)


def test_truncated_records_are_malformed() -> None:
    record = ProducerSession(KEYS.public(), org="hospital", producer="a").seal(b"x", topic=TOPIC)
    for n in (0, 1, 10, 60, len(record) - 17):
        with pytest.raises(RejectedRecord, match="malformed"):
            _opener().open(record[:n], topic=TOPIC)


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
