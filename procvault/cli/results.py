"""``procvault results``: read the pipeline's results, verify them, show them.

The vault's public keys per epoch come from its signed announcements on ``vault.keys``: only
from those that chain to the vault identity pinned in ``DIR/registry.json`` (the identity's
certificate over the epoch's keys, the epoch key's signature) and whose attestation evidence is
accepted (simulated evidence only with ``--allow-insecure-attestation``, hardware evidence with
``--attestation-policy``); anything else on ``vault.keys`` is counted and skipped. Every
record of ``results.aggregates`` is verified against them before it is parsed; with ``--org``
the organization's alerts (``results.alerts.<org>``) are opened with its key file
(``DIR/org-<org>.json``) and their vault signature checked. A record that fails is counted
and named by its position and a short reason, never shown.
A record republished unchanged (the release stage after a restart) is shown once.

``--map`` shows the DP process map of the latest pane (``--window N``: of the latest window of
N panes) instead of the records, live with ``--follow``; ``--graph FILE.png|FILE.svg`` writes
it as an image (:class:`MapView`, :mod:`procvault.processmap.draw`).

Exit code: 0, or 1 if any record was rejected (or ``--graph`` had no record to draw).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from procvault.cli.options import add_option as _add
from procvault.cli.options import positive as _positive

if TYPE_CHECKING:
    from procvault.monitor.privacy.records import PaneRecord, Record, StatisticRelease, WindowRecord
    from procvault.processmap.draw import ProcessMap
    from procvault.streams.envelope import VaultPublicKeys

__all__ = ["MapView", "ResultsReader", "register"]


def register(sub: Any) -> None:
    """Add the ``results`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "results",
        help="read, verify and show the DP aggregates (and an organization's alerts)",
        description="Reads the vault's key announcements (vault.keys), then every signed DP "
        "record on results.aggregates, verifying each against the announced key of its "
        "epoch; with --org also the organization's encrypted alerts, opened with its key "
        "file. Rejected records are counted and never shown. Reads with read_committed. "
        "Without --follow it stops at the end of the topics; exit code 1 if anything was "
        "rejected. --map shows the DP process map of the latest pane instead of the records "
        "(live with --follow); --graph writes it as a PNG or SVG image.",
    )
    _add(p, "--kafka", "--bootstrap", required=True, metavar="HOST:PORT", help="Kafka bootstrap")
    _add(p, "--topic-prefix", default="", metavar="PREFIX", help="prefix of every topic name")
    _add(
        p,
        "--keys",
        required=True,
        metavar="DIR",
        help="folder with registry.json (the pinned vault identity) and org-<ORG>.json (--org)",
    )
    _add(p, "--org", help="also read this organization's alerts (needs DIR/org-ORG.json)")
    _add(p, "--follow", action="store_true", help="keep reading new records until interrupted")
    _add(p, "--json", action="store_true", help="one JSON object per record on stdout")
    view = p.add_argument_group(
        "process map",
        "the DP process map of the latest pane (or window): post-processing of the released "
        "noisy values only",
    )
    _add(
        view,
        "--map",
        action="store_true",
        help="show the process map instead of the records (live with --follow)",
    )
    _add(
        view,
        "--graph",
        metavar="FILE.png|FILE.svg",
        help="write the latest process map as a graph image (rewritten while --follow runs)",
    )
    _add(
        view,
        "--window",
        dest="map_window",  # PROCVAULT_MAP_WINDOW: `monitor --window` is another setting
        type=_positive(int),
        metavar="N",
        help="map the latest window record of N panes (default: the latest pane)",
    )
    _add(
        view,
        "--min-count",
        type=_non_negative_int,
        metavar="N",
        help="show pairs (and draw activities) with a noisy count of at least N "
        "(default: 3 noise standard deviations, from the record's mechanisms)",
    )
    _add(
        view,
        "--top",
        type=_positive(int),
        default=3,
        help="--map: strongest next activities listed per activity",
    )
    _add(
        p,
        "--allow-insecure-attestation",
        action="store_true",
        help="accept keys announced with SIMULATED evidence (they must still chain to the "
        "pinned vault identity; development only)",
    )
    _add(
        p,
        "--attestation-policy",
        metavar="FILE",
        help="accept keys announced with hardware evidence (SGX/TDX DCAP quotes) that passes "
        "this attestation policy (see docs/security.md)",
    )
    _add(
        p,
        "--timeout",
        type=_positive(float),
        default=30.0,
        help="without --follow: give up when the topics' ends are not reached in this time",
    )
    p.set_defaults(func=cmd_results)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def cmd_results(args: argparse.Namespace) -> int:
    """Run ``procvault results``."""
    from procvault.cli.pipeline import attestation_verifier, kafka_address
    from procvault.monitor.errors import ConfigError
    from procvault.streams.frames import Topics
    from procvault.streams.secrets import OrgKeys, Registry

    host_port = kafka_address(args.kafka)
    view = _map_view(args)
    registry = Registry.load(Path(args.keys) / "registry.json")
    org_keys = None
    if args.org:
        org_keys = OrgKeys.load(Path(args.keys) / f"org-{args.org}.json")
        if org_keys.org != args.org:
            raise ConfigError(f"org-{args.org}.json holds the keys of {org_keys.org!r}")
    reader = ResultsReader(
        host_port,
        Topics(args.topic_prefix),
        identity=registry.identity,
        verifier=attestation_verifier(args, registry.identity, "results"),
        org_keys=org_keys,
        out=sys.stdout,
        json_lines=args.json,
        view=view,
    )
    problem = None
    if view is None:
        stats = asyncio.run(reader.run(follow=args.follow, timeout=args.timeout))
    else:
        with view.live(args.follow):
            stats = asyncio.run(reader.run(follow=args.follow, timeout=args.timeout))
        problem = view.finish()
    print(stats.summary(), file=sys.stderr)
    if problem is not None:
        from procvault.monitor.errors import ProcvaultError

        raise ProcvaultError(problem)
    return 1 if stats.rejected else 0


def _map_view(args: argparse.Namespace) -> MapView | None:
    """The :class:`MapView` the options ask for (checked before anything is read)."""
    from procvault.monitor.errors import ConfigError
    from procvault.processmap.draw import graph_format

    wants = args.map or args.graph
    if not wants:
        for flag, value in (("--window", args.map_window), ("--min-count", args.min_count)):
            if value is not None:
                raise ConfigError(f"{flag} needs --map or --graph")
        return None
    if args.map and args.json:
        raise ConfigError("choose --map or --json")
    graph = None
    if args.graph:
        try:
            graph_format(args.graph)
        except ValueError as exc:
            raise ConfigError(f"--graph: {exc}") from None
        graph = Path(args.graph)
        if not graph.parent.is_dir():
            raise ConfigError(f"--graph: folder {str(graph.parent)!r} does not exist")
    return MapView(
        show=args.map, graph=graph, window=args.map_window, min_count=args.min_count, top=args.top
    )


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
        Also give every verified aggregate to this process map view; if it shows the map
        (``--map``), records and alerts are not written to ``out``.
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
        view: MapView | None = None,
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
            self._write_text(render_record(record))
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
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from procvault.monitor.errors import KafkaSetupError
        from procvault.streams.kafka_io import _stop_consumer

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id="procvault-results",
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
            raise KafkaSetupError(f"cannot reach Kafka at {self.bootstrap}: {exc}") from None
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
            missing = [t for t in (keys_topic, *data_topics) if t not in existing]
            if missing and not follow:
                raise KafkaSetupError(
                    f"topic(s) {', '.join(missing)} do not exist at {self.bootstrap} "
                    "(is the pipeline running with this --topic-prefix?)"
                )
            while missing:  # --follow: wait for the pipeline to create them
                if stop.is_set():
                    return self.stats
                await asyncio.sleep(1.0)
                existing = await consumer.topics()
                missing = [t for t in (keys_topic, *data_topics) if t not in existing]

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


# ----------------------------------------------------------------------------- process map
class MapView:
    """The process map of what a :class:`ResultsReader` verified: keeps the latest pane
    record (highest index), the latest window record of ``window`` panes and the latest
    withheld pane, shows the map in the terminal (``show``; live with :meth:`live`) and
    writes it as an image (``graph``). Only released (noisy) values are used.

    Parameters
    ----------
    show
        Show the map (and not the records) on ``console``.
    graph
        Write the map to this ``.png``/``.svg`` file: at :meth:`finish`, and while following
        at most every :attr:`graph_interval` seconds when it changed (:meth:`tick`).
    window
        Map the latest window record of this many panes instead of the latest pane (until
        one is read, the latest pane, with a note).
    min_count
        The display threshold (``None``: from the noise, see
        :func:`~procvault.processmap.draw.build_map`).
    top
        Strongest next activities listed per activity.
    console
        A ``rich`` console (default: stdout).
    """

    graph_interval = 2.0

    def __init__(
        self,
        *,
        show: bool = True,
        graph: Path | None = None,
        window: int | None = None,
        min_count: int | None = None,
        top: int = 3,
        console: Any = None,
    ) -> None:
        self.show = show
        self.graph = graph
        self.window = window
        self.min_count = min_count
        self.top = top
        self._console = console
        self.pane: PaneRecord | None = None
        self.window_record: WindowRecord | None = None
        self.withheld: int | None = None
        self.version = 0
        self._built: tuple[int, ProcessMap | None] = (-1, None)
        self._graph_version = 0
        self._graph_at = float("-inf")
        self._live: Any = None
        self.graphs_written = 0

    @property
    def console(self) -> Any:
        """Where the map is shown."""
        if self._console is None:
            from rich.console import Console

            self._console = Console()
        return self._console

    def add(self, record: Record) -> None:
        """Take a verified record (older ones than those kept are ignored)."""
        from procvault.monitor.privacy.records import PaneRecord, WindowRecord

        if isinstance(record, PaneRecord):
            if self.pane is None or record.pane.index >= self.pane.pane.index:
                self.pane = record
                self.version += 1
        elif isinstance(record, WindowRecord):
            if record.panes == self.window and (
                self.window_record is None or record.last_pane >= self.window_record.last_pane
            ):
                self.window_record = record
                self.version += 1
        elif self.withheld is None or record.pane.index > self.withheld:
            self.withheld = record.pane.index
            self.version += 1

    def current(self) -> ProcessMap | None:
        """The map of the latest record asked for (``None`` before any pane or window)."""
        version, built = self._built
        if version == self.version:
            return built
        from procvault.processmap.draw import build_map

        notes: list[str] = []
        record: PaneRecord | WindowRecord | None = self.pane
        last = None if self.pane is None else self.pane.pane.index
        if self.window is not None:
            if self.window_record is not None:
                record, last = self.window_record, self.window_record.last_pane
            elif self.pane is not None:
                notes.append(
                    f"no window record of {self.window} panes read yet: showing the latest pane"
                )
        if self.withheld is not None and (last is None or self.withheld > last):
            notes.append(f"pane {self.withheld} was withheld (privacy budget)")
        pm = None
        if record is not None:
            mechanisms = self.pane.mechanisms if self.pane is not None else None
            pm = build_map(record, min_count=self.min_count, mechanisms=mechanisms, notes=notes)
        self._built = (self.version, pm)
        return pm

    def _empty(self) -> str:
        if self.withheld is not None:
            return f"no pane record yet (pane {self.withheld} was withheld: privacy budget)"
        return "no pane record yet"

    def __rich__(self) -> Any:
        from procvault.processmap.draw import render_map

        return render_map(self.current(), top=self.top, empty=self._empty())

    @contextlib.contextmanager
    def live(self, follow: bool) -> Iterator[None]:
        """While reading: with ``follow`` and ``show``, a live display refreshed twice a
        second (records are only stored as they arrive; the map is rebuilt when shown)."""
        if not (follow and self.show):
            yield
            return
        from rich.live import Live

        with Live(self, console=self.console, refresh_per_second=2) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    def note(self, text: str) -> None:
        """A line printed above the map (an alert)."""
        from rich.text import Text

        self.console.print(Text(text))

    def tick(self, now: float | None = None) -> None:
        """While following: rewrite the graph if the map changed and it is time."""
        if self.graph is None or self.version == self._graph_version:
            return
        now = time.monotonic() if now is None else now
        if now - self._graph_at >= self.graph_interval and self.current() is not None:
            self._write_graph()
            self._graph_at = now

    def _write_graph(self) -> None:
        from procvault.monitor.errors import ProcvaultError
        from procvault.processmap.draw import write_graph

        pm = self.current()
        assert pm is not None and self.graph is not None
        try:
            write_graph(pm, self.graph)
        except OSError as exc:
            raise ProcvaultError(f"--graph: cannot write {self.graph}: {exc}") from None
        self._graph_version = self.version
        self.graphs_written += 1

    def finish(self) -> str | None:
        """After reading: show the map (if not shown live) and write the graph. Returns
        why no graph could be written (no pane or window record was read), else ``None``."""
        if self.show and self._live is None:
            self.console.print(self)
        if self.graph is None:
            return None
        if self.current() is None:
            what = "no pane record" + (
                f" (and no window record of {self.window} panes)" if self.window else ""
            )
            return f"--graph: {what} was read from results.aggregates; {self.graph} not written"
        if self.version != self._graph_version:
            self._write_graph()
        print(f"process map written to {self.graph}", file=sys.stderr)
        return None


# ----------------------------------------------------------------------------- text rendering
_MAX_ENTRIES = 8


def _entries(stat: StatisticRelease) -> str:
    items = [(" → ".join(e.key), e.value) for e in (*stat.known, *stat.other)]
    items.sort(key=lambda kv: -kv[1])
    shown = "  ".join(f"{k}={v}" for k, v in items[:_MAX_ENTRIES])
    more = len(items) - _MAX_ENTRIES
    return shown + (f"  (+{more} more)" if more > 0 else "")


def _when(ts: Any) -> str:
    return str(ts.strftime("%Y-%m-%d %H:%M:%S"))


def render_record(record: Record) -> str:
    """A readable form of a verified record (noisy values, largest first)."""
    from procvault.monitor.privacy.records import PaneRecord, WindowRecord

    if isinstance(record, PaneRecord):
        lines = [
            f"pane {record.pane.index}  {_when(record.pane.start)} → {_when(record.pane.end)}"
            f"  ε={record.epsilon:.4g}"
        ]
        lines += [f"  {s.name:<17} {_entries(s)}" for s in record.statistics]
        if record.totals is not None:
            totals = "  ".join(
                f"{'/'.join(e.key)}={e.value}" for e in record.totals.entries[:_MAX_ENTRIES]
            )
            lines.append(f"  {'totals':<17} {totals}  (after {record.totals.panes} panes)")
        return "\n".join(lines)
    if isinstance(record, WindowRecord):
        lines = [
            f"window {record.first_pane}..{record.last_pane}  {_when(record.start)} → "
            f"{_when(record.end)}  ({record.panes} panes, {record.withheld_panes} withheld)"
        ]
        lines += [f"  {s.name:<17} {_entries(s)}" for s in record.statistics]
        return "\n".join(lines)
    return (
        f"pane {record.pane.index}  {_when(record.pane.start)} → {_when(record.pane.end)}"
        f"  withheld ({record.reason})"
    )
