"""The release stage: combine the vault workers' sealed pane partials, noise each complete pane
once, sign it and publish it on ``results.aggregates``.

Three layers, the first two without Kafka:

:class:`PaneCombiner` (pure)
    Pending partials per pane and each partition's frontier. A :class:`~.frames.Partial` for
    pane ``i`` from partition ``p`` means "``p`` has closed every pane up to ``i``, and this is
    its exact aggregate of pane ``i``"; a partition may skip empty panes. Panes complete
    strictly in index order, from the smallest pane index ever seen up to the smallest frontier
    over all ``P`` partitions; a pane nobody reported is empty. A partial seen twice is stored
    once; a partial of a pane already completed is dropped (``stale``).
:class:`ReleaseCore` (pure, over a byte mapping)
    The combiner and a :class:`~procvault.monitor.privacy.release.PaneReleaser` whose state
    lives, sealed with the vault's state key, in a ``bytes -> bytes`` mapping (the faust table):
    ``head`` (combiner, ledger, running totals, counters, which pane records and outbox entries
    exist, and the next offset expected from each ``vault.partials`` partition),
    ``pane/<i>`` (the stored record of pane ``i``) and ``out/<n>`` (a signed record waiting to
    be published). Records are applied in source offset order: one below the expected offset
    was applied already (``redelivered``: dropped); one beyond it follows a gap that the
    caller fills first (:meth:`ReleaseCore.gap`). :meth:`ReleaseCore.advance` releases ready
    panes and writes the records it is about to publish into the mapping; the caller makes
    those writes durable, *then* publishes :attr:`ReleaseCore.outbox`, then calls
    :meth:`ReleaseCore.published`. Restarted from the mapping, the core republishes its outbox
    byte for byte and never noises a stored pane again.
:func:`build_app` / :func:`run_worker` (faust-streaming)
    A faust app: agent on ``vault.partials`` (``concurrency=1``), a table holding the sealed
    state (``use_partitioner=True``: one changelog partition), records sent to
    ``results.aggregates`` only after the table's changelog writes are acknowledged. Delivery is
    at least once (faust's ``exactly_once`` has open bugs, see FIELD-NOTES); the combiner's
    de-duplication and the stored records make redelivery harmless. faust can also *skip* a
    record (right after a restart it resumes the source before seeking it to the committed
    offset, and it commits past offset gaps): when a record arrives beyond the offset the
    sealed head expects, the stage first reads the missing range itself with a
    :class:`SourceReader` (``read_committed``, outside faust's consumer) and applies what it
    finds, in offset order. Commit markers and aborted records leave legitimate gaps: the read
    then finds nothing. The consumer reads
    ``read_committed`` (the vault writes partials in transactions) and the producer is
    idempotent (records keep their order).

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> from procvault.monitor.privacy.settings import PaneSettings
>>> clock = PaneClock(PaneSettings(timedelta(hours=1)))
>>> def partial(p, i, n=0):
...     pane = clock.pane(i)
...     values = (("activity", ((("A",), n),)),) if n else ()
...     return Partial(p, 2, PaneAggregate(i, pane.start, pane.end, values))
>>> c = PaneCombiner(clock)
>>> c.add(partial(0, 5, 3)), c.add(partial(0, 7, 1)), c.ready()
('stored', 'stored', None)
>>> c.add(partial(1, 6, 2)), c.add(partial(1, 6, 2))
('stored', 'duplicate')
>>> [(a.index, a.statistic("activity")) for a in c.drain()]
[(5, {('A',): 3}), (6, {('A',): 2})]
>>> c.add(partial(1, 5, 9)), c.ready()
('stale', None)
>>> PaneCombiner.from_bytes(clock, c.to_bytes()).snapshot() == c.snapshot()
True
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from procvault.monitor.errors import ConfigError
from procvault.monitor.privacy.ledger import LedgerState
from procvault.monitor.privacy.mechanisms import Releaser
from procvault.monitor.privacy.panes import PaneAggregate, PaneClock
from procvault.monitor.privacy.records import PaneRecord, Record, WithheldRecord, decode_record
from procvault.monitor.privacy.release import PaneReleaser, ReleaseState
from procvault.monitor.privacy.tree import TreeState

from .envelope import RejectedRecord, open_state, seal_state
from .frames import Partial, Topics, open_partial
from .release import record_key, sign_record

if TYPE_CHECKING:
    from procvault.metrics.exporters import ReleaseMetrics
    from procvault.monitor.privacy.plan import ReleasePlan
    from procvault.monitor.privacy.settings import KnownKeys, PrivacySettings
    from procvault.reports.recorder import RunRecorder

    from .secrets import VaultSecrets

__all__ = [
    "CombinerState",
    "PaneCombiner",
    "ReleaseCore",
    "ReleaseStageSettings",
    "SourceReader",
    "build_app",
    "plan_fingerprint",
    "run_worker",
]

log = logging.getLogger("procvault.release")

#: What :meth:`PaneCombiner.add` did with a partial.
AddOutcome = Literal["stored", "duplicate", "stale"]
#: What :meth:`ReleaseCore.receive` did with a record: the combiner's outcome, or
#: ``redelivered`` (an offset below the next expected one: applied before, dropped).
ReceiveOutcome = Literal["stored", "duplicate", "stale", "redelivered"]


# ============================================================================ the combiner
class CombinerState(msgspec.Struct, frozen=True):
    """Everything a :class:`PaneCombiner` holds, as a value (exact sums: seal it).

    Attributes
    ----------
    partitions
        ``P``, from the first partial (``None`` before).
    frontiers
        ``(partition, highest pane received)``, sorted by partition.
    pending
        ``(pane, partition, aggregate)`` of the panes not completed yet, sorted.
    next_pane
        The pane that completes next (``None`` until every partition has reported).
    lowest
        The smallest pane index ever seen (where releasing starts).
    duplicates, stale
        Partials dropped: seen before, or of a pane already completed.
    """

    partitions: int | None = None
    frontiers: tuple[tuple[int, int], ...] = ()
    pending: tuple[tuple[int, int, PaneAggregate], ...] = ()
    next_pane: int | None = None
    lowest: int | None = None
    duplicates: int = 0
    stale: int = 0
    version: int = 1


_COMBINER_ENC: Final = msgspec.msgpack.Encoder()
_COMBINER_DEC: Final = msgspec.msgpack.Decoder(CombinerState)


class PaneCombiner:
    """Complete panes from per-partition partials, in order; see the module docstring.

    Parameters
    ----------
    clock
        The panes' clock (the DP policy's pane settings): bounds of empty panes, and a check
        that every partial has the bounds this stage expects.
    state
        A snapshot to resume from (:meth:`snapshot`).
    """

    def __init__(self, clock: PaneClock, state: CombinerState | None = None) -> None:
        self.clock: Final = clock
        self._partitions: int | None = None
        self._frontiers: dict[int, int] = {}
        self._pending: dict[int, dict[int, PaneAggregate]] = {}
        self._next: int | None = None
        self._lowest: int | None = None
        self._duplicates = 0
        self._stale = 0
        if state is not None:
            if state.version != 1:
                raise ValueError(f"unsupported combiner state version {state.version}")
            self._partitions = state.partitions
            self._frontiers = dict(state.frontiers)
            for pane, part, agg in state.pending:
                self._pending.setdefault(pane, {})[part] = agg
            self._next, self._lowest = state.next_pane, state.lowest
            self._duplicates, self._stale = state.duplicates, state.stale

    def add(self, partial: Partial) -> AddOutcome:
        """Take one partial; ``ValueError`` if it cannot belong to this stream (another
        partition count, a partition out of range, pane bounds of another clock)."""
        agg = partial.aggregate
        idx, part = agg.index, partial.partition
        if partial.partitions < 1:
            raise ValueError(f"a partial claims {partial.partitions} partitions")
        if self._partitions is None:
            self._partitions = partial.partitions
        elif partial.partitions != self._partitions:
            raise ValueError(
                f"a partial of pane {idx} counts {partial.partitions} event partitions, "
                f"earlier ones {self._partitions}: repartitioning needs a fresh release stage"
            )
        if not 0 <= part < self._partitions:
            raise ValueError(f"partition {part} is out of range (P = {self._partitions})")
        pane = self.clock.pane(idx)
        if (agg.start, agg.end) != (pane.start, pane.end):
            raise ValueError(
                f"pane {idx} of partition {part} spans {agg.start}..{agg.end}, this stage's "
                f"panes {pane.start}..{pane.end}: the vault and the release stage must use "
                "the same DP policy"
            )
        if self._frontiers.get(part, idx) <= idx:
            self._frontiers[part] = idx
        if self._next is not None and idx < self._next:
            self._stale += 1
            return "stale"
        by_part = self._pending.setdefault(idx, {})
        if part in by_part:
            self._duplicates += 1
            return "duplicate"
        by_part[part] = agg
        if self._lowest is None or idx < self._lowest:
            self._lowest = idx
        if self._next is None and len(self._frontiers) == self._partitions:
            self._next = self._lowest
        return "stored"

    @property
    def frontier(self) -> int | None:
        """The last pane every partition has closed (``None`` while one has not reported)."""
        if self._partitions is None or len(self._frontiers) < self._partitions:
            return None
        return min(self._frontiers.values())

    def ready(self) -> int | None:
        """The index of the pane that :meth:`pop` would complete, or ``None``."""
        nxt, front = self._next, self.frontier
        if nxt is None or front is None or nxt > front:
            return None
        return nxt

    def pop(self) -> PaneAggregate:
        """Complete the next pane: the merge of its partials (empty if none); ``LookupError``
        if it is not ready."""
        idx = self.ready()
        if idx is None:
            raise LookupError("no pane is complete yet")
        parts = self._pending.pop(idx, {})
        agg = PaneAggregate.empty(self.clock.pane(idx))
        for part in sorted(parts):
            agg = agg.merge(parts[part])
        self._next = idx + 1
        return agg

    def drain(self, limit: int | None = None) -> list[PaneAggregate]:
        """Complete every ready pane (at most ``limit``), in order."""
        out: list[PaneAggregate] = []
        while (limit is None or len(out) < limit) and self.ready() is not None:
            out.append(self.pop())
        return out

    @property
    def next_pane(self) -> int | None:
        """The pane that completes next (``None`` before every partition has reported)."""
        return self._next

    @property
    def counters(self) -> dict[str, int]:
        """Exact operational counters (never published)."""
        return {
            "duplicates": self._duplicates,
            "stale": self._stale,
            "pending_panes": len(self._pending),
        }

    def snapshot(self) -> CombinerState:
        """The whole state as a value."""
        return CombinerState(
            self._partitions,
            tuple(sorted(self._frontiers.items())),
            tuple(
                (pane, part, self._pending[pane][part])
                for pane in sorted(self._pending)
                for part in sorted(self._pending[pane])
            ),
            self._next,
            self._lowest,
            self._duplicates,
            self._stale,
        )

    def to_bytes(self) -> bytes:
        """:meth:`snapshot` as msgpack (exact sums: seal before storing)."""
        return _COMBINER_ENC.encode(self.snapshot())

    @classmethod
    def from_bytes(cls, clock: PaneClock, data: bytes) -> PaneCombiner:
        """The inverse of :meth:`to_bytes`."""
        return cls(clock, _COMBINER_DEC.decode(data))


# ============================================================================ the core
class _Head(msgspec.Struct, frozen=True):
    """The ``head`` entry of the store."""

    fingerprint: str
    combiner: CombinerState
    ledger: LedgerState
    tree: TreeState | None
    next_pane: int | None
    first_pane: int | None
    record_panes: tuple[int, ...]
    outbox: tuple[int, ...]
    next_out: int = 0
    released: int = 0
    rejected: int = 0
    version: int = 1
    #: ``(source partition, next offset expected)``, sorted. Absent in states written before
    #: offsets were tracked: the stage then reads the partition from its beginning once (every
    #: record again: duplicates and stale partials, dropped by the combiner).
    offsets: tuple[tuple[int, int], ...] = ()
    recovered: int = 0


_HEAD: Final = b"head"
_STATE_CONTEXT: Final = b"procvault-release-state-v1|"
_HEAD_ENC: Final = msgspec.msgpack.Encoder()
_HEAD_DEC: Final = msgspec.msgpack.Decoder(_Head)
_RECORD_DEC: Final = msgspec.msgpack.Decoder(PaneRecord | WithheldRecord)
_OUT_DEC: Final = msgspec.msgpack.Decoder(tuple[bytes, bytes])


def _pane_key(index: int) -> bytes:
    return b"pane/%d" % index


def _out_key(n: int) -> bytes:
    return b"out/%d" % n


def plan_fingerprint(plan: ReleasePlan) -> str:
    """A digest of the policy and known keys a state was built with (a restart under another
    policy would mix ledgers and windows of two plans: it is refused)."""
    text = repr((plan.settings, plan.known))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ReleaseCore:
    """The combiner and the DP releaser over a sealed ``bytes -> bytes`` store.

    Parameters
    ----------
    plan
        The release plan (policy and known keys).
    releaser
        Where noise comes from (:class:`~procvault.monitor.privacy.mechanisms.OpenDPReleaser`).
    secrets
        The vault's secrets: the state key seals the store and opens partials; records are
        signed with the current epoch's key.
    store
        Where the state lives (a faust table in the app, a dict in tests); read at
        construction, written by :meth:`receive`, :meth:`advance` and :meth:`published`.
    """

    def __init__(
        self,
        plan: ReleasePlan,
        releaser: Releaser,
        secrets: VaultSecrets,
        store: MutableMapping[bytes, bytes],
    ) -> None:
        self.plan: Final = plan
        self.fingerprint: Final = plan_fingerprint(plan)
        self._secrets = secrets
        self._key = secrets.state_key
        self._store = store
        self.clock: Final = PaneClock(plan.settings.panes)
        self.rejected = 0
        self.released = 0
        self.recovered = 0
        self.redelivered = 0
        self._offsets: dict[int, int] = {}
        self._outbox: list[int] = []
        self._next_out = 0
        # latency metrics only (not state): per pane, the latest agent send time of its
        # events; for the panes just released, theirs
        self._sent: dict[int, int] = {}
        self.sent_of_released: list[int] = []
        head = self._load_head()
        if head is None:
            self.combiner = PaneCombiner(self.clock)
            self.releaser = PaneReleaser(plan, releaser)
        else:
            if head.fingerprint != self.fingerprint:
                raise ConfigError(
                    "the stored release state was built with another DP policy or model "
                    "(known keys); start the release stage with the same policy and model, "
                    "or with a fresh application id"
                )
            records = tuple(self._load_record(i) for i in head.record_panes)
            state = ReleaseState(head.ledger, head.tree, records, head.next_pane, head.first_pane)
            self.combiner = PaneCombiner(self.clock, head.combiner)
            self.releaser = PaneReleaser(plan, releaser, state)
            self._outbox = list(head.outbox)
            self._next_out = head.next_out
            self.released, self.rejected = head.released, head.rejected
            self._offsets = dict(head.offsets)
            self.recovered = head.recovered
        self._stored_panes = {r.pane.index for r in self.releaser.records()}

    # -- sealed entries ------------------------------------------------------------------
    def _seal(self, key: bytes, data: bytes) -> bytes:
        return seal_state(self._key, data, context=_STATE_CONTEXT + key)

    def _open(self, key: bytes) -> bytes:
        return open_state(self._key, self._store[key], context=_STATE_CONTEXT + key)

    def _load_head(self) -> _Head | None:
        if _HEAD not in self._store:
            return None
        head = _HEAD_DEC.decode(self._open(_HEAD))
        if head.version != 1:
            raise ConfigError(f"unsupported release state version {head.version}")
        return head

    def _load_record(self, index: int) -> PaneRecord | WithheldRecord:
        try:
            return _RECORD_DEC.decode(self._open(_pane_key(index)))
        except KeyError:
            raise ConfigError(f"the release state lacks the record of pane {index}") from None

    def _write_head(self) -> None:
        snap = self.releaser.snapshot()
        head = _Head(
            self.fingerprint,
            self.combiner.snapshot(),
            snap.ledger,
            snap.tree,
            snap.next_pane,
            snap.first_pane,
            tuple(r.pane.index for r in snap.records),
            tuple(self._outbox),
            self._next_out,
            self.released,
            self.rejected,
            offsets=tuple(sorted(self._offsets.items())),
            recovered=self.recovered,
        )
        self._store[_HEAD] = self._seal(_HEAD, _HEAD_ENC.encode(head))

    # -- operations ----------------------------------------------------------------------
    def expected(self, partition: int = 0) -> int | None:
        """The next offset expected from ``vault.partials`` partition ``partition`` (``None``:
        nothing read from it yet)."""
        return self._offsets.get(partition)

    def gap(self, partition: int, offset: int) -> tuple[int | None, int] | None:
        """What to read before applying the record at ``offset``: ``(start, offset)`` when it
        lies beyond the next expected offset (``start`` ``None``: from the partition's
        beginning, when nothing was read from it yet), else ``None``. Read the committed
        records of ``[start, offset)`` and :meth:`receive` them in order first; a gap may hold
        none (commit markers and aborted records take offsets too)."""
        nxt = self._offsets.get(partition)
        if nxt is None:
            return (None, offset) if offset > 0 else None
        return (nxt, offset) if offset > nxt else None

    def receive(
        self,
        key: bytes | None,
        value: bytes | None,
        *,
        offset: int | None = None,
        partition: int = 0,
        recovered: bool = False,
    ) -> ReceiveOutcome | None:
        """Open and store one ``vault.partials`` record (the head is rewritten); ``None`` if
        it was rejected (tampered, moved, or not of this stream: counted and logged, never
        applied).

        With its source ``offset`` (and ``partition``), a record below the next expected
        offset is ``redelivered``: records are applied in offset order, so it was applied
        before; it is dropped without writing anything. Otherwise the next expected offset
        moves past it, in the same head write as its effect. ``recovered`` counts a record
        read back by the stage itself (see :meth:`gap`)."""
        if offset is not None:
            nxt = self._offsets.get(partition)
            if nxt is not None and offset < nxt:
                self.redelivered += 1
                return "redelivered"
            self._offsets[partition] = offset + 1
            if recovered:
                self.recovered += 1
        try:
            if key is None or value is None:
                raise RejectedRecord("malformed", "partial without key or value")
            partial = open_partial(self._key, key, value)
            outcome = self.combiner.add(partial)
            if partial.sent_us > self._sent.get(partial.aggregate.index, 0):
                self._sent[partial.aggregate.index] = partial.sent_us
        except (RejectedRecord, ValueError, msgspec.DecodeError) as exc:
            self.rejected += 1
            log.warning("partial rejected: %s", exc)
            self._write_head()
            return None
        if outcome != "stored":
            log.info("partial %s (%s)", outcome, key.hex())
        self._write_head()
        return outcome

    def advance(self, limit: int = 16) -> list[tuple[bytes, bytes]]:
        """Release up to ``limit`` complete panes; returns :attr:`outbox` (records written to
        the store, still to publish). Make the store's writes durable before publishing."""
        panes = self.combiner.drain(limit)
        if not panes:
            return self.outbox
        keys = self._secrets.current
        for agg in panes:
            sent = self._sent.pop(agg.index, 0)
            if sent:
                self.sent_of_released.append(sent)
            for record in self.releaser.release(agg):
                self._queue(record, keys)
            self.released += 1
        held = {r.pane.index: r for r in self.releaser.records()}
        for idx, record in held.items():
            if idx not in self._stored_panes:
                self._store[_pane_key(idx)] = self._seal(
                    _pane_key(idx), msgspec.msgpack.encode(record)
                )
        self._write_head()
        for idx in self._stored_panes - held.keys():
            self._store.pop(_pane_key(idx), None)
        self._stored_panes = set(held)
        return self.outbox

    def _queue(self, record: Record, keys: Any) -> None:
        n = self._next_out
        self._next_out += 1
        entry = msgspec.msgpack.encode((record_key(record), sign_record(record, keys)))
        self._store[_out_key(n)] = self._seal(_out_key(n), entry)
        self._outbox.append(n)

    @property
    def outbox(self) -> list[tuple[bytes, bytes]]:
        """``(key, signed value)`` of the records to publish, in order."""
        return [_OUT_DEC.decode(self._open(_out_key(n))) for n in self._outbox]

    def published(self) -> None:
        """The outbox reached Kafka: forget it."""
        if not self._outbox:
            return
        done, self._outbox = self._outbox, []
        self._write_head()
        for n in done:
            self._store.pop(_out_key(n), None)

    def budget(self) -> tuple[float, float]:
        """ε spent and left over the ledger's window ending at the last released pane (the
        running totals' reserve included): data-independent, see
        :meth:`~procvault.monitor.privacy.release.PaneReleaser.epsilon_used`."""
        return self.releaser.epsilon_used()

    @property
    def counters(self) -> dict[str, int]:
        """Exact operational counters (never published)."""
        return {
            "released_panes": self.released,
            "rejected_partials": self.rejected,
            "unpublished": len(self._outbox),
            "recovered_partials": self.recovered,
            "redelivered_partials": self.redelivered,
            **self.combiner.counters,
        }


# ============================================================================ the faust app
@dataclass(frozen=True, kw_only=True)
class ReleaseStageSettings:
    """Everything the release stage needs, checked up front.

    Attributes
    ----------
    bootstrap
        Kafka ``host:port`` (a ``kafka://`` prefix is accepted).
    secrets
        The vault's secrets (``vault.json``).
    privacy
        The DP policy.
    known
        The keys known in advance (the model's activities, the rule ids): must be the ones the
        vault workers use.
    data_dir
        faust's local data folder.
    topics
        The pipeline's topic names; their prefix also prefixes the application id (one
        deployment, or one test, per prefix).
    app_id
        faust's application id: the consumer group and the table's changelog topic name.
    session_timeout
        Seconds before the group gives a dead worker's partitions away.
    instance_id
        A static group membership id (a restarted worker takes over at once), or ``None``.
    max_panes_per_step
        Panes released between two durable writes.
    replication_factor
        Of the topics the app creates.
    """

    bootstrap: str
    secrets: VaultSecrets
    privacy: PrivacySettings
    known: KnownKeys
    data_dir: Path
    topics: Topics = field(default_factory=Topics)
    app_id: str = "procvault-release"
    session_timeout: float = 30.0
    instance_id: str | None = None
    max_panes_per_step: int = 16
    replication_factor: int = 1
    crash_after_persist: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.bootstrap.removeprefix("kafka://"):
            raise ConfigError("give the Kafka bootstrap address (host:port)")
        if not 6.0 <= self.session_timeout <= 300.0:
            raise ConfigError(
                f"session timeout must be 6-300 s (the broker's group limits), "
                f"got {self.session_timeout}"
            )
        if self.max_panes_per_step < 1:
            raise ConfigError("max_panes_per_step must be >= 1")
        if self.replication_factor < 1:
            raise ConfigError("replication_factor must be >= 1")

    @property
    def application_id(self) -> str:
        """The faust application id (with the topics' prefix)."""
        return self.topics.prefix + self.app_id


class _AckedTable:
    """Mixin for a faust ``Table``: remembers the changelog futures of its writes, so that
    :meth:`acknowledged` can wait until Kafka has them."""

    _unacked: list[Any]

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        fut = super().send_changelog(*args, **kwargs)  # type: ignore[misc]
        self.__dict__.setdefault("_unacked", []).append(fut)
        return fut

    async def acknowledged(self) -> None:
        pending = self.__dict__.get("_unacked") or []
        self.__dict__["_unacked"] = []
        if pending:
            await asyncio.gather(*pending)


class SourceReader:
    """Reads the committed records of a range of offsets of one topic, outside faust's consumer.

    The release stage uses it to fill a gap in what faust delivered (see the module
    docstring). One ``read_committed`` aiokafka consumer without a group, started on first use
    and kept for later gaps (a seek and a fetch each); :meth:`close` stops it.

    Parameters
    ----------
    bootstrap
        Kafka ``host:port``.
    topic
        The topic (``vault.partials``).
    timeout
        Seconds between two warnings while a read does not complete (it never gives up:
        skipping a partial would stall the stage for good).
    """

    def __init__(self, bootstrap: str, topic: str, *, timeout: float = 30.0) -> None:
        self.bootstrap = bootstrap.removeprefix("kafka://")
        self.topic = topic
        self.timeout = timeout
        self._consumer: Any = None

    async def _started(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="earliest",  # a range deleted by retention: what is left
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def read(self, partition: int, start: int | None, end: int) -> list[Any]:
        """The committed records of ``partition`` with ``start <= offset < end``, in order
        (``start`` ``None``: from the beginning). ``end`` must be the offset of a committed
        record (one faust delivered): the read stops there."""
        from aiokafka import TopicPartition

        consumer = await self._started()
        tp = TopicPartition(self.topic, partition)
        if tp not in consumer.assignment():
            consumer.assign([*consumer.assignment(), tp])
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
        out: list[Any] = []
        waited_since = time.monotonic()
        while True:
            batch = await consumer.getmany(tp, timeout_ms=200)
            for rec in batch.get(tp, ()):
                if rec.offset >= end:
                    return out
                out.append(rec)
            if await consumer.position(tp) >= end:
                return out
            if time.monotonic() - waited_since > self.timeout:
                log.warning(
                    "still reading %s[%d] up to offset %d (at %d)",
                    self.topic,
                    partition,
                    end,
                    await consumer.position(tp),
                )
                waited_since = time.monotonic()

    async def close(self) -> None:
        """Stop the consumer (a second call is harmless)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


def _transport_class() -> Any:
    """faust's aiokafka transport, with a ``read_committed`` consumer and an idempotent
    producer (faust gives both only in its ``exactly_once`` mode)."""
    from faust.transport.drivers import aiokafka as drv

    class ReadCommittedThread(drv.AIOKafkaConsumerThread):  # type: ignore[misc]
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # The vault commits partials in Kafka transactions: never read aborted ones.
            consumer._isolation_level = "read_committed"
            return consumer

    class Consumer(drv.Consumer):  # type: ignore[misc]
        def _new_consumer_thread(self) -> Any:
            return ReadCommittedThread(self, loop=self.loop, beacon=self.beacon)

    class Producer(drv.Producer):  # type: ignore[misc]
        def _settings_extra(self) -> Any:
            return {"acks": "all", "enable_idempotence": True}

    class Transport(drv.Transport):  # type: ignore[misc]
        pass

    Transport.Consumer = Consumer
    Transport.Producer = Producer
    return Transport


def build_app(
    settings: ReleaseStageSettings,
    *,
    metrics: ReleaseMetrics | None = None,
    recorder: RunRecorder | None = None,
) -> Any:
    """The faust app of the release stage (nothing runs until a worker starts it).

    ``metrics`` are fed from the release loop (see :class:`_Observer`); ``recorder`` counts
    the partials received (its throughput) and samples the process's memory."""
    import faust

    from procvault.monitor.privacy.mechanisms import OpenDPReleaser
    from procvault.monitor.privacy.plan import ReleasePlan

    plan = ReleasePlan.build(settings.privacy, settings.known)
    releaser = OpenDPReleaser(plan)  # proves every mechanism's budget before anything runs
    bootstrap = "kafka://" + settings.bootstrap.removeprefix("kafka://")
    session = settings.session_timeout
    app = faust.App(
        settings.application_id,
        broker=bootstrap,
        store="memory://",
        datadir=str(settings.data_dir),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=1,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=0,
        processing_guarantee="at_least_once",
        producer_linger=0.05,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.instance_id,
        broker_session_timeout=session,
        broker_heartbeat_interval=max(1.0, session / 6),
        broker_request_timeout=max(90.0, session + 10),
        broker_commit_interval=1.0,
        web_enabled=False,
        worker_redirect_stdouts=False,
    )
    transport_cls = _transport_class()
    # Before anything touches app.transport (declaring a topic does).
    app.transport = transport_cls(app.conf.broker_consumer, app)
    app.producer_transport = transport_cls(app.conf.broker_producer, app)

    partials = app.topic(
        settings.topics.partials,
        partitions=1,
        key_serializer="raw",
        value_serializer="raw",
        replicas=settings.replication_factor,
    )
    aggregates = app.topic(
        settings.topics.aggregates,
        partitions=1,
        key_serializer="raw",
        value_serializer="raw",
        replicas=settings.replication_factor,
    )

    class StateTable(_AckedTable, faust.Table):  # type: ignore[misc]
        """The sealed state (see :class:`ReleaseCore`)."""

    table = app.tables.add(
        StateTable(
            app,
            name="state",
            beacon=app.tables.beacon,
            partitions=1,
            key_type=bytes,  # bytes: faust's "raw" serializer for keys and values
            value_type=bytes,
            use_partitioner=True,
            help="the release stage's sealed state",
        )
    )
    holder: dict[str, ReleaseCore] = {}
    persisted = [0]
    lock = asyncio.Lock()  # one step at a time: the agent's, or a reload after a rebalance
    reader = SourceReader(bootstrap, settings.topics.partials)
    observer = _Observer(metrics, plan)

    def core() -> ReleaseCore:
        if "core" not in holder:
            holder["core"] = c = ReleaseCore(plan, releaser, settings.secrets, table)
            log.info("release state loaded: %s", c.counters)
            observer.loaded(c)
        return holder["core"]

    async def publish(c: ReleaseCore, out: list[tuple[bytes, bytes]]) -> None:
        await table.acknowledged()  # the stored records are in Kafka before anyone sees them
        persisted[0] += 1
        if (
            settings.crash_after_persist is not None
            and persisted[0] >= settings.crash_after_persist
        ):
            log.warning("crash injected after a durable write, before publishing")
            os.kill(os.getpid(), signal.SIGKILL)
        futures = [await aggregates.send(key=k, value=v, force=True) for k, v in out]
        await asyncio.gather(*futures)
        c.published()
        observer.published(c, out)

    async def release_ready(c: ReleaseCore, arrived: float | None = None) -> None:
        out = c.outbox
        if out:
            await publish(c, out)  # left over from before a restart: the same bytes again
        while True:
            started = time.perf_counter()
            before = c.released
            out = c.advance(settings.max_panes_per_step)
            if not out:
                return
            await publish(c, out)
            n = c.released - before
            observer.latency(n, arrived)
            log.info(
                "released panes up to %s (%d panes, %d records, %.1f ms)",
                c.releaser.next_pane - 1 if c.releaser.next_pane is not None else None,
                n,
                len(out),
                (time.perf_counter() - started) * 1000,
            )

    async def fill_gap(c: ReleaseCore, partition: int, start: int | None, end: int) -> None:
        missing = await reader.read(partition, start, end)
        if missing:
            log.warning(
                "%d partial(s) at offsets %s of %s[%d] were not delivered before offset %d: "
                "read back and applied in order",
                len(missing),
                [r.offset for r in missing],
                settings.topics.partials,
                partition,
                end,
            )
        for rec in missing:
            c.receive(rec.key, rec.value, offset=rec.offset, partition=partition, recovered=True)

    @app.agent(partials, concurrency=1)
    async def combine(stream: Any) -> None:
        async for event in stream.events():
            arrived = time.monotonic()
            msg = event.message
            if recorder is not None:
                recorder.count()
            async with lock:
                c = core()
                gap = c.gap(msg.partition, msg.offset)
                if gap is not None:
                    await fill_gap(c, msg.partition, *gap)
                outcome = c.receive(
                    event.key, event.value, offset=msg.offset, partition=msg.partition
                )
                if outcome != "redelivered":
                    await release_ready(c, arrived)

    @app.on_rebalance_complete.connect
    async def _recovered(sender: Any = None, **kwargs: Any) -> None:
        # The table is rebuilt from its changelog: load the core again and publish what a
        # previous run stored but may not have published.
        async with lock:
            holder.clear()
            if app.consumer.assignment():
                await release_ready(core())

    @app.on_before_shutdown.connect
    async def _close_reader(sender: Any = None, **kwargs: Any) -> None:
        await reader.close()

    return app


class _Observer:
    """Feeds :class:`~.metrics.ReleaseMetrics` from the release loop (nothing without metrics).

    * ``procvault_releases_total{kind}``: records published (republished ones after a restart
      count again);
    * ``procvault_privacy_epsilon_spent``/``_remaining``: :meth:`ReleaseCore.budget`, over the
      ledger's window ending at the last released pane (data-independent);
    * ``procvault_release_latency_seconds``: per released pane, wall time from the arrival in
      this stage of the partial that completed it to its records being acknowledged by Kafka
      (the gap read, combining, noising, the durable state write and publishing; not the
      time the partial spent in Kafka or in the vault). Panes republished from the outbox
      after a restart are not observed;
    * ``procvault_released_pane_cases{outcome}`` and ``_violations{rule}``: the noisy
      ``cases`` and ``violation`` values (known keys only) of the last *released* pane; a
      withheld pane leaves them as they were.
    """

    def __init__(self, metrics: ReleaseMetrics | None, plan: ReleasePlan) -> None:
        self.metrics = metrics
        self._rules = {k[0] for k in plan.known.keys("violation")} if metrics else set()

    def loaded(self, c: ReleaseCore) -> None:
        if self.metrics is not None:
            spent, left = c.budget()
            self.metrics.set_budget(spent=spent, remaining=left)

    def published(self, c: ReleaseCore, out: list[tuple[bytes, bytes]]) -> None:
        m = self.metrics
        sent, c.sent_of_released = c.sent_of_released, []
        if m is None:
            return
        now_us = time.time_ns() // 1000
        for us in sent:
            m.observe_released((now_us - us) / 1e6)
        last: PaneRecord | None = None
        for _key, value in out:
            record = _published_record(value)
            m.released(record.kind)
            if isinstance(record, PaneRecord):
                last = record
        if last is not None:
            stats = {s.name: s for s in last.statistics}
            cases = stats.get("cases")
            violation = stats.get("violation")
            m.set_pane_values(
                cases={e.key[0]: e.value for e in cases.known} if cases else None,
                violations=(
                    {e.key[0]: e.value for e in violation.known if e.key[0] in self._rules}
                    if violation
                    else None
                ),
            )
        spent, left = c.budget()
        m.set_budget(spent=spent, remaining=left)

    def latency(self, panes: int, arrived: float | None) -> None:
        if self.metrics is not None and arrived is not None:
            seconds = time.monotonic() - arrived
            for _ in range(panes):
                self.metrics.observe_release_latency(seconds)


def _published_record(value: bytes) -> Record:
    """The record inside a signed envelope this stage made (not verified: it signed it)."""
    return decode_record(json.loads(value)["record"])


def run_worker(
    settings: ReleaseStageSettings,
    *,
    loglevel: str = "info",
    metrics: ReleaseMetrics | None = None,
    recorder: RunRecorder | None = None,
) -> int:
    """Run the release stage until SIGTERM/SIGINT; returns the exit code (faust's worker may
    also end it with ``SystemExit``: close what the caller opened in a ``finally``)."""
    import faust

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    from .kafka_io import ensure_topics

    bootstrap = settings.bootstrap.removeprefix("kafka://")
    asyncio.run(
        ensure_topics(
            bootstrap,
            [settings.topics.partials, settings.topics.aggregates],
            partitions=1,
            replication_factor=settings.replication_factor,
        )
    )
    app = build_app(settings, metrics=metrics, recorder=recorder)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
