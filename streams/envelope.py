"""The crypto envelope: what an agent encrypts and what only the vault can open.

Version 2 (see ``docs/protocol.md``). Each organization has a long-term X25519 **sender** key
(its public half is registered); the vault has an X25519 key per epoch. Per producer session
the agent makes an ephemeral X25519 key. Two agreements:

* ``ss = X25519(sender, vault epoch key)``, computed by the vault once per (organization,
  epoch): it keys the **header tag**, an HMAC-SHA256 (16 bytes) over the clear header, the
  topic and the partition. The vault checks it before any key agreement or cache entry, so a
  record made without the organization's sender key costs one HMAC and is rejected;
* ``es = X25519(ephemeral, vault epoch key)``: with ``ss``, HKDF-SHA256 gives the session's
  AES-256-GCM key and a 4-byte nonce salt (a compromised sender key alone opens nothing).

Per record: nonce = salt ‖ 8-byte sequence number; associated data = header ‖ header tag ‖
topic ‖ partition, so a record cannot be moved to another topic, partition, organization,
session or position unnoticed. ``generation`` orders a producer's sessions (greater for every
later session); replays are refused by the vault's partition engine, which keeps, per
organization, the last ``(generation, sequence)`` and merge key it accepted.

Wire format of a record value (all integers big-endian)::

    version u8 (= 2) | epoch u32 | org len u8 + utf-8 | producer len u8 + utf-8 | session 16 B
    | generation u64 | ephemeral X25519 public key 32 B | sequence u64 | header tag 16 B
    | AES-GCM ciphertext + 16-B tag

Rejections raise :class:`RejectedRecord` with a ``reason`` for the metrics (``malformed``,
``unknown_org``, ``unknown_epoch``, ``bad_tag``); the message never contains key material or
plaintext.

Also here: Ed25519 signing of results, sealing state and alerts, keyed pseudonyms.

>>> vault = VaultKeys.generate(epoch=1)
>>> org_sender = X25519PrivateKey.generate()
>>> sender = ProducerSession(vault.public(), org_sender, org="hospital", producer="agent-1")
>>> record = sender.seal(b"an event", topic="events.hospital", partition=2)
>>> opener = SessionOpener({1: vault}, senders={"hospital": public_bytes(org_sender)})
>>> header, plaintext = opener.open(record, topic="events.hospital", partition=2)
>>> plaintext, header.org, header.sequence
(b'an event', 'hospital', 0)
>>> opener.open(record, topic="events.hospital", partition=1)
Traceback (most recent call last):
...
procvault.streams.envelope.RejectedRecord: bad_tag: header tag does not verify
>>> forged = ProducerSession(vault.public(), X25519PrivateKey.generate(), org="hospital",
...                          producer="mallory").seal(b"x", topic="events.hospital", partition=2)
>>> opener.open(forged, topic="events.hospital", partition=2)
Traceback (most recent call last):
...
procvault.streams.envelope.RejectedRecord: bad_tag: header tag does not verify
>>> opener.sessions  # forged records leave nothing behind
1
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import time
from collections.abc import Mapping
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
    "SessionOpener",
    "VaultKeys",
    "VaultPublicKeys",
    "case_pseudonym",
    "open_sealed",
    "open_state",
    "parse_header",
    "public_bytes",
    "seal_state",
    "seal_to",
    "verify_signature",
]

ENVELOPE_VERSION: Final = 2
_SESSION_INFO: Final = b"procvault-session-v2"
_HEADER_INFO: Final = b"procvault-hdr-v2"
_TAG: Final = 16
_SEALED_INFO: Final = b"procvault-sealed-v1"
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NO_ENC = serialization.NoEncryption()
_FIXED = struct.Struct(">16sQ32sQ")  # session, generation, ephemeral key, sequence


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
    #: orders the producer's sessions: greater for every later one
    generation: int
    ephemeral: bytes
    sequence: int


def _derive(shared: bytes, salt: bytes, info: bytes, length: int = 36) -> bytes:
    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(shared)


def public_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of a private key."""
    return _raw_public(key.public_key())


def _header_key(ss: bytes, epoch: int, org: str, vault_x: bytes, sender: bytes) -> bytes:
    info = b"|".join((_HEADER_INFO, epoch.to_bytes(4, "big"), org.encode(), vault_x, sender))
    return _derive(ss, b"", info, 32)


def _session_info(
    epoch: int, org: str, producer: str, generation: int, ephemeral: bytes, vault_x: bytes
) -> bytes:
    return b"|".join(
        (
            _SESSION_INFO,
            epoch.to_bytes(4, "big"),
            org.encode(),
            producer.encode(),
            generation.to_bytes(8, "big"),
            ephemeral,
            vault_x,
        )
    )


def _place(topic: str, partition: int) -> bytes:
    raw = topic.encode()
    if len(raw) > 0xFFFF:
        raise ValueError("topic name too long")
    if not 0 <= partition < 2**32:
        raise ValueError("partition out of range")
    return len(raw).to_bytes(2, "big") + raw + partition.to_bytes(4, "big")


def _encode_name(name: str, what: str) -> bytes:
    raw = name.encode()
    if not 0 < len(raw) < 256:
        raise ValueError(f"{what} must be 1-255 bytes of UTF-8")
    return bytes([len(raw)]) + raw


class ProducerSession:
    """The sending side: one ephemeral key agreement, then one HMAC and one AES-GCM encryption
    per record.

    Parameters
    ----------
    vault
        The vault's announced (and verified) public keys of the epoch.
    sender
        The organization's X25519 sender key.
    org, producer
        Who sends.
    generation
        Greater than every earlier session's of this producer (default: the wall clock in
        µs; an agent takes the larger of that and its last committed generation plus one).
    session
        The session id (16 random bytes by default).
    """

    def __init__(
        self,
        vault: VaultPublicKeys,
        sender: X25519PrivateKey,
        *,
        org: str,
        producer: str,
        generation: int | None = None,
        session: bytes | None = None,
    ) -> None:
        self.vault = vault
        self.org = org
        self.producer = producer
        self.session = session if session is not None else os.urandom(16)
        if len(self.session) != 16:
            raise ValueError("session id must be 16 bytes")
        gen = time.time_ns() // 1000 if generation is None else generation
        if not 0 <= gen < 2**64:
            raise ValueError("generation must fit in 64 bits")
        self.generation = gen
        vault_x = X25519PublicKey.from_public_bytes(vault.x25519)
        ss = sender.exchange(vault_x)
        eph = X25519PrivateKey.generate()
        self.ephemeral = _raw_public(eph.public_key())
        es = eph.exchange(vault_x)
        self._hdr_key = _header_key(ss, vault.epoch, org, vault.x25519, public_bytes(sender))
        okm = _derive(
            es + ss,
            self.session,
            _session_info(vault.epoch, org, producer, gen, self.ephemeral, vault.x25519),
        )
        self._aead = AESGCM(okm[:32])
        self._salt = okm[32:]
        self._prefix = (
            bytes([ENVELOPE_VERSION])
            + vault.epoch.to_bytes(4, "big")
            + _encode_name(org, "org")
            + _encode_name(producer, "producer")
            + self.session
            + gen.to_bytes(8, "big")
            + self.ephemeral
        )
        self.next_sequence = 0

    def seal(self, plaintext: bytes, *, topic: str, partition: int) -> bytes:
        """Encrypt one record for ``topic``/``partition``; returns the record value."""
        seq = self.next_sequence
        self.next_sequence = seq + 1
        header = self._prefix + seq.to_bytes(8, "big")
        place = _place(topic, partition)
        tag = hmac.new(self._hdr_key, header + place, hashlib.sha256).digest()[:_TAG]
        nonce = self._salt + seq.to_bytes(8, "big")
        return header + tag + self._aead.encrypt(nonce, plaintext, header + tag + place)


def parse_header(record: bytes) -> tuple[Header, int]:
    """The header of ``record`` and the offset where its header tag starts."""
    try:
        version, epoch = record[0], int.from_bytes(record[1:5], "big")
        if version != ENVELOPE_VERSION:
            raise RejectedRecord("malformed", f"unsupported envelope version {version}")
        pos = 5
        org_len = record[pos]
        org = record[pos + 1 : pos + 1 + org_len].decode()
        pos += 1 + org_len
        prod_len = record[pos]
        producer = record[pos + 1 : pos + 1 + prod_len].decode()
        pos += 1 + prod_len
        session, generation, ephemeral, seq = _FIXED.unpack_from(record, pos)
        pos += _FIXED.size
    except (IndexError, UnicodeDecodeError, struct.error):
        raise RejectedRecord("malformed", "record header is truncated or invalid") from None
    if not org or not producer:
        raise RejectedRecord("malformed", "record header names no organization or producer")
    if len(record) < pos + _TAG + 16:
        raise RejectedRecord("malformed", "record has no ciphertext")
    return Header(version, epoch, org, producer, session, generation, ephemeral, seq), pos


@dataclass
class SessionOpener:
    """The vault's side: authenticate each record's header, derive each session's key once,
    then decrypt.

    ``keys`` maps the epochs still accepted to their keys (a retired epoch is simply absent);
    ``senders`` maps each registered organization to its X25519 sender public key. Sessions
    are cached (at most ``max_sessions``, oldest dropped) only after a record of them
    authenticated: forged records cost one HMAC and leave nothing behind.
    """

    keys: Mapping[int, VaultKeys]
    senders: Mapping[str, bytes]
    max_sessions: int = 100_000
    _hdr: dict[tuple[str, int], bytes] = field(default_factory=dict, repr=False)
    _sessions: dict[bytes, tuple[AESGCM, bytes, Header]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for org, pub in self.senders.items():
            if len(pub) != 32:
                raise ValueError(f"the sender key of {org!r} must be 32 raw bytes")

    @property
    def sessions(self) -> int:
        """How many sessions are cached."""
        return len(self._sessions)

    def _header_key(self, org: str, epoch: int) -> bytes:
        key = self._hdr.get((org, epoch))
        if key is None:
            sender = self.senders.get(org)
            if sender is None:
                raise RejectedRecord("unknown_org", "organization is not registered")
            keys = self.keys.get(epoch)
            if keys is None:
                raise RejectedRecord("unknown_epoch", f"epoch {epoch} is not accepted")
            try:
                ss = keys.x25519.exchange(X25519PublicKey.from_public_bytes(sender))
            except ValueError:
                raise RejectedRecord(
                    "unknown_org", "the registered sender key is invalid"
                ) from None
            vault_x = _raw_public(keys.x25519.public_key())
            key = self._hdr[(org, epoch)] = _header_key(ss, epoch, org, vault_x, sender)
        return key

    def open(self, record: bytes, *, topic: str, partition: int) -> tuple[Header, bytes]:
        """``(header, plaintext)`` of a record read from ``topic``/``partition``, or
        :class:`RejectedRecord`."""
        header, pos = parse_header(record)
        hdr_key = self._header_key(header.org, header.epoch)
        place = _place(topic, partition)
        end = pos + _TAG
        tag = record[pos:end]
        want = hmac.new(hdr_key, record[:pos] + place, hashlib.sha256).digest()[:_TAG]
        if not hmac.compare_digest(tag, want):
            raise RejectedRecord("bad_tag", "header tag does not verify")
        state = self._sessions.get(header.session)
        if state is None or not _same_session(state[2], header):
            state = self._new_session(header)
        aead, salt, _ = state
        nonce = salt + header.sequence.to_bytes(8, "big")
        try:
            plaintext = aead.decrypt(nonce, record[end:], record[:end] + place)
        except InvalidTag:
            raise RejectedRecord("bad_tag", "authentication failed") from None
        return header, plaintext

    def _new_session(self, header: Header) -> tuple[AESGCM, bytes, Header]:
        keys = self.keys[header.epoch]  # (the header key proved the epoch is accepted)
        sender = self.senders[header.org]
        try:
            es = keys.x25519.exchange(X25519PublicKey.from_public_bytes(header.ephemeral))
            ss = keys.x25519.exchange(X25519PublicKey.from_public_bytes(sender))
        except ValueError:
            raise RejectedRecord("malformed", "invalid ephemeral key") from None
        vault_x = _raw_public(keys.x25519.public_key())
        info = _session_info(
            header.epoch, header.org, header.producer, header.generation, header.ephemeral, vault_x
        )
        okm = _derive(es + ss, header.session, info)
        if len(self._sessions) >= self.max_sessions:
            self._sessions.pop(next(iter(self._sessions)))  # forget the oldest session
        state = (AESGCM(okm[:32]), okm[32:], header)
        self._sessions[header.session] = state
        return state

    def retire_epoch(self, epoch: int) -> None:
        """Stop accepting ``epoch`` (its sessions are forgotten)."""
        self.keys = {e: k for e, k in self.keys.items() if e != epoch}
        self._hdr = {k: v for k, v in self._hdr.items() if k[1] != epoch}
        self._sessions = {s: v for s, v in self._sessions.items() if v[2].epoch != epoch}


def _same_session(a: Header, b: Header) -> bool:
    return (a.epoch, a.org, a.producer, a.generation, a.ephemeral) == (
        b.epoch,
        b.org,
        b.producer,
        b.generation,
        b.ephemeral,
    )


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
    key = _derive(shared, eph_pub, _SEALED_INFO + recipient, 32)
    nonce = os.urandom(12)
    return eph_pub + nonce + AESGCM(key).encrypt(nonce, plaintext, context)


def open_sealed(private: X25519PrivateKey, sealed: bytes, *, context: bytes) -> bytes:
    """Open what :func:`seal_to` sealed for ``private``'s public key."""
    if len(sealed) < 32 + 12 + 16:
        raise RejectedRecord("malformed", "sealed message too short")
    eph_pub, nonce, ct = sealed[:32], sealed[32:44], sealed[44:]
    recipient = _raw_public(private.public_key())
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    except ValueError:  # a low-order point (such as all zeros): no key agreement
        raise RejectedRecord("malformed", "sealed message has an invalid ephemeral key") from None
    key = _derive(shared, eph_pub, _SEALED_INFO + recipient, 32)
    try:
        return AESGCM(key).decrypt(nonce, ct, context)
    except InvalidTag:
        raise RejectedRecord("bad_tag", "sealed message failed authentication") from None
