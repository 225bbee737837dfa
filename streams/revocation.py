"""Signed revocation records: an organization takes back consent for a case, a resource or a
period.

``procvault revoke`` issues one (signed with the organization's key from its keyring, sealed
like an event in a ``REVOKE`` frame, see :mod:`.frames`); the vault worker verifies it against
the registry and honours it (:mod:`procvault.monitor.revocation`). A :class:`Revocation` names
*what* is revoked
in the terms the vault knows: a case or a resource by the pseudonym the policy stage emitted
(:meth:`~procvault.organization.policy.engine.PolicyEngine.pseudonym_case`), or a time range of the
organization's events. The organization signs it with its Ed25519 key; the vault accepts it only
from a key it trusts for that organization.

Wire form (UTF-8 JSON, one object)::

    {"revocation": {...the record, keys sorted...},
     "key_id": "<16 hex: SHA-256 of the raw public key>",
     "signature": "<base64url Ed25519 signature>"}

signed over ``b"procvault-revocation-v1\\n" + canonical JSON of "revocation"`` (keys sorted, no
spaces), so a record cannot be replayed as another kind of signed message.

>>> from datetime import datetime, UTC
>>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
>>> org_key = Ed25519PrivateKey.generate()
>>> rev = Revocation.for_case("hospital", "c_5f0c2a", issued_at=datetime(2024, 6, 1, tzinfo=UTC),
...                           policy="hospital-sepsis", reason="patient withdrew consent")
>>> wire = sign_revocation(rev, org_key)
>>> verify_revocation(wire, {"hospital": [org_key.public_key()]}) == rev
True
>>> verify_revocation(wire.replace(b"c_5f0c2a", b"c_000000"), {"hospital": [org_key.public_key()]})
Traceback (most recent call last):
...
procvault.monitor.errors.SignatureError: revocation ...: bad signature (key ...)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from procvault.monitor.errors import InputError, SignatureError

if TYPE_CHECKING:
    from procvault.monitor.revocation import Revoked

__all__ = [
    "FORMAT",
    "Revocation",
    "public_key_id",
    "sign_revocation",
    "to_revoked",
    "verify_revocation",
]

#: The ``format`` field of every record this module writes or accepts.
FORMAT: Final = "procvault-revocation-v1"
_DOMAIN: Final = FORMAT.encode() + b"\n"
_encoder: Final = msgspec.json.Encoder(order="sorted")
_decoder: Final = msgspec.json.Decoder()
_FIELDS: Final = frozenset(
    {
        "format",
        "id",
        "org",
        "issued_at",
        "policy",
        "case",
        "resource",
        "time_from",
        "time_to",
        "reason",
    }
)


def public_key_id(key: Ed25519PublicKey) -> str:
    """A short public id of an Ed25519 key: the first 16 hex of SHA-256 of its raw bytes."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _ts(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValueError(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class Revocation:
    """One revocation: exactly one of ``case``, ``resource`` or ``time_from``/``time_to``.

    Parameters
    ----------
    org
        The organization revoking (its events only).
    id
        A unique id (random hex by default) so the vault can acknowledge it and ignore repeats.
    issued_at
        When it was issued (UTC).
    policy
        The policy id whose consent is revoked.
    case
        A case pseudonym as emitted by the policy stage.
    resource
        A resource pseudonym as emitted by the policy stage.
    time_from, time_to
        A period of the organization's event time, ``time_from`` included, ``time_to`` excluded.
    reason
        Free text for the organization's records (keep personal data out of it).
    """

    org: str
    id: str
    issued_at: datetime
    policy: str
    case: str | None = None
    resource: str | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        for name in ("org", "id", "policy"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"revocation {name} must be a non-empty string")
        object.__setattr__(self, "issued_at", _ts(self.issued_at, "issued_at"))
        period = self.time_from is not None or self.time_to is not None
        chosen = (self.case is not None) + (self.resource is not None) + period
        if chosen != 1:
            raise ValueError("a revocation names exactly one of: a case, a resource, a period")
        for name in ("case", "resource"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"revocation {name} must be a non-empty string")
        if period:
            if self.time_from is None or self.time_to is None:
                raise ValueError("a revoked period needs both time_from and time_to")
            start, end = _ts(self.time_from, "time_from"), _ts(self.time_to, "time_to")
            if not start < end:
                raise ValueError("a revoked period needs time_from < time_to")
            object.__setattr__(self, "time_from", start)
            object.__setattr__(self, "time_to", end)
        if not isinstance(self.reason, str):
            raise ValueError("reason must be a string")

    @classmethod
    def for_case(
        cls, org: str, case: str, *, policy: str, issued_at: datetime, reason: str = ""
    ) -> Revocation:
        """Revoke one case (by its pseudonym)."""
        return cls(org, secrets.token_hex(16), issued_at, policy, case=case, reason=reason)

    @classmethod
    def for_resource(
        cls, org: str, resource: str, *, policy: str, issued_at: datetime, reason: str = ""
    ) -> Revocation:
        """Revoke everything one resource did (by its pseudonym)."""
        return cls(org, secrets.token_hex(16), issued_at, policy, resource=resource, reason=reason)

    @classmethod
    def for_period(
        cls,
        org: str,
        time_from: datetime,
        time_to: datetime,
        *,
        policy: str,
        issued_at: datetime,
        reason: str = "",
    ) -> Revocation:
        """Revoke the organization's events in ``[time_from, time_to)``."""
        return cls(
            org,
            secrets.token_hex(16),
            issued_at,
            policy,
            time_from=time_from,
            time_to=time_to,
            reason=reason,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready fields (absent selectors are left out)."""
        out: dict[str, Any] = {
            "format": FORMAT,
            "id": self.id,
            "org": self.org,
            "issued_at": self.issued_at.isoformat(),
            "policy": self.policy,
            "reason": self.reason,
        }
        if self.case is not None:
            out["case"] = self.case
        if self.resource is not None:
            out["resource"] = self.resource
        if self.time_from is not None and self.time_to is not None:
            out["time_from"] = self.time_from.isoformat()
            out["time_to"] = self.time_to.isoformat()
        return out

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Revocation:
        """Read the fields written by :meth:`to_dict`; ``ValueError`` if malformed."""
        unknown = sorted(set(obj) - _FIELDS)
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}")
        if obj.get("format") != FORMAT:
            raise ValueError(f"format must be {FORMAT!r}, got {obj.get('format')!r}")

        def when(name: str) -> datetime | None:
            raw = obj.get(name)
            if raw is None:
                return None
            if not isinstance(raw, str):
                raise ValueError(f"{name} must be an ISO 8601 string")
            return datetime.fromisoformat(raw)

        issued = when("issued_at")
        if issued is None:
            raise ValueError("issued_at is missing")
        return cls(
            org=obj.get("org"),  # type: ignore[arg-type]
            id=obj.get("id"),  # type: ignore[arg-type]
            issued_at=issued,
            policy=obj.get("policy"),  # type: ignore[arg-type]
            case=obj.get("case"),
            resource=obj.get("resource"),
            time_from=when("time_from"),
            time_to=when("time_to"),
            reason=obj.get("reason", ""),
        )

    def signed_bytes(self) -> bytes:
        """What the signature covers: the domain line and the canonical record."""
        return _DOMAIN + _encoder.encode(self.to_dict())


def sign_revocation(revocation: Revocation, key: Ed25519PrivateKey) -> bytes:
    """The wire form of ``revocation`` signed with the organization's Ed25519 ``key``."""
    signature = key.sign(revocation.signed_bytes())
    return _encoder.encode(
        {
            "revocation": revocation.to_dict(),
            "key_id": public_key_id(key.public_key()),
            "signature": base64.urlsafe_b64encode(signature).decode(),
        }
    )


def verify_revocation(
    data: bytes | str,
    trusted: Mapping[str, Iterable[Ed25519PublicKey]],
) -> Revocation:
    """Parse a signed revocation and check its signature against the keys trusted for its org.

    Parameters
    ----------
    data
        The wire form (from :func:`sign_revocation`).
    trusted
        Organization -> its trusted Ed25519 public keys (several during a key rotation).

    Raises :class:`~procvault.monitor.errors.InputError` for a malformed record and
    :class:`~procvault.monitor.errors.SignatureError` for an unknown key or a bad signature;
    either way one line, naming the revocation id when it can be read.
    """
    try:
        doc = _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"revocation: not JSON: {exc}") from None
    except RecursionError:  # (nested deeper than the interpreter's stack)
        raise InputError("revocation: not JSON: nested too deeply") from None
    if not isinstance(doc, dict) or set(doc) != {"revocation", "key_id", "signature"}:
        raise InputError("revocation: expected an object with revocation, key_id and signature")
    body, key_id, sig_text = doc["revocation"], doc["key_id"], doc["signature"]
    rid = body.get("id") if isinstance(body, dict) else None
    label = f"revocation {rid}" if isinstance(rid, str) else "revocation"
    if not isinstance(body, dict):
        raise InputError(f"{label}: 'revocation' must be an object")
    try:
        revocation = Revocation.from_dict(body)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{label}: {exc}") from None
    if not isinstance(key_id, str) or not isinstance(sig_text, str):
        raise InputError(f"{label}: key_id and signature must be strings")
    try:
        signature = base64.b64decode(sig_text.encode(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{label}: the signature is not base64") from None
    keys = {public_key_id(k): k for k in trusted.get(revocation.org, ())}
    public = keys.get(key_id)
    if public is None:
        raise SignatureError(
            f"{label}: key {key_id} is not trusted for organization {revocation.org!r}"
        )
    try:
        public.verify(signature, revocation.signed_bytes())
    except InvalidSignature:
        raise SignatureError(f"{label}: bad signature (key {key_id})") from None
    # The signature covers our canonical form; refuse a body that differs from it in any way
    # the parser normalised (such as an offset written differently).
    if _encoder.encode(revocation.to_dict()) != _encoder.encode(body):
        raise SignatureError(f"{label}: bad signature (key {key_id}): non-canonical record")
    return revocation


def to_revoked(revocation: Revocation) -> Revoked:
    """The engine's view of a verified revocation (:class:`~procvault.monitor.revocation.Revoked`):
    a resource or a period covers the issuing organization's events only; a case is revoked
    whole."""
    from procvault.monitor.revocation import Revoked

    if revocation.case is not None:
        return Revoked.of_case(revocation.id, revocation.case)
    if revocation.resource is not None:
        return Revoked.of_resource(revocation.id, revocation.resource, org=revocation.org)
    assert revocation.time_from is not None and revocation.time_to is not None
    return Revoked.of_period(
        revocation.id, revocation.time_from, revocation.time_to, org=revocation.org
    )
