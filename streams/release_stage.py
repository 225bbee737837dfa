"""The release stage: the vault workers' pane partials in, noisy signed records out, on aiokafka.

The per-pane path runs on aiokafka, as the vault worker does (faust-streaming could not carry
it: about 6-8 panes/s with its table writes, state records over 1 MB, see
``docs/release-stage.md``). The logic is :class:`~procvault.monitor.privacy.stage.ReleaseEngine`
(pure); this shell moves bytes:

1. read ``vault.partials`` (``read_committed``, from the offset the state recorded) and hand
   every record the engine (those that do not open or do not belong to this stream's DP plan
   are counted and named in one log line per kind);
2. **store** (one transaction on ``release.state``): noise the complete panes (at most
   ``max_panes_per_step``), write their records (one sealed record per pane) and the sealed
   ``head`` (combiner, ledger, tree, offsets);
3. **publish** (a later transaction: the next step's store while a backlog drains, or one of
   its own once nothing more is complete): the signed records not published yet, recomputed
   from the stored pane records (Ed25519 signatures are deterministic: the same bytes every
   time), with the ``head`` saying they were published. A record is never published in the
   transaction that stored its noise.

A crash between the two republishes the same bytes; a crash before the store re-reads the
partials and noises panes whose noise never left the enclave sealed (aborted records of the
state topic are ciphertext). The state lives on ``release.state`` under the deployment's
topic prefix, not under the application id, and the transactional id is the same for every
instance: a stage started with a new ``--app-id`` resumes the same state, and a second
instance fences the first. On start the stage also reads back the tail of
``results.aggregates``: if what was published is ahead of the state (a lost or rolled-back
state topic), it continues after it (:meth:`~procvault.monitor.privacy.stage.ReleaseEngine.recover`)
and never noises a published pane again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec

from procvault.monitor.errors import ConfigError, KafkaSetupError
from procvault.monitor.privacy.records import PaneRecord, Record, WithheldRecord
from procvault.monitor.privacy.stage import ReleaseEngine, ReleaseHead

from .changelog import StateKeys
from .envelope import RejectedRecord
from .frames import Topics, open_partials
from .release import ReleaseSignatureError, record_key, sign_record, verify_record
from .settings import option

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

    from procvault.monitor.privacy.mechanisms import Releaser
    from procvault.monitor.privacy.plan import ReleasePlan

    from .secrets import VaultSecrets

__all__ = ["ReleaseStage", "ReleaseStageSettings", "StateStore"]

log = logging.getLogger("procvault.release")

_HEAD: Final = b"head"
_CONTEXT: Final = b"procvault-release-v2|"
_HEAD_ENC: Final = msgspec.msgpack.Encoder()
_HEAD_DEC: Final = msgspec.msgpack.Decoder(ReleaseHead)
_RECORD_DEC: Final = msgspec.msgpack.Decoder(PaneRecord | WithheldRecord)
_PUBLISH_CHUNK: Final = 2000  # records per publish transaction


def _pane_key(index: int) -> bytes:
    return b"pane/%d" % index


@dataclass(frozen=True)
class ReleaseStageSettings:
    """How the release stage runs (each declared setting is also a ``procvault release``
    option; ``bootstrap`` is the shared ``--kafka``)."""

    bootstrap: str
    topics: Topics = field(default_factory=Topics)
    application_id: str = option(
        "procvault-release",
        help="names this stage's Kafka client; the state and the transactional id do not "
        "depend on it (a new id resumes the same state)",
        flag="--app-id",
    )
    max_panes_per_step: int = option(
        64,
        help="panes noised and stored per transaction (also bounds the partials held, and "
        "how long SIGTERM waits)",
        minimum=1,
        flag="--panes-per-step",
    )
    draw_threads: int | None = option(
        None,
        help="threads drawing a step's OpenDP noise in parallel, each on its own slice of the "
        "values (0: one per CPU, os.cpu_count())",
        minimum=1,
        none_as=0,
    )
    batch_records: int = option(500, help="partial records read per fetch", minimum=1)
    batch_ms: int = option(50, help="fetch wait", unit="ms", minimum=1)
    replication_factor: int = option(1, help="of the topics it creates", minimum=1)

    def __post_init__(self) -> None:
        if self.max_panes_per_step < 1:
            raise ConfigError("max_panes_per_step must be >= 1")
        if self.draw_threads is not None and self.draw_threads < 1:
            raise ConfigError("draw_threads must be >= 1 (or None: one per CPU)")

    @property
    def threads(self) -> int:
        """:attr:`draw_threads`, or one per CPU."""
        return self.draw_threads or os.cpu_count() or 1


class StateStore:
    """The stage's sealed state records (``release.state``): one ``head`` and one record per
    retained pane, each sealed with the vault's release-state key and bound to its key."""

    def __init__(self, keys: StateKeys) -> None:
        self._keys = keys

    def seal(self, key: bytes, body: bytes) -> bytes:
        """A state value."""
        return self._keys.seal("release-state", body, context=_CONTEXT + key)

    def open(self, key: bytes, value: bytes) -> bytes:
        """The inverse of :meth:`seal`; :class:`~.envelope.RejectedRecord` if tampered."""
        return self._keys.open("release-state", value, context=_CONTEXT + key)

    def head(self, head: ReleaseHead) -> tuple[bytes, bytes]:
        """``(key, value)`` of the head."""
        return _HEAD, self.seal(_HEAD, _HEAD_ENC.encode(head))

    def pane(self, record: PaneRecord | WithheldRecord) -> tuple[bytes, bytes]:
        """``(key, value)`` of a pane record."""
        key = _pane_key(record.pane.index)
        return key, self.seal(key, msgspec.msgpack.encode(record))

    def load(
        self, records: dict[bytes, bytes | None]
    ) -> tuple[ReleaseHead | None, list[PaneRecord | WithheldRecord]]:
        """The head and pane records among the latest state values; a one-line
        :class:`~procvault.monitor.errors.ConfigError` if the state does not open."""
        raw = records.get(_HEAD)
        if raw is None:
            return None, []
        try:
            head = _HEAD_DEC.decode(self.open(_HEAD, raw))
        except (RejectedRecord, ValueError, RecursionError):  # (msgspec's errors are ValueErrors)
            raise ConfigError(
                "release.state: the head does not open (another keyring, tampered, or a state "
                "of an older procvault)"
            ) from None
        panes = []
        for index in head.record_panes:
            key = _pane_key(index)
            value = records.get(key)
            if value is None:
                raise ConfigError(f"release.state: the record of pane {index} is missing")
            try:
                panes.append(_RECORD_DEC.decode(self.open(key, value)))
            except (RejectedRecord, ValueError, RecursionError):
                raise ConfigError(
                    f"release.state: the record of pane {index} does not open"
                ) from None
        return head, panes


class ReleaseStage:
    """The release stage process (see the module docstring).

    Parameters
    ----------
    settings
        How it runs.
    secrets
        The vault's secrets: the state key seals the state and opens partials; records are
        signed with the current epoch's key.
    plan
        The release plan (policy and known keys): the same as the vault workers'.
    releaser
        Where noise comes from (:class:`~procvault.monitor.privacy.mechanisms.OpenDPReleaser`).
    """

    def __init__(
        self,
        settings: ReleaseStageSettings,
        secrets: VaultSecrets,
        plan: ReleasePlan,
        releaser: Releaser,
        *,
        metrics: Any = None,
        recorder: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.plan = plan
        self.releaser = releaser
        self.metrics = metrics
        self.recorder = recorder
        self.clock = clock
        self.state_keys = StateKeys(secrets)
        self.store = StateStore(self.state_keys)
        self.engine: ReleaseEngine | None = None
        self._stopping = asyncio.Event()
        self._problems: set[str] = set()
        self._sent: dict[int, int] = {}  # pane -> latest agent send time (latency only)
        # per step stored and not published yet: (panes, arrival of the partials completing it)
        self._unpublished: list[tuple[int, float]] = []

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current step."""
        self._stopping.set()

    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        """Release until :meth:`stop` (or cancellation)."""
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from .kafka_io import ensure_topics

        s, t = self.settings, self.settings.topics
        await ensure_topics(
            s.bootstrap,
            [t.partials, t.aggregates],
            partitions=1,
            replication_factor=s.replication_factor,
        )
        await ensure_topics(
            s.bootstrap,
            [t.release_state],
            partitions=1,
            replication_factor=s.replication_factor,
            compacted=True,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap,
            client_id=s.application_id,
            transactional_id=f"{t.prefix}procvault-release",
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=1024 * 1024,
            max_request_size=4 * 1024 * 1024,
            transaction_timeout_ms=60_000,
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap,
            client_id=s.application_id,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_records=s.batch_records,
            fetch_max_wait_ms=s.batch_ms,
        )
        try:
            await producer.start()  # fences an earlier instance's open transaction
            await consumer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise KafkaSetupError(f"cannot reach Kafka at {s.bootstrap}: {exc}") from None
        try:
            engine = self.engine = await self._load()
            await self._recover(engine)
            if engine.to_publish():
                await self._publish(producer, engine)  # left over: the same bytes again
            tp = TopicPartition(t.partials, 0)
            consumer.assign([tp])
            if engine.offset is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, engine.offset)
            if self.metrics is not None:
                spent, left = engine.releaser.epsilon_used()
                self.metrics.set_budget(spent=spent, remaining=left)
            log.info("release state loaded: %s", engine.counters)
            if ready is not None:
                ready()
            last_store = self.clock()
            step = s.max_panes_per_step
            while not self._stopping.is_set():
                batch = await consumer.getmany(tp, timeout_ms=s.batch_ms)
                recs = batch.get(tp, [])
                arrived = self.clock()
                stepped = False
                for r in recs:
                    self._receive(engine, r)
                    # release as soon as a step's worth is complete: what the head holds
                    # (pending partials) stays bounded by one step, however long the backlog
                    if engine.ready() >= step and not self._stopping.is_set():
                        await self._step(producer, engine, arrived)
                        stepped = True
                if self.recorder is not None and recs:
                    self.recorder.count(len(recs))
                while engine.ready() and not self._stopping.is_set():
                    await self._step(producer, engine, arrived)
                    stepped = True
                if stepped:  # nothing more is complete: publish the last step now
                    await self._publish(producer, engine)
                if recs and not stepped and self.clock() - last_store >= 1.0:
                    await self._store(producer, engine)  # the offset and the partials read
                    last_store = self.clock()
                elif stepped:
                    last_store = self.clock()
            if engine.to_publish():
                await self._publish(producer, engine)  # with the final state
            else:
                await self._store(producer, engine)
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await consumer.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await producer.stop()

    # -- steps ------------------------------------------------------------------------------
    def _receive(self, engine: ReleaseEngine, r: Any) -> None:
        try:
            partials = open_partials(self.state_keys, r.key, r.value, plan=engine.fingerprint)
            engine.receive(partials, r.offset)
        except RejectedRecord as exc:
            engine.reject(r.offset)
            self._problem(
                exc.reason,
                f"a partial at offset {r.offset} was refused ({exc.reason}): not sealed by this "
                "vault for this DP plan; is the vault running the same --dp-policy, --model "
                "and --rules? (further refusals are counted, not logged)",
            )
            return
        except ValueError as exc:
            engine.reject(r.offset)
            self._problem(str(exc)[:40], f"a partial at offset {r.offset} was refused: {exc}")
            return
        for pane, sent in partials.sent_us:
            if sent > self._sent.get(pane, 0):
                self._sent[pane] = sent

    def _problem(self, kind: str, message: str) -> None:
        if self.metrics is not None:
            self.metrics.partial_rejected()
        if kind not in self._problems:
            self._problems.add(kind)
            log.error("%s", message)

    async def _step(
        self, producer: AIOKafkaProducer, engine: ReleaseEngine, arrived: float
    ) -> None:
        started = self.clock()
        first = engine.releaser.next_pane
        # stored by the previous step, not published yet: published in this step's store
        earlier = engine.to_publish()
        if len(earlier) > _PUBLISH_CHUNK:  # (not after a step; after a restart at most)
            await self._publish(producer, engine)
            earlier = []
        n = engine.release(self.settings.max_panes_per_step)
        self._unpublished.append((n, arrived))  # observed when its records are published
        await self._store(producer, engine, earlier)
        published = len(earlier)
        seconds = self.clock() - started
        log.info(
            "released panes %s..%s (%d panes; %d records of the step before published; %.1f ms)",
            first,
            (engine.releaser.next_pane or 1) - 1,
            n,
            published,
            seconds * 1000,
        )

    async def _store(
        self,
        producer: AIOKafkaProducer,
        engine: ReleaseEngine,
        publish: list[Record] | None = None,
    ) -> None:
        """One transaction: ``publish`` (records stored by an earlier transaction, up to a pane
        boundary) signed on ``results.aggregates``, then the new pane records, the tombstones
        of those no longer needed, the head (which says ``publish`` was published).

        Publishing the previous step's records in the transaction that stores the next step
        halves the transactions while catching up and keeps the order that matters: a record
        is only ever published in a transaction after the one that stored it, so an aborted
        transaction can have shown (to a ``read_uncommitted`` reader) only noise that is
        stored and will be published with the same bytes; the new noise in it is sealed."""
        publish = publish or []
        topic = self.settings.topics.release_state
        keys = self.secrets.current
        await producer.begin_transaction()
        try:
            for record in publish:
                await producer.send(
                    self.settings.topics.aggregates,
                    sign_record(record, keys),
                    key=record_key(record),
                )
            if publish:
                engine.published(_last_pane(publish))
            head, new, gone = engine.changes()
            for record in new:
                key, value = self.store.pane(record)
                await producer.send(topic, value, key=key)
            for index in gone:
                await producer.send(topic, None, key=_pane_key(index))
            key, value = self.store.head(head)
            await producer.send(topic, value, key=key)
            await producer.commit_transaction()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.abort_transaction()
            raise
        if publish:
            self._observe(publish, engine)
            self._observe_latency(1)

    async def _publish(self, producer: AIOKafkaProducer, engine: ReleaseEngine) -> int:
        """Publish what is stored and not published yet, with the head that says so, in
        transactions of at most ``_PUBLISH_CHUNK`` records; how many records."""
        keys = self.secrets.current
        records = engine.to_publish()
        total = 0
        topics = self.settings.topics
        while records:
            chunk, through = _chunk(records)
            await producer.begin_transaction()
            try:
                for record in chunk:
                    await producer.send(
                        topics.aggregates, sign_record(record, keys), key=record_key(record)
                    )
                engine.published(through)
                head, new, gone = engine.changes()
                for rec in new:
                    k, v = self.store.pane(rec)
                    await producer.send(topics.release_state, v, key=k)
                for index in gone:
                    await producer.send(topics.release_state, None, key=_pane_key(index))
                k, v = self.store.head(head)
                await producer.send(topics.release_state, v, key=k)
                await producer.commit_transaction()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.abort_transaction()
                raise
            total += len(chunk)
            self._observe(chunk, engine)
            records = records[len(chunk) :]
        self._observe_latency(None)
        return total

    def _observe_latency(self, steps: int | None) -> None:
        """The release latency of the oldest ``steps`` unpublished steps (``None``: all), now
        that their records are published."""
        done = self._unpublished[:steps] if steps is not None else self._unpublished
        self._unpublished = self._unpublished[len(done) :]
        if self.metrics is None:
            return
        now = self.clock()
        for n, arrived in done:
            for _ in range(n):
                self.metrics.observe_release_latency(now - arrived)

    def _observe(self, chunk: list[Record], engine: ReleaseEngine) -> None:
        m = self.metrics
        if m is None:
            return
        now_us = time.time_ns() // 1000
        last: PaneRecord | None = None
        for record in chunk:
            m.released(record.kind)
            if isinstance(record, PaneRecord | WithheldRecord):
                sent = self._sent.pop(record.pane.index, 0)
                if sent:
                    m.observe_released((now_us - sent) / 1e6)
            if isinstance(record, PaneRecord):
                last = record
        if last is not None:
            stats = {st.name: st for st in last.statistics}
            cases = stats.get("cases")
            m.set_pane_values(
                cases={e.key[0]: e.value for e in cases.known} if cases else None,
                violations=None,
            )
        spent, left = engine.releaser.epsilon_used()
        m.set_budget(spent=spent, remaining=left)

    # -- start ------------------------------------------------------------------------------
    async def _load(self) -> ReleaseEngine:
        from .kafka_io import read_latest

        latest = await read_latest(self.settings.bootstrap, self.settings.topics.release_state)
        head, panes = self.store.load(latest)
        try:
            return ReleaseEngine(self.plan, self.releaser, head, panes)
        except ValueError as exc:
            raise ConfigError(f"release.state: {exc}") from None

    async def _recover(self, engine: ReleaseEngine) -> None:
        """Read back the tail of ``results.aggregates``; continue after what is published."""
        from .kafka_io import read_tail

        retain = engine.releaser.retain
        windows = max(1, len(self.plan.settings.window_panes) + 1)
        want = 4 * max(retain, 2 * self.plan.settings.budget.window) * windows + 16
        tail = await read_tail(self.settings.bootstrap, self.settings.topics.aggregates, want)
        announced = {e: k.public() for e, k in self.secrets.epochs.items()}
        published: list[Record] = []
        forged = 0
        for rec in tail:
            try:
                published.append(verify_record(rec.value, announced))
            except ReleaseSignatureError:
                forged += 1
        if forged:
            log.warning("%d record(s) on results.aggregates are not this vault's: ignored", forged)
        skipped = engine.recover(published)
        if skipped:
            log.warning(
                "the release state was behind what results.aggregates holds: continuing after "
                "the published pane %s (%d pane(s) are never noised again; running totals are "
                "withheld from now on)",
                engine.published_through,
                skipped,
            )


def _last_pane(records: list[Record]) -> int:
    """The last pane whose record is among ``records``."""
    for record in reversed(records):
        if isinstance(record, PaneRecord | WithheldRecord):
            return record.pane.index
    raise ValueError("no pane record to publish")


def _chunk(records: list[Record]) -> tuple[list[Record], int]:
    """The first records up to a pane boundary, at most about ``_PUBLISH_CHUNK``, and the last
    pane they complete."""
    out: list[Record] = []
    through = -1
    for i, record in enumerate(records):
        if isinstance(record, PaneRecord | WithheldRecord):
            if len(out) >= _PUBLISH_CHUNK:
                break
            through = record.pane.index
        out.append(record)
        if i == len(records) - 1:
            break
    return out, through
