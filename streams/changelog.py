"""The vault's sealed state on ``vault.changelog``: versioned, bound, and checked for rollback.

Every value is a :class:`ChangelogValue` (a ``format``, the partition, the partition's
**commit version** that wrote it, the engine record's bytes), sealed with AES-256-GCM under a
key derived from the vault's state master key (:class:`StateKeys`: the value starts with the
master key's id, so ``procvault keys rotate --state`` leaves older values readable) and bound
to its Kafka key and partition, so a value moved to another key or partition does not open.
Keys: ``c`` + a keyed pseudonym of the case id (the vault's own key; the broker never sees a
case id) and ``p`` + the partition for its metadata.

**Rollback.** Each transaction that writes a partition's state takes the next commit version
``V``. The metadata record carries ``V``, the number of live case records and a multiset hash
``Σ SHA-256(key ‖ V_written ‖ partition) mod 2^256`` over them, updated as records are
written and deleted (a deletion is a sealed value too: the vault writes no tombstones, so
nobody else's tombstone counts). :func:`restore` takes, per key, the sealed value with the
highest version up to the last commit: an old sealed value re-produced later, or a value of a
transaction that did not commit, is set aside and counted, so such a rollback is harmless.
It then recomputes the hash: a value hidden or removed (older state is all that is left)
raises :class:`RollbackError`: the partition is refused, never restored from stale state.

**Commit records.** The same transaction also writes a :class:`CommitRecord` (the partition,
``V``, the count and the hash) to partition ``p`` of ``vault.commits``, another topic
partition with its own transaction marker. The newest valid commit record says what ``V``
is: values of a transaction the broker aborted and then shows as committed in the changelog
alone (its abort marker turned into a commit marker, counterexample F6 of
``docs/formal.md``) are newer than it and set aside; a changelog whose newest records are
hidden no longer matches it and is refused. (Both markers flipped together, or both topics'
newest records hidden, remain undetectable from inside Kafka: F4.)

>>> from procvault.streams.secrets import VaultSecrets
>>> log = PartitionLog(partition=0)
>>> log.begin()
1
>>> codec = StateCodec(StateKeys(VaultSecrets.generate()))
>>> old = codec.seal_case(log, b"c1", b"state at 1")
>>> meta1, commit1 = codec.seal_meta(log, b"meta at 1"), codec.seal_commit(log)
>>> log.begin()
2
>>> new = codec.seal_case(log, b"c1", b"state at 2")
>>> meta2, commit2 = codec.seal_meta(log, b"meta at 2"), codec.seal_commit(log)
>>> history = [(b"c1", old), (codec.meta_key(0), meta1), (b"c1", new), (codec.meta_key(0), meta2)]
>>> restored = restore(codec, 0, history, [commit1, commit2])
>>> restored.meta, restored.cases, restored.log.commit
(b'meta at 2', [b'state at 2'], 2)
>>> again = restore(codec, 0, [*history, (b"c1", old)], [commit2])  # an old value re-produced
>>> again.cases, again.stale
([b'state at 2'], 1)
>>> restore(codec, 0, [(b"c1", old), (codec.meta_key(0), meta1)], [commit2])  # newest hidden
Traceback (most recent call last):
...
procvault.streams.changelog.RollbackError: vault.changelog partition 0: the newest commit ...
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import msgspec

from procvault.monitor.errors import SecurityError

from .envelope import RejectedRecord, open_state, seal_state

__all__ = [
    "ChangelogValue",
    "CommitRecord",
    "KeySource",
    "PartitionLog",
    "Restored",
    "RollbackError",
    "StateCodec",
    "StateKeys",
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
    #: a case record that was deleted (the vault seals deletions: it writes no tombstones)
    deleted: bool = False


class CommitRecord(msgspec.Struct, frozen=True, array_like=True):
    """What one transaction committed for a partition (on ``vault.commits``)."""

    format: int
    partition: int
    commit: int
    live: int
    digest: bytes


_ENC: Final = msgspec.msgpack.Encoder()
_DEC: Final = msgspec.msgpack.Decoder(ChangelogValue)
_COMMIT_DEC: Final = msgspec.msgpack.Decoder(CommitRecord)
_COMMIT_CONTEXT: Final = b"procvault-commit-v1|"
_KID: Final = 4


class KeySource(Protocol):
    """The vault's state master keys (:class:`~procvault.streams.secrets.VaultSecrets`)."""

    @property
    def state_key_id(self) -> int: ...

    @property
    def state_keys(self) -> Mapping[int, bytes]: ...

    def derive(self, purpose: str, key_id: int | None = None) -> bytes: ...


class StateKeys:
    """Seals what the vault keeps for itself (changelog, commit records, pane partials, the
    release stage's state) under a key per purpose derived from a state master key; every
    sealed value starts with the master key's id (u32, also bound into the seal), so values
    sealed before ``procvault keys rotate --state`` still open. A value of an id the keyring
    does not hold is refused (``unknown_epoch``).

    >>> from procvault.streams.secrets import VaultSecrets
    >>> secrets = VaultSecrets.generate()
    >>> old = StateKeys(secrets).seal("partials", b"x", context=b"c")
    >>> StateKeys(secrets.rotate_state()).open("partials", old, context=b"c")
    b'x'
    """

    def __init__(self, secrets: KeySource) -> None:
        self._secrets = secrets
        self._keys: dict[tuple[str, int], bytes] = {}

    def key(self, purpose: str, key_id: int | None = None) -> bytes:
        """The derived key of ``purpose`` under master key ``key_id`` (default: current)."""
        kid = self._secrets.state_key_id if key_id is None else key_id
        found = self._keys.get((purpose, kid))
        if found is None:
            found = self._keys[(purpose, kid)] = self._secrets.derive(purpose, kid)
        return found

    @property
    def first_id(self) -> int:
        """The oldest master key id held (keys that must never change, such as the case
        pseudonyms of changelog keys, derive from it)."""
        return min(self._secrets.state_keys)

    def seal(self, purpose: str, plaintext: bytes, *, context: bytes) -> bytes:
        """``key id u32 ‖ AES-256-GCM(nonce ‖ ciphertext)`` bound to ``context`` and the id."""
        kid = self._secrets.state_key_id
        head = kid.to_bytes(_KID, "big")
        return head + seal_state(self.key(purpose, kid), plaintext, context=context + head)

    def open(self, purpose: str, value: bytes, *, context: bytes) -> bytes:
        """The inverse of :meth:`seal`; :class:`~.envelope.RejectedRecord` if truncated,
        tampered, moved, or sealed under a master key id the keyring does not hold."""
        if not isinstance(value, bytes | bytearray) or len(value) < _KID + 12 + 16:
            raise RejectedRecord("malformed", "sealed state value is truncated")
        head = bytes(value[:_KID])
        kid = int.from_bytes(head, "big")
        if kid not in self._secrets.state_keys:
            raise RejectedRecord(
                "unknown_epoch", f"sealed under state key id {kid}, which the keyring lacks"
            )
        return open_state(self.key(purpose, kid), bytes(value[_KID:]), context=context + head)


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
    """Seals and opens changelog values and commit records (:class:`StateKeys`)."""

    def __init__(self, keys: StateKeys) -> None:
        self._keys = keys
        self._pseudonym_key = keys.key("state-pseudonym", keys.first_id)

    def case_key(self, case_id: str) -> bytes:
        """The Kafka key of a case's record."""
        return b"c" + hmac.new(self._pseudonym_key, case_id.encode(), hashlib.sha256).digest()[:16]

    @staticmethod
    def meta_key(partition: int) -> bytes:
        """The Kafka key of a partition's metadata."""
        return b"p" + partition.to_bytes(4, "big")

    @staticmethod
    def commit_key(partition: int) -> bytes:
        """The Kafka key of a partition's commit records."""
        return b"k" + partition.to_bytes(4, "big")

    def _seal(self, partition: int, key: bytes, value: ChangelogValue) -> bytes:
        context = _CONTEXT + key + b"|" + partition.to_bytes(4, "big")
        return self._keys.seal("state-seal", _ENC.encode(value), context=context)

    def open(self, partition: int, key: bytes, sealed: bytes) -> ChangelogValue:
        """Open a value; :class:`RejectedRecord` if it was not sealed here for this key and
        partition, :class:`RollbackError` if it is of another format."""
        context = _CONTEXT + key + b"|" + partition.to_bytes(4, "big")
        raw = self._keys.open("state-seal", sealed, context=context)
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

    def delete_case(self, log: PartitionLog, key: bytes) -> bytes:
        """The sealed deletion of a case record at the log's current version (accounted in
        its hash: the record is no longer live)."""
        log.wrote(key, deleted=True)
        value = ChangelogValue(_FORMAT, log.partition, log.commit, b"", deleted=True)
        return self._seal(log.partition, key, value)

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

    def seal_commit(self, log: PartitionLog) -> bytes:
        """The ``vault.commits`` value for the log's current version (key:
        :meth:`commit_key`)."""
        p = log.partition
        record = CommitRecord(
            _FORMAT, p, log.commit, len(log.written), log.digest.to_bytes(32, "big")
        )
        context = _COMMIT_CONTEXT + self.commit_key(p)
        return self._keys.seal("commits", _ENC.encode(record), context=context)

    def open_commit(self, partition: int, sealed: bytes) -> CommitRecord:
        """The inverse of :meth:`seal_commit`; :class:`RejectedRecord` if it does not open
        or is not a commit record of ``partition``."""
        context = _COMMIT_CONTEXT + self.commit_key(partition)
        raw = self._keys.open("commits", sealed, context=context)
        try:
            record = _COMMIT_DEC.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise RejectedRecord("malformed", "not a commit record of format 2") from None
        if record.format != _FORMAT or record.partition != partition:
            raise RejectedRecord("malformed", "commit record of another format or partition")
        return record


@dataclass
class Restored:
    """What :func:`restore` found: the metadata's and the cases' engine records, the log, and
    what it set aside: ``stale`` sealed values older than one already read for their key or
    newer than the last commit (re-produced copies, or records of a transaction that did not
    commit), ``foreign`` values the vault did not write (tombstones, values that do not open,
    unknown keys)."""

    meta: bytes | None
    cases: list[bytes]
    log: PartitionLog
    stale: int = 0
    foreign: int = 0


def restore(
    codec: StateCodec,
    partition: int,
    values: Iterable[tuple[bytes | None, bytes | None]],
    commits: Iterable[bytes | None],
) -> Restored:
    """Rebuild a partition's state from its changelog (``values``: ``(key, value)`` in log
    order, older copies included) and its commit records (``commits``: the newest ones on
    ``vault.commits``), or raise :class:`RollbackError` (one line).

    The newest valid commit record (the highest version ``V``) says what the partition last
    committed. For each key the sealed value with the highest version up to ``V`` counts:
    an older value re-produced later, or one written by a transaction that did not commit, is
    set aside and counted (:attr:`Restored.stale`), as is whatever the vault did not write
    (:attr:`Restored.foreign`: the vault writes no tombstones, it seals a deletion). The result
    must then be exactly what ``V`` committed (its metadata of version ``V``, the number of
    live case records and their multiset hash); anything missing means records are hidden or
    were removed, and the partition is refused.
    """
    where = f"vault.changelog partition {partition}"
    last: CommitRecord | None = None
    for raw in commits:
        if raw is None:
            continue
        try:
            record = codec.open_commit(partition, raw)
        except RejectedRecord:
            continue  # (not the vault's: a commit record always opens)
        if last is None or record.commit > last.commit:
            last = record
    limit = last.commit if last is not None else 0
    meta_key = codec.meta_key(partition)
    best: dict[bytes, ChangelogValue] = {}
    stale = foreign = opened = 0
    for key, raw in values:
        if key is None or raw is None or not (key == meta_key or key.startswith(b"c")):
            foreign += 1
            continue
        try:
            value = codec.open(partition, key, raw)
        except RejectedRecord:
            foreign += 1
            continue
        opened += 1
        old = best.get(key)
        if value.commit > limit or (old is not None and value.commit < old.commit):
            stale += 1
        elif old is None or value.commit > old.commit:
            best[key] = value
    meta = best.pop(meta_key, None)
    log = PartitionLog(partition)
    cases: list[bytes] = []
    for key, value in best.items():
        if value.deleted:
            continue
        log.written[key] = value.commit
        log.digest = (log.digest + log._term(key, value.commit)) % _MOD
        cases.append(value.body)
    if last is None:
        if opened:
            raise RollbackError(f"{where}: sealed state without a commit record on vault.commits")
        return Restored(None, [], log, stale, foreign)
    if meta is None or meta.commit != last.commit:
        found = "no metadata" if meta is None else f"metadata of version {meta.commit}"
        raise RollbackError(
            f"{where}: the newest commit record is of version {last.commit}, the changelog "
            f"holds {found}: its newest records are hidden or were removed"
        )
    if len(cases) != meta.live or log.digest.to_bytes(32, "big") != meta.digest:
        raise RollbackError(
            f"{where}: the sealed state does not match what version {meta.commit} committed "
            f"({len(cases)} live case records, {meta.live} committed): a record is hidden or "
            "was removed"
        )
    log.commit = meta.commit
    return Restored(meta.body, cases, log, stale, foreign)
