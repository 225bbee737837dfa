"""Signed revocation records: round trips, and every bad one refused with one line."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from procvault.monitor.errors import InputError, SecurityError, SignatureError
from procvault.monitor.event import Event
from procvault.organization.policy import (
    PolicyEngine,
    PseudonymKey,
    Revocation,
    parse_policy,
    sign_revocation,
    verify_revocation,
)
from procvault.organization.policy.revocation import public_key_id

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)
HOSPITAL = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
TRUSTED = {"hospital": [HOSPITAL.public_key()], "carrier": [OTHER.public_key()]}


def _case(case: str = "c_5f0c2a") -> Revocation:
    return Revocation.for_case("hospital", case, policy="hospital-sepsis", issued_at=NOW)


@pytest.mark.parametrize(
    "revocation",
    [
        _case(),
        Revocation.for_resource("hospital", "r_77aa", policy="hospital-sepsis", issued_at=NOW),
        Revocation.for_period(
            "hospital",
            NOW - timedelta(days=7),
            NOW,
            policy="hospital-sepsis",
            issued_at=NOW,
            reason="ward 3 consent withdrawn",
        ),
    ],
    ids=["case", "resource", "period"],
)
def test_sign_verify_round_trip(revocation: Revocation) -> None:
    wire = sign_revocation(revocation, HOSPITAL)
    assert verify_revocation(wire, TRUSTED) == revocation
    doc = json.loads(wire)
    assert set(doc) == {"revocation", "key_id", "signature"}
    assert doc["key_id"] == public_key_id(HOSPITAL.public_key())
    assert doc["revocation"]["format"] == "procvault-revocation-v1"


def test_revocation_names_the_pseudonym_the_stage_emitted() -> None:
    policy = parse_policy(
        {
            "policy": "hospital-sepsis",
            "version": 1,
            "org": "hospital",
            "mode": "denylist",
            "consent": {"scope": "s"},
            "pseudonymise": {"case_id": True},
        }
    )
    engine = PolicyEngine(policy, key=PseudonymKey(b"hospital key, 32 bytes long!!!!!"))
    [out] = engine.apply(Event.create("patient-1", "Triage", NOW, org="hospital"))
    rev = _case(engine.pseudonym_case("patient-1"))
    assert verify_revocation(sign_revocation(rev, HOSPITAL), TRUSTED).case == out.case_id


def _one_line(exc: pytest.ExceptionInfo[Exception]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_bad_signature() -> None:
    rev = _case()
    doc = json.loads(sign_revocation(rev, HOSPITAL))
    sig = bytearray(base64.urlsafe_b64decode(doc["signature"]))
    sig[0] ^= 1
    doc["signature"] = base64.urlsafe_b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureError) as info:
        verify_revocation(json.dumps(doc), TRUSTED)
    assert _one_line(info) == f"revocation {rev.id}: bad signature (key {doc['key_id']})"
    assert isinstance(info.value, SecurityError)


def test_changed_record_fails_the_signature() -> None:
    doc = json.loads(sign_revocation(_case(), HOSPITAL))
    doc["revocation"]["case"] = "c_000000"
    with pytest.raises(SignatureError, match="bad signature"):
        verify_revocation(json.dumps(doc), TRUSTED)


def test_untrusted_key_and_forged_key_id() -> None:
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError, match="is not trusted for organization 'hospital'"):
        verify_revocation(sign_revocation(_case(), stranger), TRUSTED)
    # The carrier's key is trusted, but not to revoke the hospital's data.
    with pytest.raises(SignatureError, match="not trusted for organization 'hospital'"):
        verify_revocation(sign_revocation(_case(), OTHER), TRUSTED)
    # Claiming the hospital's key id does not help a signature made with another key.
    doc = json.loads(sign_revocation(_case(), stranger))
    doc["key_id"] = public_key_id(HOSPITAL.public_key())
    with pytest.raises(SignatureError, match="bad signature"):
        verify_revocation(json.dumps(doc), TRUSTED)


def test_non_canonical_body_is_refused() -> None:
    rev = _case()
    doc = json.loads(sign_revocation(rev, HOSPITAL))
    # The same instant written with another offset parses equal, but is not what was signed.
    doc["revocation"]["issued_at"] = NOW.astimezone(timezone(timedelta(hours=2))).isoformat()
    with pytest.raises(SignatureError):
        verify_revocation(json.dumps(doc), TRUSTED)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda d: "{", InputError, "revocation: not JSON"),
        (lambda d: json.dumps({"revocation": d["revocation"]}), InputError, "expected an object"),
        (
            lambda d: json.dumps({**d, "revocation": {**d["revocation"], "resource": "r_1"}}),
            InputError,
            "exactly one of",
        ),
        (
            lambda d: json.dumps({**d, "revocation": {**d["revocation"], "colour": 1}}),
            InputError,
            "unknown field 'colour'",
        ),
        (
            lambda d: json.dumps({**d, "revocation": {**d["revocation"], "format": "v0"}}),
            InputError,
            "format must be",
        ),
        (lambda d: json.dumps({**d, "signature": "%%%"}), SignatureError, "not base64"),
    ],
)
def test_malformed_revocations(mutate: object, error: type[Exception], message: str) -> None:
    doc = json.loads(sign_revocation(_case(), HOSPITAL))
    with pytest.raises(error, match=message) as info:
        verify_revocation(mutate(doc), TRUSTED)  # type: ignore[operator]
    _one_line(info)


def test_records_check_their_fields() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        Revocation("hospital", "id", NOW, "p")
    with pytest.raises(ValueError, match="exactly one of"):
        Revocation("hospital", "id", NOW, "p", case="c", resource="r")
    with pytest.raises(ValueError, match="time_from < time_to"):
        Revocation("hospital", "id", NOW, "p", time_from=NOW, time_to=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        Revocation("hospital", "id", datetime(2024, 1, 1), "p", case="c")
    with pytest.raises(ValueError, match="org must be"):
        Revocation("", "id", NOW, "p", case="c")
