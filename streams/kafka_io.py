"""Events over Kafka with aiokafka: topic URLs, topic creation, a publisher and a topic reader.

Events are keyed by their case id, so every event of one case lands in the same partition and
keeps its order. Values are :func:`procvault.streams.codec.encode` bytes unless a publisher is
given another ``value_fn`` (for instance one that seals the event).

A topic may be a template: ``{org}`` is replaced by each event's organization, so one publisher
can feed one topic per organization (``kafka://127.0.0.1:19092/events-{org}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import urlsplit

from procvault.monitor.errors import ConfigError, KafkaSetupError
from procvault.monitor.event import Event

from . import codec

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer, ConsumerRecord
    from aiokafka.admin import AIOKafkaAdminClient

__all__ = [
    "ORG_PLACEHOLDER",
    "EventPublisher",
    "ensure_topics",
    "parse_kafka_url",
    "read_topic",
    "topic_for",
]

#: The placeholder a topic template may contain, replaced by each event's ``org``.
ORG_PLACEHOLDER: Final = "{org}"
_TOPIC_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,249}")
_TOPIC_ALREADY_EXISTS: Final = 36
#: Seconds ensure_topics waits for a created topic to be listed by the broker.
_VISIBLE_TIMEOUT: Final = 30.0
#: How many sends between two checks of the delivery futures.
_SWEEP_EVERY: Final = 4096


def _check_topic(topic: str, *, what: str) -> None:
    if not _TOPIC_RE.fullmatch(topic) or topic in {".", ".."}:
        raise ConfigError(
            f"{what} {topic!r} is not a legal Kafka topic name; use 1-249 characters "
            "from A-Z a-z 0-9 . _ - (and {org} as a placeholder in templates)"
        )


def _check_template(template: str, *, what: str) -> None:
    _check_topic(template.replace(ORG_PLACEHOLDER, "org"), what=what)


def topic_for(template: str, org: str) -> str:
    """The topic an event of ``org`` goes to under ``template``.

    >>> topic_for("events-{org}", "hospital")
    'events-hospital'
    >>> topic_for("events", "hospital")
    'events'
    >>> topic_for("events-{org}", "")
    Traceback (most recent call last):
    ...
    procvault.monitor.errors.ConfigError: topic template 'events-{org}' needs the event's org, ...
    """
    if ORG_PLACEHOLDER not in template:
        return template
    if not org:
        raise ConfigError(
            f"topic template {template!r} needs the event's org, but it is empty; "
            "set org on the events or use a topic without {org}"
        )
    topic = template.replace(ORG_PLACEHOLDER, org)
    _check_topic(topic, what=f"topic for org {org!r}")
    return topic


def parse_kafka_url(url: str) -> tuple[str, str]:
    """Split ``kafka://HOST:PORT/TOPIC`` into ``(bootstrap, topic)``.

    ``TOPIC`` may contain the placeholder ``{org}``.

    >>> parse_kafka_url("kafka://127.0.0.1:19092/events")
    ('127.0.0.1:19092', 'events')
    >>> parse_kafka_url("kafka://broker:9092/events-{org}")
    ('broker:9092', 'events-{org}')
    >>> parse_kafka_url("kafka://[::1]:9092/t")
    ('[::1]:9092', 't')
    >>> parse_kafka_url("kafka://127.0.0.1/events")
    Traceback (most recent call last):
    ...
    procvault.monitor.errors.ConfigError: Kafka URL 'kafka://127.0.0.1/events' lacks a port; ...
    """
    expected = "write it as kafka://HOST:PORT/TOPIC"
    if not isinstance(url, str):
        raise ConfigError(f"Kafka URL must be a string, got {type(url).__name__}; {expected}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"Kafka URL {url!r} is malformed ({exc}); {expected}") from None
    if parts.scheme != "kafka":
        raise ConfigError(f"Kafka URL {url!r} must start with kafka://; {expected}")
    if not parts.hostname:
        raise ConfigError(f"Kafka URL {url!r} lacks a host; {expected}")
    if port is None:
        raise ConfigError(f"Kafka URL {url!r} lacks a port; {expected}")
    if port == 0:
        raise ConfigError(f"Kafka URL {url!r} has port 0; {expected}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"Kafka URL {url!r} must not hold credentials; {expected}")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigError(f"Kafka URL {url!r} must not have a query or fragment; {expected}")
    topic = parts.path.removeprefix("/")
    if not topic:
        raise ConfigError(f"Kafka URL {url!r} lacks a topic; {expected}")
    _check_template(topic, what=f"the topic of Kafka URL {url!r}:")
    return parts.netloc, topic


def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="procvault-admin")


def _unreachable(bootstrap: str, exc: BaseException) -> KafkaSetupError:
    return KafkaSetupError(
        f"cannot reach Kafka at {bootstrap} ({type(exc).__name__}: {exc}); check that a broker "
        "runs there (a local one: procvault.streams.kafka_local.LocalKafka)"
    )


async def _create_topics(
    admin: AIOKafkaAdminClient,
    bootstrap: str,
    topics: list[str],
    *,
    partitions: int,
    replication_factor: int,
    compacted: bool = False,
) -> None:
    from aiokafka.admin import NewTopic
    from aiokafka.errors import KafkaError, for_code

    configs = {"cleanup.policy": "compact"} if compacted else {}
    new = [
        NewTopic(
            t,
            num_partitions=partitions,
            replication_factor=replication_factor,
            topic_configs=configs,
        )
        for t in topics
    ]
    try:
        response = await admin.create_topics(new)
    except KafkaError as exc:
        raise _unreachable(bootstrap, exc) from None
    for topic, code, *message in response.topic_errors:
        if code in (0, _TOPIC_ALREADY_EXISTS):
            continue
        detail = (message[0] if message else None) or for_code(code).__name__
        raise KafkaSetupError(
            f"Kafka at {bootstrap} refused to create topic {topic!r}: {detail}; "
            "check the topic name, partitions and replication factor"
        )


def _check_partitions(partitions: int, replication_factor: int = 1) -> None:
    for name, value in (("partitions", partitions), ("replication_factor", replication_factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    *,
    partitions: int = 1,
    replication_factor: int = 1,
    compacted: bool = False,
) -> None:
    """Create ``topics`` with ``partitions`` partitions each (``compacted``: log compaction);
    existing topics are left alone."""
    _check_partitions(partitions, replication_factor)
    names = list(dict.fromkeys(topics))
    for name in names:
        _check_topic(name, what="topic")
    if not names:
        return
    admin = _admin(bootstrap)
    try:
        try:
            await admin.start()
        except Exception as exc:
            raise _unreachable(bootstrap, exc) from None
        await _create_topics(
            admin,
            bootstrap,
            names,
            partitions=partitions,
            replication_factor=replication_factor,
            compacted=compacted,
        )
        await _visible(admin, bootstrap, names)
    finally:
        await admin.close()


async def _visible(admin: AIOKafkaAdminClient, bootstrap: str, names: list[str]) -> None:
    """Wait until the broker's metadata lists every topic of ``names`` with its partitions: a
    topic just created may not be described yet (a reader started right after would find
    nothing)."""
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + _VISIBLE_TIMEOUT
    while True:
        try:
            described = await admin.describe_topics(names)
        except KafkaError as exc:
            raise _unreachable(bootstrap, exc) from None
        ready = {e["topic"] for e in described if e["error_code"] == 0 and e["partitions"]}
        if ready >= set(names):
            return
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(set(names) - ready))
            raise KafkaSetupError(f"Kafka at {bootstrap} created {missing} but does not list it")
        await asyncio.sleep(0.1)


class EventPublisher:
    """Publish events to Kafka, keyed by case id, one topic per org if the topic says ``{org}``.

    Each :meth:`send` hands the event to aiokafka's batching producer without waiting for its
    acknowledgement; :meth:`flush` waits for every pending event and raises if any could not be
    delivered. Topics are created on first use (``partitions`` each; existing ones are kept).

    Parameters
    ----------
    bootstrap
        ``host:port`` of the cluster.
    topic
        A topic name, or a template containing ``{org}``.
    partitions
        Partitions for topics this publisher creates.
    value_fn
        Turns an event into the record value (default :func:`procvault.streams.codec.encode`).
    linger_ms
        How long the producer waits to fill a batch.
    max_batch_size
        Largest batch per partition, in bytes.
    client_id
        The Kafka client id.

    Examples
    --------
    >>> pub = EventPublisher("127.0.0.1:19092", "events-{org}", partitions=3)
    >>> pub.producer_settings["acks"], pub.producer_settings["max_batch_size"]
    ('all', 262144)
    >>> pub.topic_for_org("lab")
    'events-lab'
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        partitions: int = 1,
        value_fn: Callable[[Event], bytes] | None = None,
        linger_ms: int = 5,
        max_batch_size: int = 256 * 1024,
        client_id: str = "procvault-publisher",
    ) -> None:
        if not isinstance(bootstrap, str) or not bootstrap:
            raise ConfigError(f"bootstrap must be a non-empty host:port string, got {bootstrap!r}")
        _check_template(topic, what="topic")
        _check_partitions(partitions)
        if isinstance(linger_ms, bool) or not isinstance(linger_ms, int) or linger_ms < 0:
            raise ConfigError(f"linger_ms must be a non-negative integer, got {linger_ms!r}")
        if (
            isinstance(max_batch_size, bool)
            or not isinstance(max_batch_size, int)
            or max_batch_size < 1024
        ):
            raise ConfigError(f"max_batch_size must be an integer >= 1024, got {max_batch_size!r}")
        self.bootstrap: Final = bootstrap
        self.topic: Final = topic
        self.partitions: Final = partitions
        self._value_fn = value_fn or codec.encode
        #: The settings handed to :class:`aiokafka.AIOKafkaProducer` (for benchmarks to print).
        self.producer_settings: Final[dict[str, Any]] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": linger_ms,
            "max_batch_size": max_batch_size,
            "compression_type": None,
        }
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._topics_by_org: dict[str, str] = {}
        self._ensured: set[str] = set()
        self._ensure_lock: asyncio.Lock | None = None
        self._sent: Counter[str] = Counter()
        self._delivered: Counter[str] = Counter()
        self._pending: defaultdict[str, list[asyncio.Future[Any]]] = defaultdict(list)
        self._unswept = 0
        self._failed = 0
        self._first_error: BaseException | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"EventPublisher({self.bootstrap!r}, {self.topic!r})"

    @property
    def counts(self) -> dict[str, int]:
        """Events handed to the producer so far, per topic."""
        return dict(self._sent)

    @property
    def delivered(self) -> dict[str, int]:
        """Events acknowledged by the cluster, per topic, as of the last check.

        Delivery is checked every few thousand sends and on :meth:`flush` and :meth:`stop`, so
        after either of those this equals :attr:`counts` unless an error was raised.
        """
        return dict(self._delivered)

    def topic_for_org(self, org: str) -> str:
        """The topic events of ``org`` go to."""
        return topic_for(self.topic, org)

    async def start(self) -> None:
        """Connect the producer (a second call does nothing)."""
        if self._producer is not None:
            return
        if self._closed:
            raise RuntimeError("this EventPublisher was stopped; create a new one")
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**self.producer_settings)
        try:
            await producer.start()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise _unreachable(self.bootstrap, exc) from None
        self._producer = producer
        self._ensure_lock = asyncio.Lock()

    async def _ensure_topic(self, topic: str) -> None:
        if self._ensure_lock is None:
            raise RuntimeError("EventPublisher is not started; await start() or use async with")
        async with self._ensure_lock:
            if topic in self._ensured:
                return
            if self._admin is None:
                self._admin = _admin(self.bootstrap)
                try:
                    await self._admin.start()
                except Exception as exc:
                    raise _unreachable(self.bootstrap, exc) from None
            await _create_topics(
                self._admin,
                self.bootstrap,
                [topic],
                partitions=self.partitions,
                replication_factor=1,
            )
            self._ensured.add(topic)

    async def send(self, event: Event) -> None:
        """Queue ``event`` for its topic; delivery is confirmed by :meth:`flush`."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("EventPublisher is not started; await start() or use async with")
        org = event.org
        topic = self._topics_by_org.get(org)
        if topic is None:
            topic = self._topics_by_org[org] = topic_for(self.topic, org)
        if topic not in self._ensured:
            await self._ensure_topic(topic)
        future = await producer.send(topic, self._value_fn(event), key=event.case_id.encode())
        self._pending[topic].append(future)
        self._sent[topic] += 1
        self._unswept += 1
        if self._unswept >= _SWEEP_EVERY:
            self._sweep()

    def _sweep(self) -> None:
        """Account for resolved delivery futures (cheaper than a done-callback per event)."""
        self._unswept = 0
        for topic, futures in self._pending.items():
            waiting: list[asyncio.Future[Any]] = []
            ok = 0
            for future in futures:
                if not future.done():
                    waiting.append(future)
                elif future.cancelled():
                    self._failed += 1
                elif (error := future.exception()) is not None:
                    self._failed += 1
                    if self._first_error is None:
                        self._first_error = error
                else:
                    ok += 1
            self._delivered[topic] += ok
            self._pending[topic] = waiting

    async def flush(self) -> None:
        """Wait until every queued event is acknowledged; raise if some were not delivered."""
        if self._producer is not None:
            await self._producer.flush()
        self._sweep()
        self._raise_undelivered()

    def _raise_undelivered(self) -> None:
        if not self._failed:
            return
        failed, error = self._failed, self._first_error
        self._failed, self._first_error = 0, None
        raise KafkaSetupError(
            f"{failed} events could not be delivered to Kafka at {self.bootstrap} (first: "
            f"{type(error).__name__}: {error}); check the broker and publish them again"
        )

    async def stop(self) -> None:
        """Send what is queued, close the connections, then raise if events went undelivered.

        A second call does nothing.
        """
        self._closed = True
        producer, admin = self._producer, self._admin
        self._producer = self._admin = None
        try:
            if producer is not None:
                await producer.stop()
                self._sweep()
        finally:
            if admin is not None:
                await admin.close()
        self._raise_undelivered()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.stop()
            return
        # The body's exception matters more than undelivered events.
        with contextlib.suppress(KafkaSetupError):
            await self.stop()

    def __del__(self, _warnings: Any = warnings) -> None:
        if getattr(self, "_producer", None) is not None:
            _warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=1)


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    max_records: int | None = None,
    idle_timeout: float = 5.0,
    committed: bool = False,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning, without a consumer group.

    With ``committed``, only records of committed transactions are read (``read_committed``),
    up to the last stable offset.

    The end offsets of all partitions are fetched first; reading stops as soon as every
    partition reaches them (later records are left out), when ``max_records`` records have
    been read, or (a safety net) when no record arrived for ``idle_timeout`` seconds. Records
    come partition by partition in fetch order: the order within each partition (hence per
    case id) is the log's order.
    """
    if max_records is not None and (
        isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 0
    ):
        raise ConfigError(f"max_records must be a non-negative integer, got {max_records!r}")
    if idle_timeout <= 0:
        raise ConfigError(f"idle_timeout must be positive, got {idle_timeout!r}")
    _check_topic(topic, what="topic")
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    records: list[ConsumerRecord[bytes, bytes]] = []
    if max_records == 0:
        return records
    partitions = await _partitions_of(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="procvault-reader",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    try:
        try:
            await consumer.start()
        except KafkaError as exc:
            raise _unreachable(bootstrap, exc) from None
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        # End offsets before the seek: the other order waits for a fetch round (~0.5 s).
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        last_progress = time.monotonic()
        while pending:
            wanted = None if max_records is None else max_records - len(records)
            if wanted is not None and wanted <= 0:
                break
            idle_left = idle_timeout - (time.monotonic() - last_progress)
            if idle_left <= 0:
                break
            batch = await consumer.getmany(
                *pending, timeout_ms=max(int(min(idle_left, 1.0) * 1000), 1), max_records=wanted
            )
            for tp, got in batch.items():
                if got:
                    end = ends[tp]
                    # Records written after the end offsets were taken are left out.
                    records.extend(
                        got if got[-1].offset < end else [r for r in got if r.offset < end]
                    )
                    last_progress = time.monotonic()
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        if max_records is not None:
            del records[max_records:]
        return records
    finally:
        await _stop_consumer(consumer)


async def read_latest(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """The latest committed value per key of a compacted topic (``None``: a tombstone);
    empty if the topic does not exist yet."""
    try:
        records = await read_topic(bootstrap, topic, committed=True, idle_timeout=30.0)
    except KafkaSetupError:
        return {}
    out: dict[bytes, bytes | None] = {}
    for r in records:
        if r.key is not None:
            out[r.key] = r.value
    return out


async def read_tail(bootstrap: str, topic: str, n: int) -> list[ConsumerRecord[bytes, bytes]]:
    """The last (at most) ``n`` committed records of partition 0 of ``topic`` (empty if it
    does not exist yet)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    try:
        await _partitions_of(bootstrap, topic)
    except KafkaSetupError:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="procvault-reader",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        try:
            await consumer.start()
        except KafkaError as exc:
            raise _unreachable(bootstrap, exc) from None
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        begin = (await consumer.beginning_offsets([tp]))[tp]
        start = max(begin, end - n)
        if start >= end:
            return []
        consumer.seek(tp, start)
        idle = time.monotonic()
        while await consumer.position(tp) < end and time.monotonic() - idle < 30.0:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for r in batch.get(tp, ()):
                if r.offset < end:
                    out.append(r)
                idle = time.monotonic()
        return out
    finally:
        await _stop_consumer(consumer)


async def _partitions_of(bootstrap: str, topic: str) -> list[int]:
    """The partition ids of ``topic``; a clear error if it does not exist.

    All topics are described (a request naming the topic could auto-create it).
    """
    from aiokafka.errors import KafkaError

    admin = _admin(bootstrap)
    try:
        try:
            await admin.start()
            described = await admin.describe_topics()
        except KafkaError as exc:
            raise _unreachable(bootstrap, exc) from None
    finally:
        await admin.close()
    for entry in described:
        if entry["topic"] == topic and entry["error_code"] == 0:
            return sorted(p["partition"] for p in entry["partitions"])
    raise KafkaSetupError(
        f"topic {topic!r} does not exist at {bootstrap}; publish to it first "
        "or create it with ensure_topics"
    )


async def _stop_consumer(consumer: Any) -> None:
    """Stop a group-less consumer despite aiokafka's stop() raising ``CancelledError``.

    ``Fetcher.close()`` cancels its pending fetch tasks and awaits them; a task cancelled before
    it ever ran re-raises ``CancelledError`` out of ``stop()`` (the FIELD-NOTES quirk, most
    often right after ``start()``). One loop turn first lets such tasks reach their own handler;
    if it still happens and nobody is cancelling us, it is swallowed.
    """
    await asyncio.sleep(0)
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        with contextlib.suppress(Exception):
            await consumer._client.close()
