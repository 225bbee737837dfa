"""The crypto envelope: what an agent encrypts and what only the vault can open.

Per producer session the agent makes an ephemeral X25519 key, agrees a secret with the vault's
X25519 key of the current epoch, and derives with HKDF-SHA256 one AES-256-GCM key and a 4-byte
nonce salt. Per event: nonce = salt ‖ 8-byte sequence number; associated data = the record's
canonical header (version, epoch, org, producer, session, ephemeral key, sequence) plus the topic,
so a record cannot be moved to another topic, organization, session or position unnoticed.

Wire format of a record value (all integers big-endian)::

    version u8 | epoch u32 | org len u8 + utf-8 | producer len u8 + utf-8 | session 16 B
    | ephemeral X25519 public key 32 B | sequence u64 | AES-GCM ciphertext + 16-B tag

The vault derives a session's key once (:class:`SessionOpener` caches it by session) and then
costs one AES-GCM decryption per event. Rejections raise :class:`RejectedRecord` with a
``reason`` for the metrics (``malformed``, ``unknown_org``, ``unknown_epoch``, ``bad_tag``,
``replay``); the message never contains key material or plaintext.

Also here: Ed25519 signing of results, sealing state and alerts, keyed case pseudonyms, and the
sliding-window replay guard.

>>> vault = VaultKeys.generate(epoch=1)
>>> sender = ProducerSession(vault.public(), org="hospital", producer="agent-1")
>>> record = sender.seal(b"an event", topic="events.hospital")
>>> opener = SessionOpener({1: vault}, orgs={"hospital"})
>>> header, plaintext = opener.open(record, topic="events.hospital")
>>> plaintext, header.org, header.sequence
(b'an event', 'hospital', 0)
>>> opener.open(record, topic="events.lab")
Traceback (most recent call last):
...
procvault.streams.envelope.RejectedRecord: bad_tag: authentication failed
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from procvault.monitor.errors import SecurityError

__all__ = [
    "ENVELOPE_VERSION",
    "Header",
    "ProducerSession",
    "RejectedRecord",
    "ReplayWindow",
    "SessionOpener",
    "VaultKeys",
    "VaultPublicKeys",
    "case_pseudonym",
    "open_sealed",
    "open_state",
    "seal_state",
    "seal_to",
    "verify_signature",
]

ENVELOPE_VERSION: Final = 1
_SESSION_INFO: Final = b"procvault-session-v1"
_SEALED_INFO: Final = b"procvault-sealed-v1"
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()
_FIXED = struct.Struct(">16s32sQ")  # session, ephemeral public key, sequence


class RejectedRecord(SecurityError):
    """A record the vault refuses; ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(_RAW, _RAW_PUB)


@dataclass(frozen=True)
class VaultPublicKeys:
    """What the vault announces for an epoch (with attestation evidence binding them)."""

    epoch: int
    x25519: bytes
    ed25519: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.epoch < 2**32:
            raise ValueError("epoch must fit in 32 bits")
        if len(self.x25519) != 32 or len(self.ed25519) != 32:
            raise ValueError("public keys must be 32 raw bytes each")

    def report_data(self, nonce: bytes) -> bytes:
        """The 64 bytes attestation evidence must carry: SHA-512 of the keys, epoch and nonce."""
        return hashlib.sha512(
            b"procvault-attest-v1"
            + self.x25519
            + self.ed25519
            + self.epoch.to_bytes(8, "big")
            + nonce
        ).digest()


@dataclass(frozen=True, repr=False)
class VaultKeys:
    """The vault's secret keys for one epoch (never logged: ``repr`` shows only the epoch)."""

    epoch: int
    x25519: X25519PrivateKey
    ed25519: Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"VaultKeys(epoch={self.epoch})"

    @classmethod
    def generate(cls, *, epoch: int) -> VaultKeys:
        """Fresh keys for ``epoch``."""
        return cls(epoch, X25519PrivateKey.generate(), Ed25519PrivateKey.generate())

    def public(self) -> VaultPublicKeys:
        """The public half, to announce."""
        return VaultPublicKeys(
            self.epoch,
            _raw_public(self.x25519.public_key()),
            _raw_public(self.ed25519.public_key()),
        )

    def sign(self, payload: bytes) -> bytes:
        """An Ed25519 signature of ``payload`` with this epoch's key."""
        return self.ed25519.sign(payload)


def verify_signature(public: bytes, payload: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``payload`` by ``public``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class Header:
    """The clear header of a record (authenticated, not encrypted)."""

    version: int
    epoch: int
    org: str
    producer: str
    session: bytes
    ephemeral: bytes
    sequence: int


def _derive(shared: bytes, salt: bytes, info: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(algorithm=SHA256(), length=36, salt=salt, info=info).derive(shared)
    return okm[:32], okm[32:]


def _session_info(epoch: int, org: str, producer: str, ephemeral: bytes, vault_x: bytes) -> bytes:
    return b"|".join(
        (
            _SESSION_INFO,
            epoch.to_bytes(4, "big"),
            org.encode(),
            producer.encode(),
            ephemeral,
            vault_x,
        )
    )


def _encode_name(name: str, what: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) < 256:
        raise ValueError(f"{what} must be 1-255 bytes of UTF-8")
    return bytes([len(raw)]) + raw


class ProducerSession:
    """The sending side: one ephemeral key agreement, then one AES-GCM encryption per event.

    Sequence numbers start at ``start_sequence`` (an agent resuming a session continues its
    numbering) and must never repeat within a session.
    """

    def __init__(
        self,
        vault: VaultPublicKeys,
        *,
        org: str,
        producer: str,
        session: bytes | None = None,
        start_sequence: int = 0,
    ) -> None:
        self.vault = vault
        self.org = org
        self.producer = producer
        self.session = session if session is not None else os.urandom(16)
        if len(self.session) != 16:
            raise ValueError("session id must be 16 bytes")
        eph = X25519PrivateKey.generate()
        self.ephemeral = _raw_public(eph.public_key())
        shared = eph.exchange(X25519PublicKey.from_public_bytes(vault.x25519))
        key, self._salt = _derive(
            shared,
            self.session,
            _session_info(vault.epoch, org, producer, self.ephemeral, vault.x25519),
        )
        self._aead = AESGCM(key)
        self._prefix = (
            bytes([ENVELOPE_VERSION])
            + vault.epoch.to_bytes(4, "big")
            + _encode_name(org, "org")
            + _encode_name(producer, "producer")
        )
        self.next_sequence = start_sequence

    def seal(self, plaintext: bytes, *, topic: str) -> bytes:
        """Encrypt one event for ``topic``; returns the record value."""
        seq = self.next_sequence
        self.next_sequence = seq + 1
        header = self._prefix + _FIXED.pack(self.session, self.ephemeral, seq)
        nonce = self._salt + seq.to_bytes(8, "big")
        return header + self._aead.encrypt(nonce, plaintext, header + topic.encode())


def parse_header(record: bytes) -> tuple[Header, int]:
    """The header of ``record`` and the offset where its ciphertext starts."""
    try:
        version, epoch = record[0], int.from_bytes(record[1:5], "big")
        pos = 5
        org_len = record[pos]
        org = record[pos + 1 : pos + 1 + org_len].decode()
        pos += 1 + org_len
        prod_len = record[pos]
        producer = record[pos + 1 : pos + 1 + prod_len].decode()
        pos += 1 + prod_len
        session, ephemeral, seq = _FIXED.unpack_from(record, pos)
        pos += _FIXED.size
    except (IndexError, UnicodeDecodeError, struct.error):
        raise RejectedRecord("malformed", "record header is truncated or invalid") from None
    if version != ENVELOPE_VERSION:
        raise RejectedRecord("malformed", f"unsupported envelope version {version}")
    if len(record) < pos + 16:
        raise RejectedRecord("malformed", "record has no ciphertext")
    return Header(version, epoch, org, producer, session, ephemeral, seq), pos


class ReplayWindow:
    """A sliding-window bitmap of sequence numbers seen (as IPsec's anti-replay window).

    >>> w = ReplayWindow(size=4)
    >>> [w.accept(s) for s in (0, 2, 2, 1, 9, 5, 6)]
    [True, True, False, True, True, False, True]
    """

    __slots__ = ("_bits", "_highest", "size")

    def __init__(self, size: int = 4096) -> None:
        if size < 1:
            raise ValueError("size must be >= 1")
        self.size = size
        self._highest = -1
        self._bits = 0  # bit i set: sequence (highest - i) seen

    def accept(self, seq: int) -> bool:
        """Record ``seq``; False if it was seen before or is too old to tell."""
        if seq > self._highest:
            shift = seq - self._highest
            self._bits = (
                ((self._bits << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            )
            self._highest = seq
            return True
        offset = self._highest - seq
        if offset >= self.size:
            return False
        mask = 1 << offset
        if self._bits & mask:
            return False
        self._bits |= mask
        return True


@dataclass
class SessionOpener:
    """The vault's side: derive each session's key once, then decrypt and check each record.

    ``keys`` maps the epochs still accepted to their keys (a retired epoch is simply absent);
    ``orgs`` is the set of registered organizations. With ``replay_window`` (default), a
    repeated sequence number in a session is refused; a vault that guards replays inside each
    case's state (exactly-once across restarts) passes ``replay_window=0``.
    """

    keys: Mapping[int, VaultKeys]
    orgs: Iterable[str]
    replay_window: int = 4096
    max_sessions: int = 100_000
    _sessions: dict[bytes, tuple[AESGCM, bytes, Header, ReplayWindow | None]] = field(
        default_factory=dict, repr=False
    )

    def __post_init__(self) -> None:
        self.orgs = frozenset(self.orgs)

    def open(self, record: bytes, *, topic: str) -> tuple[Header, bytes]:
        """``(header, plaintext)``, or :class:`RejectedRecord`."""
        header, pos = parse_header(record)
        state = self._sessions.get(header.session)
        if state is None or state[2].ephemeral != header.ephemeral or state[2].org != header.org:
            state = self._new_session(header)
        aead, salt, _, window = state
        nonce = salt + header.sequence.to_bytes(8, "big")
        try:
            plaintext = aead.decrypt(nonce, record[pos:], record[:pos] + topic.encode())
        except InvalidTag:
            raise RejectedRecord("bad_tag", "authentication failed") from None
        if window is not None and not window.accept(header.sequence):
            raise RejectedRecord(
                "replay", f"sequence {header.sequence} already seen in this session"
            )
        return header, plaintext

    def _new_session(self, header: Header) -> tuple[AESGCM, bytes, Header, ReplayWindow | None]:
        if header.org not in self.orgs:
            raise RejectedRecord("unknown_org", "organization is not registered")
        keys = self.keys.get(header.epoch)
        if keys is None:
            raise RejectedRecord("unknown_epoch", f"epoch {header.epoch} is not accepted")
        try:
            shared = keys.x25519.exchange(X25519PublicKey.from_public_bytes(header.ephemeral))
        except ValueError:
            raise RejectedRecord("malformed", "invalid ephemeral key") from None
        vault_x = _raw_public(keys.x25519.public_key())
        key, salt = _derive(
            shared,
            header.session,
            _session_info(header.epoch, header.org, header.producer, header.ephemeral, vault_x),
        )
        window = ReplayWindow(self.replay_window) if self.replay_window else None
        if len(self._sessions) >= self.max_sessions:
            self._sessions.pop(next(iter(self._sessions)))  # forget the oldest session
        state = (AESGCM(key), salt, header, window)
        self._sessions[header.session] = state
        return state

    def retire_epoch(self, epoch: int) -> None:
        """Stop accepting ``epoch`` (its sessions are forgotten)."""
        self.keys = {e: k for e, k in self.keys.items() if e != epoch}
        self._sessions = {s: v for s, v in self._sessions.items() if v[2].epoch != epoch}


def case_pseudonym(key: bytes, case_id: str) -> bytes:
    """The Kafka record key for a case: HMAC-SHA256 under a key the agents share, 16 bytes.

    Every organization's agent maps a case to the same pseudonym, so a case that crosses
    organizations lands on one partition, and the broker never sees the case id.

    >>> case_pseudonym(b"k" * 32, "case-1") == case_pseudonym(b"k" * 32, "case-1")
    True
    >>> case_pseudonym(b"k" * 32, "case-1") == case_pseudonym(b"j" * 32, "case-1")
    False
    """
    if len(key) < 16:
        raise ValueError("pseudonym key must be at least 16 bytes")
    return hmac.new(key, case_id.encode(), hashlib.sha256).digest()[:16]


def seal_state(key: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """AES-256-GCM with a random nonce: ``nonce ‖ ciphertext``, bound to ``context``."""
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def open_state(key: bytes, sealed: bytes, *, context: bytes) -> bytes:
    """The inverse of :func:`seal_state`; :class:`RejectedRecord` (``bad_tag``) if tampered."""
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], context)
    except (InvalidTag, ValueError):
        raise RejectedRecord("bad_tag", "sealed state failed authentication") from None


def seal_to(recipient: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """Encrypt to an X25519 public key (an organization's): ``ephemeral ‖ nonce ‖ ciphertext``.

    >>> org = X25519PrivateKey.generate()
    >>> pub = org.public_key().public_bytes(_RAW, _RAW_PUB)
    >>> open_sealed(org, seal_to(pub, b"alert", context=b"c"), context=b"c")
    b'alert'
    """
    eph = X25519PrivateKey.generate()
    eph_pub = _raw_public(eph.public_key())
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient))
    key, _ = _derive(shared, eph_pub, _SEALED_INFO + recipient)
    nonce = os.urandom(12)
    return eph_pub + nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def open_sealed(private: X25519PrivateKey, sealed: bytes, *, context: bytes) -> bytes:
    """Open what :func:`seal_to` sealed for ``private``'s public key."""
    if len(sealed) < 32 + 12 + 16:
        raise RejectedRecord("malformed", "sealed message too short")
    eph_pub, nonce, ct = sealed[:32], sealed[32:44], sealed[44:]
    recipient = _raw_public(private.public_key())
    shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    key, _ = _derive(shared, eph_pub, _SEALED_INFO + recipient)
    try:
        return AESGCM(key).decrypt(nonce, ct, context)
    except InvalidTag:
        raise RejectedRecord("bad_tag", "sealed message failed authentication") from None
