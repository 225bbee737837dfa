"""What travels inside the pipeline's topics, and the topics' names.

Topics (``P`` = the number of event partitions, the same for every ``events.<org>`` topic so
that partition ``p`` of each holds the same cases):

=======================  ===========  ============================================================
topic                    partitions   records
=======================  ===========  ============================================================
``events.<org>``         P            key: case pseudonym (16 B) or none (heartbeats);
                                      value: envelope record (:mod:`.envelope`) around a frame
``vault.keys``           1            signed key announcements (:mod:`.attestation`)
``vault.attest``         1            agents' attestation requests: a fresh 16-byte nonce
``agent.progress``       1            compacted; key: org/producer; value: committed position
``vault.changelog``      P            compacted; key: ``c`` + case pseudonym or ``p`` + partition;
                                      value: state sealed with the state key
``vault.partials``       1            key: pane index (8 B); value: a sealed :class:`Partial`
``results.alerts.<org>`` 1            per-case alerts and results sealed to the organization
``results.aggregates``   1            signed DP releases (:mod:`.release`)
=======================  ===========  ============================================================

A **frame** is the plaintext an agent encrypts: ``kind u8 | order u64 | sent_us u64 | body``.
``order`` breaks timestamp ties the same way in every organization (the event's position in
the shared source, or the agent's own counter); ``sent_us`` is the agent's wall clock when it
sent the record (for end-to-end latency). An ``EVENT`` frame's body is an encoded event
(:mod:`.codec`); a ``HEARTBEAT`` frame's body is ``watermark_us i64 | closed u8``: the agent
promises that no later event of its organization is older than the watermark (``closed``: no
more events at all). A ``REVOKE`` frame's body is a signed revocation (:mod:`.revocation`),
published by ``procvault revoke`` to the case's partition (keyed by the case pseudonym) or to
every partition; the vault applies it after everything its organization published before it
in that partition (its ``order`` is not used). Agents send heartbeats to every partition, so
the vault can merge the organizations' streams in event-time order even where one is silent.

>>> f = encode_frame(EVENT, 7, 1_000, b"body")
>>> decode_frame(f)
(0, 7, 1000, b'body')
>>> decode_heartbeat(decode_frame(encode_heartbeat(3, 5, 123, closed=True))[3])
(123, True)
>>> keys = VaultKeys.generate(epoch=2)
>>> org = X25519PrivateKey.generate()
>>> from cryptography.hazmat.primitives import serialization as s
>>> pub = org.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
>>> sealed = seal_result(pub, b'{"type":"alert"}', topic="results.alerts.lab", keys=keys)
>>> open_result(org, sealed, topic="results.alerts.lab", keys={2: keys.public()})
b'{"type":"alert"}'
>>> open_result(org, sealed, topic="results.alerts.ward", keys={2: keys.public()})
Traceback (most recent call last):
...
procvault.streams.envelope.RejectedRecord: bad_tag: sealed message failed authentication
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from procvault.monitor.privacy.panes import PaneAggregate

from .envelope import (
    RejectedRecord,
    VaultKeys,
    VaultPublicKeys,
    open_sealed,
    open_state,
    seal_state,
    seal_to,
    verify_signature,
)

__all__ = [
    "AGGREGATES_TOPIC",
    "ATTEST_TOPIC",
    "CHANGELOG_TOPIC",
    "EVENT",
    "HEARTBEAT",
    "KEYS_TOPIC",
    "PARTIALS_TOPIC",
    "PROGRESS_TOPIC",
    "REVOKE",
    "Partial",
    "Topics",
    "alerts_topic",
    "decode_frame",
    "decode_heartbeat",
    "encode_frame",
    "encode_heartbeat",
    "events_topic",
    "open_partial",
    "open_result",
    "partial_key",
    "seal_partial",
    "seal_result",
]

KEYS_TOPIC: Final = "vault.keys"
CHANGELOG_TOPIC: Final = "vault.changelog"
PARTIALS_TOPIC: Final = "vault.partials"
AGGREGATES_TOPIC: Final = "results.aggregates"

EVENT: Final = 0
HEARTBEAT: Final = 1
REVOKE: Final = 2

_FRAME: Final = struct.Struct(">BQQ")
_BEAT: Final = struct.Struct(">qB")
_PARTIAL_CONTEXT: Final = b"procvault-partial-v1|"


ATTEST_TOPIC: Final = "vault.attest"
PROGRESS_TOPIC: Final = "agent.progress"


@dataclass(frozen=True)
class Topics:
    """The pipeline's topic names, all under an optional ``prefix`` (one deployment, or one
    test, per prefix).

    >>> t = Topics("run7.")
    >>> t.events("lab"), t.alerts("lab"), t.changelog
    ('run7.events.lab', 'run7.results.alerts.lab', 'run7.vault.changelog')
    """

    prefix: str = ""

    def events(self, org: str) -> str:
        """An organization's event topic."""
        return self.prefix + events_topic(org)

    def alerts(self, org: str) -> str:
        """An organization's alerts and case results."""
        return self.prefix + alerts_topic(org)

    @property
    def keys(self) -> str:
        """Key announcements."""
        return self.prefix + KEYS_TOPIC

    @property
    def attest(self) -> str:
        """Agents' attestation requests (fresh nonces)."""
        return self.prefix + ATTEST_TOPIC

    @property
    def progress(self) -> str:
        """Agents' committed source positions (compacted)."""
        return self.prefix + PROGRESS_TOPIC

    @property
    def changelog(self) -> str:
        """The vault's sealed state (compacted)."""
        return self.prefix + CHANGELOG_TOPIC

    @property
    def partials(self) -> str:
        """Sealed pane partials for the release stage."""
        return self.prefix + PARTIALS_TOPIC

    @property
    def aggregates(self) -> str:
        """Signed DP releases."""
        return self.prefix + AGGREGATES_TOPIC


def events_topic(org: str) -> str:
    """The topic an organization's agent publishes to."""
    return f"events.{org}"


def alerts_topic(org: str) -> str:
    """The topic where the vault puts an organization's alerts and case results."""
    return f"results.alerts.{org}"


def encode_frame(kind: int, order: int, sent_us: int, body: bytes) -> bytes:
    """A frame (see the module docstring)."""
    return _FRAME.pack(kind, order, sent_us) + body


def decode_frame(data: bytes) -> tuple[int, int, int, bytes]:
    """``(kind, order, sent_us, body)``; :class:`RejectedRecord` (``malformed``) if truncated."""
    if len(data) < _FRAME.size:
        raise RejectedRecord("malformed", "frame is truncated")
    kind, order, sent = _FRAME.unpack_from(data)
    return kind, order, sent, data[_FRAME.size :]


def encode_heartbeat(order: int, sent_us: int, watermark_us: int, *, closed: bool = False) -> bytes:
    """A heartbeat frame."""
    return encode_frame(HEARTBEAT, order, sent_us, _BEAT.pack(watermark_us, closed))


def decode_heartbeat(body: bytes) -> tuple[int, bool]:
    """``(watermark_us, closed)`` of a heartbeat frame's body."""
    if len(body) != _BEAT.size:
        raise RejectedRecord("malformed", "heartbeat is malformed")
    wm, closed = _BEAT.unpack(body)
    return wm, bool(closed)


class Partial(msgspec.Struct, frozen=True):
    """One partition's exact aggregate of one pane (never published: the release stage noises
    the sum over all ``partitions``)."""

    partition: int
    partitions: int
    aggregate: PaneAggregate
    #: the latest agent send time (µs) of the events in it (0: unknown): the release stage
    #: measures send → included in a release from it
    sent_us: int = 0


_PARTIAL_ENC: Final = msgspec.msgpack.Encoder()
_PARTIAL_DEC: Final = msgspec.msgpack.Decoder(Partial)


def partial_key(pane_index: int) -> bytes:
    """The Kafka key of a pane's partials."""
    return pane_index.to_bytes(8, "big", signed=True)


def seal_partial(state_key: bytes, partial: Partial) -> tuple[bytes, bytes]:
    """``(key, value)`` of the ``vault.partials`` record for ``partial``."""
    key = partial_key(partial.aggregate.index)
    context = _PARTIAL_CONTEXT + key + partial.partition.to_bytes(4, "big")
    value = partial.partition.to_bytes(4, "big") + seal_state(
        state_key, _PARTIAL_ENC.encode(partial), context=context
    )
    return key, value


def open_partial(state_key: bytes, key: bytes, value: bytes) -> Partial:
    """The inverse of :func:`seal_partial`; :class:`RejectedRecord` if tampered or moved."""
    if len(value) < 4 + 12 + 16:
        raise RejectedRecord("malformed", "partial is truncated")
    context = _PARTIAL_CONTEXT + key + value[:4]
    partial = _PARTIAL_DEC.decode(open_state(state_key, value[4:], context=context))
    if partial_key(partial.aggregate.index) != key:
        raise RejectedRecord("malformed", "partial filed under another pane")
    return partial


_RESULT_CONTEXT: Final = b"procvault-result-v1|"


def seal_result(org_public: bytes, record: bytes, *, topic: str, keys: VaultKeys) -> bytes:
    """A record for ``results.alerts.<org>``: signed by the vault's epoch key, then sealed to
    the organization's alert key. Value: ``epoch u32 | sealed(signature 64 B | record)``."""
    epoch = keys.epoch.to_bytes(4, "big")
    context = _RESULT_CONTEXT + topic.encode() + b"|" + epoch
    signature = keys.sign(context + record)
    return epoch + seal_to(org_public, signature + record, context=context)


def open_result(
    private: X25519PrivateKey, value: bytes, *, topic: str, keys: Mapping[int, VaultPublicKeys]
) -> bytes:
    """The record :func:`seal_result` sealed, after checking the vault's signature with the
    announced keys of its epoch; :class:`RejectedRecord` otherwise."""
    if len(value) < 4:
        raise RejectedRecord("malformed", "result record is truncated")
    epoch = int.from_bytes(value[:4], "big")
    public = keys.get(epoch)
    if public is None:
        raise RejectedRecord("unknown_epoch", f"no announced keys for epoch {epoch}")
    context = _RESULT_CONTEXT + topic.encode() + b"|" + value[:4]
    inner = open_sealed(private, value[4:], context=context)
    signature, record = inner[:64], inner[64:]
    if not verify_signature(public.ed25519, context + record, signature):
        raise RejectedRecord("bad_signature", "result record is not signed by the vault")
    return record
