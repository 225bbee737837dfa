"""The vault worker: encrypted events in, exactly-once monitoring results out, on aiokafka.

A worker is a member of a consumer group over the organizations' event topics
(``events.<org>``, all with ``P`` partitions). Partition ``p`` of every event topic holds the
same cases (agents key records by the consortium's case pseudonym), and the range assignor
gives all of them to one worker, which hosts one :class:`Shard` per partition number: a
:class:`~procvault.monitor.vault.Vault`, optionally a
:class:`~procvault.monitor.privacy.panes.PaneAccumulator`, and an event-time merge of the
organizations' streams.

Per batch (closed after ``batch_records`` records or ``batch_ms``), in one Kafka transaction:

1. each record is opened (:class:`~.envelope.SessionOpener`) or rejected and counted by reason
   (``malformed``, ``unknown_org``, ``unknown_epoch``, ``bad_tag``, ``replay``,
   ``bad_signature``); a rejected record is never applied;
2. events wait in their shard's merge buffer until every organization's stream has passed
   them (its last event or heartbeat), then are applied in ``(time, order, org)`` order — the
   order the organizations' shared source had; an organization silent for ``source_timeout``
   seconds stops holding the others back;
3. before an event is applied, its case's state is checked for the event's producer session:
   a sequence number at or below the last one applied is a replay (counted) or, when it comes
   from re-reading after a restart, silently skipped;
4. the sealed state of every case the batch changed (``c`` + pseudonym), each shard's sealed
   metadata (``p`` + partition: merge positions, offsets, the pane accumulator), the outputs —
   per organization one record of alerts, deviations and case results, signed and sealed to the
   organization; closed panes' partials sealed for the release stage — and the consumer offsets
   commit together. A crash anywhere loses nothing and counts nothing twice.

**Revocations.** A ``REVOKE`` frame carries an organization's signed revocation
(:mod:`.revocation`). The worker verifies it with the organization's registered signing key
(``bad_signature`` otherwise), files it after everything the organization published before it
in the partition (the organization's position in the merge when it is read) and, in merge
order, applies it to the shard (:func:`~procvault.monitor.revocation.apply_revocation`): a
revoked case's state is dropped (a tombstone in the changelog), later events it covers are
dropped and counted, and the organization gets an item ``{"type": "revocation", ...}`` in its
results. The shard's revocations are part of its sealed metadata, so a restart keeps them.

Consumer offsets never pass an event that is still in a merge buffer, so what was not applied
is read again after a crash; what was applied is recognised by the replay guard in its case.

On assignment, a shard is rebuilt from the changelog before any record is processed; on
revocation the worker finishes its batch (the batch lock) and drops the shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import logging
import pickle
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import msgspec

from procvault.monitor.errors import ConfigError, InputError, KafkaSetupError, SignatureError
from procvault.monitor.event import Event, EventKind
from procvault.monitor.revocation import Revocations, apply_revocation
from procvault.monitor.vault import CaseResult, CaseState, Deviation, Update, Vault

from . import codec
from .envelope import RejectedRecord, SessionOpener, case_pseudonym, open_state, seal_state
from .frames import (
    EVENT,
    HEARTBEAT,
    REVOKE,
    Partial,
    Topics,
    decode_frame,
    decode_heartbeat,
    seal_partial,
    seal_result,
)

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from procvault.monitor.compliance import Alert
    from procvault.monitor.privacy.panes import PaneAccumulator, PaneAggregate

    from .revocation import Revocation
    from .secrets import Registry, VaultSecrets

__all__ = ["Shard", "VaultWorker", "WorkerSettings", "WorkerStats"]

log = logging.getLogger("procvault.vault")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_INF: Final = (1 << 62, 1 << 64, "")
_NEG: Final = (-(1 << 62), 0, "")
_STATE_CONTEXT: Final = b"procvault-state-v1|"
_JSON: Final = msgspec.json.Encoder().encode
_CASE_END: Final = EventKind.CASE_END
_ITEMS_PER_RECORD: Final = 500  # result items per record (a few hundred bytes each)
REASONS: Final = (
    "malformed",
    "unknown_org",
    "unknown_epoch",
    "bad_tag",
    "replay",
    "bad_signature",
)


def _us(ts: datetime) -> int:
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class WorkerSettings:
    """How a vault worker runs.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers.
    partitions
        Partitions of every event topic (and of the changelog).
    worker_id
        Stable per worker: its transactional id, so a restarted worker fences its dead self.
    batch_records, batch_ms
        A batch (one transaction) closes after this many records or this many milliseconds.
    source_timeout
        Seconds after which a silent organization no longer holds back the merge (``None``:
        wait for it forever).
    idle_commit_s
        A batch that changed nothing but merge positions (heartbeats, events still waiting)
        commits only when this long has passed since the last commit: heartbeats then cost
        no transaction each, and the worker is free for the next events. Nothing is at risk:
        until it commits, its metadata and offsets stay where the last commit left them
        together, and a restart reads those heartbeats again.
    """

    bootstrap: str
    partitions: int
    topics: Topics = field(default_factory=Topics)
    group: str = "procvault-vault"
    worker_id: str = "vault-1"
    batch_records: int = 2000
    batch_ms: int = 20
    source_timeout: float | None = 30.0
    session_timeout_ms: int = 10_000
    transaction_timeout_ms: int = 15_000
    idle_commit_s: float = 0.5

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError("partitions must be >= 1")
        if self.batch_records < 1 or self.batch_ms < 1:
            raise ConfigError("batch_records and batch_ms must be >= 1")
        if self.idle_commit_s < 0:
            raise ConfigError("idle_commit_s must be >= 0")


@dataclass
class WorkerStats:
    """Counters of one worker process (also exported as metrics)."""

    records: int = 0
    applied: int = 0
    heartbeats: int = 0
    late: int = 0
    redelivered: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    batches: int = 0
    completed: int = 0
    alerts: int = 0
    partials: int = 0
    revocations: int = 0  # revocations applied (one per shard they reach)
    revoked_events: int = 0  # events dropped because a revocation covers them
    engine_ns: int = 0
    first_applied: float | None = None  # wall clock (Unix s) of the first event applied
    last_applied: float | None = None  # ... and of the last one

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(vars(self))


class _Case:
    """What a shard keeps per case beside the vault: the replay guard and the organizations."""

    __slots__ = ("done", "orgs", "seqs")

    def __init__(self) -> None:
        self.seqs: dict[bytes, int] = {}
        self.orgs: set[str] = set()
        self.done = False


class Shard:
    """One partition number's vault, merge buffer, replay guards and pane accumulator."""

    def __init__(
        self,
        partition: int,
        vault: Vault,
        orgs: Iterable[str],
        *,
        accumulator: PaneAccumulator | None = None,
        source_timeout: float | None = None,
    ) -> None:
        self.partition = partition
        self.vault = vault
        self.acc = accumulator
        self.orgs = tuple(orgs)
        self.source_timeout = source_timeout
        self.sources: dict[str, tuple[int, int, str]] = dict.fromkeys(self.orgs, _NEG)
        self.closed: set[str] = set()
        now = time.monotonic()
        self.heard: dict[str, float] = dict.fromkeys(self.orgs, now)
        self.released: tuple[int, int, str] = _NEG
        self.ticked: tuple[int, int, str] = _NEG
        # (time µs, order, org, offset, session, sequence, sent µs, event)
        self.buffer: list[tuple[int, int, str, int, bytes, int, int, Event]] = []
        # per organization, the offsets of its records in the buffer, oldest first (its
        # records leave the merge in offset order)
        self.waiting: dict[str, deque[int]] = {o: deque() for o in self.orgs}
        # next offset consumed per organization's topic partition, and how far it was read
        # before the last restart (records below it that were applied are redeliveries)
        self.consumed: dict[str, int] = {}
        self.reread_until: dict[str, int] = {}
        # the offsets committed with the last state (where a restored shard resumes reading)
        self.committed: dict[str, int] = {}
        self.cases: dict[str, _Case] = {}
        self.changed: set[str] = set()
        self.meta_changed = False
        # per open pane, the latest agent send time of its events (for latency metrics only)
        self.pane_sent: dict[int, int] = {}
        self.finished = False
        # revocations applied, and those waiting for the merge: (time µs, order, org, offset,
        # revocation), filed at the organization's position when read
        self.revocations = Revocations()
        self.revoking: list[tuple[int, int, str, int, Revocation]] = []
        self.forgotten: set[str] = set()  # revoked cases whose changelog entry goes

    # -- input ----------------------------------------------------------------------------
    def heartbeat(self, org: str, key: tuple[int, int, str], closed: bool) -> None:
        """An organization's promise: nothing later from it sorts at or below ``key``."""
        self.sources[org] = max(self.sources[org], key)
        if closed:
            self.closed.add(org)
        else:
            self.closed.discard(org)
        self.meta_changed = True

    def offer(
        self, org: str, offset: int, session: bytes, seq: int, order: int, sent_us: int, ev: Event
    ) -> None:
        """Buffer an opened event until the merge lets it through."""
        key = (_us(ev.timestamp), order, org)
        self.sources[org] = max(self.sources[org], key)
        self.closed.discard(org)
        heapq.heappush(self.buffer, (*key, offset, session, seq, sent_us, ev))
        self.waiting[org].append(offset)

    def frontier(self) -> tuple[tuple[int, int, str], bool]:
        """The largest key every live organization has passed, and whether every organization
        has closed its stream. Organizations silent for ``source_timeout`` do not count (if
        all are silent, everything buffered may go)."""
        timeout = self.source_timeout
        now = time.monotonic()
        low = None
        for org in self.orgs:
            if org in self.closed:
                continue
            if timeout is not None and now - self.heard[org] > timeout:
                continue
            k = self.sources[org]
            if low is None or k < low:
                low = k
        if low is not None:
            return low, False
        return _INF, len(self.closed) == len(self.orgs)

    def resume_offsets(self) -> dict[str, int]:
        """Per organization, the offset to read again from after a crash: the oldest record
        still waiting in the merge buffer, or the next one not read."""
        out = dict(self.consumed)
        for org, offsets in self.waiting.items():
            if offsets:
                out[org] = min(out[org], offsets[0])
        for rev in self.revoking:
            out[rev[2]] = min(out[rev[2]], rev[3])
        return out

    def file_revocation(self, org: str, offset: int, revocation: Revocation) -> None:
        """Queue a verified revocation after everything ``org`` published before it."""
        heapq.heappush(self.revoking, (*self.sources[org], offset, revocation))

    # -- state of cases -------------------------------------------------------------------
    def case(self, case_id: str) -> _Case:
        c = self.cases.get(case_id)
        if c is None:
            c = self.cases[case_id] = _Case()
        return c


@dataclass
class _Outputs:
    """What one batch publishes, besides the state."""

    per_org: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    partials: list[Partial] = field(default_factory=list)
    engine_ns: list[int] = field(default_factory=list)  # per applied event
    sent_us: list[int] = field(default_factory=list)  # agents' send times of applied events
    records_in: dict[str, int] = field(default_factory=dict)  # records read per organization

    def add(self, orgs: Iterable[str], item: dict[str, Any]) -> None:
        for org in orgs:
            self.per_org.setdefault(org, []).append(item)


def _deviation_item(d: Deviation) -> dict[str, Any]:
    return {
        "type": "deviation",
        "case": d.case_id,
        "activity": d.activity,
        "timestamp": d.timestamp.isoformat(),
        "kind": d.kind,
        "transition": d.transition,
        "missing_places": list(d.missing_places),
    }


def _alert_item(a: Alert) -> dict[str, Any]:
    return {
        "type": "alert",
        "case": a.case_id,
        "rule": a.rule,
        "old": a.old,
        "new": a.new,
        "activity": a.activity,
        "timestamp": a.timestamp.isoformat(),
    }


def _case_item(r: CaseResult) -> dict[str, Any]:
    return {"type": "case", **r.to_dict()}


class VaultWorker:
    """A vault worker process's engine room (see the module docstring).

    ``make_vault`` builds a fresh :class:`Vault` per shard; ``make_accumulator`` (optional) a
    fresh :class:`PaneAccumulator` or one resumed from a snapshot.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        secrets: VaultSecrets,
        registry: Registry,
        make_vault: Callable[[], Vault],
        *,
        make_accumulator: Callable[[Any], PaneAccumulator] | None = None,
        metrics: Any = None,
        recorder: Any = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.registry = registry
        self.orgs = tuple(sorted(registry.orgs))
        self.make_vault = make_vault
        self.make_accumulator = make_accumulator
        self.metrics = metrics
        self.recorder = recorder
        self.stats = WorkerStats()
        self.opener = SessionOpener(dict(secrets.epochs), orgs=self.orgs, replay_window=0)
        self._pseudonym_key = secrets.state_key  # a keyed hash under the vault's own key
        self._topic_org = {settings.topics.events(o): o for o in self.orgs}
        self._signers = registry.trusted_signers()
        self.shards: dict[int, Shard] = {}
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()
        self._record_bytes = 0.0
        self._last_commit = 0.0  # time.monotonic() of the last committed transaction
        self._last_offsets = 0.0  # ... and of the last one with the group's offsets
        self._generation = 0

    # -- keys and sealing -----------------------------------------------------------------
    def _case_key(self, case_id: str) -> bytes:
        return b"c" + case_pseudonym(self._pseudonym_key, case_id)

    @staticmethod
    def _meta_key(partition: int) -> bytes:
        return b"p" + partition.to_bytes(4, "big")

    def _seal(self, key: bytes, obj: Any) -> bytes:
        return seal_state(
            self.secrets.state_key,
            pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL),
            context=_STATE_CONTEXT + key,
        )

    def _unseal(self, key: bytes, value: bytes) -> Any:
        # Authenticated with the vault's own state key before unpickling: only this vault can
        # have written it.
        return pickle.loads(open_state(self.secrets.state_key, value, context=_STATE_CONTEXT + key))

    # -- shards ---------------------------------------------------------------------------
    def _new_shard(self, partition: int, acc_state: Any = None) -> Shard:
        acc = self.make_accumulator(acc_state) if self.make_accumulator is not None else None
        return Shard(
            partition,
            self.make_vault(),
            self.orgs,
            accumulator=acc,
            source_timeout=self.settings.source_timeout,
        )

    async def _restore(self, partitions: Iterable[int]) -> None:
        """Rebuild the shards of ``partitions`` from the changelog (committed records only)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        parts = sorted(partitions)
        if not parts:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.settings.topics.changelog, p) for p in parts]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            await consumer.seek_to_beginning(*tps)
            latest: dict[int, dict[bytes, bytes | None]] = {p: {} for p in parts}
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=500)
                for tp, recs in batch.items():
                    for r in recs:
                        if r.offset < ends[tp]:
                            latest[tp.partition][r.key] = r.value
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await consumer.stop()
        for p in parts:
            self.shards[p] = self._rebuild(p, latest[p])

    def _rebuild(self, partition: int, records: Mapping[bytes, bytes | None]) -> Shard:
        meta_value = records.get(self._meta_key(partition))
        meta = self._unseal(self._meta_key(partition), meta_value) if meta_value else None
        shard = self._new_shard(partition, meta["acc"] if meta else None)
        if meta is not None:
            shard.sources.update(meta["sources"])
            shard.released = meta["released"]
            for org, offset in meta["consumed"].items():
                if meta["committed"].get(org, 0) < offset:
                    # Records of ``org`` will be read again: until they are, all we know is
                    # that they sort after what was released. (Keeping the key of the last
                    # record read would let other organizations' records overtake them.)
                    shard.sources[org] = min(shard.sources[org], shard.released)
            # a closed stream with records to read again is open until its last heartbeat
            # (read again too) closes it
            shard.closed = {
                o
                for o in meta["closed"]
                if meta["committed"].get(o, 0) >= meta["consumed"].get(o, 0)
            }
            shard.ticked = meta["ticked"]
            shard.consumed = dict(meta["committed"])
            shard.committed = dict(meta["committed"])
            shard.reread_until = dict(meta["consumed"])
            shard.finished = meta["finished"]
            if meta.get("revocations") is not None:
                shard.revocations = Revocations(meta["revocations"])
        vault = shard.vault
        for key, value in records.items():
            if not key.startswith(b"c") or not value:
                continue
            case_id, state, seqs, orgs, done, share = self._unseal(key, value)
            if share is not None and shard.acc is not None:
                shard.acc.restore_case(case_id, share)
            c = shard.case(case_id)
            c.seqs, c.orgs, c.done = dict(seqs), set(orgs), done
            if done:
                vault.mark_completed(case_id)
            elif state is not None:
                vault.restore_case(state)
        if meta is not None and meta["watermark"] is not None:
            vault.tick(_from_us(meta["watermark"]))
        return shard

    # -- the batch ------------------------------------------------------------------------
    def process(self, records: Mapping[TopicPartition, list[Any]]) -> _Outputs:
        """Open, guard, merge and apply one batch; returns the outputs to publish."""
        out = _Outputs()
        stats = self.stats
        now = time.monotonic()
        for tp, recs in records.items():
            org = self._topic_org.get(tp.topic)
            shard = self.shards.get(tp.partition)
            if org is None or shard is None:
                continue
            if not recs:
                continue
            out.records_in[org] = out.records_in.get(org, 0) + len(recs)
            stats.records += len(recs)
            shard.consumed[org] = recs[-1].offset + 1
            shard.heard[org] = now
            shard.meta_changed = True
            for r in recs:
                self._open_one(shard, org, tp.topic, r)
        for shard in self.shards.values():
            self._drain(shard, out)
        return out

    def _open_one(self, shard: Shard, org: str, topic: str, r: Any) -> None:
        stats = self.stats
        try:
            header, plaintext = self.opener.open(r.value, topic=topic)
            if header.org != org:
                raise RejectedRecord("unknown_org", "record of another organization's topic")
            kind, order, sent_us, body = decode_frame(plaintext)
            if kind == HEARTBEAT:
                wm, closed = decode_heartbeat(body)
                shard.heartbeat(org, (wm, order, org), closed)
                stats.heartbeats += 1
                return
            if kind == REVOKE:
                self._file_revocation(shard, org, r.offset, body)
                return
            if kind != EVENT:
                raise RejectedRecord("malformed", f"unknown frame kind {kind}")
            try:
                ev = codec.decode(body)
            except Exception:
                raise RejectedRecord("malformed", "undecodable event") from None
        except RejectedRecord as exc:
            stats.rejected[exc.reason] = stats.rejected.get(exc.reason, 0) + 1
            return
        shard.offer(org, r.offset, header.session, header.sequence, order, sent_us, ev)

    def _file_revocation(self, shard: Shard, org: str, offset: int, body: bytes) -> None:
        """Verify a ``REVOKE`` frame's revocation and queue it for the merge."""
        from .revocation import verify_revocation

        try:
            revocation = verify_revocation(body, self._signers)
        except SignatureError as exc:
            log.warning("refused a revocation in %s's stream: %s", org, exc)
            raise RejectedRecord("bad_signature", str(exc)) from None
        except InputError as exc:
            raise RejectedRecord("malformed", str(exc)) from None
        if revocation.org != org:
            raise RejectedRecord("unknown_org", "revocation of another organization")
        shard.file_revocation(org, offset, revocation)
        shard.meta_changed = True

    def _revoke(self, shard: Shard, revocation: Revocation, out: _Outputs) -> None:
        """Apply one revocation to the shard and acknowledge it to its organization."""
        from .revocation import to_revoked

        outcome = apply_revocation(
            to_revoked(revocation), shard.revocations, shard.vault, shard.acc
        )
        case = revocation.case
        if outcome.new:
            self.stats.revocations += 1
            if case is not None:
                shard.cases.pop(case, None)
                shard.changed.discard(case)
                shard.forgotten.add(case)
        item: dict[str, Any] = {
            "type": "revocation",
            "id": revocation.id,
            "status": "applied" if outcome.new else "repeated",
            "partition": shard.partition,
            "partitions": self.settings.partitions,
            "state_dropped": outcome.forgot,
        }
        body = revocation.to_dict()
        for k in ("case", "resource", "time_from", "time_to"):
            if k in body:
                item[k] = body[k]
        out.add((revocation.org,), item)
        shard.meta_changed = True

    def _drain(self, shard: Shard, out: _Outputs) -> None:
        """Apply, in merge order, every buffered event (and revocation) the frontier lets
        through."""
        frontier, all_closed = shard.frontier()
        revoking = shard.revoking
        moved = False
        while revoking and revoking[0][:3] <= frontier:
            # the events that sort at or before the revocation first
            moved = self._apply(shard, out, revoking[0][:3]) or moved
            self._revoke(shard, heapq.heappop(revoking)[4], out)
            moved = True
        moved = self._apply(shard, out, frontier) or moved
        self._after_apply(shard, out, frontier, all_closed, moved)

    def _apply(self, shard: Shard, out: _Outputs, frontier: tuple[int, int, str]) -> bool:
        """Apply the buffered events up to ``frontier`` in merge order; whether any was."""
        buf = shard.buffer
        vault, acc = shard.vault, shard.acc
        stats = self.stats
        clock = time.perf_counter_ns
        partials = out.partials
        engine, sent = out.engine_ns, out.sent_us
        drops = shard.revocations.drops if shard.revocations else None
        moved = False
        while buf and buf[0][:3] <= frontier:
            ts_us, order, org, offset, session, seq, sent_us, ev = heapq.heappop(buf)
            waiting = shard.waiting[org]
            if waiting[0] == offset:
                waiting.popleft()
            else:  # (not expected: an organization's records leave in offset order)
                waiting.remove(offset)
            moved = True
            key = (ts_us, order, org)
            if key <= shard.released:
                stats.late += 1
            else:
                shard.released = key
            if drops is not None and drops(ev):
                stats.revoked_events += 1
                continue
            case_id = ev.case_id
            c = shard.case(case_id)
            if seq <= c.seqs.get(session, -1):
                if offset < shard.reread_until.get(org, 0):
                    stats.redelivered += 1
                else:
                    stats.rejected["replay"] += 1
                continue
            c.seqs[session] = seq
            c.orgs.add(org)
            t0 = clock()
            up = vault.update(ev)
            t1 = clock()
            stats.engine_ns += t1 - t0
            engine.append(t1 - t0)
            sent.append(sent_us)
            stats.applied += 1
            shard.changed.add(case_id)
            if acc is not None:
                idx = acc.clock.index(ev.timestamp)
                if sent_us > shard.pane_sent.get(idx, 0):
                    shard.pane_sent[idx] = sent_us
                partials.extend(self._partials(shard, acc.observe(ev, up)))
            if up:
                self._collect(shard, up, out, sent_us)
            if ev.kind == _CASE_END and not c.done and not vault.is_active(case_id):
                c.done = True  # ended without a result (only placeholders): as the vault has it
        return moved

    def _after_apply(
        self,
        shard: Shard,
        out: _Outputs,
        frontier: tuple[int, int, str],
        all_closed: bool,
        moved: bool,
    ) -> None:
        """Move event time to the frontier: deadlines, idle cases, panes; the end."""
        buf = shard.buffer
        vault, acc = shard.vault, shard.acc
        partials = out.partials
        if frontier < _INF and frontier > shard.ticked:
            shard.ticked = frontier
            moved = True
            wm = _from_us(frontier[0])
            up = vault.tick(wm)
            if up:
                self._collect(shard, up, out)
            if acc is not None:
                partials.extend(self._partials(shard, acc.observe_tick(wm, up)))
        if all_closed and not buf and not shard.finished:
            # every organization closed its stream: finish the cases and the panes
            moved = True
            up = vault.flush_update()
            self._collect(shard, up, out)
            if acc is not None:
                wm = acc.watermark
                closed = acc.observe_tick(wm, up) if wm is not None else ()
                partials.extend(self._partials(shard, (*closed, *acc.flush())))
            shard.finished = True
        elif shard.finished and not all_closed:
            shard.finished = False  # an organization reopened its stream
            moved = True
        if moved:
            shard.meta_changed = True

    def _partials(self, shard: Shard, panes: Iterable[PaneAggregate]) -> list[Partial]:
        """The partials of panes the shard's accumulator closed."""
        n, sent = self.settings.partitions, shard.pane_sent
        return [Partial(shard.partition, n, a, sent.pop(a.index, 0)) for a in panes]

    def _collect(self, shard: Shard, up: Update, out: _Outputs, sent_us: int | None = None) -> None:
        """Queue an update's findings for the organizations of their cases. ``sent_us``: when
        the agent sent the event that caused them (its organizations measure latency with
        it); ``None`` for what event time alone caused (deadlines, idle cases, the end)."""
        stamp = {} if sent_us is None else {"sent_us": sent_us}
        for d in up.deviations:
            out.add(shard.case(d.case_id).orgs, {**_deviation_item(d), **stamp})
        for a in up.alerts:
            shard.changed.add(a.case_id)
            out.add(shard.case(a.case_id).orgs, {**_alert_item(a), **stamp})
            self.stats.alerts += 1
        for r in up.completed:
            c = shard.case(r.case_id)
            c.done = True
            shard.changed.add(r.case_id)
            out.add(c.orgs, {**_case_item(r), **stamp})
            self.stats.completed += 1

    def _cases_changed(self) -> bool:
        """Whether any shard has case state to write (changed or forgotten cases)."""
        return any(shard.changed or shard.forgotten for shard in self.shards.values())

    def state_records(self) -> list[tuple[int, bytes, bytes]]:
        """``(partition, key, sealed value)`` for every changed case and shard metadata."""
        recs: list[tuple[int, bytes, bytes]] = []
        for shard in self.shards.values():
            vault, acc = shard.vault, shard.acc
            for case_id in shard.forgotten:
                recs.append((shard.partition, self._case_key(case_id), None))  # type: ignore[arg-type]
            shard.forgotten.clear()
            for case_id in shard.changed:
                c = shard.cases[case_id]
                state: CaseState | None = None
                if not c.done:
                    if vault.is_active(case_id):
                        state = vault.snapshot_case(case_id)
                    elif vault.is_completed(case_id):
                        c.done = True  # an event after its completion: the case stays ended
                # else only the replay guard: a completed case, or one the vault keeps no state
                # for (so far only placeholders: they count in the panes, so a re-read after a
                # restart must find them applied)
                # the case's share of the pane accumulator lives here, not in the shard's
                # metadata: a batch writes what it touched, not every active case
                share = acc.case_state(case_id) if acc is not None else None
                key = self._case_key(case_id)
                value = (case_id, state, c.seqs, sorted(c.orgs), c.done, share)
                recs.append((shard.partition, key, self._seal(key, value)))
                if c.done:
                    del shard.cases[case_id]
            shard.changed.clear()
            resume = shard.resume_offsets()
            if resume != shard.committed:
                shard.committed = resume
                shard.meta_changed = True
            if shard.meta_changed:
                wm = vault.state().watermark
                meta = {
                    "sources": shard.sources,
                    "closed": sorted(shard.closed),
                    "released": shard.released,
                    "ticked": shard.ticked,
                    "consumed": shard.consumed,
                    "committed": shard.committed,
                    "finished": shard.finished,
                    "watermark": _us(wm) if wm is not None else None,
                    "acc": acc.shared_snapshot() if acc is not None else None,
                    "revocations": shard.revocations.snapshot(),
                }
                key = self._meta_key(shard.partition)
                recs.append((shard.partition, key, self._seal(key, meta)))
                shard.meta_changed = False
        return recs

    def offsets(self) -> dict[TopicPartition, int]:
        """The offsets to commit (as :meth:`state_records` left them in the shards' metadata):
        never past an event still waiting in a merge buffer."""
        from aiokafka import TopicPartition

        offs: dict[TopicPartition, int] = {}
        for p, shard in self.shards.items():
            for org, offset in shard.committed.items():
                offs[TopicPartition(self.settings.topics.events(org), p)] = offset
        return offs

    # -- the Kafka loop -------------------------------------------------------------------
    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        """Consume, process and commit until :meth:`stop` (or cancellation)."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.abc import ConsumerRebalanceListener
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor

        from .kafka_io import ensure_topics

        s = self.settings
        topics = [s.topics.events(o) for o in self.orgs]
        await ensure_topics(s.bootstrap, [*topics, s.topics.changelog], partitions=s.partitions)
        await ensure_topics(
            s.bootstrap, [s.topics.partials, *(s.topics.alerts(o) for o in self.orgs)]
        )
        worker = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                async with worker._lock:
                    worker._generation += 1
                    log.info("revoked partitions %s", sorted({tp.partition for tp in revoked}))
                    for p in {tp.partition for tp in revoked}:
                        worker.shards.pop(p, None)
                        if worker.metrics is not None:
                            worker.metrics.forget_partition(p)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                async with worker._lock:
                    worker._generation += 1
                    new = {tp.partition for tp in assigned} - set(worker.shards)
                    await worker._restore(new)
                    await worker._seek_to_state(consumer, assigned)
                    log.info(
                        "assigned partitions %s (restored %d cases)",
                        sorted({tp.partition for tp in assigned}),
                        sum(worker.shards[p].vault.state().active_cases for p in new),
                    )

        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap,
            transactional_id=f"{s.topics.prefix}procvault-vault/{s.worker_id}",
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=512 * 1024,
            transaction_timeout_ms=s.transaction_timeout_ms,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            group_id=s.topics.prefix + s.group,
            client_id=s.worker_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(s.session_timeout_ms // 5, 100),
            max_poll_records=s.batch_records,
            fetch_max_wait_ms=s.batch_ms,
        )
        try:
            await producer.start()
            await consumer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise KafkaSetupError(f"cannot reach Kafka at {s.bootstrap}: {exc}") from None
        self._producer, self._consumer = producer, consumer
        consumer.subscribe(topics, listener=Listener())
        if ready is not None:
            ready()
        try:
            while not self._stopping.is_set():
                generation = self._generation
                records = await consumer.getmany(timeout_ms=s.batch_ms, max_records=s.batch_records)
                async with self._lock:
                    if generation != self._generation:
                        # A rebalance ran while we fetched: these records may predate the
                        # restore's seek. Nothing was processed since the restore, so drop
                        # them and seek again to where the restored state resumes.
                        records = {}
                        await self._seek_to_state(consumer, consumer.assignment())
                    await self._commit_batch(producer, records)
            async with self._lock:  # what deferred metadata is left
                await self._commit_batch(producer, {}, force=True)
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await consumer.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await producer.stop()

    async def _commit_batch(
        self, producer: AIOKafkaProducer, records: Any, *, force: bool = False
    ) -> None:
        s = self.settings
        # records of partitions revoked while we waited are dropped: read again by their owner
        records = {tp: r for tp, r in records.items() if tp.partition in self.shards}
        t0 = time.perf_counter()
        before = copy.deepcopy(self.stats)
        self._mark_lagging()
        out = self.process(records)
        if not out.per_org and not out.partials and not self._cases_changed():
            # only merge positions moved: commit them now and then, not per batch
            due = time.monotonic() - self._last_commit >= s.idle_commit_s
            if not force and not due:
                return
        state = self.state_records()
        if not records and not state and not out.per_org and not out.partials:
            return
        offsets = self.offsets()
        keys = self.secrets.current
        await producer.begin_transaction()
        try:
            send = producer.send
            for partition, key, value in state:
                await send(s.topics.changelog, value, key=key, partition=partition)
            for org, items in out.per_org.items():
                topic = s.topics.alerts(org)
                # a batch can finish thousands of cases: records stay far below Kafka's 1 MB
                for i in range(0, len(items), _ITEMS_PER_RECORD):
                    body = _JSON(items[i : i + _ITEMS_PER_RECORD])
                    sealed = seal_result(self.registry.orgs[org], body, topic=topic, keys=keys)
                    await send(topic, sealed)
            for partial in out.partials:
                k, v = seal_partial(self.secrets.state_key, partial)
                await send(s.topics.partials, v, key=k)
                self.stats.partials += 1
            # The offsets a restart resumes from are in each shard's sealed metadata, written
            # in this transaction; the group's own offsets (what lag tools read) ride along
            # at most every ``idle_commit_s``: two round trips fewer for most batches.
            now = time.monotonic()
            if offsets and (force or now - self._last_offsets >= s.idle_commit_s):
                await producer.send_offsets_to_transaction(offsets, s.topics.prefix + s.group)
                self._last_offsets = now
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise
        self._last_commit = time.monotonic()
        self.stats.batches += 1
        if out.engine_ns:
            now = time.time()
            if self.stats.first_applied is None:
                self.stats.first_applied = now
            self.stats.last_applied = now
        self._observe(out, before, time.perf_counter() - t0, state)

    def _observe(
        self, out: _Outputs, before: WorkerStats, seconds: float, state: list[Any]
    ) -> None:
        """Export one committed batch to the metrics and the run recorder (once per batch)."""
        m, rec = self.metrics, self.recorder
        now_us = time.time_ns() // 1000
        if rec is not None and out.sent_us:
            rec.events(out.sent_us, now_us)
            rec.count(len(out.sent_us))
        if m is None:
            return
        st = self.stats
        for org, n in out.records_in.items():
            m.events_in(org, n)
        m.events_applied(st.applied - before.applied)
        for reason, n in st.rejected.items():
            if n > before.rejected.get(reason, 0):
                m.events_rejected(reason, n - before.rejected.get(reason, 0))
        if st.late > before.late:
            m.events_rejected("late", st.late - before.late)
        if out.engine_ns:
            m.observe_engine(out.engine_ns, unit=1e-9)
            m.observe_latency("applied", [now_us - t for t in out.sent_us], unit=1e-6)
        m.batch_done(seconds)
        m.alerts_sent(st.alerts - before.alerts)
        m.cases_completed(st.completed - before.completed)
        active = 0
        for shard in self.shards.values():
            active += shard.vault.state().active_cases
        m.set_active_cases(active)
        if state:
            self._record_bytes = sum(len(v or b"") for _, _, v in state) / len(state)
        m.set_state_bytes(int(self._record_bytes * active))
        self._observe_lag()

    def _highwaters(self) -> Iterator[tuple[int, Shard, str, int | None]]:
        """``(partition, shard, org, high watermark or None)`` of every event partition held."""
        from aiokafka import TopicPartition

        consumer = self._consumer
        if consumer is None:
            return
        for p, shard in self.shards.items():
            for org in self.orgs:
                tp = TopicPartition(self.settings.topics.events(org), p)
                yield p, shard, org, consumer.highwater(tp)

    def _observe_lag(self) -> None:
        m = self.metrics
        if m is None:
            return
        lags: dict[int, int] = {}
        for p, shard, org, hw in self._highwaters():
            lag = max(0, hw - shard.consumed.get(org, 0)) if hw is not None else 0
            lags[p] = lags.get(p, 0) + lag
        for p, lag in lags.items():
            m.set_consumer_lag(p, lag)

    async def _seek_to_state(self, consumer: AIOKafkaConsumer, tps: Iterable[Any]) -> None:
        """Read again exactly from where each shard's state resumes, whatever the group's
        offset store or the fetcher's position holds (fetched records are discarded)."""
        fresh = []
        for tp in tps:
            shard = self.shards.get(tp.partition)
            org = self._topic_org.get(tp.topic)
            if shard is not None and org in shard.committed:
                consumer.seek(tp, shard.committed[org])
            else:  # nothing of it was ever committed with a state
                fresh.append(tp)
        if fresh:
            await consumer.seek_to_beginning(*fresh)

    def _mark_lagging(self) -> None:
        """An organization with records not read yet is not silent, however long ago its
        last record was read (a worker catching up must not time its sources out)."""
        if self.settings.source_timeout is None:
            return
        now = time.monotonic()
        for _p, shard, org, hw in self._highwaters():
            if hw is None or shard.consumed.get(org, 0) < hw:
                shard.heard[org] = now

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self._stopping.set()
