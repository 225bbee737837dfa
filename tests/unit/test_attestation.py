"""Key announcements chained to the pinned vault identity: what is accepted, what an
impersonator cannot do in any mode, the readers that count and skip, the rate-limited
responder, and fuzzing of every reader of ``vault.keys`` and ``vault.attest``."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.streams.attestation import (
    REFUSAL_REASONS,
    AnnouncedKeys,
    AttestationError,
    Evidence,
    EvidenceVerifier,
    KeyAnnouncement,
    SimulatedProvider,
    SimulatedVerifier,
    report_data,
    verified_epoch_keys,
)
from procvault.streams.envelope import VaultKeys
from procvault.streams.identity import EpochCertificate
from procvault.streams.provisioning import REQUEST_OUTCOMES, Challenge, RequestGate, TokenBucket
from procvault.streams.secrets import VaultSecrets

VAULT = VaultSecrets.generate()
PINNED = VAULT.identity_public
MALLORY = VaultSecrets.generate()  # an impersonator: its own identity and keys, no access to ours
NONCE = b"n" * 16
OK = SimulatedVerifier(PINNED, allow_insecure=True)


def _genuine(nonce: bytes = NONCE, **kw: object) -> KeyAnnouncement:
    return KeyAnnouncement.create(VAULT, SimulatedProvider(VAULT.identity), nonce=nonce, **kw)  # type: ignore[arg-type]


def _forged(
    nonce: bytes = NONCE,
    *,
    certificate: EpochCertificate | None = None,
    identity: bytes | None = None,
    evidence_by: object = None,
    epoch_key: VaultKeys | None = None,
) -> KeyAnnouncement:
    """An announcement assembled by someone without the vault identity's private key."""
    keys = epoch_key or MALLORY.current
    cert = certificate or MALLORY.certificate()
    claimed = PINNED if identity is None else identity
    provider = SimulatedProvider(evidence_by or MALLORY.identity)  # type: ignore[arg-type]
    evidence = provider.evidence(report_data(cert.keys, nonce, claimed))
    unsigned = KeyAnnouncement(cert, claimed, nonce, time.time(), evidence, b"")
    return KeyAnnouncement(
        cert, claimed, nonce, unsigned.issued_at, evidence, keys.sign(unsigned.payload())
    )


# ----------------------------------------------------------------------------- accepted
def test_a_genuine_announcement_round_trips_and_checks() -> None:
    ann = _genuine(now=1000.0)
    back = KeyAnnouncement.from_bytes(ann.to_bytes())
    assert back == ann
    assert back.check(OK, identity=PINNED, nonce=NONCE, now=1010.0, max_age=60) == (
        VAULT.current.public()
    )
    with pytest.raises(AttestationError, match="stale") as info:
        back.check(OK, identity=PINNED, nonce=NONCE, now=5000.0, max_age=60)
    assert info.value.reason == "stale"
    with pytest.raises(AttestationError, match="bind") as info:
        back.check(OK, identity=PINNED, nonce=b"m" * 16)
    assert info.value.reason == "wrong_nonce"


def test_simulated_evidence_is_refused_without_the_opt_in() -> None:
    with pytest.raises(AttestationError, match="simulated-INSECURE evidence refused"):
        _genuine().check(SimulatedVerifier(PINNED), identity=PINNED, nonce=NONCE)


def test_report_data_binds_keys_epoch_nonce_and_identity() -> None:
    keys = VAULT.current.public()
    base = report_data(keys, NONCE, PINNED)
    assert len(base) == 64
    assert report_data(keys, b"m" * 16, PINNED) != base
    assert report_data(keys, NONCE, MALLORY.identity_public) != base
    assert report_data(VAULT.rotate().current.public(), NONCE, PINNED) != base


# ----------------------------------------------------------------------------- impersonation
def test_an_impersonator_with_its_own_identity_is_refused_even_with_the_opt_in() -> None:
    ann = KeyAnnouncement.create(MALLORY, SimulatedProvider(MALLORY.identity), nonce=NONCE)
    with pytest.raises(AttestationError, match="not certified by the pinned vault identity") as e:
        ann.check(OK, identity=PINNED, nonce=NONCE)
    assert e.value.reason == "not_pinned"


def test_claiming_the_pinned_identity_does_not_help() -> None:
    with pytest.raises(AttestationError, match="not certified by the pinned") as e:
        _forged(identity=PINNED).check(OK, identity=PINNED, nonce=NONCE)
    assert e.value.reason == "not_pinned"


def test_a_copied_genuine_certificate_without_the_epoch_key_is_refused() -> None:
    """The vault's certificate is public (every announcement carries it): reusing it with a
    signature of one's own fails the epoch-key signature."""
    forged = _forged(certificate=VAULT.certificate(), epoch_key=MALLORY.current)
    with pytest.raises(AttestationError, match="signature is invalid") as e:
        forged.check(OK, identity=PINNED, nonce=NONCE)
    assert e.value.reason == "bad_signature"


def test_simulated_evidence_must_be_signed_by_the_pinned_identity() -> None:
    """Even holding a genuine epoch key (not the identity), simulated evidence cannot be made."""
    forged = _forged(
        certificate=VAULT.certificate(), epoch_key=VAULT.current, evidence_by=MALLORY.identity
    )
    with pytest.raises(AttestationError, match="not signed by the pinned vault identity") as e:
        forged.check(OK, identity=PINNED, nonce=NONCE)
    assert e.value.reason == "evidence"


def test_a_tampered_field_breaks_the_signature() -> None:
    ann = _genuine()
    outer = json.loads(ann.to_bytes())
    payload = json.loads(outer["payload"])
    payload["issued_at"] += 1
    outer["payload"] = json.dumps(payload)
    bad = KeyAnnouncement.from_bytes(json.dumps(outer).encode())
    with pytest.raises(AttestationError, match="signature is invalid"):
        bad.check(OK, identity=PINNED, nonce=NONCE)


def test_evidence_of_another_kind_needs_a_hardware_verifier() -> None:
    ev = Evidence("tdx-dcap", b"\0" * 64, b"quote")
    with pytest.raises(AttestationError, match="hardware verifier"):
        OK.verify(ev, b"\0" * 64)
    with pytest.raises(AttestationError, match="needs an attestation policy"):
        EvidenceVerifier(PINNED, allow_insecure=True).verify(ev, b"\0" * 64)


def test_the_evidence_verifier_says_once_that_it_trusts_simulated_evidence() -> None:
    said: list[str] = []
    v = EvidenceVerifier(PINNED, allow_insecure=True, on_insecure=lambda: said.append("!"))
    for n in range(3):
        nonce = bytes([n]) * 16
        _genuine(nonce).check(v, identity=PINNED, nonce=nonce)
    assert said == ["!"] and v.trusted_insecure
    quiet = EvidenceVerifier(PINNED, on_insecure=lambda: said.append("?"))
    with pytest.raises(AttestationError, match="refused"):
        _genuine().check(quiet, identity=PINNED, nonce=NONCE)
    assert said == ["!"]  # a refusal is not "trusting"


# ----------------------------------------------------------------------------- readers
def test_readers_keep_only_keys_that_chain_to_the_pinned_identity() -> None:
    refused: Counter[str] = Counter()
    warned: list[str] = []
    records = [
        KeyAnnouncement.create(
            MALLORY, SimulatedProvider(MALLORY.identity), nonce=NONCE
        ).to_bytes(),
        _forged(certificate=VAULT.certificate()).to_bytes(),
        b'{"version": 2, "payload": "{\\"epoch\\": 1.5}", "signature": "00"}',
        b"not json",
        None,
        _genuine().to_bytes(),
        _genuine(b"x" * 16).to_bytes(),
    ]
    keys = verified_epoch_keys(records, PINNED, OK, refused=refused, warn=warned.append)
    assert keys == {1: VAULT.current.public()}
    assert refused == {"not_pinned": 1, "bad_signature": 1, "malformed": 3}
    assert len(warned) == 3  # one line per reason, not per record
    assert all("\n" not in w for w in warned)


def test_two_certified_key_sets_for_one_epoch_trust_neither() -> None:
    """(Only the identity's holder can do this: a keyring restored from two copies.)"""
    other = VaultKeys.generate(epoch=1)
    twin = VaultSecrets(
        VAULT.identity,
        VAULT.state_keys,
        VAULT.state_key_id,
        {1: other},
        {1: EpochCertificate.issue(VAULT.identity, other.public())},
        1,
    )
    reader = AnnouncedKeys(PINNED, OK)
    assert reader.add(_genuine().to_bytes()) is not None
    clash = KeyAnnouncement.create(twin, SimulatedProvider(VAULT.identity), nonce=NONCE)
    assert reader.add(clash.to_bytes()) is None
    assert reader.epochs == {} and reader.conflicting == {1}
    assert reader.add(_genuine().to_bytes()) is None
    assert reader.refused["conflict"] == 2


# ----------------------------------------------------------------------------- a round
def test_a_forged_answer_on_our_nonce_neither_passes_nor_ends_the_round() -> None:
    c = Challenge(PINNED, OK, started=0.0, timeout=10.0, nonce=NONCE)
    for forged in (
        KeyAnnouncement.create(MALLORY, SimulatedProvider(MALLORY.identity), nonce=NONCE),
        _forged(certificate=VAULT.certificate()),
    ):
        assert c.offer(forged.to_bytes()) is None
    assert c.offer(b"\x00garbage") is None
    assert c.offer(_genuine(b"o" * 16).to_bytes()) is None  # another agent's round
    assert dict(c.refused) == {"not_pinned": 1, "bad_signature": 1, "malformed": 1}
    assert not c.expired(9.9) and c.expired(10.0)
    assert c.offer(_genuine().to_bytes()) == VAULT.current.public()
    msg = str(Challenge(PINNED, OK, started=0.0, timeout=5.0).timeout_error())
    assert "within 5 s" in msg and "\n" not in msg


def test_the_vaults_own_answer_with_refused_evidence_ends_the_round_at_once() -> None:
    c = Challenge(PINNED, SimulatedVerifier(PINNED), started=0.0, nonce=NONCE)
    with pytest.raises(AttestationError, match="simulated-INSECURE evidence refused"):
        c.offer(_genuine().to_bytes())


def test_a_round_refuses_a_stale_answer_of_the_vault() -> None:
    c = Challenge(PINNED, OK, started=0.0, max_age=60, nonce=NONCE)
    with pytest.raises(AttestationError, match="stale"):
        c.offer(_genuine(now=1000.0).to_bytes(), now=2000.0)


# ----------------------------------------------------------------------------- the responder
def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    b = TokenBucket(rate=10.0, burst=5, now=0.0)
    assert sum(b.take(0.0) for _ in range(100)) == 5
    assert sum(b.take(1.0) for _ in range(100)) == 5  # refilled to the burst, not beyond
    assert sum(b.take(1.15) for _ in range(100)) == 1


def test_a_flood_of_nonces_is_answered_at_the_rate_and_repeats_once() -> None:
    gate = RequestGate(rate=10.0, burst=20, now=0.0)
    answered = 0
    for i in range(20_000):  # 20,000 distinct nonces over 10 s
        answered += gate.admit(i.to_bytes(16, "big"), i / 2000) == "answered"
    assert answered <= 20 + 10 * 10 + 1
    assert gate.counts["rate_limited"] == 20_000 - answered
    nonce = b"r" * 16
    later = 100.0
    assert [gate.admit(nonce, later + i) for i in range(3)] == ["answered", "repeated", "repeated"]
    assert set(gate.counts) <= REQUEST_OUTCOMES


def test_a_nonce_the_provider_failed_on_can_be_asked_again() -> None:
    gate = RequestGate(rate=10.0, burst=5, now=0.0)
    assert gate.admit(NONCE, 0.0) == "answered"
    gate.failed(NONCE)
    assert gate.admit(NONCE, 0.0) == "answered"
    assert gate.counts == {"answered": 1, "provider_error": 1}


# ----------------------------------------------------------------------------- fuzzing
#: Values of the wrong type, size or range for every field an announcement has.
_ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=140),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


def _mutated(data: st.DataObject) -> bytes:
    """A genuine announcement with one field of its payload (or of the wrapper) replaced."""
    outer = json.loads(_genuine().to_bytes())
    payload = json.loads(outer["payload"])
    where = data.draw(st.sampled_from(["outer", "payload", "certificate", "evidence"]))
    target = {
        "outer": outer,
        "payload": payload,
        "certificate": payload["certificate"],
        "evidence": payload["evidence"],
    }[where]
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(_ODD)
    if where != "outer":
        outer["payload"] = json.dumps(payload)
    return json.dumps(outer).encode()


_RECORDS = st.one_of(
    st.binary(max_size=600),
    st.none(),
    st.just(_genuine().to_bytes()).map(lambda b: b[: len(b) // 2]),
    st.recursive(
        _ODD,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=9), c, max_size=4),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_fuzz_announcement_parser_and_readers_never_raise_anything_else(
    data: st.DataObject,
) -> None:
    value = _mutated(data) if data.draw(st.booleans()) else data.draw(_RECORDS)
    try:
        ann = KeyAnnouncement.from_bytes(value)
    except AttestationError as exc:
        assert exc.reason in REFUSAL_REASONS and "\n" not in str(exc)
    else:
        try:
            ann.check(OK, identity=PINNED, nonce=ann.nonce)
        except AttestationError as exc:
            assert exc.reason in REFUSAL_REASONS
    reader = AnnouncedKeys(PINNED, OK)
    reader.add(value)  # never raises
    assert sum(reader.refused.values()) + reader.accepted == 1
    Challenge(PINNED, OK, started=0.0, nonce=NONCE).offer(value)  # only AttestationError...
    # ...and only for the vault's own answer with refused evidence, which fuzz cannot forge


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.binary(max_size=40), st.none(), st.integers(), st.text(max_size=20)))
def test_fuzz_the_responders_gate_counts_every_request(value: object) -> None:
    gate = RequestGate(rate=1.0, burst=1, now=0.0)
    outcome = gate.admit(value, 0.0)
    assert outcome in REQUEST_OUTCOMES
    assert sum(gate.counts.values()) == 1
    assert (outcome == "answered") == (isinstance(value, bytes) and len(value) == 16)


@settings(max_examples=2000, deadline=None)
@given(
    st.one_of(
        _ODD,
        st.dictionaries(
            st.sampled_from(["epoch", "x25519", "ed25519", "signature"]), _ODD, max_size=4
        ),
    )
)
def test_fuzz_certificate_and_evidence_parsers(value: object) -> None:
    from procvault.streams.identity import CertificateError

    with pytest.raises(CertificateError):
        EpochCertificate.from_dict(value)
    with pytest.raises(AttestationError):
        Evidence.from_dict(value)


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_fuzz_procvault_results_reader_of_vault_keys(data: st.DataObject) -> None:
    """``procvault results``' reader of ``vault.keys``: whatever it reads is counted, never
    raised, and only the pinned identity's keys are learned."""
    import contextlib
    import io

    from procvault.results.reader import ResultsReader
    from procvault.streams.frames import Topics

    reader = ResultsReader("127.0.0.1:9", Topics(), identity=PINNED, verifier=OK)
    values = [
        _mutated(data) if data.draw(st.booleans()) else data.draw(_RECORDS)
        for _ in range(data.draw(st.integers(1, 3)))
    ]
    with contextlib.redirect_stderr(io.StringIO()):
        for value in values:
            reader.add_announcement(value)  # type: ignore[arg-type]
    stats = reader.stats
    assert stats.announcements == len(values)
    assert stats.announcements_refused == sum(stats.refused_by.values())
    assert set(reader.epochs) <= {1}
    assert all(k == VAULT.current.public() for k in reader.epochs.values())
