"""Attestation: evidence that the vault's keys live in a trusted environment, and its checks.

A :class:`Provider` produces :class:`Evidence` for 64 bytes of report data; the vault asks for
evidence over ``VaultPublicKeys.report_data(nonce)`` so the evidence binds its X25519 and
Ed25519 keys, its epoch and the verifier's nonce. A :class:`Verifier` checks evidence against a
policy and raises :class:`AttestationError` with a one-line reason.

Only the simulated provider exists in this module: evidence kind ``simulated-INSECURE``, an
Ed25519 signature by a development key over the report data. It proves nothing about the
hardware. :class:`SimulatedVerifier` refuses it unless constructed with ``allow_insecure=True``,
and :attr:`Evidence.insecure` lets every process that handles it say so (logs, metrics, key
announcements).

>>> from procvault.streams.envelope import VaultKeys
>>> keys = VaultKeys.generate(epoch=3).public()
>>> nonce = b"n" * 32
>>> evidence = SimulatedProvider.development().evidence(keys.report_data(nonce))
>>> evidence.kind, evidence.insecure
('simulated-INSECURE', True)
>>> SimulatedVerifier().verify(evidence, keys.report_data(nonce))
Traceback (most recent call last):
...
procvault.streams.attestation.AttestationError: simulated-INSECURE evidence refused: ...
>>> SimulatedVerifier(allow_insecure=True).verify(evidence, keys.report_data(nonce)).kind
'simulated-INSECURE'
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Final, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from procvault.monitor.errors import SecurityError

from .envelope import VaultKeys, VaultPublicKeys, verify_signature

__all__ = [
    "AttestationError",
    "Evidence",
    "KeyAnnouncement",
    "Provider",
    "SimulatedProvider",
    "SimulatedVerifier",
    "Verifier",
]

SIMULATED: Final = "simulated-INSECURE"


class AttestationError(SecurityError):
    """Evidence that does not satisfy the verifier's policy."""


@dataclass(frozen=True)
class Evidence:
    """Attestation evidence.

    Attributes
    ----------
    kind
        ``simulated-INSECURE``, ``sgx-dcap``, ``tdx-dcap`` or ``sev-snp``.
    report_data
        The 64 bytes the evidence binds.
    payload
        The evidence itself (a quote, or for the simulation a signature).
    """

    kind: str
    report_data: bytes
    payload: bytes

    @property
    def insecure(self) -> bool:
        """True for evidence that proves nothing (the simulation)."""
        return self.kind == SIMULATED

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "report_data": self.report_data.hex(),
            "payload": self.payload.hex(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(str(d["kind"]), bytes.fromhex(d["report_data"]), bytes.fromhex(d["payload"]))
        except (KeyError, ValueError, TypeError) as exc:
            raise AttestationError(f"malformed evidence: {exc}") from None


class Provider(Protocol):
    """Produces evidence for report data."""

    def evidence(self, report_data: bytes) -> Evidence:
        """Evidence binding ``report_data`` (64 bytes)."""
        ...


class Verifier(Protocol):
    """Checks evidence against a policy."""

    def verify(self, evidence: Evidence, expected_report_data: bytes) -> Evidence:
        """Return the evidence if it satisfies the policy, else raise :class:`AttestationError`."""
        ...


@dataclass(frozen=True, repr=False)
class SimulatedProvider:
    """INSECURE: signs report data with a development key. For development and tests only."""

    key: Ed25519PrivateKey

    @classmethod
    def development(cls) -> SimulatedProvider:
        """A provider with a fresh development key."""
        return cls(Ed25519PrivateKey.generate())

    def evidence(self, report_data: bytes) -> Evidence:
        """Simulated evidence: the dev key's public key and its signature over the report data."""
        if len(report_data) != 64:
            raise ValueError("report data must be 64 bytes")
        from cryptography.hazmat.primitives import serialization

        pub = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return Evidence(SIMULATED, report_data, pub + self.key.sign(report_data))


@dataclass(frozen=True)
class SimulatedVerifier:
    """Checks simulated evidence; refuses it unless ``allow_insecure`` is set explicitly."""

    allow_insecure: bool = False

    def verify(self, evidence: Evidence, expected_report_data: bytes) -> Evidence:
        """Check the kind, the opt-in, the key binding and the development signature."""
        if evidence.kind != SIMULATED:
            raise AttestationError(f"{evidence.kind} evidence needs a hardware verifier")
        if not self.allow_insecure:
            raise AttestationError(
                f"{SIMULATED} evidence refused: start the agent with allow_insecure "
                "(development only)"
            )
        if evidence.report_data != expected_report_data:
            raise AttestationError("evidence does not bind the announced keys, epoch and nonce")
        pub, sig = evidence.payload[:32], evidence.payload[32:]
        if not verify_signature(pub, evidence.report_data, sig):
            raise AttestationError("simulated evidence signature is invalid")
        return evidence


@dataclass(frozen=True)
class KeyAnnouncement:
    """What the vault publishes on ``vault.keys`` for an epoch, signed with its Ed25519 key.

    >>> keys = VaultKeys.generate(epoch=1)
    >>> ann = KeyAnnouncement.create(keys, SimulatedProvider.development(), nonce=b"x" * 16)
    >>> back = KeyAnnouncement.from_bytes(ann.to_bytes())
    >>> back.check(SimulatedVerifier(allow_insecure=True), nonce=b"x" * 16).epoch
    1
    >>> back.check(SimulatedVerifier(allow_insecure=True), nonce=b"y" * 16)
    Traceback (most recent call last):
    ...
    procvault.streams.attestation.AttestationError: evidence does not bind the announced keys, ...
    """

    keys: VaultPublicKeys
    nonce: bytes
    issued_at: float
    evidence: Evidence
    signature: bytes

    def _payload(self) -> bytes:
        return json.dumps(
            {
                "epoch": self.keys.epoch,
                "x25519": self.keys.x25519.hex(),
                "ed25519": self.keys.ed25519.hex(),
                "nonce": self.nonce.hex(),
                "issued_at": self.issued_at,
                "evidence": self.evidence.to_dict(),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def create(
        cls, keys: VaultKeys, provider: Provider, *, nonce: bytes, now: float | None = None
    ) -> KeyAnnouncement:
        """Announce ``keys`` with evidence over the report data for ``nonce``."""
        public = keys.public()
        evidence = provider.evidence(public.report_data(nonce))
        issued = time.time() if now is None else now
        unsigned = cls(public, nonce, issued, evidence, b"")
        return cls(public, nonce, issued, evidence, keys.sign(unsigned._payload()))

    def to_bytes(self) -> bytes:
        """The record value for ``vault.keys``."""
        return json.dumps(
            {"payload": self._payload().decode(), "signature": self.signature.hex()}
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyAnnouncement:
        """Parse a ``vault.keys`` record; :class:`AttestationError` if malformed."""
        try:
            outer = json.loads(data)
            p = json.loads(outer["payload"])
            return cls(
                VaultPublicKeys(
                    p["epoch"], bytes.fromhex(p["x25519"]), bytes.fromhex(p["ed25519"])
                ),
                bytes.fromhex(p["nonce"]),
                float(p["issued_at"]),
                Evidence.from_dict(p["evidence"]),
                bytes.fromhex(outer["signature"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise AttestationError(f"malformed key announcement: {exc}") from None

    def check(
        self,
        verifier: Verifier,
        *,
        nonce: bytes,
        max_age: float | None = None,
        now: float | None = None,
    ) -> VaultPublicKeys:
        """Verify signature, freshness and evidence; return the keys an agent may use."""
        if not verify_signature(self.keys.ed25519, self._payload(), self.signature):
            raise AttestationError("key announcement signature is invalid")
        if max_age is not None:
            age = (time.time() if now is None else now) - self.issued_at
            if age > max_age:
                raise AttestationError(f"key announcement is stale ({age:.0f} s old)")
        if self.nonce != nonce:
            raise AttestationError("evidence does not bind the announced keys, epoch and nonce")
        verifier.verify(self.evidence, self.keys.report_data(nonce))
        return self.keys


def fingerprint(keys: VaultPublicKeys) -> str:
    """A short, loggable fingerprint of announced public keys (never a secret)."""
    return hashlib.sha256(keys.x25519 + keys.ed25519).hexdigest()[:16]
