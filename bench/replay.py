"""XES readers (parse + replay) and replay throughput to a null sink and to the local Kafka.

Prints one JSON object.

``readers``: for ``--log`` (Sepsis) and for the million-event log of ``bench/_biglog.py``
(Sepsis x ``--million-rounds``, cached under ``bench/results/``), each reader (``scan``, the
default, ``pm4py``, ``pm4py.read_xes``, and with ``--with-lxml`` lxml's reader alone) runs
in a fresh child process that reads the log and replays it with end markers, building every
event; runs alternate between the readers.
Per reader: the median over ``--runs`` of the child's parse + replay seconds (its imports, pm4py
for the pm4py reader, are inside the parse), the child's whole wall time (interpreter start
included) and its peak RSS (``VmHWM`` from ``/proc/self/status`` at its end: the peak since its
``exec``, so neither this process's memory nor another run's counts), and the ratios.

Throughput: the null sink is the in-process baseline; ``kafka_vs_null`` is the ratio of the two
medians measured in this same run. Kafka: ``$KAFKA_BOOTSTRAP`` if set, otherwise a broker
started here from the cached jars (``procvault kafka install``) in a temporary folder on free
ports, stopped at the end; ``--no-kafka`` leaves it out.

    .venv/bin/python bench/replay.py [--log PATH] [--runs 3] [--repeat 5] [--million-rounds 66]

Each throughput run sends the log ``--repeat`` times (case ids suffixed per round) and is timed
from the sink's start to its final flush, producer connection and topic creation included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _biglog import million_log

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


#: The child: read with one reader, replay with end markers (every event built), report.
_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from procvault.generators.xes import read_xes
log = read_xes(sys.argv[1], reader=sys.argv[2])
t1 = time.perf_counter()
n = 0
for _ in log.replay(end_markers=True):
    n += 1
t2 = time.perf_counter()
with open("/proc/self/status") as fh:  # VmHWM: this process's peak RSS since exec
    hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
print(json.dumps({"parse_s": t1 - t0, "replay_s": t2 - t1, "events": log.n_events, "stream": n,
                  "peak_rss_kb": hwm}))
"""


def _child(log: Path, reader: str) -> dict[str, float]:
    """One fresh process: parse + replay seconds, its wall time and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(log), reader],
        stdout=subprocess.PIPE,
        env={**os.environ, "PM4PY_SHOW_PROGRESS_BAR": "false"},
    )
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench/replay.py: the {reader} child failed on {log}")
    res = json.loads(out)
    return {
        "parse_replay_s": res["parse_s"] + res["replay_s"],
        "parse_s": res["parse_s"],
        "replay_s": res["replay_s"],
        "process_s": wall,
        "peak_rss_mb": res["peak_rss_kb"] / 1024,
        "events": res["events"],
    }


def _readers(log: Path, runs: int, readers: tuple[str, ...]) -> dict[str, object]:
    samples: dict[str, list[dict[str, float]]] = {r: [] for r in readers}
    for _ in range(runs):
        for reader, taken in samples.items():
            taken.append(_child(log, reader))
    out: dict[str, object] = {"log": log.name, "events": samples["scan"][0]["events"]}
    med = {}
    for reader, rs in samples.items():
        med[reader] = {
            k: round(statistics.median(r[k] for r in rs), 3)
            for k in ("parse_replay_s", "parse_s", "replay_s", "process_s", "peak_rss_mb")
        }
        med[reader]["parse_replay_s_runs"] = [round(r["parse_replay_s"], 3) for r in rs]
        med[reader]["peak_rss_mb_runs"] = [round(r["peak_rss_mb"], 1) for r in rs]
    out.update(med)
    pm = med["pm4py"]
    for name in readers[:1] + readers[2:]:  # scan, and lxml if measured, against pm4py
        r = med[name]
        out[f"pm4py_over_{name}"] = {
            "parse_replay_time": round(pm["parse_replay_s"] / r["parse_replay_s"], 2),
            "process_time": round(pm["process_s"] / r["process_s"], 2),
        }
        out[f"{name}_over_pm4py_peak_rss"] = round(r["peak_rss_mb"] / pm["peak_rss_mb"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", type=Path, default=DEFAULT_LOG)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="replay the log this many times per run")
    ap.add_argument(
        "--million-rounds",
        type=int,
        default=66,
        help="Sepsis rounds in the large log (66: 1,004,124 events; 0: leave it out)",
    )
    ap.add_argument("--no-kafka", action="store_true", help="leave out the Kafka throughput")
    ap.add_argument("--with-lxml", action="store_true", help="also time lxml's reader alone")
    args = ap.parse_args()

    logs = [args.log] + ([million_log(args.million_rounds)] if args.million_rounds else [])
    names = ("scan", "pm4py", "lxml") if args.with_lxml else ("scan", "pm4py")
    readers = [_readers(p, args.runs, names) for p in logs]

    parse_times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        log = read_xes(args.log)
        parse_times.append(time.perf_counter() - t)

    null = [asyncio.run(_to_sink(log, NullSink(), args.repeat)) for _ in range(args.runs)]

    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    tmp = tempfile.TemporaryDirectory(prefix="procvault-bench-")
    if not bootstrap and not args.no_kafka:
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
        for _ in range(0 if args.no_kafka else args.runs):
            sink = KafkaSink(f"kafka://{bootstrap}/bench-replay-{uuid.uuid4().hex[:8]}")
            settings = sink.producer_settings
            kafka.append(asyncio.run(_to_sink(log, sink, args.repeat)))
    finally:
        if broker is not None:
            broker.stop()
        tmp.cleanup()

    null_r = _median_rate(null)
    kafka_r = _median_rate(kafka) if kafka else None
    out = {
        "benchmark": "xes_replay",
        "machine": "2 cores shared with other engineers' work: ratios are from this one run",
        "readers": readers,
        "log": args.log.name,
        "events_per_run": log.n_events * args.repeat,
        "log_events": log.n_events,
        "log_cases": log.n_cases,
        "repeat": args.repeat,
        "runs": args.runs,
        "parse_seconds_median": round(statistics.median(parse_times), 3),
        "null_sink": null_r,
        "kafka": None
        if kafka_r is None
        else {
            **kafka_r,
            "bootstrap": "KAFKA_BOOTSTRAP"
            if broker is None
            else "local broker started by this script",
            "partitions": 1,
            "payload": "procvault binary codec (msgpack), key = case id",
            "producer_settings": {k: v for k, v in settings.items() if k != "bootstrap_servers"},
        },
        "kafka_vs_null": None
        if kafka_r is None
        else round(kafka_r["events_per_s_median"] / null_r["events_per_s_median"], 4),
    }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
