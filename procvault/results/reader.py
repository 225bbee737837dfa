"""Reading what the pipeline published: :class:`ResultsReader` verifies every record of
``results.aggregates`` (and an organization's alerts) against the vault's announced keys and
shows it (``procvault results``; the CLI only parses and wires)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from procvault.monitor.privacy.records import Record
    from procvault.streams.envelope import VaultPublicKeys

from .text import render_record

__all__ = ["ReadStats", "RecordView", "ResultsReader"]


class RecordView(Protocol):
    """What a :class:`ResultsReader` gives every verified aggregate to (the process map's
    :class:`~procvault.results.mapview.MapView`, the public net's
    :class:`~procvault.results.publicnet.ReleasedPanes`)."""

    #: whether the view replaces the records on ``out`` (they are then not written)
    show: bool

    def add(self, record: Record) -> None:
        """Take one verified record."""

    def note(self, text: str) -> None:
        """Take one line about an alert (while ``show``)."""

    def tick(self) -> None:
        """Called after every batch while following."""


@dataclass
class ReadStats:
    """What a :class:`ResultsReader` saw."""

    shown: Counter[str] = field(default_factory=Counter)
    rejected_by: Counter[str] = field(default_factory=Counter)
    republished: int = 0
    announcements: int = 0
    announcements_refused: int = 0
    refused_by: Counter[str] = field(default_factory=Counter)

    @property
    def rejected(self) -> int:
        """Records rejected (aggregates and alerts)."""
        return sum(self.rejected_by.values())

    def summary(self) -> str:
        """One line for stderr."""
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.shown.items())) or "no records"
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.rejected_by.items()))
        refused = ", ".join(f"{n} {r}" for r, n in sorted(self.refused_by.items()))
        parts = [
            f"results: {kinds}",
            f"{self.rejected} rejected" + (f" ({reasons})" if reasons else ""),
            f"{self.republished} republished duplicates",
            f"keys from {self.announcements} announcements"
            + (f" ({self.announcements_refused} refused: {refused})" if refused else ""),
        ]
        return "; ".join(parts)


def _signature_reason(message: str) -> str:
    """A short label for a :class:`ReleaseSignatureError` (never the record's content)."""
    for prefix, label in (
        ("malformed", "malformed"),
        ("unsupported envelope version", "unsupported_version"),
        ("no announced keys", "unknown_epoch"),
        ("bad signature", "bad_signature"),
        ("signed, but not a valid record", "invalid_record"),
    ):
        if message.startswith(prefix):
            return label
    return "invalid"


class ResultsReader:
    """Reads ``vault.keys``, ``results.aggregates`` and optionally an organization's alerts.

    Parameters
    ----------
    bootstrap
        Kafka ``host:port``.
    topics
        The pipeline's topic names.
    identity
        The pinned vault identity: only announcements chained to it give keys.
    verifier
        Checks each key announcement's attestation evidence.
    org_keys
        An organization's keys: read and open its alerts too.
    out
        Where records are written.
    json_lines
        One JSON object per record (else a readable text form).
    view
        Also give every verified aggregate to this view (the process map, the public net's
        panes); if it shows (``show``: ``--map``, ``discover --public``), records and alerts
        are not written to ``out``.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Any,
        *,
        identity: bytes,
        verifier: Any,
        org_keys: Any = None,
        out: TextIO = sys.stdout,
        json_lines: bool = False,
        view: RecordView | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.verifier = verifier
        self.org_keys = org_keys
        self.out = out
        self.json_lines = json_lines
        self.view = view
        self.stats = ReadStats()
        from procvault.streams.attestation import AnnouncedKeys

        self._announced = AnnouncedKeys(
            identity,
            verifier,
            warn=lambda line: print(f"warning: {topics.keys}: {line}", file=sys.stderr),
        )
        self._seen: dict[tuple[str, bytes], bytes] = {}
        self._batches: set[tuple[int, int, int]] = set()
        #: the latest pane record's mechanisms (data-independent): a window's intervals
        self._mechanisms: Any = None

    # -- keys ------------------------------------------------------------------------------
    @property
    def epochs(self) -> dict[int, VaultPublicKeys]:
        """Epoch -> the keys learned from announcements chained to the pinned identity."""
        return self._announced.epochs

    @property
    def _conflicting(self) -> set[int]:
        return self._announced.conflicting

    def add_announcement(self, value: bytes | None) -> None:
        """Learn the keys of one ``vault.keys`` record (if it chains to the pinned identity
        and its evidence is accepted; anything else is counted and skipped)."""
        self.stats.announcements += 1
        if self._announced.add(value) is None:
            self.stats.announcements_refused += 1
        self.stats.refused_by = self._announced.refused

    # -- records ---------------------------------------------------------------------------
    def _reject(self, topic: str, partition: int, offset: int, reason: str) -> None:
        self.stats.rejected_by[reason] += 1
        print(
            f"warning: {topic}[{partition}]@{offset}: record rejected ({reason})", file=sys.stderr
        )

    def add_aggregate(self, partition: int, offset: int, key: bytes | None, value: bytes) -> bool:
        """Verify and show one ``results.aggregates`` record; False if it was rejected."""
        from procvault.streams.release import ReleaseSignatureError, verify_record

        topic = self.topics.aggregates
        try:
            record = verify_record(value, self.epochs)
        except ReleaseSignatureError as exc:
            self._reject(topic, partition, offset, _signature_reason(str(exc)))
            return False
        from procvault.monitor.privacy.records import encode_record

        body = encode_record(record)
        seen_key = (topic, key or b"")
        previous = self._seen.get(seen_key)
        if previous == body:
            self.stats.republished += 1
            return True
        if previous is not None:
            print(
                f"warning: {topic}[{partition}]@{offset}: a different record under key "
                f"{(key or b'').decode(errors='replace')!r} (shown again)",
                file=sys.stderr,
            )
        self._seen[seen_key] = body
        self.stats.shown[record.kind] += 1
        if record.kind == "pane":
            self._mechanisms = record.mechanisms
        if self.view is not None:
            self.view.add(record)
            if self.view.show:
                return True
        epoch = json.loads(value)["epoch"]
        if self.json_lines:
            self._write_json(
                {
                    "topic": topic,
                    "offset": offset,
                    "key": (key or b"").decode(errors="replace"),
                    "epoch": epoch,
                    "record": json.loads(body),
                }
            )
        else:
            self._write_text(render_record(record, self._mechanisms))
        return True

    def add_alert(self, partition: int, offset: int, value: bytes) -> bool:
        """Open and show one of the organization's alerts; False if it was rejected."""
        from procvault.monitor.errors import CodecError
        from procvault.monitor.findings import decode_batch, finding_to_dict
        from procvault.streams.envelope import RejectedRecord
        from procvault.streams.frames import open_result

        topic = self.topics.alerts(self.org_keys.org)
        try:
            plain = open_result(self.org_keys.alerts, value, topic=topic, keys=self.epochs)
            batch = decode_batch(plain)
        except RejectedRecord as exc:
            self._reject(topic, partition, offset, exc.reason)
            return False
        except CodecError:
            self._reject(topic, partition, offset, "malformed")
            return False
        ident = (batch.partition, batch.commit, batch.chunk)
        if ident in self._batches:
            self.stats.republished += 1  # a replayed record: shown once
            return True
        self._batches.add(ident)
        for finding in batch.items:
            self.stats.shown["alert"] += 1
            item = finding_to_dict(finding)
            text = json.dumps(item, ensure_ascii=False, default=str)
            if self.view is not None and self.view.show:
                self.view.note(f"{item['type']} [{self.org_keys.org}] {text}")
            elif self.json_lines:
                self._write_json(
                    {"topic": topic, "offset": offset, "org": self.org_keys.org, "alert": item}
                )
            else:
                self._write_text(f"{item['type']} [{self.org_keys.org}] {text}")
        return True

    def _write_json(self, obj: Any) -> None:
        self.out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.out.flush()

    def _write_text(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    # -- the loop --------------------------------------------------------------------------
    async def run(self, *, follow: bool = False, timeout: float = 30.0) -> ReadStats:
        """Read until the end of the topics (or, with ``follow``, until SIGINT/SIGTERM)."""
        from aiokafka import TopicPartition

        from procvault.monitor.errors import KafkaSetupError
        from procvault.streams.kafka_io import _stop_consumer

        consumer = await start_committed_reader(self.bootstrap, "procvault-results")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = []
        if follow:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
                    handled.append(sig)
        try:
            existing = await consumer.topics()
            keys_topic = self.topics.keys
            data_topics = [self.topics.aggregates]
            if self.org_keys is not None:
                data_topics.append(self.topics.alerts(self.org_keys.org))
            # With --org the alerts are worth showing when the release stage never ran.
            optional = {self.topics.aggregates} if self.org_keys is not None else set()
            missing = [t for t in (keys_topic, *data_topics) if t not in existing]
            if missing and not follow and not set(missing) <= optional:
                hint = (
                    " (no release stage has published yet: run procvault release)"
                    if missing == [self.topics.aggregates]
                    else " (is the pipeline running with this --topic-prefix?)"
                )
                raise KafkaSetupError(
                    f"topic(s) {', '.join(missing)} do not exist at {self.bootstrap}{hint}"
                )
            while follow and not set(missing) <= optional:  # wait for the pipeline
                if stop.is_set():
                    return self.stats
                await asyncio.sleep(1.0)
                existing = await consumer.topics()
                missing = [t for t in (keys_topic, *data_topics) if t not in existing]
            if missing:
                data_topics = [t for t in data_topics if t not in missing]
                print(
                    f"procvault results: no DP aggregates: {', '.join(missing)} does not exist "
                    "(the release stage has not published); showing the organization's alerts",
                    file=sys.stderr,
                )

            def tps(topic: str) -> list[TopicPartition]:
                parts = consumer.partitions_for_topic(topic) or {0}
                return [TopicPartition(topic, p) for p in sorted(parts)]

            key_tps, data_tps = tps(keys_topic), [tp for t in data_topics for tp in tps(t)]
            consumer.assign([*key_tps, *data_tps])
            await consumer.seek_to_beginning(*key_tps, *data_tps)
            # The keys first: every announcement so far, then the records.
            await self._drain(consumer, key_tps, timeout)
            ends = await consumer.end_offsets(data_tps)
            pending = {tp for tp in data_tps if await consumer.position(tp) < ends[tp]}
            deadline = loop.time() + timeout
            while follow or pending:
                if stop.is_set():
                    break
                if not follow and loop.time() > deadline:
                    raise KafkaSetupError(
                        f"the ends of {', '.join(data_topics)} were not reached within "
                        f"{timeout:.0f} s"
                    )
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                for tp in key_tps:
                    for rec in batch.pop(tp, ()):
                        self.add_announcement(rec.value)
                for tp, recs in batch.items():
                    for rec in recs:
                        if not follow and rec.offset >= ends[tp]:
                            continue
                        await self._handle(consumer, key_tps, tp.topic, rec)
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
                if self.view is not None and follow:
                    self.view.tick()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            await _stop_consumer(consumer)
        return self.stats

    async def _drain(self, consumer: Any, key_tps: list[Any], timeout: float) -> None:
        """Read ``vault.keys`` up to its current end."""
        ends = await consumer.end_offsets(key_tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = {tp for tp in key_tps if await consumer.position(tp) < ends[tp]}
        while pending and loop.time() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, recs in batch.items():
                for rec in recs:
                    self.add_announcement(rec.value)
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)

    async def _handle(self, consumer: Any, key_tps: list[Any], topic: str, rec: Any) -> None:
        is_alert = topic != self.topics.aggregates

        def add() -> bool:
            if is_alert:
                return self.add_alert(rec.partition, rec.offset, rec.value)
            return self.add_aggregate(rec.partition, rec.offset, rec.key, rec.value)

        if rec.value is None:
            self._reject(topic, rec.partition, rec.offset, "malformed")
            return
        epoch = _epoch_of(rec.value, alert=is_alert)
        if epoch is not None and epoch not in self.epochs and epoch not in self._conflicting:
            # An epoch announced after we read the keys: read them again first.
            await self._drain(consumer, key_tps, 5.0)
        add()


def _epoch_of(value: bytes, *, alert: bool) -> int | None:
    if alert:
        return int.from_bytes(value[:4], "big") if len(value) >= 4 else None
    try:
        epoch = json.loads(value).get("epoch")
    except (ValueError, AttributeError, RecursionError):
        return None
    return epoch if isinstance(epoch, int) else None


async def start_committed_reader(bootstrap: str, client_id: str) -> Any:
    """A started group-less ``read_committed`` consumer reading from the beginning; a one-line
    :class:`~procvault.monitor.errors.KafkaSetupError` when Kafka cannot be reached."""
    from aiokafka import AIOKafkaConsumer

    from procvault.monitor.errors import KafkaSetupError

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    try:
        await consumer.start()
    except Exception as exc:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise KafkaSetupError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    return consumer
