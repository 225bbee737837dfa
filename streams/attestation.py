"""Attestation (protocol version 2): the vault's key announcements, chained to its pinned
identity, with evidence that its keys live in a trusted environment.

An **announcement** (the ``vault.keys`` record) carries an epoch's public keys inside the
identity's :class:`~.identity.EpochCertificate`, the verifier's nonce, the time of issue and
**evidence** over the report data ::

    SHA-512("procvault-attest-v2" ‖ x25519 ‖ ed25519 ‖ epoch u64 ‖ nonce ‖ identity)

(:func:`report_data`), all signed with the epoch's Ed25519 key. :meth:`KeyAnnouncement.check`
accepts it only if (a) the nonce is the verifier's own, (b) the certificate verifies under the
**pinned** identity (``registry.json``), (c) the signature verifies under the certified epoch
key, (d) it is fresh and (e) the evidence satisfies the verifier's policy and binds the report
data. An impersonator without the identity key fails (b), whatever the attestation mode.

Evidence comes from a :class:`Provider`. The simulated one (development) is the identity's
signature over the report data, kind ``simulated-INSECURE``: it proves who signed, nothing about
the code. :class:`SimulatedVerifier` refuses it unless ``allow_insecure``; :class:`EvidenceVerifier`
dispatches by kind (simulated, or a hardware verifier such as
:class:`~.attestation_hw.DcapVerifier`) and reports, once, that it trusted simulated evidence.

Readers of ``vault.keys`` (:class:`AnnouncedKeys`, :func:`verified_epoch_keys`) treat every
record as hostile: whatever does not parse, chain or verify is counted by reason and skipped,
never raised.

>>> from procvault.streams.secrets import VaultSecrets
>>> vault = VaultSecrets.generate()
>>> nonce = b"n" * 16
>>> ann = KeyAnnouncement.create(vault, SimulatedProvider(vault.identity), nonce=nonce)
>>> ann.evidence.kind, ann.evidence.insecure
('simulated-INSECURE', True)
>>> back = KeyAnnouncement.from_bytes(ann.to_bytes())
>>> pinned = vault.identity_public
>>> back.check(SimulatedVerifier(pinned, allow_insecure=True), identity=pinned, nonce=nonce).epoch
1
>>> back.check(SimulatedVerifier(pinned), identity=pinned, nonce=nonce)
Traceback (most recent call last):
...
procvault.streams.attestation.AttestationError: simulated-INSECURE evidence refused: ...
>>> other = VaultSecrets.generate()  # an impersonator: its own identity, its own keys
>>> fake = KeyAnnouncement.create(other, SimulatedProvider(other.identity), nonce=nonce)
>>> fake.check(SimulatedVerifier(pinned, allow_insecure=True), identity=pinned, nonce=nonce)
Traceback (most recent call last):
...
procvault.streams.attestation.AttestationError: the epoch 1 keys are not certified by the pinned ...
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from procvault.monitor.errors import SecurityError

from .envelope import VaultPublicKeys, verify_signature
from .identity import (
    CertificateError,
    EpochCertificate,
    sign_as_identity,
    verify_as_identity,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .secrets import VaultSecrets

__all__ = [
    "ANNOUNCEMENT_VERSION",
    "EVIDENCE_KINDS",
    "MAX_ANNOUNCEMENT",
    "NONCE_SIZE",
    "REFUSAL_REASONS",
    "SIMULATED",
    "AnnouncedKeys",
    "AttestationError",
    "Evidence",
    "EvidenceVerifier",
    "KeyAnnouncement",
    "Provider",
    "SimulatedProvider",
    "SimulatedVerifier",
    "Verifier",
    "fingerprint",
    "report_data",
    "verified_epoch_keys",
]

SIMULATED: Final = "simulated-INSECURE"
#: Evidence kinds an announcement may carry.
EVIDENCE_KINDS: Final = frozenset({SIMULATED, "sgx-dcap", "tdx-dcap", "sev-snp"})
ANNOUNCEMENT_VERSION: Final = 2
#: Bytes of a verifier's nonce.
NONCE_SIZE: Final = 16
#: The largest ``vault.keys`` record parsed (a hardware quote is ~5 KB, hex doubles it).
MAX_ANNOUNCEMENT: Final = 256 * 1024
_REPORT_DOMAIN: Final = b"procvault-attest-v2"
_SIM_DOMAIN: Final = b"procvault-simulated-evidence-v2\x00"
_MAX_PAYLOAD: Final = 64 * 1024

#: Why an announcement was refused (metric label values; closed).
REFUSAL_REASONS: Final = frozenset(
    {
        "malformed",  # not a version-2 announcement (bytes, JSON, types, sizes)
        "wrong_nonce",  # bound to another nonce than the verifier's
        "not_pinned",  # its certificate does not verify under the pinned identity
        "bad_signature",  # not signed by the certified epoch key
        "stale",  # issued longer ago than the verifier accepts
        "evidence",  # the evidence does not satisfy the policy or does not bind the keys
        "conflict",  # two different certified key sets for one epoch
    }
)


class AttestationError(SecurityError):
    """An announcement or evidence that does not satisfy the verifier (one line; ``reason``
    is one of :data:`REFUSAL_REASONS`)."""

    def __init__(self, message: str, reason: str = "evidence") -> None:
        super().__init__(message)
        self.reason = reason if reason in REFUSAL_REASONS else "evidence"


def report_data(keys: VaultPublicKeys, nonce: bytes, identity: bytes) -> bytes:
    """The 64 bytes evidence must bind: SHA-512 over the domain, the epoch's keys, the epoch
    (u64), the nonce and the identity public key."""
    return hashlib.sha512(
        _REPORT_DOMAIN
        + keys.x25519
        + keys.ed25519
        + keys.epoch.to_bytes(8, "big")
        + nonce
        + identity
    ).digest()


def fingerprint(keys: VaultPublicKeys) -> str:
    """A short, loggable fingerprint of announced public keys (never a secret)."""
    return hashlib.sha256(keys.x25519 + keys.ed25519).hexdigest()[:16]


# ----------------------------------------------------------------------------- evidence
@dataclass(frozen=True)
class Evidence:
    """Attestation evidence.

    Attributes
    ----------
    kind
        One of :data:`EVIDENCE_KINDS`.
    report_data
        The 64 bytes the evidence binds.
    payload
        The evidence itself (a quote, or for the simulation the identity's signature).
    """

    kind: str
    report_data: bytes
    payload: bytes

    @property
    def insecure(self) -> bool:
        """True for evidence that proves nothing about the code (the simulation)."""
        return self.kind == SIMULATED

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "report_data": self.report_data.hex(),
            "payload": self.payload.hex(),
        }

    @classmethod
    def from_dict(cls, d: Any) -> Evidence:
        """Inverse of :meth:`to_dict`; :class:`AttestationError` (``malformed``) for anything
        else, whatever ``d`` is."""
        if not isinstance(d, Mapping):
            raise AttestationError("malformed evidence: not an object", "malformed")
        kind, rd, payload = d.get("kind"), d.get("report_data"), d.get("payload")
        if not isinstance(kind, str) or kind not in EVIDENCE_KINDS:
            raise AttestationError("malformed evidence: unknown kind", "malformed")
        if not (isinstance(rd, str) and len(rd) == 128 and isinstance(payload, str)):
            raise AttestationError("malformed evidence: fields of the wrong type", "malformed")
        if len(payload) > 2 * _MAX_PAYLOAD:
            raise AttestationError("malformed evidence: payload too large", "malformed")
        try:
            return cls(str(kind), bytes.fromhex(rd), bytes.fromhex(payload))
        except ValueError:
            raise AttestationError("malformed evidence: not hex", "malformed") from None


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
    """INSECURE: the vault identity's signature over the report data. Proves who signed
    (only the identity's holder can), nothing about the code or the hardware."""

    identity: Ed25519PrivateKey

    def __repr__(self) -> str:
        return "SimulatedProvider()"

    def evidence(self, report_data: bytes) -> Evidence:
        """Simulated evidence: the identity's signature over the domain and report data."""
        if len(report_data) != 64:
            raise ValueError("report data must be 64 bytes")
        return Evidence(
            SIMULATED, report_data, sign_as_identity(self.identity, _SIM_DOMAIN, report_data)
        )


@dataclass(frozen=True)
class SimulatedVerifier:
    """Checks simulated evidence under the pinned identity; refuses it unless
    ``allow_insecure`` is set explicitly."""

    identity: bytes
    allow_insecure: bool = False

    def verify(self, evidence: Evidence, expected_report_data: bytes) -> Evidence:
        """Check the kind, the opt-in, the key binding and the identity's signature."""
        if evidence.kind != SIMULATED:
            raise AttestationError(f"{evidence.kind} evidence needs a hardware verifier")
        if not self.allow_insecure:
            raise AttestationError(
                f"{SIMULATED} evidence refused: the vault runs without hardware attestation "
                "(accept it with --allow-insecure-attestation, development only, or give "
                "--attestation-policy for a hardware vault)"
            )
        if evidence.report_data != expected_report_data:
            raise AttestationError("evidence does not bind the announced keys, epoch and nonce")
        if not verify_as_identity(
            self.identity, _SIM_DOMAIN, evidence.report_data, evidence.payload
        ):
            raise AttestationError("simulated evidence is not signed by the pinned vault identity")
        return evidence


@dataclass
class EvidenceVerifier:
    """Dispatches evidence by kind: simulated evidence to a :class:`SimulatedVerifier` under
    the pinned ``identity`` (accepted only with ``allow_insecure``), everything else to
    ``hardware`` (e.g. a :class:`~.attestation_hw.DcapVerifier` from an attestation policy
    file). ``on_insecure`` is called once, the first time simulated evidence is accepted (the
    process says so, loudly, once)."""

    identity: bytes
    allow_insecure: bool = False
    hardware: Verifier | None = None
    on_insecure: Callable[[], None] | None = None
    trusted_insecure: bool = field(default=False, init=False)

    def verify(self, evidence: Evidence, expected_report_data: bytes) -> Evidence:
        """Verify ``evidence`` with the verifier for its kind."""
        if evidence.kind == SIMULATED:
            SimulatedVerifier(self.identity, self.allow_insecure).verify(
                evidence, expected_report_data
            )
            if not self.trusted_insecure:
                self.trusted_insecure = True
                if self.on_insecure is not None:
                    self.on_insecure()
            return evidence
        if self.hardware is None:
            raise AttestationError(
                f"{evidence.kind} evidence needs an attestation policy (--attestation-policy FILE)"
            )
        return self.hardware.verify(evidence, expected_report_data)


# ----------------------------------------------------------------------------- announcements
def _malformed(detail: str) -> AttestationError:
    return AttestationError(f"malformed key announcement: {detail}", "malformed")


@dataclass(frozen=True)
class KeyAnnouncement:
    """What the vault publishes on ``vault.keys``: an epoch's certified keys, evidence, signed.

    Attributes
    ----------
    certificate
        The identity's certificate over the epoch's public keys.
    identity
        The identity public key the vault claims (never trusted: checks use the pinned one).
    nonce
        The verifier's nonce the evidence binds (16 bytes).
    issued_at
        Unix time of issue (the vault's clock).
    evidence
        Evidence over :func:`report_data` for these keys, this nonce and the identity.
    signature
        The epoch's Ed25519 signature over the payload.
    signed
        The payload bytes as received (what the signature covers); empty for one built here.
    """

    certificate: EpochCertificate
    identity: bytes
    nonce: bytes
    issued_at: float
    evidence: Evidence
    signature: bytes
    signed: bytes = field(default=b"", compare=False, repr=False)

    @property
    def keys(self) -> VaultPublicKeys:
        """The announced (certified) public keys."""
        return self.certificate.keys

    def payload(self) -> bytes:
        """The signed bytes: as received, or the canonical JSON of the fields."""
        if self.signed:
            return self.signed
        return json.dumps(
            {
                "version": ANNOUNCEMENT_VERSION,
                "certificate": self.certificate.to_dict(),
                "identity": self.identity.hex(),
                "nonce": self.nonce.hex(),
                "issued_at": self.issued_at,
                "evidence": self.evidence.to_dict(),
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def create(
        cls,
        secrets: VaultSecrets,
        provider: Provider,
        *,
        nonce: bytes,
        now: float | None = None,
        epoch: int | None = None,
    ) -> KeyAnnouncement:
        """Announce ``epoch`` (default: the current one) with evidence for ``nonce``."""
        keys = secrets.epochs[secrets.current_epoch if epoch is None else epoch]
        cert = secrets.certificate(keys.epoch)
        identity = secrets.identity_public
        evidence = provider.evidence(report_data(cert.keys, nonce, identity))
        issued = float(time.time() if now is None else now)
        unsigned = cls(cert, identity, nonce, issued, evidence, b"")
        return cls(cert, identity, nonce, issued, evidence, keys.sign(unsigned.payload()))

    def to_bytes(self) -> bytes:
        """The record value for ``vault.keys``."""
        return json.dumps(
            {
                "version": ANNOUNCEMENT_VERSION,
                "payload": self.payload().decode(),
                "signature": self.signature.hex(),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: object) -> KeyAnnouncement:
        """Parse a ``vault.keys`` record; :class:`AttestationError` (``malformed``) for any
        other byte sequence (never another exception)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise _malformed("not bytes")
        if len(data) > MAX_ANNOUNCEMENT:
            raise _malformed("too large")
        try:
            outer = json.loads(bytes(data))
            if not isinstance(outer, dict):
                raise _malformed("not a JSON object")
            if outer.get("version") != ANNOUNCEMENT_VERSION:
                raise _malformed("not a version-2 announcement")
            text, sig = outer.get("payload"), outer.get("signature")
            if not isinstance(text, str) or not isinstance(sig, str) or len(sig) != 128:
                raise _malformed("payload or signature of the wrong type")
            p = json.loads(text)
        except (ValueError, RecursionError, UnicodeDecodeError):
            raise _malformed("not JSON") from None
        if not isinstance(p, dict) or p.get("version") != ANNOUNCEMENT_VERSION:
            raise _malformed("payload is not a version-2 object")
        issued, nonce, identity = p.get("issued_at"), p.get("nonce"), p.get("identity")
        if (
            isinstance(issued, bool)
            or not isinstance(issued, int | float)
            or not math.isfinite(issued)
            or abs(issued) > 1e12
        ):
            raise _malformed("issued_at is not a time")
        if not (isinstance(nonce, str) and len(nonce) == 2 * NONCE_SIZE):
            raise _malformed("nonce is not 16 bytes of hex")
        if not (isinstance(identity, str) and len(identity) == 64):
            raise _malformed("identity is not 32 bytes of hex")
        try:
            cert = EpochCertificate.from_dict(p.get("certificate"))
            ann = cls(
                cert,
                bytes.fromhex(identity),
                bytes.fromhex(nonce),
                float(issued),
                Evidence.from_dict(p.get("evidence")),
                bytes.fromhex(sig),
                text.encode(),
            )
        except CertificateError as exc:
            raise _malformed(str(exc)) from None
        except ValueError:
            raise _malformed("not hex") from None
        return ann

    def chain(self, identity: bytes) -> VaultPublicKeys:
        """Checks (b) and (c): the certificate under the pinned ``identity``, the signature
        under the certified epoch key. Returns the keys; :class:`AttestationError` otherwise."""
        try:
            keys = self.certificate.verify(identity)
        except CertificateError as exc:
            raise AttestationError(str(exc), "not_pinned") from None
        if not verify_signature(keys.ed25519, self.payload(), self.signature):
            raise AttestationError("key announcement signature is invalid", "bad_signature")
        return keys

    def check(
        self,
        verifier: Verifier,
        *,
        identity: bytes,
        nonce: bytes,
        max_age: float | None = None,
        now: float | None = None,
    ) -> VaultPublicKeys:
        """Checks (a) to (e) of the module docstring; the keys an agent may use."""
        if self.nonce != nonce:
            raise AttestationError(
                "evidence does not bind the announced keys, epoch and nonce", "wrong_nonce"
            )
        keys = self.chain(identity)
        if max_age is not None:
            age = (time.time() if now is None else now) - self.issued_at
            if age > max_age:
                raise AttestationError(f"key announcement is stale ({age:.0f} s old)", "stale")
        expected = report_data(keys, nonce, identity)
        if self.evidence.report_data != expected:
            raise AttestationError("evidence does not bind the announced keys, epoch and nonce")
        try:
            verifier.verify(self.evidence, expected)
        except AttestationError as exc:
            raise AttestationError(str(exc), "evidence") from None
        return keys


# ----------------------------------------------------------------------------- readers
class AnnouncedKeys:
    """The epoch keys a reader (``procvault results``, ``procvault revoke``) learns from
    ``vault.keys``: only from announcements that chain to the pinned ``identity`` and whose
    evidence ``verifier`` accepts (each against its own nonce: an old announcement still
    vouches for its epoch's keys). Everything else is counted in :attr:`refused` by reason and
    skipped; ``warn`` gets one line the first time each reason occurs. Two different certified
    key sets for one epoch: that epoch is trusted no more.

    >>> from procvault.streams.secrets import VaultSecrets
    >>> vault = VaultSecrets.generate()
    >>> good = KeyAnnouncement.create(vault, SimulatedProvider(vault.identity), nonce=bytes(16))
    >>> ak = AnnouncedKeys(vault.identity_public, SimulatedVerifier(vault.identity_public, True))
    >>> [ak.add(v) is not None for v in (good.to_bytes(), b'{"epoch": 1.5}', None)]
    [True, False, False]
    >>> sorted(ak.epochs), dict(ak.refused)
    ([1], {'malformed': 2})
    """

    def __init__(
        self,
        identity: bytes,
        verifier: Verifier,
        *,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.identity = identity
        self.verifier = verifier
        self.warn = warn
        self.epochs: dict[int, VaultPublicKeys] = {}
        self.conflicting: set[int] = set()
        self.accepted = 0
        self.refused: Counter[str] = Counter()

    def _refuse(self, reason: str, message: str) -> None:
        if not self.refused[reason] and self.warn is not None:
            self.warn(f"announcement refused ({reason}): {message}")
        self.refused[reason] += 1

    def add(self, value: object) -> VaultPublicKeys | None:
        """Learn the keys of one ``vault.keys`` record value; ``None`` if it was refused."""
        try:
            ann = KeyAnnouncement.from_bytes(value)
            keys = ann.check(self.verifier, identity=self.identity, nonce=ann.nonce)
        except AttestationError as exc:
            self._refuse(exc.reason, str(exc))
            return None
        epoch = keys.epoch
        if epoch in self.conflicting:
            self._refuse("conflict", f"epoch {epoch} has conflicting announcements")
            return None
        known = self.epochs.get(epoch)
        if known is None:
            self.epochs[epoch] = keys
        elif known != keys:
            del self.epochs[epoch]
            self.conflicting.add(epoch)
            self._refuse(
                "conflict",
                f"two different key sets certified for epoch {epoch}: its records will be rejected",
            )
            return None
        self.accepted += 1
        return keys


def verified_epoch_keys(
    records: Iterable[object],
    identity: bytes,
    verifier: Verifier,
    *,
    refused: Counter[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[int, VaultPublicKeys]:
    """Epoch -> keys from ``vault.keys`` record values, accepting only announcements that
    chain to the pinned ``identity`` (see :class:`AnnouncedKeys`); refusals are added to
    ``refused`` by reason.

    >>> from procvault.streams.secrets import VaultSecrets
    >>> vault, mallory = VaultSecrets.generate(), VaultSecrets.generate()
    >>> ok = KeyAnnouncement.create(vault, SimulatedProvider(vault.identity), nonce=bytes(16))
    >>> bad = KeyAnnouncement.create(mallory, SimulatedProvider(mallory.identity), nonce=bytes(16))
    >>> why = Counter()
    >>> pinned = vault.identity_public
    >>> keys = verified_epoch_keys([bad.to_bytes(), ok.to_bytes(), b"\\xff"], pinned,
    ...                            SimulatedVerifier(pinned, allow_insecure=True), refused=why)
    >>> keys[1] == vault.current.public(), dict(why)
    (True, {'not_pinned': 1, 'malformed': 1})
    """
    reader = AnnouncedKeys(identity, verifier, warn=warn)
    for value in records:
        reader.add(value)
    if refused is not None:
        refused.update(reader.refused)
    return dict(reader.epochs)
