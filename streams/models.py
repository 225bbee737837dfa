"""Discovered models through the pipeline: the vault's sealed per-partition partial models and
the exact consortium release.

A vault worker started with ``--discover`` feeds every event it applies to one
:class:`~procvault.monitor.discovery.DiscoveryTracker` per partition (in merge order, completed
with the vault's completions; its state sealed in the changelog like the DP accumulator's) and
writes, on a schedule and once its partition's streams have closed, the partition's counts as a
:class:`DiscoveryPartial` on ``vault.discovery``: sealed with the vault's own state key and bound
to its partition, so only the vault's trust domain opens it. ``procvault models``
(:class:`ModelPublisher`, run beside the release stage) keeps the newest partial of every
partition, merges them (:meth:`DiscoveryCounts.merge_all`: exactly what one worker holding every
case would have counted), derives the heuristics net and the Declare model, and publishes the
result as a :class:`ModelRelease`, signed with the epoch key and sealed to each organization the
consortium grants it (``results.models.<org>``); ``procvault discover --from`` verifies and
opens it.

>>> from procvault.monitor.discovery import DiscoveryCounts
>>> from procvault.streams.changelog import StateKeys
>>> class Secrets:  # the vault's state-key source (streams.secrets.VaultSecrets in production)
...     state_key_id = 1
...     state_keys = {1: bytes(32)}
...     def derive(self, purpose, key_id=None):
...         import hashlib
...         return hashlib.sha256(purpose.encode()).digest()
>>> keys = StateKeys(Secrets())
>>> part = DiscoveryPartial(2, 4, 17, True, DiscoveryCounts.empty())
>>> k, v = seal_discovery(keys, part)
>>> open_discovery(keys, k, v) == part
True
>>> open_discovery(keys, discovery_key(3), v)  # moved to another partition's key
Traceback (most recent call last):
...
procvault.streams.envelope.RejectedRecord: bad_tag: sealed state failed authentication
"""

from __future__ import annotations

from typing import Final

import msgspec

from procvault.monitor.discovery import DiscoveryCounts

from .changelog import StateKeys
from .envelope import RejectedRecord

__all__ = [
    "DISCOVERY_TOPIC",
    "MODELS_TOPIC",
    "DiscoveryPartial",
    "ModelRelease",
    "decode_release",
    "discovery_key",
    "encode_release",
    "open_discovery",
    "seal_discovery",
]

DISCOVERY_TOPIC: Final = "vault.discovery"
MODELS_TOPIC: Final = "results.models"
_CONTEXT: Final = b"procvault-discovery-v1|"


class DiscoveryPartial(msgspec.Struct, frozen=True, array_like=True):
    """One partition's discovery counts as of one of its commits.

    Attributes
    ----------
    partition, partitions
        Which partition, of how many.
    version
        The partition's commit version (later partials of a partition replace earlier ones).
    finished
        Every organization's stream of the partition had closed and was applied.
    counts
        What the partition's tracker counted (names no case).
    """

    partition: int
    partitions: int
    version: int
    finished: bool
    counts: DiscoveryCounts
    format: int = 1


class ModelRelease(msgspec.Struct, frozen=True):
    """The exact consortium models, as an organization receives them.

    Attributes
    ----------
    sequence
        The publisher's release number (increasing).
    partitions
        How many partitions the counts combine (all of them).
    finished
        Every partition had finished: the models are those of the whole stream.
    versions
        ``(partition, commit version)`` of each partial combined.
    model
        The models' JSON (:func:`procvault.monitor.discovery.encode_model`).
    """

    sequence: int
    partitions: int
    finished: bool
    versions: tuple[tuple[int, int], ...]
    model: bytes
    format: int = 1


_PARTIAL_ENC: Final = msgspec.msgpack.Encoder()
_PARTIAL_DEC: Final = msgspec.msgpack.Decoder(DiscoveryPartial)
_RELEASE_DEC: Final = msgspec.msgpack.Decoder(ModelRelease)


def discovery_key(partition: int) -> bytes:
    """The Kafka key of a partition's discovery partials (compaction keeps the newest)."""
    return b"d" + partition.to_bytes(4, "big")


def seal_discovery(keys: StateKeys, partial: DiscoveryPartial) -> tuple[bytes, bytes]:
    """``(key, value)`` of the ``vault.discovery`` record of ``partial``."""
    k = discovery_key(partial.partition)
    return k, keys.seal("discovery", _PARTIAL_ENC.encode(partial), context=_CONTEXT + k)


def open_discovery(
    keys: StateKeys, record_key: bytes | None, value: bytes | None
) -> DiscoveryPartial:
    """The inverse of :func:`seal_discovery`; :class:`RejectedRecord` if it does not open
    (tampered, moved, not the vault's) or is not a partial of this version."""
    if record_key is None or value is None or len(record_key) != 5:
        raise RejectedRecord("malformed", "discovery partial without a partition key or a value")
    body = keys.open("discovery", value, context=_CONTEXT + record_key)
    try:
        partial = _PARTIAL_DEC.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise RejectedRecord("malformed", "not a discovery partial of format 1") from None
    if partial.format != 1 or discovery_key(partial.partition) != record_key:
        raise RejectedRecord("malformed", "discovery partial of another format or partition")
    return partial


def encode_release(release: ModelRelease) -> bytes:
    """The bytes :func:`procvault.streams.frames.seal_result` signs and seals."""
    return _PARTIAL_ENC.encode(release)


def decode_release(body: bytes) -> ModelRelease:
    """The inverse of :func:`encode_release`; :class:`RejectedRecord` on anything else."""
    try:
        release = _RELEASE_DEC.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise RejectedRecord("malformed", "not a model release of format 1") from None
    if release.format != 1:
        raise RejectedRecord("malformed", f"model release of format {release.format}")
    return release


class ModelCombiner:
    """The pure part of ``procvault models``: the newest partial of every partition, and the
    release they make.

    >>> from procvault.monitor.discovery import DiscoveryCounts
    >>> c = ModelCombiner()
    >>> c.add(DiscoveryPartial(0, 2, 5, True, DiscoveryCounts.empty()))
    True
    >>> c.complete, c.add(DiscoveryPartial(0, 2, 4, True, DiscoveryCounts.empty()))  # older
    (False, False)
    >>> c.add(DiscoveryPartial(1, 2, 9, True, DiscoveryCounts.empty())), c.complete, c.finished
    (True, True, True)
    >>> c.versions()
    ((0, 5), (1, 9))
    """

    def __init__(self) -> None:
        self.partitions: int | None = None
        self._latest: dict[int, DiscoveryPartial] = {}

    def add(self, partial: DiscoveryPartial) -> bool:
        """Take ``partial`` if it is newer than what its partition reported (``False``: older
        or a copy; ``ValueError``: another partition count than the others')."""
        if self.partitions is None:
            self.partitions = partial.partitions
        elif partial.partitions != self.partitions:
            raise ValueError(
                f"a partial of {partial.partitions} partitions among partials of "
                f"{self.partitions}: more than one deployment writes to this topic"
            )
        old = self._latest.get(partial.partition)
        if old is not None and old.version >= partial.version:
            return False
        self._latest[partial.partition] = partial
        return True

    @property
    def complete(self) -> bool:
        """Every partition has reported."""
        return self.partitions is not None and len(self._latest) == self.partitions

    @property
    def finished(self) -> bool:
        """Every partition has reported that its streams closed."""
        return self.complete and all(p.finished for p in self._latest.values())

    def versions(self) -> tuple[tuple[int, int], ...]:
        """``(partition, version)`` of the partials held."""
        return tuple(sorted((p, x.version) for p, x in self._latest.items()))

    def counts(self) -> DiscoveryCounts:
        """The merged counts (exactly one tracker's over every partition's cases)."""
        return DiscoveryCounts.merge_all(self._latest[p].counts for p in sorted(self._latest))


def models_topic(prefix: str, org: str) -> str:
    """The topic an organization's model releases go to."""
    return f"{prefix}{MODELS_TOPIC}.{org}"
