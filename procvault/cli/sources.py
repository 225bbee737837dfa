"""``procvault replay``, ``simulate``, ``tail`` and ``kafka``: streams from logs and models,
and the local broker."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from procvault.cli.options import (
    add_option,
    add_progress_option,
    fail_usage,
    positive,
    progress_bar,
)


def _add_sink_options(p: argparse.ArgumentParser) -> None:
    add_option(
        p,
        "--to",
        default="stdout",
        metavar="TARGET",
        help="kafka://HOST:PORT/TOPIC ('{org}' in TOPIC becomes each event's organization), "
        "a .jsonl file, 'stdout' or 'null'",
    )
    add_option(
        p, "--partitions", type=positive(int), default=1, help="partitions of topics created"
    )
    pace = p.add_argument_group("pacing (default: as fast as possible)")
    add_option(pace, "--rate", type=positive(float), help="fixed rate, events per second")
    add_option(
        pace,
        "--speed",
        type=positive(float),
        help="original inter-arrival times divided by SPEED (60: one hour of log per minute)",
    )
    add_option(
        p,
        "--end-markers",
        action="store_true",
        help="emit an end-of-case marker event after each case",
    )
    add_progress_option(p)


def _drive(
    events: Iterable[Any],
    args: argparse.Namespace,
    *,
    total: int | None,
    label: str,
    count_cases: bool = True,
) -> Any:
    from procvault.generators.pacing import parse_pacing
    from procvault.generators.run import run_to_sink
    from procvault.streams.sinks import open_sink

    try:
        pacing = parse_pacing(rate=args.rate, speed=args.speed)
    except ValueError as exc:
        fail_usage(str(exc))
    sink = open_sink(args.to, partitions=args.partitions)
    bar = progress_bar(args.progress, total, label)
    if bar is None:
        return asyncio.run(run_to_sink(events, sink, pacing, count_cases=count_cases))
    task = bar.task_ids[0]
    with bar:
        return asyncio.run(
            run_to_sink(
                events,
                sink,
                pacing,
                progress=lambda n: bar.advance(task, n),
                count_cases=count_cases,
            )
        )


def _summary(verb: str, stats: Any, sink_name: str) -> None:
    cases = f", {stats.cases:,} cases" if stats.cases else ""
    markers = f", {stats.markers:,} end markers" if stats.markers else ""
    print(
        f"{verb} {stats.events:,} events{cases}{markers} to {sink_name} "
        f"in {stats.seconds:.2f} s ({stats.rate:,.0f} events/s)",
        file=sys.stderr,
    )
    if len(stats.per_destination) > 1:
        for dest, n in sorted(stats.per_destination.items()):
            print(f"  {dest}: {n:,}", file=sys.stderr)


def _assigner(args: argparse.Namespace) -> Any:
    from procvault.generators.split import ActivityMapping, CaseHash

    chosen = [x for x in (args.org, args.split_map, args.split_hash) if x]
    if len(chosen) > 1:
        fail_usage("choose one of --org, --split-map, --split-hash")
    if args.split_map:
        return ActivityMapping.from_file(args.split_map)
    if args.split_hash:
        return CaseHash([o.strip() for o in args.split_hash.split(",") if o.strip()])
    return None


def _select(events: Iterable[Any], args: argparse.Namespace, assigner: Any = None) -> Iterable[Any]:
    """Apply --split-map/--split-hash and --only to a stream whose events carry --org already."""
    from procvault.generators.split import assign

    assigner = assigner if assigner is not None else _assigner(args)
    if assigner is not None:
        events = assign(events, assigner)
    if args.only:
        only = args.only
        events = (e for e in events if e.org == only)
    return events


def _add_split_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("organizations (default: every event has org '')")
    add_option(g, "--org", help="one organization for every event")
    add_option(g, "--split-map", metavar="FILE", help="YAML/JSON activity -> organization mapping")
    add_option(
        g,
        "--split-hash",
        metavar="ORGS",
        help="comma-separated organizations, chosen per case by hash",
    )
    add_option(
        g, "--only", metavar="ORG", help="emit only this organization's events (an agent's share)"
    )


def cmd_replay(args: argparse.Namespace) -> int:
    """``procvault replay``."""
    log = _read_log(args)
    assigner = _assigner(args)
    if assigner is not None and hasattr(assigner, "check_covers"):
        assigner.check_covers(log.activities, args.split_map)
    events = _select(log.replay(end_markers=args.end_markers, org=args.org), args, assigner)
    total: int | None = (
        None if args.only else log.n_events + (log.n_cases if args.end_markers else 0)
    )
    if args.limit is not None:
        events = _take(events, args.limit)
        total = min(total, args.limit) if total is not None else args.limit
    if log.dropped_attributes:
        dropped = ", ".join(f"{k} ({n})" for k, n in sorted(log.dropped_attributes.items()))
        print(
            f"warning: {args.log}: attribute values dropped (nested, unparseable or of "
            f"unsupported types): {dropped}",
            file=sys.stderr,
        )
    stats = _drive(events, args, total=total, label=f"replay {Path(args.log).name}")
    _summary("replayed", stats, args.to)
    return 0


def _read_log(args: argparse.Namespace) -> Any:
    """``read_xes(args.log)``, with a bar over the file's bytes when --progress shows one."""
    from procvault.generators.xes import read_xes

    path = Path(args.log)
    size = path.stat().st_size if path.is_file() else None
    bar = progress_bar(args.progress, size, f"read {path.name}") if size else None
    if bar is None:
        return read_xes(path)
    task = bar.task_ids[0]
    with bar:
        return read_xes(path, progress=lambda done, _total: bar.update(task, completed=done))


def _take(events: Iterable[Any], n: int) -> Iterable[Any]:
    for i, e in enumerate(events):
        if i >= n:
            return
        yield e


def cmd_simulate(args: argparse.Namespace) -> int:
    """``procvault simulate``."""
    from procvault.config.models import load_model
    from procvault.generators.simulate import Simulator

    model = load_model(args.model, final_marking=args.final_marking)
    print(f"model {args.model}: final marking from {model.final_marking_source}", file=sys.stderr)
    if args.cases is None and args.events is None:
        print("no --cases or --events: the stream is endless (Ctrl-C stops it)", file=sys.stderr)
    try:
        sim = Simulator(
            model,
            seed=args.seed,
            arrival_rate=args.arrival_rate,
            mean_duration=args.mean_duration,
            noise=args.noise,
            noise_kinds=tuple(k.strip() for k in args.noise_kinds.split(",") if k.strip()),
            max_cases=args.cases,
            max_events=args.events,
            org=args.org or "",
            end_markers=args.end_markers,
        )
    except ValueError as exc:
        fail_usage(str(exc))
    events = _select(sim, args)
    stats = _drive(
        events,
        args,
        total=args.events,
        label=f"simulate {Path(args.model).name}",
        count_cases=args.cases is not None or args.events is not None,
    )
    _summary("simulated", stats, args.to)
    return 0


DEFAULT_KAFKA_PORT = 19092


def cmd_kafka(args: argparse.Namespace) -> int:
    """``procvault kafka install|up|down|status``."""
    from procvault.streams import kafka_local

    home = Path(args.home) if args.home else kafka_local.default_home()
    if args.action == "install":
        libs = kafka_local.install_jars(home, quiet=False)
        print(f"Kafka jars in {libs}")
        return 0
    data_dir = Path(args.data_dir) if args.data_dir else home / "kafka-data"
    port, controller_port = args.port, args.controller_port
    recorded = kafka_local.LocalKafka.recorded_ports(data_dir)
    if args.action != "up" and recorded is not None:
        # status/down: the ports this data folder's broker was last started with
        port = recorded[0] if port is None else port
        controller_port = recorded[1] if controller_port is None else controller_port
    broker = kafka_local.LocalKafka(
        data_dir=data_dir,
        port=DEFAULT_KAFKA_PORT if port is None else port,
        controller_port=DEFAULT_KAFKA_PORT + 1 if controller_port is None else controller_port,
        heap=args.heap,
        home=home,
    )
    if args.action == "up":
        kafka_local.install_jars(home)
        broker.start(timeout=args.timeout)
        print(
            f"Kafka is up at {broker.bootstrap} (data in {data_dir}); "
            f"stop it with: procvault kafka down"
        )
        return 0
    if args.action == "down":
        broker.stop()
        print("Kafka is down")
        return 0
    status = broker.status()
    print(json.dumps(status, default=str))
    return 0 if status.get("running") else 3


def cmd_tail(args: argparse.Namespace) -> int:
    """``procvault tail``: print the events of a topic as JSON lines."""
    from procvault.monitor.errors import CodecError, InputError
    from procvault.streams import codec
    from procvault.streams.kafka_io import parse_kafka_url, read_topic

    bootstrap, topic = parse_kafka_url(args.source)
    records = asyncio.run(
        read_topic(bootstrap, topic, max_records=args.max, idle_timeout=args.idle_timeout)
    )
    out = sys.stdout.buffer
    for rec in records:
        try:
            event = codec.decode(rec.value)
        except CodecError as exc:
            out.flush()
            raise InputError(_not_plaintext(topic, rec.offset, rec.value or b"", exc)) from None
        out.write(codec.to_json(event) + b"\n")
    out.flush()
    print(f"read {len(records):,} events from {args.source}", file=sys.stderr)
    return 0


def _not_plaintext(topic: str, offset: int, value: bytes, exc: Exception) -> str:
    """Why ``tail`` cannot print a record: an agent's encrypted event, or another format."""
    from procvault.monitor.errors import SecurityError
    from procvault.streams.envelope import parse_header

    try:
        header, _ = parse_header(value)
    except (SecurityError, ValueError):
        return (
            f"{topic}: the record at offset {offset} is not a plaintext procvault event ({exc}); "
            "tail prints plaintext event topics only: read the vault's findings with "
            "procvault results"
        )
    return (
        f"{topic}: encrypted record at offset {offset} (sealed by organization {header.org!r} "
        "for the vault): tail prints plaintext event topics only; read the vault's findings "
        "with procvault results"
    )


def register(sub: Any) -> None:
    """Add the stream commands to ``sub``."""
    p = sub.add_parser(
        "replay",
        help="replay an XES log as a stream",
        description="Replay an XES log (.xes or .xes.gz) in global timestamp order.",
    )
    p.add_argument("log", help="the .xes or .xes.gz file")
    _add_sink_options(p)
    _add_split_options(p)
    add_option(p, "--limit", type=positive(int), help="stop after this many events")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "simulate",
        help="simulate a stream from a Petri net",
        description="Simulate cases of a Petri net (PNML or BPMN): Poisson case "
        "arrivals, exponential activity durations, optional noise.",
    )
    p.add_argument("model", help="the .pnml or .bpmn file")
    _add_sink_options(p)
    add_option(p, "--seed", type=int, default=0, help="random seed (same seed, same stream)")
    add_option(p, "--cases", type=positive(int), help="stop after this many cases")
    add_option(p, "--events", type=positive(int), help="stop after this many events")
    add_option(
        p,
        "--arrival-rate",
        type=positive(float),
        default=60.0,
        help="new cases per hour of simulated time",
    )
    add_option(
        p,
        "--mean-duration",
        type=positive(float),
        default=600.0,
        help="mean seconds between consecutive events of a case",
    )
    add_option(
        p, "--noise", type=float, default=0.0, help="probability of a noise operation per event"
    )
    add_option(
        p, "--noise-kinds", default="skip,swap,insert", help="comma-separated: skip, swap, insert"
    )
    add_option(
        p,
        "--final-marking",
        metavar="PLACE",
        help="final place when the model has no final marking (default: the unique sink place)",
    )
    _add_split_options(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "kafka",
        help="run a local single-node Apache Kafka",
        description="A real Apache Kafka (KRaft) from Maven Central jars with the "
        "machine's Java; no Docker.",
    )
    p.add_argument("action", choices=("install", "up", "down", "status"))
    add_option(
        p,
        "--home",
        help="cache folder for jars and data (default: $PROCVAULT_HOME or ~/.cache/procvault)",
    )
    add_option(p, "--data-dir", help="broker data folder (default: HOME/kafka-data)")
    add_option(
        p,
        "--port",
        type=int,
        help=f"client port on 127.0.0.1 (up: default {DEFAULT_KAFKA_PORT}; status, down: "
        "default the port the broker of --data-dir was started with)",
    )
    add_option(
        p,
        "--controller-port",
        type=int,
        help=f"KRaft controller port (up: default {DEFAULT_KAFKA_PORT + 1}; status, down: "
        "as recorded in --data-dir)",
    )
    add_option(p, "--heap", default="512m", help="Java heap (-Xmx)")
    add_option(
        p, "--timeout", type=positive(float), default=60.0, help="seconds to wait for readiness"
    )
    p.set_defaults(func=cmd_kafka)

    p = sub.add_parser(
        "tail",
        help="print a Kafka topic's events as JSON lines",
        description="Read a topic from the beginning and print its events as JSON.",
    )
    p.add_argument("source", metavar="kafka://HOST:PORT/TOPIC")
    add_option(p, "--max", type=positive(int), help="stop after this many events")
    add_option(
        p,
        "--idle-timeout",
        type=positive(float),
        default=5.0,
        help="stop when nothing new arrives for this many seconds",
    )
    p.set_defaults(func=cmd_tail)
