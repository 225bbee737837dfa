"""XES replay throughput: to a null sink and to the local Kafka broker, median of 3 runs.

Prints one JSON object. The null sink is the in-process baseline; ``kafka_vs_null`` is the
ratio of the two medians measured in this same run. Kafka: ``$KAFKA_BOOTSTRAP`` if set,
otherwise a broker started here from the cached jars (``procvault kafka install``) in a
temporary folder on free ports, stopped at the end.

    .venv/bin/python bench/replay.py [--log PATH] [--runs 3] [--repeat 5]

Each run sends the log ``--repeat`` times (case ids suffixed per round) and is timed from the
sink's start to its final flush, producer connection and topic creation included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec

os.environ.setdefault("PM4PY_SHOW_PROGRESS_BAR", "false")

from procvault.generators.pacing import AsFastAsPossible
from procvault.generators.run import run_to_sink
from procvault.generators.xes import XesLog, read_xes
from procvault.monitor.event import Event
from procvault.streams import kafka_local
from procvault.streams.sinks import EventSink, KafkaSink, NullSink

SHARED = Path(
    os.environ.get("PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
DEFAULT_LOG = SHARED / "logs" / "sepsis_cases.xes.gz"


def _median_rate(samples: list[tuple[int, float]]) -> dict[str, float]:
    rates = [n / s for n, s in samples]
    return {
        "events_per_s_median": round(statistics.median(rates)),
        "events_per_s_runs": [round(r) for r in rates],
        "seconds_median": round(statistics.median(s for _, s in samples), 4),
    }


def _stream(log: XesLog, repeat: int) -> Iterator[Event]:
    """The log replayed ``repeat`` times in a row, case ids suffixed per round."""
    for k in range(repeat):
        for ev in log.replay():
            yield ev if k == 0 else msgspec.structs.replace(ev, case_id=f"{ev.case_id}#{k}")


async def _to_sink(log: XesLog, sink: EventSink, repeat: int) -> tuple[int, float]:
    """Events sent and seconds taken, producer start-up and final flush included."""
    start = time.perf_counter()
    stats = await run_to_sink(_stream(log, repeat), sink, AsFastAsPossible(), count_cases=False)
    return stats.events, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", type=Path, default=DEFAULT_LOG)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="replay the log this many times per run")
    args = ap.parse_args()

    parse_times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        log = read_xes(args.log)
        parse_times.append(time.perf_counter() - t)

    null = [asyncio.run(_to_sink(log, NullSink(), args.repeat)) for _ in range(args.runs)]

    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    tmp = tempfile.TemporaryDirectory(prefix="procvault-bench-")
    if not bootstrap:
        broker = kafka_local.LocalKafka(
            data_dir=Path(tmp.name),
            port=kafka_local.free_port(),
            controller_port=kafka_local.free_port(),
        )
        kafka_local.install_jars()
        broker.start()
        bootstrap = broker.bootstrap
    try:
        kafka = []
        settings: dict[str, object] = {}
        for _ in range(args.runs):
            sink = KafkaSink(f"kafka://{bootstrap}/bench-replay-{uuid.uuid4().hex[:8]}")
            settings = sink.producer_settings
            kafka.append(asyncio.run(_to_sink(log, sink, args.repeat)))
    finally:
        if broker is not None:
            broker.stop()
        tmp.cleanup()

    null_r, kafka_r = _median_rate(null), _median_rate(kafka)
    out = {
        "benchmark": "xes_replay",
        "log": args.log.name,
        "events_per_run": log.n_events * args.repeat,
        "log_events": log.n_events,
        "log_cases": log.n_cases,
        "repeat": args.repeat,
        "runs": args.runs,
        "parse_seconds_median": round(statistics.median(parse_times), 3),
        "null_sink": null_r,
        "kafka": {
            **kafka_r,
            "bootstrap": "KAFKA_BOOTSTRAP"
            if broker is None
            else "local broker started by this script",
            "partitions": 1,
            "payload": "procvault binary codec (msgpack), key = case id",
            "producer_settings": {k: v for k, v in settings.items() if k != "bootstrap_servers"},
        },
        "kafka_vs_null": round(kafka_r["events_per_s_median"] / null_r["events_per_s_median"], 4),
    }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
