"""What travels inside the pipeline's topics, and the topics' names.

Topics (``P`` = the number of event partitions, the same for every ``events.<org>`` topic so
that partition ``p`` of each holds the same cases):

=======================  ===========  ============================================================
topic                    partitions   records
=======================  ===========  ============================================================
``events.<org>``         P            no key; the agent picks the partition from a keyed hash
                                      of the case id (:func:`placement`); value: an envelope
                                      record (:mod:`.envelope`) around a frame
``vault.keys``           1            signed key announcements (:mod:`.attestation`)
``vault.attest``         1            agents' attestation requests: a fresh 16-byte nonce
``agent.progress``       1            compacted; key: org/producer; value: a MACed position
``vault.changelog``      P            compacted; key: ``c`` + case pseudonym or ``p`` + partition;
                                      value: a versioned record sealed with the state key
                                      (:mod:`.changelog`)
``vault.commits``        P            compacted; key: ``k`` + partition; value: the sealed
                                      commit record of the partition's newest transaction
``vault.partials``       1            key: partition; value: sealed :class:`PanePartials`
``results.alerts.<org>`` 1            per-organization findings, signed and sealed to it
``results.aggregates``   1            signed DP releases (:mod:`.release`)
``release.state``        1            compacted; the release stage's sealed state
=======================  ===========  ============================================================

A **frame** is the plaintext an agent encrypts:
``kind u8 | order u64 | sent_us u64 | prev_generation u64 | prev_sequence u64 | body``.
``order`` breaks timestamp ties the same way in every organization: the event's position in
the shared source times 256 plus the output's index among what the policy made of it, so one
producer's merge keys ``(timestamp, order)`` strictly increase; ``sent_us`` is the agent's wall
clock when it sent the record (end-to-end latency); ``prev`` is the ``(generation, sequence)``
of the frame the producer sent to the same partition before this one (``(0, 0)``: none), so
the frames of one organization in one partition form a chain in which a missing record shows
(:mod:`procvault.monitor.partition`). An ``EVENT`` frame's body is an encoded
event (:mod:`.codec`); a ``HEARTBEAT`` frame's body is ``watermark_us i64 | closed u8``, and with
the frame's ``order`` it promises that no later event of the organization sorts at or below
``(watermark_us, order)`` (``closed``: no more events at all). A ``REVOKE`` frame's body is a
signed revocation (:mod:`.revocation`). Agents send heartbeats to every partition, so the vault
can merge the organizations' streams in event-time order even where one is silent.

>>> f = encode_frame(EVENT, 7, 1_000, b"body", prev=(5, 41))
>>> decode_frame(f)
WireFrame(kind=0, order=7, sent_us=1000, prev=(5, 41), body=b'body')
>>> decode_heartbeat(decode_frame(encode_heartbeat(3, 5, 123, closed=True, prev=(0, 0))).body)
(123, True)
>>> placement(b"k" * 32, "case-1", 4) == placement(b"k" * 32, "case-1", 4)
True
>>> keys = VaultKeys.generate(epoch=2)
>>> org = X25519PrivateKey.generate()
>>> from cryptography.hazmat.primitives import serialization as s
>>> pub = org.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)
>>> sealed = seal_result(pub, b'batch', topic="results.alerts.lab", keys=keys)
>>> open_result(org, sealed, topic="results.alerts.lab", keys={2: keys.public()})
b'batch'
>>> open_result(org, sealed, topic="results.alerts.ward", keys={2: keys.public()})
Traceback (most recent call last):
...
procvault.streams.envelope.RejectedRecord: bad_tag: sealed message failed authentication
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from procvault.monitor.privacy.combiner import PanePartials

if TYPE_CHECKING:
    from .changelog import StateKeys

from .envelope import (
    ProducerSession,
    RejectedRecord,
    VaultKeys,
    VaultPublicKeys,
    open_sealed,
    seal_to,
    verify_signature,
)

__all__ = [
    "AGGREGATES_TOPIC",
    "ATTEST_TOPIC",
    "CHANGELOG_TOPIC",
    "COMMITS_TOPIC",
    "EVENT",
    "HEARTBEAT",
    "KEYS_TOPIC",
    "PARTIALS_TOPIC",
    "PROGRESS_TOPIC",
    "REVOKE",
    "FrameChain",
    "PanePartials",
    "Topics",
    "WireFrame",
    "alerts_topic",
    "decode_frame",
    "decode_heartbeat",
    "encode_frame",
    "encode_heartbeat",
    "events_topic",
    "open_partials",
    "open_result",
    "partials_key",
    "placement",
    "seal_partials",
    "seal_result",
]

KEYS_TOPIC: Final = "vault.keys"
CHANGELOG_TOPIC: Final = "vault.changelog"
COMMITS_TOPIC: Final = "vault.commits"
PARTIALS_TOPIC: Final = "vault.partials"
AGGREGATES_TOPIC: Final = "results.aggregates"
RELEASE_STATE_TOPIC: Final = "release.state"

EVENT: Final = 0
HEARTBEAT: Final = 1
REVOKE: Final = 2

_FRAME: Final = struct.Struct(">BQQQQ")
_BEAT: Final = struct.Struct(">qB")
_PARTIAL_CONTEXT: Final = b"procvault-partials-v2|"


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
    def commits(self) -> str:
        """The vault's commit records: one per transaction, in the partition's own
        partition (compacted)."""
        return self.prefix + COMMITS_TOPIC

    @property
    def partials(self) -> str:
        """Sealed pane partials for the release stage."""
        return self.prefix + PARTIALS_TOPIC

    @property
    def release_state(self) -> str:
        """The release stage's sealed state (compacted)."""
        return self.prefix + RELEASE_STATE_TOPIC

    @property
    def aggregates(self) -> str:
        """Signed DP releases."""
        return self.prefix + AGGREGATES_TOPIC


def events_topic(org: str) -> str:
    """The topic an organization's agent publishes to."""
    return f"events.{org}"


def placement(key: bytes, case_id: str, partitions: int) -> int:
    """The partition of ``case_id``: HMAC-SHA256 under the consortium's placement key, modulo
    ``partitions``. Every organization computes the same, so a case's events meet in one
    partition; the broker sees the partition only (records carry no key), so it can neither
    link a case's records across organizations nor count a case's events."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    digest = hmac.new(key, case_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def alerts_topic(org: str) -> str:
    """The topic where the vault puts an organization's alerts and case results."""
    return f"results.alerts.{org}"


class WireFrame(NamedTuple):
    """A decoded frame (see the module docstring)."""

    kind: int
    order: int
    sent_us: int
    #: ``(generation, sequence)`` of the producer's previous frame in this partition
    prev: tuple[int, int]
    body: bytes


def encode_frame(
    kind: int, order: int, sent_us: int, body: bytes, *, prev: tuple[int, int]
) -> bytes:
    """A frame (see the module docstring)."""
    return _FRAME.pack(kind, order, sent_us, prev[0], prev[1]) + body


def decode_frame(data: bytes) -> WireFrame:
    """The frame in ``data``; :class:`RejectedRecord` (``malformed``) if truncated."""
    if len(data) < _FRAME.size:
        raise RejectedRecord("malformed", "frame is truncated")
    kind, order, sent, prev_gen, prev_seq = _FRAME.unpack_from(data)
    return WireFrame(kind, order, sent, (prev_gen, prev_seq), data[_FRAME.size :])


def encode_heartbeat(
    order: int, sent_us: int, watermark_us: int, *, closed: bool = False, prev: tuple[int, int]
) -> bytes:
    """A heartbeat frame."""
    return encode_frame(HEARTBEAT, order, sent_us, _BEAT.pack(watermark_us, closed), prev=prev)


class FrameChain:
    """One producer's chains: per partition, the ``(generation, sequence)`` of the last frame
    it sealed there (its head; ``(0, 0)``: none). :meth:`seal` links each new frame to its
    partition's head and moves the head on.

    >>> from procvault.streams.secrets import OrgKeys, VaultSecrets
    >>> vault = VaultSecrets.generate().current
    >>> session = ProducerSession(vault.public(), X25519PrivateKey.generate(), org="lab",
    ...                           producer="a", generation=7)
    >>> chain = FrameChain(2)
    >>> _ = chain.event(session, 256, 0, b"e", topic="events.lab", partition=1)
    >>> _ = chain.heartbeat(session, 256, 0, 1, topic="events.lab", partition=1)
    >>> chain.heads
    [(0, 0), (7, 1)]
    """

    def __init__(self, partitions: int, heads: Sequence[tuple[int, int]] = ()) -> None:
        if heads and len(heads) != partitions:
            raise ValueError(f"{len(heads)} chain heads for {partitions} partitions")
        self.heads: list[tuple[int, int]] = list(heads) if heads else [(0, 0)] * partitions

    def seal(
        self,
        session: ProducerSession,
        kind: int,
        order: int,
        sent_us: int,
        body: bytes,
        *,
        topic: str,
        partition: int,
    ) -> bytes:
        """The record of one frame, linked to ``partition``'s head (which it becomes)."""
        frame = encode_frame(kind, order, sent_us, body, prev=self.heads[partition])
        record = session.seal(frame, topic=topic, partition=partition)
        self.heads[partition] = (session.generation, session.next_sequence - 1)
        return record

    def event(
        self,
        session: ProducerSession,
        order: int,
        sent_us: int,
        body: bytes,
        *,
        topic: str,
        partition: int,
    ) -> bytes:
        """An ``EVENT`` frame's record (``body``: an encoded event)."""
        return self.seal(session, EVENT, order, sent_us, body, topic=topic, partition=partition)

    def heartbeat(
        self,
        session: ProducerSession,
        order: int,
        sent_us: int,
        watermark_us: int,
        *,
        closed: bool = False,
        topic: str,
        partition: int,
    ) -> bytes:
        """A ``HEARTBEAT`` frame's record."""
        body = _BEAT.pack(watermark_us, closed)
        return self.seal(session, HEARTBEAT, order, sent_us, body, topic=topic, partition=partition)


def decode_heartbeat(body: bytes) -> tuple[int, bool]:
    """``(watermark_us, closed)`` of a heartbeat frame's body."""
    if len(body) != _BEAT.size:
        raise RejectedRecord("malformed", "heartbeat is malformed")
    wm, closed = _BEAT.unpack(body)
    return wm, bool(closed)


_PARTIALS_ENC: Final = msgspec.msgpack.Encoder()
_PARTIALS_DEC: Final = msgspec.msgpack.Decoder(PanePartials)


def partials_key(partition: int) -> bytes:
    """The Kafka key of a partition's pane partials."""
    return partition.to_bytes(4, "big")


def seal_partials(keys: StateKeys, partials: PanePartials) -> tuple[bytes, bytes]:
    """``(key, value)`` of the ``vault.partials`` record for ``partials``, sealed with the
    vault's partials key and bound to its partition and plan."""
    k = partials_key(partials.partition)
    context = _PARTIAL_CONTEXT + k + partials.plan.encode()
    return k, keys.seal("partials", _PARTIALS_ENC.encode(partials), context=context)


def open_partials(
    keys: StateKeys, record_key: bytes | None, value: bytes | None, *, plan: str
) -> PanePartials:
    """The inverse of :func:`seal_partials` for a stage of DP plan ``plan``;
    :class:`RejectedRecord` if tampered, moved or made under another plan (``bad_tag``: the
    seal binds the plan), or not a partial of this version (``malformed``)."""
    if record_key is None or value is None or len(record_key) != 4:
        raise RejectedRecord("malformed", "partial without a partition key or a value")
    context = _PARTIAL_CONTEXT + record_key + plan.encode()
    body = keys.open("partials", value, context=context)
    try:
        partials = _PARTIALS_DEC.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        raise RejectedRecord("malformed", "not a pane partial of format 2") from None
    if partials.format != 2 or partials_key(partials.partition) != record_key:
        raise RejectedRecord("malformed", "partial of another format or partition")
    return partials


_RESULT_CONTEXT: Final = b"procvault-result-v2|"


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
