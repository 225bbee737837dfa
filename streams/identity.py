"""The vault's long-term identity and the certificates it issues for each epoch's keys.

``procvault keys init`` creates one Ed25519 **identity** key for the vault; its public half is
pinned in ``registry.json``. Every epoch's public keys (X25519 transport, Ed25519 signing) are
certified by it: an :class:`EpochCertificate` is the identity's signature over ::

    "procvault-epoch-cert-v2" 0x00 | epoch u64 | x25519 32 B | ed25519 32 B

Whoever reads the vault's announcements (agents, ``procvault results``, ``procvault revoke``)
accepts an epoch's keys only if their certificate verifies under the *pinned* identity, so a
party without the identity key cannot announce keys of its own, whatever attestation mode runs.
The identity signs nothing but certificates and (with the development provider) simulated
evidence, each under its own domain string, so one kind of signature can never pass for the
other.

>>> from procvault.streams.envelope import VaultKeys
>>> identity = Ed25519PrivateKey.generate()
>>> keys = VaultKeys.generate(epoch=4).public()
>>> cert = EpochCertificate.issue(identity, keys)
>>> cert.verify(public_bytes(identity)) == keys
True
>>> EpochCertificate.from_dict(cert.to_dict()) == cert
True
>>> cert.verify(public_bytes(Ed25519PrivateKey.generate()))
Traceback (most recent call last):
...
procvault.streams.identity.CertificateError: the epoch 4 keys are not certified by the pinned ...
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from procvault.monitor.errors import SecurityError

from .envelope import VaultPublicKeys

__all__ = [
    "CERT_DOMAIN",
    "CertificateError",
    "EpochCertificate",
    "identity_fingerprint",
    "public_bytes",
    "sign_as_identity",
    "verify_as_identity",
]

#: Domain of the identity's signature over an epoch's public keys.
CERT_DOMAIN: Final = b"procvault-epoch-cert-v2\x00"


class CertificateError(SecurityError):
    """An epoch certificate that does not verify under the pinned identity (or is malformed)."""


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key of an Ed25519 key (private or public)."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def identity_fingerprint(identity: bytes) -> str:
    """A short, loggable fingerprint of an identity public key (16 hex digits).

    >>> identity_fingerprint(bytes(32))
    '66687aadf862bd77'
    """
    return hashlib.sha256(identity).hexdigest()[:16]


def sign_as_identity(identity: Ed25519PrivateKey, domain: bytes, message: bytes) -> bytes:
    """The identity's signature over ``domain ‖ message`` (``domain`` ends in a NUL byte)."""
    if not domain.endswith(b"\x00"):
        raise ValueError("a signature domain ends with a NUL byte")
    return identity.sign(domain + message)


def verify_as_identity(identity: bytes, domain: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the identity's signature over ``domain ‖ message``."""
    try:
        Ed25519PublicKey.from_public_bytes(identity).verify(signature, domain + message)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _certified(keys: VaultPublicKeys) -> bytes:
    return keys.epoch.to_bytes(8, "big") + keys.x25519 + keys.ed25519


@dataclass(frozen=True)
class EpochCertificate:
    """The identity's certificate over one epoch's public keys.

    Attributes
    ----------
    keys
        The certified public keys (epoch, X25519, Ed25519).
    signature
        The identity's Ed25519 signature (64 bytes) over the domain and the keys.
    """

    keys: VaultPublicKeys
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.signature, bytes) or len(self.signature) != 64:
            raise CertificateError("an epoch certificate's signature must be 64 bytes")

    @classmethod
    def issue(cls, identity_private: Ed25519PrivateKey, keys: VaultPublicKeys) -> EpochCertificate:
        """Certify ``keys`` with the vault's identity."""
        return cls(keys, sign_as_identity(identity_private, CERT_DOMAIN, _certified(keys)))

    def verify(self, identity_public: bytes) -> VaultPublicKeys:
        """The certified keys if the signature verifies under ``identity_public`` (the pinned
        identity), else :class:`CertificateError`."""
        if not verify_as_identity(
            identity_public, CERT_DOMAIN, _certified(self.keys), self.signature
        ):
            raise CertificateError(
                f"the epoch {self.keys.epoch} keys are not certified by the pinned vault "
                f"identity {identity_fingerprint(identity_public)} (an impersonator, or a "
                "registry.json of another deployment)"
            )
        return self.keys

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "epoch": self.keys.epoch,
            "x25519": self.keys.x25519.hex(),
            "ed25519": self.keys.ed25519.hex(),
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> EpochCertificate:
        """Inverse of :meth:`to_dict`; :class:`CertificateError` for anything else (never
        another exception, whatever ``data`` is)."""
        if not isinstance(data, Mapping):
            raise CertificateError("malformed epoch certificate: not an object")
        epoch = data.get("epoch")
        if type(epoch) is not int or not 0 <= epoch < 2**32:
            raise CertificateError("malformed epoch certificate: epoch is not a 32-bit integer")
        try:
            x, ed, sig = (_hex_field(data, name) for name in ("x25519", "ed25519", "signature"))
            return cls(VaultPublicKeys(epoch, x, ed), sig)
        except ValueError as exc:
            raise CertificateError(f"malformed epoch certificate: {exc}") from None


def _hex_field(data: Mapping[str, Any], name: str) -> bytes:
    value = data.get(name)
    if not isinstance(value, str) or len(value) > 256:
        raise ValueError(f"{name} is not a hex string")
    return bytes.fromhex(value)
