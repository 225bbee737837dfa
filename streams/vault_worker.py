"""The vault worker: fetch, open, engine, seal, one Kafka transaction per batch.

A worker is a member of a consumer group over the organizations' event topics
(``events.<org>``, all with ``P`` partitions). Partition ``p`` of every event topic holds the
same cases (agents place a case by a keyed hash of its id), and the range assignor gives all
of them to one worker, which hosts one
:class:`~procvault.monitor.partition.PartitionEngine` per partition number. Everything a
partition decides (the merge across organizations, the replay guard, completion, revocations,
DP contributions) is the engine's; the worker only moves bytes:

1. **fetch** a batch (closed after ``batch_records`` records or ``batch_ms``);
2. **open** each record (:class:`~.envelope.SessionOpener`: header tag, then AES-GCM, with
   the topic and partition it was read from in the associated data) into a frame, or count
   and skip it with its reason (``malformed``, ``unknown_org``, ``unknown_epoch``,
   ``bad_tag``, ``bad_signature``);
3. hand the frames to the **engine** (``begin(now)``, ``admit``, ``read_until``, ``step``);
   the engine counts what it refuses (``replay``, ``future``, ``wrong_org``);
4. **seal** what the step changed: each changed case's record and the partition's metadata
   (:mod:`.changelog`, with the commit version and the hash that detects rollback), each
   organization's findings as signed :class:`~procvault.monitor.findings.ResultBatch`
   records sealed to it, the closed panes as sealed
   :class:`~procvault.monitor.privacy.combiner.PanePartials`;
5. **one transaction per partition**, with that partition's own transactional id
   (``procvault-vault/p<p>``): its state, its outputs, its commit record (``vault.commits``,
   see :mod:`.changelog`) and its consumer offsets (never past a record still waiting in a
   merge) commit together, or not at all. A worker that takes a partition over starts that
   partition's producer (which fences any earlier owner still running: a worker expelled from
   the group without knowing it can no longer commit) *before* it restores the state.

A frame that does not continue its organization's chain (a record before it is missing) stalls
that organization in its partition (:meth:`~procvault.monitor.partition.PartitionEngine.stalled`):
the worker reads the topic partition again from where the engine says, with a back-off (0.5 s
doubling to 60 s); an organization gone silent without closing its stream is read again the
same way from where its chain ended (a record at its end may have been hidden), doubling to
10 minutes.

A batch that changed nothing but merge positions commits only after ``idle_commit_ms``.
Rejected records are counted in the metrics when they are read, whether or not their batch
commits anything; the first refusal of each kind is named in one log line (no byte sequence
read from an event topic raises out of :meth:`VaultWorker.process`).

On assignment, each partition's engine is restored from the changelog (:func:`~.changelog.restore`
refuses stale state) before any record is processed, and the event topics are read again from
the offsets committed with that state; on revocation the worker finishes its batch (the batch
lock) and drops the partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from procvault.monitor.errors import ConfigError, InputError, KafkaSetupError, SignatureError
from procvault.monitor.findings import Finding, ResultBatch, ResultsPolicy, encode_batch
from procvault.monitor.partition import (
    EventFrame,
    Heartbeat,
    Origin,
    PartitionEngine,
    PartitionSettings,
    RevocationFrame,
    decode_case,
    decode_meta,
)
from procvault.monitor.partition.state import encode_record
from procvault.monitor.privacy.combiner import PanePartials, split_partials

from . import codec
from .changelog import PartitionLog, RollbackError, StateCodec, StateKeys, restore
from .envelope import RejectedRecord, SessionOpener
from .frames import (
    EVENT,
    HEARTBEAT,
    REVOKE,
    Topics,
    decode_frame,
    decode_heartbeat,
    placement,
    seal_partials,
    seal_result,
)
from .models import DISCOVERY_TOPIC, DiscoveryPartial, seal_discovery
from .settings import option

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from procvault.monitor.privacy.panes import AccumulatorState, PaneAccumulator
    from procvault.monitor.vault import Vault

    from .secrets import Registry, VaultSecrets

__all__ = ["REASONS", "VaultWorker", "WorkerSettings", "WorkerStats"]

log = logging.getLogger("procvault.vault")

#: Why a record was not applied (metric labels: a closed set).
REASONS: Final = (
    "malformed",
    "unknown_org",
    "unknown_epoch",
    "bad_tag",
    "bad_signature",
    "replay",
    "gap",
    "old_epoch",
    "resent",
    "future",
    "wrong_org",
    "misplaced",
)
#: The engine counters folded into :class:`WorkerStats`.
_COUNTED: Final = (
    "applied",
    "heartbeats",
    "late",
    "redelivered",
    "completed",
    "alerts",
    "revocations",
    "revocations_refused",
    "revoked_events",
    "after_completion",
)
_ITEMS_PER_RECORD: Final = 500
#: ``(topic, key, value, partition)`` of a record to send (``None`` value: a tombstone).
_Record = tuple[str, bytes | None, bytes | None, int | None]
_RECORD_BYTES: Final = 200_000  # every record well below Kafka's 1 MB (and 256 KB)


@dataclass(frozen=True)
class WorkerSettings:
    """How a vault worker runs (each declared setting is also a ``procvault vault`` option;
    ``bootstrap`` and ``partitions`` are the shared ``--kafka`` and ``--partitions``)."""

    bootstrap: str
    partitions: int = 3
    topics: Topics = field(default_factory=Topics)
    group: str = "procvault-vault"
    worker_id: str = option("vault-1", help="stable name of this worker (fencing)")
    batch_records: int = option(2000, help="records per batch", minimum=1)
    batch_ms: int = option(20, help="batch time limit", unit="ms", minimum=1)
    source_timeout: float | None = option(
        30.0,
        help="an organization heard from and then silent this long stops holding the merge "
        "back (0: wait forever); one never heard from holds it until it starts",
        unit="seconds",
        none_as=0,
    )
    expect_orgs: tuple[str, ...] | None = option(
        None,
        help="comma-separated organizations the merge waits for before their first record "
        "(default: every registered organization)",
        metavar="ORGS",
    )
    max_skew: float | None = option(
        300.0,
        help="events whose time is further ahead of the clock are refused and counted (0: "
        "no limit)",
        unit="seconds",
        none_as=0,
    )
    max_lead: float = option(
        0.0, help="how far the DP panes' public clock may run ahead of the clock", unit="seconds"
    )
    session_timeout: float = option(
        10.0,
        help="consumer-group session timeout (how soon a dead worker's partitions move; the "
        "broker's minimum is 6)",
        unit="seconds",
        minimum=6,
    )
    transaction_timeout_ms: int = 15_000
    discover: bool = option(
        False,
        help="also discover the process (directly-follows graph, heuristics net, Declare) per "
        "partition and write sealed partial models for `procvault models`",
    )
    discover_every: float = option(
        30.0,
        help="how often a partition writes its partial model (also once its streams closed)",
        unit="seconds",
        minimum=0,
    )
    idle_commit_ms: float = option(
        500.0,
        help="a batch that only moved merge positions (heartbeats, events still waiting) "
        "commits once this long has passed since the last commit (0: every batch)",
        unit="ms",
        minimum=0,
    )

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError("partitions must be >= 1")
        if self.batch_records < 1 or self.batch_ms < 1:
            raise ConfigError("batch_records and batch_ms must be >= 1")
        if self.idle_commit_ms < 0:
            raise ConfigError("idle_commit_ms must be >= 0")


@dataclass
class WorkerStats:
    """Counters of one worker process (exact: for its operator, not for analysts)."""

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
    revocations: int = 0
    #: revocations of what their organization did not contribute (answered ``refused``)
    revocations_refused: int = 0
    revoked_events: int = 0
    after_completion: int = 0
    rollbacks: int = 0
    #: changelog values set aside on restore (re-produced, uncommitted or not the vault's)
    stale_state: int = 0
    first_applied: float | None = None  # wall clock (Unix s) of the first event applied
    last_applied: float | None = None  # ... and of the last one

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(vars(self))


class VaultWorker:
    """A vault worker process (see the module docstring).

    Parameters
    ----------
    settings
        How it runs.
    secrets, registry
        The vault's keys; the registered organizations and their public keys.
    make_vault
        A fresh :class:`~procvault.monitor.vault.Vault` (per partition).
    make_accumulator
        A :class:`~procvault.monitor.privacy.panes.PaneAccumulator` from its shared snapshot
        (``None``: a fresh one); ``None``: no DP panes.
    plan
        The DP plan's fingerprint, stamped on every pane partial.
    results
        What each organization receives.
    clock
        Wall clock in ns (tests inject their own).
    """

    def __init__(
        self,
        settings: WorkerSettings,
        secrets: VaultSecrets,
        registry: Registry,
        make_vault: Callable[[], Vault],
        *,
        make_accumulator: Callable[[AccumulatorState | None], PaneAccumulator] | None = None,
        plan: str | None = None,
        results: ResultsPolicy | None = None,
        metrics: Any = None,
        recorder: Any = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if make_accumulator is not None and plan is None:
            raise ConfigError("a DP accumulator needs its plan's fingerprint")
        self.settings = settings
        self.secrets = secrets
        self.registry = registry
        self.orgs = tuple(sorted(registry.orgs))
        missing = [o for o in self.orgs if o not in registry.sender]
        if missing:
            raise ConfigError(
                f"the registry has no sender key for {', '.join(missing)} (a keyring of an older "
                "procvault: create it again with `procvault keys init`)"
            )
        self.make_vault = make_vault
        self.make_accumulator = make_accumulator
        self.plan = plan
        self.results = results or ResultsPolicy()
        self.metrics = metrics
        self.recorder = recorder
        self.clock = clock
        self.stats = WorkerStats()
        self.opener = SessionOpener(dict(secrets.epochs), senders=registry.sender)
        self.state_keys = StateKeys(secrets)
        self.codec = StateCodec(self.state_keys)
        self._topic_org = {settings.topics.events(o): o for o in self.orgs}
        self._signers = registry.trusted_signers()
        self._place = _placer(secrets.placement_key, settings.partitions)
        if self._place is None:
            log.warning(
                "vault.json holds no placement key (a keyring from before it existed): a case "
                "an agent sends to two partitions is not refused and gets two sets of DP caps; "
                "'procvault keys upgrade DIR' adds it"
            )
        expect = settings.expect_orgs
        if expect is not None:
            unknown = sorted(set(expect) - set(self.orgs))
            if unknown:
                raise ConfigError(f"--expect-orgs names unregistered organizations: {unknown}")
        self._expect = frozenset(expect) if expect is not None else None
        self.engines: dict[int, PartitionEngine] = {}
        self.logs: dict[int, PartitionLog] = {}
        self._lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._producers: dict[int, AIOKafkaProducer] = {}
        #: partitions read from or changed since their last commit
        self._dirty_parts: set[int] = set()
        #: ``(partition, org) -> (when due, attempts, chain head when planned)``: reads of a
        #: topic partition again
        self._rereads: dict[tuple[int, str], tuple[float, int, tuple[int, int]]] = {}
        self._stopping = asyncio.Event()
        self._last_commit = 0.0
        self._last_offsets = 0.0
        self._generation = 0
        self._seen_counters: dict[int, dict[str, int]] = {}
        #: per partition, when its discovery partial was last written (clock, ns)
        self._discovered: dict[int, int] = {}
        #: partitions whose partial since their streams closed was written
        self._discovered_final: set[int] = set()
        self._logged_reasons: set[str] = set()  # refusal kinds already named in the log
        #: the furthest the consumer has fetched per event topic partition (_mark_lagging)
        self._fetched: dict[TopicPartition, int] = {}

    # -- partitions -------------------------------------------------------------------------
    def partition_settings(self, partition: int) -> PartitionSettings:
        """The engine settings of ``partition``."""
        s = self.settings
        return PartitionSettings(
            partition=partition,
            orgs=self.orgs,
            partitions=s.partitions,
            expect=self._expect,
            source_timeout_us=None if s.source_timeout is None else int(s.source_timeout * 1e6),
            max_skew_us=None if s.max_skew is None else int(s.max_skew * 1e6),
            max_lead_us=int(s.max_lead * 1e6),
            results=self.results,
        )

    def restore_partition(
        self,
        partition: int,
        values: Iterable[tuple[bytes | None, bytes | None]],
        commits: Iterable[bytes | None],
    ) -> None:
        """Rebuild ``partition``'s engine from its changelog (``(key, value)`` in log order)
        and its newest commit records (:func:`~.changelog.restore`): stale or foreign values
        are set aside, counted and named in a log line; raises
        :class:`~.changelog.RollbackError` (counted) if what is left is not what the
        partition last committed."""
        try:
            found = restore(self.codec, partition, values, commits)
        except RollbackError:
            self.stats.rollbacks += 1
            if self.metrics is not None:
                self.metrics.rollback_detected()
            raise
        if found.stale or found.foreign:
            self.stats.stale_state += found.stale + found.foreign
            if self.metrics is not None:
                self.metrics.rollback_detected()
            log.warning(
                "partition %d: set aside %d changelog value(s) older than what the partition "
                "committed or of a transaction that did not commit, and %d the vault did not "
                "write: restored what the last commit holds",
                partition,
                found.stale,
                found.foreign,
            )
        meta = decode_meta(found.meta) if found.meta is not None else None
        cases = [decode_case(body) for body in found.cases]
        self.engines[partition] = PartitionEngine.restore(
            self.partition_settings(partition),
            self.make_vault(),
            meta,
            cases,
            accumulator=self.make_accumulator,
            stopwatch=time.perf_counter_ns if self.metrics is not None else None,
            now_us=self.clock() // 1000,
            discovery=_tracker if self.settings.discover else None,
            place=self._place,
        )
        self.logs[partition] = found.log
        eng = self.engines[partition]
        for org in self.orgs:
            epoch = eng.lane_epoch(org)
            if epoch and epoch not in self.secrets.epochs and org not in eng.closed:
                log.warning(
                    "partition %d: %s's stream was last sealed under key epoch %d, which this "
                    "vault no longer holds: its records from there cannot be read and its "
                    "stream will stall; keep an epoch (`procvault keys rotate --keep`) until "
                    "every agent has moved to a newer one",
                    partition,
                    org,
                    epoch,
                )
        counters = eng.counters  # (counts of earlier runs: not this one's)
        self._seen_counters[partition] = {f: getattr(counters, f) for f in _COUNTED}

    # -- a batch ----------------------------------------------------------------------------
    def process(self, records: Mapping[TopicPartition, list[Any]]) -> dict[int, Any]:
        """Open and admit one batch and step every partition's engine; the effects per
        partition."""
        now = self.clock() // 1000
        for eng in self.engines.values():
            eng.begin(now)
        rejected: dict[str, int] = {}
        read: dict[str, int] = {}
        for tp, recs in records.items():
            org = self._topic_org.get(tp.topic)
            found = self.engines.get(tp.partition)
            if org is None or found is None or not recs:
                continue
            eng = found
            read[org] = read.get(org, 0) + len(recs)
            self.stats.records += len(recs)
            for r in recs:
                reason = self._admit(eng, org, tp, r)
                if reason is not None and reason != "redelivered":
                    rejected[reason] = rejected.get(reason, 0) + 1
            eng.read_until(org, recs[-1].offset + 1)
            self._dirty_parts.add(tp.partition)
        for reason, n in rejected.items():
            self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + n
            if reason == "bad_signature":
                log.warning("refused %d revocation(s) with a bad signature", n)
            elif reason not in self._logged_reasons:  # one line per kind, then counted only
                self._logged_reasons.add(reason)
                log.warning(
                    "refused %d record(s) of the event topics (%s); further ones of this kind "
                    "are counted (worker stats, metrics), not logged",
                    n,
                    reason,
                )
        if self.metrics is not None:
            for org, n in read.items():
                self.metrics.records_in(org, n)
            for reason, n in rejected.items():
                self.metrics.records_rejected(reason, n)
        effects = {}
        for p, eng in self.engines.items():
            eff = eng.step()
            for kind, org in eff.notices:
                if kind == "source_silent":
                    log.warning(
                        "partition %d: %s is silent: it no longer holds the merge back; its "
                        "later events are applied late and the cases running meanwhile are "
                        "flagged",
                        p,
                        org,
                    )
                elif kind == "source_back":
                    log.info("partition %d: %s is back", p, org)
                elif kind == "source_gap":
                    log.warning(
                        "partition %d: a record of %s's stream is missing (a frame did not "
                        "continue its chain): its stream waits there while its topic is read "
                        "again",
                        p,
                        org,
                    )
                else:
                    log.info("partition %d: waiting for %s (nothing of it read yet)", p, org)
                if self.metrics is not None:
                    self.metrics.source_notice(kind)
            effects[p] = eff
            if eff:
                self._dirty_parts.add(p)
            self._plan_rereads(p, eng)
        self._fold(effects)
        return effects

    def _plan_rereads(self, partition: int, eng: PartitionEngine) -> None:
        """Schedule reading again what a stalled or a silent, unclosed organization may be
        missing (see the module docstring); forget the schedule of those that recovered."""
        now = time.monotonic()
        stalled = eng.stalled()
        quiet = eng.silent - eng.closed
        for org in self.orgs:
            key = (partition, org)
            planned = self._rereads.get(key)
            if org in stalled or org in quiet:
                if planned is None:
                    delay = 0.5 if org in stalled else 1.0
                    self._rereads[key] = (now + delay, 0, eng.chain_head(org))
            elif planned is not None and planned[2] != eng.chain_head(org):
                del self._rereads[key]  # its chain moved on

    def due_rereads(self, now: float) -> list[tuple[int, str, int]]:
        """``(partition, org, offset)`` of the reads again due at ``now`` (monotonic s);
        each is rescheduled with its back-off, and the engine told (0: from the start of the
        log)."""
        out = []
        for (p, org), (due, attempt, head) in list(self._rereads.items()):
            eng = self.engines.get(p)
            if eng is None:
                del self._rereads[(p, org)]
                continue
            stalled = eng.stalled()
            if due > now or (org not in stalled and org not in eng.silent - eng.closed):
                continue
            if org in stalled:
                offset = stalled[org]
                wait = min(60.0, 0.5 * 2 ** (attempt + 1))
            else:  # silent without closing: from where its chain ended, then from the start
                offset = eng.chain_end(org) if attempt % 2 == 0 else 0
                wait = min(600.0, 1.0 * 2 ** (attempt + 1))
            eng.reread(org)
            self._rereads[(p, org)] = (now + wait, attempt + 1, head)
            out.append((p, org, offset))
        return out

    def _admit(self, eng: PartitionEngine, org: str, tp: Any, r: Any) -> str | None:
        try:
            header, plaintext = self.opener.open(r.value, topic=tp.topic, partition=tp.partition)
            if header.org != org:
                raise RejectedRecord("unknown_org", "record of another organization's topic")
            kind, order, sent_us, prev, body = decode_frame(plaintext)
            origin = Origin(
                org,
                header.producer,
                header.generation,
                header.sequence,
                r.offset,
                prev,
                header.epoch,
            )
            if kind == EVENT:
                try:
                    ev = codec.decode(body)
                except Exception:
                    raise RejectedRecord("malformed", "undecodable event") from None
                return eng.admit(EventFrame(origin, order, sent_us, ev))
            if kind == HEARTBEAT:
                wm, closed = decode_heartbeat(body)
                return eng.admit(Heartbeat(origin, wm, order, closed, sent_us))
            if kind == REVOKE:
                return eng.admit(RevocationFrame(origin, self._revocation(org, body)))
            raise RejectedRecord("malformed", f"unknown frame kind {kind}")
        except RejectedRecord as exc:
            return exc.reason
        except TypeError:  # a value that is not bytes
            return "malformed"

    def _revocation(self, org: str, body: bytes) -> Any:
        from .revocation import to_revoked, verify_revocation

        try:
            revocation = verify_revocation(body, self._signers)
        except SignatureError as exc:
            raise RejectedRecord("bad_signature", str(exc)) from None
        except InputError as exc:
            raise RejectedRecord("malformed", str(exc)) from None
        if revocation.org != org:
            raise RejectedRecord("unknown_org", "revocation of another organization")
        return to_revoked(revocation)

    def outputs(
        self, effects: Mapping[int, Any], partitions: Iterable[int] | None = None
    ) -> list[tuple[str, bytes | None, bytes | None, int | None]]:
        """Everything one commit writes for ``partitions`` (default: every partition held),
        in one list (see :meth:`outputs_by_partition`)."""
        by_part = self.outputs_by_partition(effects, partitions)
        return [r for p in sorted(by_part) for r in by_part[p]]

    def outputs_by_partition(
        self, effects: Mapping[int, Any], partitions: Iterable[int] | None = None
    ) -> dict[int, list[tuple[str, bytes | None, bytes | None, int | None]]]:
        """Per partition, ``(topic, key, value, partition)`` of what its transaction writes:
        the changed case records and the metadata (sealed at the partition's next commit
        version), its commit record, the findings per organization, the pane partials."""
        topics = self.settings.topics
        keys = self.secrets.current
        parts = sorted(self.engines if partitions is None else partitions)
        result: dict[int, list[_Record]] = {}
        for p in parts:
            eng = self.engines[p]
            out: list[_Record] = []
            result[p] = out
            eff = effects.get(p)
            plog = self.logs[p]
            commit = plog.begin()
            if eff is not None:
                for case_id in eff.forgotten:
                    key = self.codec.case_key(case_id)
                    out.append((topics.changelog, key, self.codec.delete_case(plog, key), p))
                for case_id in sorted(eff.changed):
                    key = self.codec.case_key(case_id)
                    rec = eng.case_record(case_id)
                    if rec is None:
                        deletion = self.codec.delete_case(plog, key)
                        out.append((topics.changelog, key, deletion, p))
                    else:
                        value = self.codec.seal_case(plog, key, encode_record(rec))
                        out.append((topics.changelog, key, value, p))
            meta = self.codec.seal_meta(plog, encode_record(eng.meta()))
            out.append((topics.changelog, self.codec.meta_key(p), meta, p))
            out.append((topics.commits, self.codec.commit_key(p), self.codec.seal_commit(plog), p))
            if eng.discovery is not None and self._discovery_due(p, eng, eff):
                partial = DiscoveryPartial(
                    p, self.settings.partitions, commit, eng.finished, eng.discovery.counts()
                )
                k, v = seal_discovery(self.state_keys, partial)
                out.append((topics.prefix + DISCOVERY_TOPIC, k, v, None))
            if eff is None:
                continue
            for org, items in eff.findings.items():
                pub = self.registry.orgs.get(org)
                if pub is None:
                    continue
                topic = topics.alerts(org)
                for chunk, part in enumerate(_chunks(items)):
                    body = encode_batch(ResultBatch(p, commit, chunk, part))
                    out.append((topic, None, seal_result(pub, body, topic=topic, keys=keys), None))
            if eff.panes and self.plan is not None:
                for partials in self._partials(p, eff.panes):
                    k, v = seal_partials(self.state_keys, partials)
                    out.append((topics.partials, k, v, None))
        return result

    def _discovery_due(self, partition: int, eng: PartitionEngine, eff: Any) -> bool:
        """Whether ``partition``'s commit also writes its discovery partial: when cases
        changed and ``discover_every`` seconds have passed, when its streams have just
        closed, and at every commit that changed cases after that."""
        now = self.clock()
        changed = eff is not None and bool(eff.changed)
        last = self._discovered.get(partition)
        if eng.finished:
            due = changed or partition not in self._discovered_final
            self._discovered_final.add(partition)
        else:
            every = int(self.settings.discover_every * 1e9)
            due = changed and (last is None or now - last >= every)
        if due:
            self._discovered[partition] = now
        return due

    def _partials(self, partition: int, panes: list[tuple[Any, int]]) -> Iterable[PanePartials]:
        """The closed panes as partials records, each well below Kafka's record limit."""
        assert self.plan is not None
        n = self.settings.partitions
        acc = self.engines[partition].accumulator
        first_pane = acc.first_pane if acc is not None else None
        yield from split_partials(
            partition, n, self.plan, panes, first_pane, record_bytes=_RECORD_BYTES
        )

    def offsets(self, partition: int | None = None) -> dict[TopicPartition, int]:
        """The consumer offsets to commit (of ``partition``, default every one held): never
        past a record still waiting in a merge."""
        from aiokafka import TopicPartition

        offs: dict[TopicPartition, int] = {}
        for p, eng in self.engines.items():
            if partition is not None and p != partition:
                continue
            for org, offset in eng.resume_offsets().items():
                offs[TopicPartition(self.settings.topics.events(org), p)] = offset
        return offs

    # -- the Kafka loop ---------------------------------------------------------------------
    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        """Consume, process and commit until :meth:`stop` (or cancellation)."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.abc import ConsumerRebalanceListener
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor

        from .kafka_io import ensure_topics

        s = self.settings
        topics = [s.topics.events(o) for o in self.orgs]
        await ensure_topics(s.bootstrap, topics, partitions=s.partitions)
        await ensure_topics(
            s.bootstrap,
            [s.topics.changelog, s.topics.commits],
            partitions=s.partitions,
            compacted=True,
        )
        await ensure_topics(
            s.bootstrap, [s.topics.partials, *(s.topics.alerts(o) for o in self.orgs)]
        )
        if s.discover:
            await ensure_topics(s.bootstrap, [s.topics.prefix + DISCOVERY_TOPIC], compacted=True)
        worker = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                async with worker._lock:
                    worker._generation += 1
                    parts = sorted({tp.partition for tp in revoked})
                    log.info("revoked partitions %s", parts)
                    for p in parts:
                        await worker._drop(p)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                async with worker._lock:
                    worker._generation += 1
                    new = {tp.partition for tp in assigned} - set(worker.engines)
                    # fence any earlier owner of these partitions first, then read their state
                    await asyncio.gather(*(worker._start_producer(p) for p in sorted(new)))
                    await worker._restore(new)
                    await worker._check_anchor(consumer, new)
                    await worker._seek_to_state(consumer, assigned)
                    log.info(
                        "assigned partitions %s (restored %d cases)",
                        sorted({tp.partition for tp in assigned}),
                        sum(worker.engines[p].active_cases() for p in new),
                    )

        session_ms = int(s.session_timeout * 1000)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            group_id=s.topics.prefix + s.group,
            client_id=s.worker_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(session_ms // 5, 100),
            max_poll_records=s.batch_records,
            fetch_max_wait_ms=s.batch_ms,
        )
        try:
            await consumer.start()
        except Exception as exc:
            raise KafkaSetupError(f"cannot reach Kafka at {s.bootstrap}: {exc}") from None
        self._consumer = consumer
        consumer.subscribe(topics, listener=Listener())
        if ready is not None:
            ready()
        try:
            while not self._stopping.is_set():
                generation = self._generation
                await self._reread_due(consumer)
                records = await consumer.getmany(timeout_ms=s.batch_ms, max_records=s.batch_records)
                async with self._lock:
                    if generation != self._generation:
                        # A rebalance ran while we fetched: these records may predate the
                        # restore's seek. Nothing was processed since the restore, so drop
                        # them and seek again to where the restored state resumes.
                        records = {}
                        await self._seek_to_state(consumer, consumer.assignment())
                    await self._commit_batch(records)
            async with self._lock:  # what deferred metadata is left
                await self._commit_batch({}, force=True)
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await consumer.stop()
            for p in list(self._producers):
                await self._drop(p)

    def _producer_for(self, partition: int) -> AIOKafkaProducer:
        from aiokafka import AIOKafkaProducer

        s = self.settings
        return AIOKafkaProducer(
            bootstrap_servers=s.bootstrap,
            # one transactional id per partition: whoever holds the partition holds the id,
            # and starting it fences (and aborts the open transaction of) an earlier holder
            transactional_id=f"{s.topics.prefix}procvault-vault/p{partition}",
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=512 * 1024,
            transaction_timeout_ms=s.transaction_timeout_ms,
        )

    async def _start_producer(self, partition: int) -> None:
        producer = self._producer_for(partition)
        try:
            await producer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise KafkaSetupError(
                f"cannot start the producer of partition {partition} at "
                f"{self.settings.bootstrap}: {exc}"
            ) from None
        self._producers[partition] = producer

    async def _drop(self, partition: int) -> None:
        """Forget ``partition``: its engine, its log, its producer."""
        self.engines.pop(partition, None)
        self.logs.pop(partition, None)
        self._dirty_parts.discard(partition)
        self._discovered.pop(partition, None)
        self._discovered_final.discard(partition)
        for key in [k for k in self._rereads if k[0] == partition]:
            del self._rereads[key]
        producer = self._producers.pop(partition, None)
        if producer is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await producer.stop()
        if self.metrics is not None:
            self.metrics.forget_partition(partition)

    async def _reread_due(self, consumer: AIOKafkaConsumer) -> None:
        """Seek back the topic partitions due to be read again (see :meth:`due_rereads`)."""
        from aiokafka import TopicPartition

        if not self._rereads:
            return
        async with self._lock:  # (no rebalance between planning and seeking)
            for p, org, offset in self.due_rereads(time.monotonic()):
                tp = TopicPartition(self.settings.topics.events(org), p)
                if tp not in consumer.assignment():
                    continue
                log.info("partition %d: reading %s's records again from offset %d", p, org, offset)
                if offset <= 0:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)

    async def _commit_batch(self, records: Any, *, force: bool = False) -> None:
        s = self.settings
        # records of partitions revoked while we waited are dropped: read again by their owner
        records = {tp: r for tp, r in records.items() if tp.partition in self.engines}
        t0 = time.perf_counter()
        await self._mark_lagging()
        effects = self.process(records)
        if not self.engines:
            return
        now = time.monotonic()
        due = now - self._last_commit >= s.idle_commit_ms / 1000
        # only merge positions moved: commit them now and then, not per batch (until then the
        # last commit's state and offsets stay together; a restart reads the records since
        # again)
        if not any(effects.values()) and (not (force or due) or not self._dirty_parts):
            return
        parts = sorted(p for p in self._dirty_parts if p in self.engines)
        if not parts:
            return
        by_part = self.outputs_by_partition(effects, parts)
        with_offsets = force or now - self._last_offsets >= s.idle_commit_ms / 1000
        results = await asyncio.gather(
            *(self._commit_partition(p, by_part[p], with_offsets) for p in parts),
            return_exceptions=True,
        )
        failed = None
        for p, res in zip(parts, results, strict=True):
            if isinstance(res, BaseException):
                from aiokafka.errors import ProducerFenced

                if isinstance(res, ProducerFenced):
                    log.warning(
                        "partition %d: another worker took it over (this worker's producer was "
                        "fenced): dropped",
                        p,
                    )
                    await self._drop(p)
                    continue
                failed = failed or res
        if failed is not None:
            raise failed
        if with_offsets:
            self._last_offsets = now
        self._last_commit = time.monotonic()
        self._dirty_parts.clear()
        self.stats.batches += 1
        out = [r for p in parts for r in by_part[p]]
        self._observe(effects, out, time.perf_counter() - t0)

    async def _commit_partition(self, partition: int, out: list[_Record], offsets: bool) -> None:
        """One partition's transaction: its records, its consumer offsets, commit."""
        producer = self._producers[partition]
        await producer.begin_transaction()
        try:
            send = producer.send
            for topic, key, value, part in out:
                await send(topic, value, key=key, partition=part)
            if offsets:
                offs = self.offsets(partition)
                if offs:
                    group = self.settings.topics.prefix + self.settings.group
                    await producer.send_offsets_to_transaction(offs, group)
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise

    def _fold(self, effects: Mapping[int, Any]) -> None:
        """Fold what the engines counted in this batch into the stats and the metrics (every
        batch: also those that commit nothing)."""
        st, m = self.stats, self.metrics
        applied = 0
        for p in effects:
            c = self.engines[p].counters
            seen = self._seen_counters.setdefault(p, {})
            for name in _COUNTED:
                value = getattr(c, name)
                delta = value - seen.get(name, 0)
                seen[name] = value
                setattr(st, name, getattr(st, name) + delta)
                if name == "applied":
                    applied += delta
                elif m is not None and name == "completed":
                    m.cases_completed(delta)
                elif m is not None and name == "alerts":
                    m.alerts_sent(delta)
        if applied:
            now = time.time()
            if st.first_applied is None:
                st.first_applied = now
            st.last_applied = now
            if m is not None:
                m.events_applied(applied)

    def _observe(self, effects: Mapping[int, Any], out: list[Any], seconds: float) -> None:
        """Export one committed batch to the metrics and the run recorder."""
        m, rec = self.metrics, self.recorder
        sent: list[int] = []
        engine_ns: list[int] = []
        for eff in effects.values():
            sent.extend(eff.sent_us)
            engine_ns.extend(eff.engine_ns)
        self.stats.partials += sum(1 for topic, *_ in out if topic == self.settings.topics.partials)
        now_us = time.time_ns() // 1000
        if rec is not None and sent:
            rec.events(sent, now_us)
            rec.count(len(sent))
        if m is None:
            return
        if engine_ns:
            m.observe_engine(engine_ns, unit=1e-9)
            m.observe_latency("applied", [now_us - t for t in sent], unit=1e-6)
        m.batch_done(seconds)
        m.set_active_cases(sum(e.active_cases() for e in self.engines.values()))
        self._observe_lag()

    def _highwaters(self) -> Iterable[tuple[int, PartitionEngine, str, int | None]]:
        """``(partition, engine, org, high watermark or None)`` of every event partition held."""
        from aiokafka import TopicPartition

        consumer = self._consumer
        if consumer is None:
            return
        for p, eng in self.engines.items():
            for org in self.orgs:
                tp = TopicPartition(self.settings.topics.events(org), p)
                yield p, eng, org, consumer.highwater(tp)

    def _observe_lag(self) -> None:
        m = self.metrics
        if m is None:
            return
        lags: dict[int, int] = {}
        for p, eng, org, hw in self._highwaters():
            done = eng.resume_offsets().get(org, 0)
            lag = max(0, hw - done) if hw is not None else 0
            lags[p] = lags.get(p, 0) + lag
        for p, lag in lags.items():
            m.set_consumer_lag(p, lag)

    async def _mark_lagging(self) -> None:
        """An organization with committed records not read yet is not silent, however long
        ago its last record was read (a worker catching up must not time its sources out).
        Measured from the furthest the consumer has fetched (it steps over transaction
        markers and aborted records; a read again does not lower it) against the last stable
        offset: a partition ending in a commit marker, or in a killed agent's transaction,
        has nothing left to read, so its organization can go silent."""
        consumer = self._consumer
        if self.settings.source_timeout is None or consumer is None:
            return
        from aiokafka import TopicPartition

        fetched = self._fetched
        now = self.clock() // 1000
        for p, eng in self.engines.items():
            eng.begin(now)  # heard now, not at the last batch (which may be long ago)
            for org in self.orgs:
                tp = TopicPartition(self.settings.topics.events(org), p)
                lso = consumer.last_stable_offset(tp)
                if lso is None or lso < 0:
                    continue
                at = max(fetched.get(tp, 0), await consumer.position(tp))
                fetched[tp] = at
                if at < lso:
                    eng.lagging(org)

    # -- restore ------------------------------------------------------------------------------
    async def _restore(self, partitions: Iterable[int]) -> None:
        """Rebuild the engines of ``partitions`` from the changelog and their newest commit
        records (committed records only)."""
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
        topics = self.settings.topics
        try:
            tps = [TopicPartition(topics.changelog, p) for p in parts]
            commit_tps = [TopicPartition(topics.commits, p) for p in parts]
            consumer.assign([*tps, *commit_tps])
            history: dict[int, list[tuple[bytes | None, bytes | None]]] = {p: [] for p in parts}
            await _read_to_end(consumer, tps, history)
            # the newest commit records: near the end (a record and a marker per transaction)
            ends = await consumer.end_offsets(commit_tps)
            begins = await consumer.beginning_offsets(commit_tps)
            commits: dict[int, list[tuple[bytes | None, bytes | None]]] = {p: [] for p in parts}
            for tp in commit_tps:
                consumer.seek(tp, max(begins[tp], ends[tp] - 256))
            await _read_to_end(consumer, commit_tps, commits, seek=False)
            missing = [tp for tp in commit_tps if not commits[tp.partition]]
            missing = [tp for tp in missing if ends[tp] - 256 > begins[tp]]
            if missing:
                await _read_to_end(consumer, missing, commits)
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await consumer.stop()
        for p in parts:
            key = self.codec.commit_key(p)
            self.restore_partition(p, history[p], [v for k, v in commits[p] if k == key])

    async def _check_anchor(self, consumer: AIOKafkaConsumer, partitions: Iterable[int]) -> None:
        """The group's committed offsets (written with some earlier commit) must not be ahead
        of where the restored state resumes: else the state is older than a commit."""
        from aiokafka import TopicPartition

        for p in partitions:
            resume = self.engines[p].resume_offsets()
            for org in self.orgs:
                tp = TopicPartition(self.settings.topics.events(org), p)
                committed = await consumer.committed(tp)
                if committed is not None and committed > resume.get(org, 0):
                    self.stats.rollbacks += 1
                    if self.metrics is not None:
                        self.metrics.rollback_detected()
                    raise RollbackError(
                        f"vault.changelog partition {p}: the state resumes {org}'s records at "
                        f"offset {resume.get(org, 0)}, but the group committed offset "
                        f"{committed} with a later state: the changelog was rolled back"
                    )

    async def _seek_to_state(self, consumer: AIOKafkaConsumer, tps: Iterable[Any]) -> None:
        """Read again exactly from where each engine's state resumes, whatever the group's
        offset store or the fetcher's position holds (fetched records are discarded)."""
        fresh = []
        for tp in tps:
            eng = self.engines.get(tp.partition)
            org = self._topic_org.get(tp.topic)
            resume = eng.resume_offsets() if eng is not None else {}
            if org is not None and org in resume:
                consumer.seek(tp, resume[org])
            else:  # nothing of it was ever committed with a state
                fresh.append(tp)
        if fresh:
            await consumer.seek_to_beginning(*fresh)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current batch."""
        self._stopping.set()


async def _read_to_end(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    into: dict[int, list[tuple[bytes | None, bytes | None]]],
    *,
    seek: bool = True,
) -> None:
    """Read ``tps`` (from the beginning, or from where they were sought) up to their end
    offsets now, appending ``(key, value)`` per partition to ``into`` in log order."""
    ends = await consumer.end_offsets(tps)
    if seek:
        await consumer.seek_to_beginning(*tps)
    pending = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=500)
        for tp, recs in batch.items():
            for r in recs:
                if r.offset < ends[tp]:
                    into[tp.partition].append((r.key, r.value))
        for tp in list(pending):
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)


def _placer(key: bytes | None, partitions: int) -> Callable[[str], int] | None:
    """The agents' placement of a case id under ``key`` (``None`` without a key)."""
    if key is None:
        return None

    def place(case_id: str) -> int:
        return placement(key, case_id, partitions)

    return place


def _tracker(state: Any) -> Any:
    """A partition's discovery tracker: restored from its shared snapshot, or fresh."""
    from procvault.monitor.discovery import DiscoveryTracker

    return DiscoveryTracker.restore(state) if state is not None else DiscoveryTracker()


def _chunks(items: list[Finding]) -> Iterable[list[Finding]]:
    """Findings in records of at most ``_ITEMS_PER_RECORD`` items (a few hundred bytes each)."""
    for i in range(0, len(items), _ITEMS_PER_RECORD):
        yield items[i : i + _ITEMS_PER_RECORD]
