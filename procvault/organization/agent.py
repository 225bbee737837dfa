"""The organization's agent: policy, then encryption, then Kafka, after verifying the vault.

An :class:`Agent` takes its organization's share of a source, in order, as ``(order, event)``
pairs (``order`` breaks timestamp ties the same way in every organization, see
:mod:`procvault.streams.frames`), applies the organization's privacy policy (a ``transform``,
for instance :meth:`~procvault.organization.policy.PolicyEngine.apply`), seals each event for the
vault's attested key of the current epoch and publishes it to ``events.<org>``, on the
partition a keyed hash of the case id picks (:func:`~procvault.streams.frames.placement`: every
organization's events of a case land on the same partition number) and without a record key.

Publishing is transactional: each batch (closed on size or after ``batch_ms``) commits
its events, its heartbeats and the agent's progress on ``agent.progress`` together. Every frame
names the frame sent before it to the same partition (its chain link, see
:mod:`procvault.streams.frames`), so the vault sees any record that goes missing. A restarted
agent resumes from its last committed progress (its local progress file decides, see
:mod:`.progress`): it skips that many source items and goes on in a new session whose first
frame in each partition links to the last committed one there: nothing is sent twice, nothing
is skipped (an aborted batch is invisible to the vault, which reads committed records only).

**Rotation.** Given the trust's current keys (``vault_keys``), the agent checks at every batch
boundary whether the vault announced (and the trust verified) a newer epoch; if so it starts a
new producer session under it, its chains going on where they were: nothing is lost or sent
twice across a ``procvault keys rotate``.

Heartbeats tell every partition how far the organization's stream has come (the key of the last
event sent, or just below the next one while pacing waits), so the vault can merge the
organizations' streams in event-time order; the last heartbeat is ``closed``.

**Pause and status.** With a :class:`~.control.AgentControl`, a background task polls the
control directory's command file (at most every 0.2 s) and sets :attr:`Agent.paused`; the
publishing loop stops at the top of its next batch, with no transaction open, and sends nothing
(no events, no heartbeats) until resumed. The task keeps ``state.json`` and the
``procvault_agent_state`` metric current.

**Review.** With a :class:`~.review.ReviewQueue`, the policy stage's outputs are admitted to the
queue as the source is read (on the pacing schedule) and published from it in source order: the
agent stops at the first item still held (head of line). Its heartbeats promise no more than
just below that item, and while it waits it sends nothing, like a paused agent. The committed
source position counts *published* items, so a restarted agent admits the rest again (rows
already in the queue keep their decisions) and resumes exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from procvault.generators.pacing import AsFastAsPossible, Pacing
from procvault.monitor.errors import ConfigError, KafkaSetupError
from procvault.monitor.event import Event, EventKind
from procvault.organization.progress import (
    LocalProgress,
    Progress,
    load_local,
    resume_point,
    save_local,
    seal_progress,
    valid_progress,
)
from procvault.streams import codec
from procvault.streams.envelope import ProducerSession, VaultPublicKeys
from procvault.streams.frames import FrameChain, Topics, placement
from procvault.streams.settings import option

if TYPE_CHECKING:
    from procvault.organization.control import AgentControl
    from procvault.organization.review import ReviewQueue
    from procvault.streams.secrets import OrgKeys

__all__ = ["Agent", "AgentSettings", "AgentStats", "ordered_share"]

_PLACEHOLDER = EventKind.PLACEHOLDER
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_ORDER = 2**64 - 1
_ROUTE_CACHE = 100_000  # cases whose partition is remembered
#: Merge-key orders per source item: ``order = position * _SLOTS + output index`` (a policy
#: makes at most a few outputs of one input), so one producer's merge keys strictly increase.
_SLOTS = 256
_REVIEW_AHEAD = 10_000  # items admitted to review ahead of the one published next
#: While pacing waits longer than this (seconds), the agent repeats its heartbeats this often,
#: so that the vault's --source-timeout (default 30 s) never takes a waiting agent for silent.
KEEPALIVE_SECONDS = 5.0
_END = (-1, (-1, -1), (-1, -1), "")  # end of the admitted items


def ordered_share(events: Iterable[Event], org: str | None) -> Iterator[tuple[int, Event]]:
    """``(position in the whole source, event)`` for the events of ``org`` (all if ``None``).

    Every organization's agent reads the same source, so positions agree across them and break
    timestamp ties exactly as the source's own order does.
    """
    for i, ev in enumerate(events):
        if org is None or ev.org == org:
            yield i, ev


@dataclass(frozen=True)
class AgentSettings:
    """Where and how an agent publishes.

    Parameters
    ----------
    bootstrap
        Kafka bootstrap servers (``HOST:PORT``).
    partitions
        Partitions of the event topics (the same for every organization).
    producer
        This agent's name within its organization (one agent per organization and name).
    batch_events, batch_ms
        A transaction closes after this many events or this long (milliseconds), whichever
        comes first. It carries one heartbeat per partition when the organization's promise
        moved.

    The declared settings are also ``procvault agent`` options (``bootstrap`` and
    ``partitions`` are the shared ``--kafka`` and ``--partitions``).
    """

    bootstrap: str
    partitions: int
    topics: Topics = field(default_factory=Topics)
    producer: str = option("agent-1", help="this agent's name within the organization")
    batch_events: int = option(1000, help="events per Kafka transaction at most", minimum=1)
    batch_ms: float = option(
        10.0, help="a transaction stays open this long at most", unit="ms", above=0
    )

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ConfigError("partitions must be >= 1")
        if self.batch_events < 1 or self.batch_ms <= 0:
            raise ConfigError("batch settings must be positive")

    @property
    def batch_seconds(self) -> float:
        """``batch_ms`` in seconds."""
        return self.batch_ms / 1000


@dataclass
class AgentStats:
    """What one run of an agent did."""

    resumed_at: int = 0
    read: int = 0
    sent: int = 0
    withheld: int = 0  # placeholders: events the policy withheld (sent as such)
    batches: int = 0
    heartbeats: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in vars(self).items()}


def _us(ev: Event) -> int:
    ts = ev.timestamp
    return int(ts.timestamp()) * 1_000_000 + ts.microsecond


def _floor(us: int, granularity: int, last_out: int) -> int:
    """The earliest time an output for an input at ``us`` can carry: the transform may
    coarsen times to ``granularity`` µs, and outputs never go below the last one sent."""
    return max(us - us % granularity, last_out)


def _monotone(outs: Iterable[Event], last_out: int) -> Sequence[Event]:
    """``outs`` with no time below ``last_out`` (µs) or the one before: an output whose time
    the transform coarsened below an earlier output's (a placeholder rounded to the hour after
    an exact event, say) carries that earlier, already published, time instead. The vault
    merges organizations by time, and an organization's records and heartbeats promise that
    nothing of it sorts earlier."""
    fixed: list[Event] | None = None
    items = outs if isinstance(outs, Sequence) else list(outs)
    for i, out in enumerate(items):
        t = _us(out)
        if t < last_out:
            if fixed is None:
                fixed = list(items)
            at = _EPOCH + timedelta(microseconds=last_out)
            fixed[i] = msgspec.structs.replace(out, timestamp=at)
        else:
            last_out = t
    return items if fixed is None else fixed


def _below(key: tuple[int, int]) -> tuple[int, int]:
    """The largest merge key below ``key``: what may be promised before the item at ``key``."""
    ts_us, order = key
    return (ts_us, order - 1) if order else (ts_us - 1, _MAX_ORDER)


class Agent:
    """One organization's publishing agent (see the module docstring)."""

    def __init__(
        self,
        settings: AgentSettings,
        keys: OrgKeys,
        vault: VaultPublicKeys,
        *,
        transform: Callable[[Event], list[Event]] | None = None,
        on_batch: Callable[[AgentStats], None] | None = None,
        metrics: Any = None,
        start_at: float | None = None,
        control: AgentControl | None = None,
        review: ReviewQueue | None = None,
        time_granularity_us: int = 1,
        progress_file: Path | None = None,
        vault_keys: Callable[[], VaultPublicKeys] | None = None,
    ) -> None:
        if time_granularity_us < 1:
            raise ConfigError("time_granularity_us must be >= 1")
        self.settings = settings
        self.granularity = time_granularity_us
        self.start_at = start_at
        self.org = keys.org
        self.keys = keys
        self.vault = vault
        self.transform = transform
        self.on_batch = on_batch
        self.metrics = metrics
        self.topic = settings.topics.events(keys.org)
        self._progress_key = f"{keys.org}/{settings.producer}".encode()
        self._sender = keys.sender
        self._mac_key = keys.progress_key  # the organization's own secret
        self.progress_file = progress_file
        self._vault_keys = vault_keys
        #: per partition, the head of the agent's chain there
        self._chain = FrameChain(settings.partitions)
        #: the last progress committed (``None``: none yet)
        self._committed: Progress | None = None
        #: the producer session's generation (set when it starts; greater for every new one)
        self.generation = 0
        #: producer sessions started by this run (more than one after an epoch rotation)
        self.sessions = 0
        self._seen_generation = 0  # the highest generation any progress record names
        #: progress records found on Kafka that did not verify (forged or damaged)
        self.bad_progress = 0
        self.stats = AgentStats()
        self.paused = asyncio.Event()
        self.paused.set()  # set = running
        self.control = control
        self.review = review
        #: True while the publishing loop waits at its pause point (the pause is in effect).
        self.pause_effective = False
        #: The event time (µs) of the stream: the last event read or sent (control's clock).
        self.stream_us = -1
        #: With review: the item the agent waits for (held at the head of the line), if any.
        self.waiting_for: int | None = None

    # -- progress -----------------------------------------------------------------------
    async def committed_progress(self) -> Progress | None:
        """This agent's last committed progress (``None``: none yet), as :mod:`.progress`
        says: the local file decides (its pending progress if ``agent.progress`` holds that
        record, else its committed one); without a file, the highest valid record on
        ``agent.progress``. Records that do not verify are counted (:attr:`bad_progress`) and
        named in one line on stderr."""
        found = await self._progress_records()
        local = load_local(self.progress_file) if self.progress_file is not None else None
        if local is not None:
            for p in (local.committed, local.pending):
                if p is not None:
                    self._seen_generation = max(self._seen_generation, p.generation)
        return resume_point(found, local)

    async def _progress_records(self) -> list[Progress]:
        from procvault.streams.kafka_io import read_topic

        records = await read_topic(
            self.settings.bootstrap, self.settings.topics.progress, committed=True
        )
        mine = [r.value for r in records if r.key == self._progress_key]
        found, bad = valid_progress(mine, self._mac_key, self.org, self.settings.producer)
        if bad:
            self.bad_progress += bad
            print(
                f"procvault agent: {bad} record(s) on {self.settings.topics.progress} for "
                f"{self.org}/{self.settings.producer} do not verify (forged or damaged): "
                "ignored",
                file=sys.stderr,
            )
        self._seen_generation = max([self._seen_generation, *(p.generation for p in found)])
        return found

    async def committed_position(self) -> int:
        """The source position of this agent's last committed batch (0 if none)."""
        best = await self.committed_progress()
        return best.position if best is not None else 0

    # -- run ------------------------------------------------------------------------------
    async def run(
        self, source: Iterable[tuple[int, Event]], pacing: Pacing | None = None
    ) -> AgentStats:
        """Publish ``source`` (resuming after the committed position) and close the stream."""
        from aiokafka import AIOKafkaProducer

        from procvault.streams.kafka_io import ensure_topics

        s = self.settings
        await ensure_topics(s.bootstrap, [self.topic], partitions=s.partitions)
        await ensure_topics(s.bootstrap, [s.topics.progress], partitions=1)
        producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap,
            transactional_id=f"{s.topics.prefix}procvault-agent/{self.org}/{s.producer}",
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            transaction_timeout_ms=30_000,
        )
        try:
            await producer.start()
        except Exception as exc:
            raise KafkaSetupError(f"cannot reach Kafka at {s.bootstrap}: {exc}") from None
        # Started (so a dead predecessor's open transaction is aborted), now read where the
        # committed transactions got to.
        last = await self.committed_progress()
        resumed = last.position if last is not None else 0
        self._committed = last
        if last is not None and last.heads:
            if len(last.heads) != s.partitions:
                raise ConfigError(
                    f"the last committed progress of {self.org}/{s.producer} was made with "
                    f"{len(last.heads)} partitions, not {s.partitions}: repartitioning needs new "
                    "topics"
                )
            self._chain = FrameChain(s.partitions, last.heads)
        # a generation above every earlier session's (a rolled-back record cannot lower it)
        self.generation = max(time.time_ns() // 1000, self._seen_generation + 1)
        self.stats = stats = AgentStats(resumed_at=resumed)
        started = time.monotonic()
        watching = None
        if self.control is not None:
            if self.control.poll():  # a pause requested before the agent started
                self.paused.clear()
            self._report(force=True)
            watching = asyncio.create_task(self._watch_control())
        try:
            if self.review is not None:
                await self._publish_reviewed(
                    producer, source, pacing or AsFastAsPossible(), resumed
                )
            else:
                await self._publish(producer, source, pacing or AsFastAsPossible(), resumed)
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await producer.stop()
            stats.seconds = time.monotonic() - started
            if watching is not None:
                watching.cancel()
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await watching
                with contextlib.suppress(Exception):
                    self._report(running=False)
        return stats

    # -- control --------------------------------------------------------------------------
    def _report(self, *, force: bool = False, running: bool = True) -> None:
        control = self.control
        if control is None:
            return
        review = self.review
        control.report(
            paused=self.pause_effective,
            stream_us=self.stream_us,
            counters=self.stats.as_dict(),
            review=None if review is None else self._review_info,
            running=running,
            force=force,
        )

    def _review_info(self) -> dict[str, Any]:
        assert self.review is not None
        return {**self.review.counts(), "waiting_for": self.waiting_for}

    async def _watch_control(self) -> None:
        """Apply pause/resume commands and keep the state file current (every 0.2 s)."""
        control = self.control
        assert control is not None
        while True:
            want = control.poll()
            if want is True:
                self.paused.clear()
            elif want is False:
                self.paused.set()
            self._report()
            await asyncio.sleep(control.interval)

    async def _wait_while_paused(self) -> None:
        """The pause point (no transaction open): wait until resumed."""
        self.pause_effective = True
        self._report(force=True)
        try:
            await self.paused.wait()
        finally:
            self.pause_effective = False
            self._report(force=True)

    async def _publish(
        self, producer: Any, source: Iterable[tuple[int, Event]], pacing: Pacing, resumed: int
    ) -> None:
        s, stats = self.settings, self.stats
        session = self._session()
        transform = self.transform
        fast = isinstance(pacing, AsFastAsPossible)
        clock = time.monotonic
        items = iter(source)
        for _ in range(resumed):  # what earlier runs committed
            if next(items, None) is None:
                break
        position = resumed
        last_key = (-1, 0)  # (timestamp µs, order) of the last event sent
        g = self.granularity
        beat_key = (-2, 0)  # ... and of the last heartbeat
        pending: tuple[int, Event] | None = next(items, None)
        # The schedule: event ``order`` is due at ``start + pacing.due(order)`` (wall clock).
        # Pacing by the position in the shared source keeps every organization's agent in
        # step through the log; a resumed agent keeps its schedule if ``start_at`` was given.
        start = self.start_at
        if start is None:
            start = time.time() - (pacing.due(pending[0], pending[1]) if pending else 0.0)
        seen = (0, 0, 0)
        withheld: dict[str, int] = {}  # placeholders sent per reason, this batch
        route: dict[str, int] = {}  # case id -> partition
        while pending is not None:
            if not self.paused.is_set():
                await self._wait_while_paused()
            self.stream_us = last_key[0]
            session = self._rotated(session)
            await producer.begin_transaction()
            batch_start = clock()
            n = 0
            promise = last_key
            while pending is not None and n < s.batch_events:
                order, ev = pending
                if not fast:
                    wait = start + pacing.due(order, ev) - time.time()
                    if wait > 0:
                        # nothing sorts below the next event any more: promise that much
                        promise = _below((_floor(_us(ev), g, last_key[0]), order * _SLOTS))
                        if n == 0 and promise > beat_key:
                            break  # commit the promise now, then wait
                        if n and clock() + wait - batch_start > s.batch_seconds:
                            break  # close the batch rather than hold it open while waiting
                        if wait > KEEPALIVE_SECONDS:
                            await asyncio.sleep(KEEPALIVE_SECONDS)
                            beat_key = (-2, 0)  # a long wait: heartbeats again, then on
                            break
                        await asyncio.sleep(wait)
                stats.read += 1
                outs = _monotone(transform(ev) if transform is not None else (ev,), last_key[0])
                await self._send(producer, session, order, ev.case_id, outs, route, withheld)
                if outs:
                    promise = last_key = (_us(outs[-1]), order * _SLOTS + len(outs) - 1)
                position += 1
                n += 1
                pending = next(items, None)
                if fast and n % 200 == 0 and clock() - batch_start >= s.batch_seconds:
                    break
            if pending is None:
                await self._heartbeats(
                    producer, session, (_MAX_ORDER >> 1, _MAX_ORDER), closed=True
                )
            elif promise > beat_key:
                await self._heartbeats(producer, session, promise, closed=False)
                beat_key = promise
            seen = await self._commit(producer, session, position, batch_start, seen, withheld)

    async def _publish_reviewed(
        self, producer: Any, source: Iterable[tuple[int, Event]], pacing: Pacing, resumed: int
    ) -> None:
        """Publish through the review queue: admit on the pacing schedule, publish in source
        order, stop at the first item still held (see the module docstring)."""
        review = self.review
        assert review is not None
        s, stats = self.settings, self.stats
        session = self._session()
        transform = self.transform
        clock = time.monotonic
        items = iter(source)
        skipped = -1
        for _ in range(resumed):  # what earlier runs committed
            item = next(items, None)
            if item is None:
                break
            skipped = item[0]
        if skipped >= 0:
            review.mark_published(skipped)
        # (order, first and last merge key of its outputs, the source's case id: the route)
        admitted: asyncio.Queue[tuple[int, tuple[int, int], tuple[int, int], str]] = asyncio.Queue(
            _REVIEW_AHEAD
        )
        wake = asyncio.Event()
        # just below the next source item while admission waits for it to be due
        upcoming: list[tuple[int, int] | None] = [None]

        async def admit() -> None:
            fast = isinstance(pacing, AsFastAsPossible)
            pending = next(items, None)
            start = self.start_at
            if start is None:
                start = time.time() - (pacing.due(pending[0], pending[1]) if pending else 0.0)
            n = 0
            last_out = -1  # the time of the last output admitted (outputs never go back)
            while pending is not None:
                order, ev = pending
                key = (_floor(_us(ev), self.granularity, last_out), order * _SLOTS)
                if not self.paused.is_set():
                    review.flush()
                    await self.paused.wait()
                    continue
                if not fast:
                    wait = start + pacing.due(order, ev) - time.time()
                    if wait > 0:
                        review.flush()
                        upcoming[0] = _below(key)
                        wake.set()
                        await asyncio.sleep(min(wait, 0.2))
                        continue
                upcoming[0] = None
                stats.read += 1
                self.stream_us = _us(ev)
                outs = _monotone(transform(ev) if transform is not None else (ev,), last_out)
                first = last = key
                if outs:
                    first = (_us(outs[0]), order * _SLOTS)
                    last_out = _us(outs[-1])
                    last = (last_out, order * _SLOTS + len(outs) - 1)
                review.admit(order, outs)
                if admitted.full():
                    review.flush()
                await admitted.put((order, first, last, ev.case_id))
                wake.set()
                n += 1
                if n % 200 == 0:
                    review.flush()
                    await asyncio.sleep(0)
                pending = next(items, None)
            review.flush()
            await admitted.put(_END)
            wake.set()

        admitting = asyncio.create_task(admit())
        try:
            position = resumed
            last_key = (-1, 0)  # (timestamp µs, order) of the last item sent
            beat_key = (-2, 0)  # ... and of the last heartbeat
            head: tuple[int, tuple[int, int], tuple[int, int], str] | None = None
            seen = (0, 0, 0)
            withheld: dict[str, int] = {}
            route: dict[str, int] = {}
            closed = False
            while not closed:
                # Outside any transaction: wait until the head of the line may go.
                outs: list[Event] | None = None
                while True:
                    if not self.paused.is_set():
                        await self._wait_while_paused()
                    if admitting.done() and admitting.exception() is not None:
                        raise admitting.exception()  # type: ignore[misc]
                    if head is None and not admitted.empty():
                        head = admitted.get_nowait()
                    if head is _END:
                        break
                    if head is not None:
                        outs = review.ready(head[0])
                        if outs is not None:
                            break
                    self.waiting_for = None if head is None else head[0]
                    if head is not None:
                        promise = max(last_key, _below(head[1]))
                    else:
                        promise = max(last_key, upcoming[0] or last_key)
                    if promise > beat_key:  # commit the promise, then wait
                        session = self._rotated(session)
                        await producer.begin_transaction()
                        batch_start = clock()
                        await self._heartbeats(producer, session, promise, closed=False)
                        beat_key = promise
                        seen = await self._commit(
                            producer, session, position, batch_start, seen, withheld
                        )
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), 0.2)
                self.waiting_for = None
                session = self._rotated(session)
                await producer.begin_transaction()
                batch_start = clock()
                n = 0
                published = -1
                while outs is not None and head is not None and head is not _END:
                    order, _first, key, case_id = head
                    # (admission made the outputs monotone: see admit)
                    await self._send(producer, session, order, case_id, outs, route, withheld)
                    last_key = key
                    published = order
                    position += 1
                    n += 1
                    head = None if admitted.empty() else admitted.get_nowait()
                    if head is None or head is _END:
                        break
                    if n >= s.batch_events or clock() - batch_start >= s.batch_seconds:
                        break
                    outs = review.ready(head[0])
                if head is _END:
                    await self._heartbeats(
                        producer, session, (_MAX_ORDER >> 1, _MAX_ORDER), closed=True
                    )
                    closed = True
                else:
                    promise = last_key if head is None else max(last_key, _below(head[1]))
                    if promise > beat_key:
                        await self._heartbeats(producer, session, promise, closed=False)
                        beat_key = promise
                seen = await self._commit(producer, session, position, batch_start, seen, withheld)
                if published >= 0:
                    review.mark_published(published)
        finally:
            admitting.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await admitting
            review.flush()

    async def _send(
        self,
        producer: Any,
        session: ProducerSession,
        order: int,
        case_id: str,
        outs: Iterable[Event],
        route: dict[str, int],
        withheld: dict[str, int],
    ) -> None:
        """Seal and send one source item's outputs (events or placeholders, already made
        monotone by :func:`_monotone`) to the case's partition, without a record key, in the
        open transaction; placeholders are counted per reason."""
        stats, topic, seal = self.stats, self.topic, self._chain.event
        sent_us = time.time_ns() // 1000
        partition = route.get(case_id)
        for i, out in enumerate(outs):
            if partition is None:
                # placed by the id the vault reads (the policy's pseudonym, if any), so the
                # vault can check the placement
                partition = self._route(route, case_id, out.case_id)
            if out.kind == _PLACEHOLDER:
                reason = str(out.attr("pv:reason") or "withheld").lower()
                withheld[reason] = withheld.get(reason, 0) + 1
                stats.withheld += 1
            body = codec.encode(out)
            record = seal(
                session, order * _SLOTS + i, sent_us, body, topic=topic, partition=partition
            )
            await producer.send(topic, record, partition=partition)
            stats.sent += 1

    async def _commit(
        self,
        producer: Any,
        session: ProducerSession,
        position: int,
        batch_start: float,
        seen: tuple[int, int, int],
        withheld: dict[str, int],
    ) -> tuple[int, int, int]:
        """Close the open transaction with the source position; export the batch's counters
        (``seen``: the counters at the last export, returned updated)."""
        stats = self.stats
        progress = Progress(
            self.org,
            self.settings.producer,
            position,
            session.generation,
            session.next_sequence - 1,
            tuple(self._chain.heads),
        )
        await producer.send(
            self.settings.topics.progress,
            seal_progress(self._mac_key, progress),
            key=self._progress_key,
        )
        if self.review is not None:
            self.review.flush()
        local = self.progress_file
        if local is not None:  # (pending until the commit is known to have gone through)
            save_local(local, LocalProgress(self._committed, progress))
        await producer.commit_transaction()
        self._committed = progress
        if local is not None:
            save_local(local, LocalProgress(progress))
        stats.batches += 1
        m = self.metrics
        if m is not None:
            m.events_read(stats.read - seen[0])
            m.events_sent(stats.sent - seen[1])
            m.heartbeats(stats.heartbeats - seen[2])
            m.observe_send(time.monotonic() - batch_start)
            for reason, n in withheld.items():
                m.events_withheld(reason, n)
            seen = (stats.read, stats.sent, stats.heartbeats)
        withheld.clear()
        if self.on_batch is not None:
            self.on_batch(stats)
        return seen

    def _route(self, route: dict[str, int], case_id: str, sent_id: str) -> int:
        """The partition of source case ``case_id``, sent as ``sent_id`` (a keyed hash of
        the id the vault reads, as every organization's agent computes it), computed once per
        case."""
        if len(route) >= _ROUTE_CACHE:
            route.clear()
        p = placement(self.keys.placement_key, sent_id, self.settings.partitions)
        route[case_id] = p
        return p

    def _session(self) -> ProducerSession:
        """A new producer session (a new key agreement) under the current epoch's keys, with
        the current generation."""
        self.sessions += 1
        return ProducerSession(
            self.vault,
            self._sender,
            org=self.org,
            producer=self.settings.producer,
            generation=self.generation,
        )

    def _rotated(self, session: ProducerSession) -> ProducerSession:
        """``session``, or (at a batch boundary, no transaction open) a new one if the trust
        verified keys of a newer epoch since it started."""
        if self._vault_keys is None:
            return session
        current = self._vault_keys()
        if current.epoch <= session.vault.epoch:
            return session
        self.vault = current
        self.generation = max(time.time_ns() // 1000, self.generation + 1)
        print(
            f"procvault agent: the vault's epoch {current.epoch} is verified: a new producer "
            "session under it",
            file=sys.stderr,
        )
        return self._session()

    async def _heartbeats(
        self, producer: Any, session: ProducerSession, key: tuple[int, int], *, closed: bool
    ) -> None:
        """One heartbeat per partition, in the open transaction."""
        ts_us, order = key
        topic, beat = self.topic, self._chain.heartbeat
        sent_us = time.time_ns() // 1000
        for p in range(self.settings.partitions):
            record = beat(session, order, sent_us, ts_us, closed=closed, topic=topic, partition=p)
            await producer.send(topic, record, partition=p)
        self.stats.heartbeats += 1
