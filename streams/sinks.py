"""Where a stream of events goes: a Kafka topic, a JSON-lines file, standard output, or nowhere.

Every sink has the same asynchronous lifecycle (``start``, ``send``, ``stop``, usable as
``async with``) so the replay and simulation drivers treat them alike. :func:`open_sink` turns
the CLI's ``--to`` target into a sink:

* ``kafka://HOST:PORT/TOPIC`` — binary events (:mod:`.codec`) keyed by case id; ``{org}`` in
  the topic is replaced by each event's organization (``events.{org}``);
* ``stdout`` — one JSON object per line;
* ``null`` — discard (benchmarks);
* anything else — a path to a JSON-lines file (``.jsonl``), created or truncated.

>>> isinstance(open_sink("null"), NullSink)
True
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Protocol, Self

from procvault.monitor.errors import ConfigError
from procvault.monitor.event import Event

from . import codec

__all__ = ["EventSink", "JsonLinesSink", "NullSink", "open_sink"]


class EventSink(Protocol):
    """An asynchronous destination for events."""

    @property
    def counts(self) -> Mapping[str, int]:
        """Events accepted so far per destination (topic, file, ...)."""
        ...

    async def start(self) -> None:
        """Open connections or files."""

    async def send(self, event: Event) -> None:
        """Accept one event (it may be buffered until :meth:`stop`)."""

    async def stop(self) -> None:
        """Flush everything and close; a second call does nothing."""

    def describe(self) -> str:
        """Where the events go, for messages (no secrets)."""
        ...


class _Lifecycle:
    async def start(self) -> None:
        """Nothing to open."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class NullSink(_Lifecycle):
    """Discards events, counting them."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    @property
    def counts(self) -> Mapping[str, int]:
        """Events discarded."""
        return self._counts

    async def send(self, event: Event) -> None:
        """Count and forget."""
        self._counts["null"] += 1

    def describe(self) -> str:
        """``null``."""
        return "null"


class JsonLinesSink(_Lifecycle):
    """Writes one JSON event per line to a file or to standard output."""

    def __init__(self, target: str | Path | None) -> None:
        self._path = None if target is None else Path(target)
        self._fh: IO[bytes] | None = None
        self._counts: Counter[str] = Counter()

    @property
    def counts(self) -> Mapping[str, int]:
        """Lines written."""
        return self._counts

    async def start(self) -> None:
        """Open the file (create or truncate) or bind standard output."""
        if self._fh is not None:
            return
        if self._path is None:
            self._fh = sys.stdout.buffer
        else:
            try:
                self._fh = self._path.open("wb")
            except OSError as exc:
                raise ConfigError(f"{self._path}: cannot write: {exc.strerror or exc}") from None

    async def send(self, event: Event) -> None:
        """Write one line."""
        fh = self._fh
        if fh is None:
            raise RuntimeError("sink not started")
        fh.write(codec.to_json(event) + b"\n")
        self._counts[self.describe()] += 1

    async def stop(self) -> None:
        """Flush, and close the file (standard output stays open)."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        fh.flush()
        if self._path is not None:
            fh.close()

    def describe(self) -> str:
        """The file name, or ``stdout``."""
        return "stdout" if self._path is None else str(self._path)


class KafkaSink(_Lifecycle):
    """Publishes binary events to Kafka with :class:`~.kafka_io.EventPublisher`."""

    def __init__(self, url: str, *, partitions: int = 1) -> None:
        from .kafka_io import EventPublisher, parse_kafka_url

        self.bootstrap, self.topic = parse_kafka_url(url)
        self._publisher = EventPublisher(
            bootstrap=self.bootstrap, topic=self.topic, partitions=partitions
        )

    @property
    def counts(self) -> Mapping[str, int]:
        """Events sent per topic."""
        return self._publisher.counts

    @property
    def producer_settings(self) -> dict[str, object]:
        """The producer settings in use (for benchmarks and logs)."""
        return dict(self._publisher.producer_settings)

    async def start(self) -> None:
        """Connect the producer."""
        await self._publisher.start()

    async def send(self, event: Event) -> None:
        """Queue one event for its topic."""
        await self._publisher.send(event)

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self._publisher.stop()

    def describe(self) -> str:
        """``kafka://bootstrap/topic``."""
        return f"kafka://{self.bootstrap}/{self.topic}"


def open_sink(target: str, *, partitions: int = 1) -> EventSink:
    """The sink a ``--to`` target names (see the module docstring)."""
    if target.startswith("kafka://"):
        return KafkaSink(target, partitions=partitions)
    if "://" in target:
        raise ConfigError(
            f"unsupported target {target!r}: "
            "use kafka://HOST:PORT/TOPIC, a .jsonl file, stdout or null"
        )
    if target in ("stdout", "-"):
        return JsonLinesSink(None)
    if target == "null":
        return NullSink()
    return JsonLinesSink(target)
