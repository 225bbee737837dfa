"""The vault's sealed state on ``vault.changelog``: versioned, bound, and checked for rollback.

Every value is a :class:`ChangelogValue` (a ``format``, the partition, the partition's
**commit version** that wrote it, the engine record's bytes), sealed with AES-256-GCM under
the vault's state key and bound to its Kafka key and partition, so a value moved to another
key or partition does not open. Keys: ``c`` + a keyed pseudonym of the case id (the vault's
own key; the broker never sees a case id) and ``p`` + the partition for its metadata.

**Rollback.** Each transaction that writes a partition's state takes the next commit version
``V``. The metadata record carries ``V``, the number of live case records and a multiset hash
``Σ SHA-256(key ‖ V_written ‖ partition) mod 2^256`` over them, updated as records are
written and deleted. :func:`restore` recomputes it from what the changelog holds: a case
record older than its latest write (an old sealed value re-produced), a missing or an extra
one, a record newer than the metadata (the metadata rolled back) or records without metadata
all raise :class:`RollbackError`: the partition is refused, never restored from stale state.

>>> log = PartitionLog(partition=0)
>>> log.begin()
1
>>> codec = StateCodec(b"s" * 32)
>>> old = codec.seal_case(log, b"c1", b"state at 1")
>>> meta1 = codec.seal_meta(log, b"meta at 1")
>>> log.begin()
2
>>> new = codec.seal_case(log, b"c1", b"state at 2")
>>> meta2 = codec.seal_meta(log, b"meta at 2")
>>> restored = restore(codec, 0, {codec.meta_key(0): meta2, b"c1": new})
>>> restored.meta, restored.cases, restored.log.commit
(b'meta at 2', [b'state at 2'], 2)
>>> restore(codec, 0, {codec.meta_key(0): meta2, b"c1": old})  # an old value re-produced
Traceback (most recent call last):
...
procvault.streams.changelog.RollbackError: vault.changelog partition 0: the sealed state ...
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from procvault.monitor.errors import SecurityError

from .envelope import RejectedRecord, open_state, seal_state

__all__ = [
    "ChangelogValue",
    "PartitionLog",
    "Restored",
    "RollbackError",
    "StateCodec",
    "derive_key",
    "restore",
]

_FORMAT: Final = 2
_CONTEXT: Final = b"procvault-state-v2|"
_MOD: Final = 1 << 256


class RollbackError(SecurityError):
    """Sealed state that is older than what the partition last committed (or incomplete)."""


class ChangelogValue(msgspec.Struct, frozen=True, array_like=True):
    """What a changelog value holds once opened."""

    format: int
    partition: int
    #: the partition's commit version that wrote it
    commit: int
    #: the engine's record (:mod:`procvault.monitor.partition.state`)
    body: bytes
    #: metadata only: live case records and their multiset hash (32 bytes)
    live: int = 0
    digest: bytes = b""


_ENC: Final = msgspec.msgpack.Encoder()
_DEC: Final = msgspec.msgpack.Decoder(ChangelogValue)


def derive_key(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for ``purpose`` from the vault's state master key (HKDF-SHA256): one key
    never serves two purposes (sealing, pseudonyms, partials)."""
    return HKDF(
        algorithm=SHA256(), length=32, salt=None, info=b"procvault-" + purpose.encode()
    ).derive(master)


@dataclass
class PartitionLog:
    """A partition's commit version and the multiset hash of its live case records."""

    partition: int
    commit: int = 0
    digest: int = 0
    written: dict[bytes, int] = field(default_factory=dict)

    def begin(self) -> int:
        """The version of the next transaction that writes state."""
        self.commit += 1
        return self.commit

    def _term(self, key: bytes, commit: int) -> int:
        raw = key + commit.to_bytes(8, "big") + self.partition.to_bytes(4, "big")
        return int.from_bytes(hashlib.sha256(raw).digest(), "big")

    def wrote(self, key: bytes, deleted: bool = False) -> None:
        """Account for a case record written (or deleted) at the current version."""
        old = self.written.pop(key, None)
        if old is not None:
            self.digest = (self.digest - self._term(key, old)) % _MOD
        if not deleted:
            self.written[key] = self.commit
            self.digest = (self.digest + self._term(key, self.commit)) % _MOD


class StateCodec:
    """Seals and opens changelog values under the vault's state master key."""

    def __init__(self, master: bytes) -> None:
        self._seal_key = derive_key(master, "state-seal")
        self._pseudonym_key = derive_key(master, "state-pseudonym")

    def case_key(self, case_id: str) -> bytes:
        """The Kafka key of a case's record."""
        return b"c" + hmac.new(self._pseudonym_key, case_id.encode(), hashlib.sha256).digest()[:16]

    @staticmethod
    def meta_key(partition: int) -> bytes:
        """The Kafka key of a partition's metadata."""
        return b"p" + partition.to_bytes(4, "big")

    def _seal(self, partition: int, key: bytes, value: ChangelogValue) -> bytes:
        context = _CONTEXT + key + b"|" + partition.to_bytes(4, "big")
        return seal_state(self._seal_key, _ENC.encode(value), context=context)

    def open(self, partition: int, key: bytes, sealed: bytes) -> ChangelogValue:
        """Open a value; :class:`RejectedRecord` if it was not sealed here for this key and
        partition, :class:`RollbackError` if it is of another format."""
        context = _CONTEXT + key + b"|" + partition.to_bytes(4, "big")
        raw = open_state(self._seal_key, sealed, context=context)
        try:
            value = _DEC.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise RollbackError(
                f"vault.changelog partition {partition}: a value of an older format (this "
                "procvault writes format 2); start from an empty changelog"
            ) from None
        if value.format != _FORMAT or value.partition != partition:
            raise RollbackError(
                f"vault.changelog partition {partition}: a value of format {value.format} or "
                f"of partition {value.partition}"
            )
        return value

    def seal_case(self, log: PartitionLog, key: bytes, body: bytes) -> bytes:
        """A case record's value at the log's current version (accounted in its hash)."""
        log.wrote(key)
        return self._seal(
            log.partition, key, ChangelogValue(_FORMAT, log.partition, log.commit, body)
        )

    def delete_case(self, log: PartitionLog, key: bytes) -> None:
        """Account for a case record's tombstone."""
        log.wrote(key, deleted=True)

    def seal_meta(self, log: PartitionLog, body: bytes) -> bytes:
        """The metadata's value at the log's current version, with the hash of the live case
        records."""
        value = ChangelogValue(
            _FORMAT,
            log.partition,
            log.commit,
            body,
            len(log.written),
            log.digest.to_bytes(32, "big"),
        )
        return self._seal(log.partition, self.meta_key(log.partition), value)


@dataclass
class Restored:
    """What :func:`restore` found: the metadata's and the cases' engine records, the log."""

    meta: bytes | None
    cases: list[bytes]
    log: PartitionLog


def restore(codec: StateCodec, partition: int, records: Mapping[bytes, bytes | None]) -> Restored:
    """Open and check a partition's latest changelog values (``key -> value``, tombstones as
    ``None``); :class:`RollbackError` (one line) if they are not exactly what the partition
    last committed (see the module docstring), :class:`RejectedRecord` if one does not open.
    """
    where = f"vault.changelog partition {partition}"
    meta_key = codec.meta_key(partition)
    meta_raw = records.get(meta_key)
    log = PartitionLog(partition)
    meta: ChangelogValue | None = None
    if meta_raw is not None:
        try:
            meta = codec.open(partition, meta_key, meta_raw)
        except RejectedRecord:
            raise RollbackError(f"{where}: the metadata does not open (tampered)") from None
    cases: list[bytes] = []
    newest = 0
    for key, raw in records.items():
        if key == meta_key or raw is None or not key.startswith(b"c"):
            continue
        try:
            value = codec.open(partition, key, raw)
        except RejectedRecord:
            raise RollbackError(
                f"{where}: a case record does not open (tampered or moved)"
            ) from None
        newest = max(newest, value.commit)
        log.written[key] = value.commit
        log.digest = (log.digest + log._term(key, value.commit)) % _MOD
        cases.append(value.body)
    if meta is None:
        if cases:
            raise RollbackError(f"{where}: {len(cases)} case records but no metadata")
        return Restored(None, [], log)
    if newest > meta.commit:
        raise RollbackError(
            f"{where}: the metadata is of version {meta.commit} but a case record of version "
            f"{newest} exists: the metadata was rolled back"
        )
    if len(cases) != meta.live or log.digest.to_bytes(32, "big") != meta.digest:
        raise RollbackError(
            f"{where}: the sealed state does not match its metadata ({len(cases)} case "
            f"records, the metadata counts {meta.live} at version {meta.commit}): a record was "
            "rolled back, removed or added"
        )
    log.commit = meta.commit
    return Restored(meta.body, cases, log)
