"""Streaming discovery throughput against pm4py's offline discovery and pyBeamline's streaming
Heuristics Miner on the same stream, and the tracker's memory over a 5M-event simulated stream.

Prints one JSON object:

* ``stream``: Sepsis replayed ``--repeat`` times (fresh case ids, shifted times, end markers).
* ``procvault_tracker``: :class:`DiscoveryTracker` over the stream, then its counts and the
  derived models (heuristics net, Declare): events/s per core (events / CPU seconds of this
  process, median of ``--runs`` runs, each on a fresh tracker) and per wall-clock second;
  with Declare (``declare``) and without (``dfg_heuristics``: what pyBeamline's miner does).
  ``equal_to_pm4py`` checks the models against pm4py's on the stream.
* ``pm4py_offline``: ``discover_dfg``, ``discover_heuristics_net`` and ``discover_declare`` on
  a data frame of the same events (built before timing), each timed, median of the runs.
* ``pybeamline``: pyBeamline's ``HeuristicsMinerLossyCounting`` (``max_approx_error`` 0.001,
  its mapper's default) ingesting the same events (``BEvent`` objects built before timing) and
  building its model once at the end; whether its (lossy) directly-follows counts are exact.
* ``ratios``: tracker events/s over pm4py's and pyBeamline's, per core, in this run.
* ``memory`` (unless ``--no-memory``): in a child process, a simulated stream from
  ``sepsis.pnml`` (seed 1, 600 cases/h, 10% noise, end markers) through one tracker: RSS and
  the size of the tracker's snapshot after ``--memory-events / 10`` and ``--memory-events``
  events.

    .venv/bin/python bench/discovery.py [--repeat 5] [--runs 3] [--memory-events 5000000]

Workloads are built before any timing starts. The machine has 2 cores shared with other work:
``load_average`` is recorded at start and end; per-core figures use CPU time, which sharing
inflates far less than wall-clock time.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from procvault.generators._pm4py import import_pm4py
from procvault.generators.xes import read_xes
from procvault.monitor.discovery import (
    DiscoveryTracker,
    TrackerSettings,
    build_model,
)
from procvault.monitor.event import Event

DATA = Path(
    os.environ.get("PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """``(cpu_seconds, wall_seconds, result)``."""
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c, time.perf_counter() - w, out


def _rates(n: int, runs: list[tuple[float, float]]) -> dict[str, Any]:
    cpu = [n / c for c, _ in runs]
    wall = [n / w for _, w in runs]
    return {
        "events_per_cpu_s_median": round(statistics.median(cpu)),
        "events_per_cpu_s_runs": [round(r) for r in cpu],
        "events_per_wall_s_median": round(statistics.median(wall)),
    }


def _tracker(
    events: list[Event], n: int, runs: int, *, declare: bool
) -> tuple[dict[str, Any], Any]:
    """The stream through a fresh tracker and its counts (``stream``), then the models derived
    from the counts (``model``), per run."""
    stream, total = [], []
    model = None
    model_cpu = []
    for _ in range(runs):
        tracker = DiscoveryTracker(TrackerSettings(declare=declare))
        update = tracker.update

        def run(update: Callable[[Event], None] = update, tracker: Any = tracker) -> Any:
            for e in events:
                update(e)
            return tracker.counts()

        cpu, wall, counts = _timed(run)
        mcpu, mwall, model = _timed(functools.partial(build_model, counts))
        stream.append((cpu, wall))
        total.append((cpu + mcpu, wall + mwall))
        model_cpu.append(mcpu)
    return {
        "stream_and_counts": _rates(n, stream),
        "with_models": _rates(n, total),
        "model_cpu_s_median": round(statistics.median(model_cpu), 4),
    }, model


def _frame(events: list[Event]) -> Any:
    import pandas as pd  # type: ignore[import-untyped]

    pm4py = import_pm4py()
    acts = [e for e in events if not e.kind]
    df = pd.DataFrame(
        {
            "case:concept:name": [e.case_id for e in acts],
            "concept:name": [e.activity for e in acts],
            "time:timestamp": [e.timestamp for e in acts],
        }
    )
    return pm4py.format_dataframe(df)


def _pm4py(df: Any, n: int, runs: int) -> tuple[dict[str, Any], dict[str, Any]]:
    pm4py = import_pm4py()
    steps = {
        "discover_dfg": lambda: pm4py.discover_dfg(df),
        "discover_heuristics_net": lambda: pm4py.discover_heuristics_net(df),
        "discover_declare": lambda: pm4py.discover_declare(df),
    }
    out: dict[str, Any] = {}
    results: dict[str, Any] = {}
    totals: dict[str, list[float]] = {"cpu": [0.0] * runs, "wall": [0.0] * runs}
    for name, fn in steps.items():
        times = []
        for k in range(runs):
            cpu, wall, results[name] = _timed(fn)
            times.append((cpu, wall))
            totals["cpu"][k] += cpu
            totals["wall"][k] += wall
        out[name] = {
            "cpu_s_median": round(statistics.median(c for c, _ in times), 3),
            **_rates(n, times),
        }
    out["all_three"] = _rates(n, list(zip(totals["cpu"], totals["wall"], strict=True)))
    dfg_heu = out["discover_dfg"]["cpu_s_median"] + out["discover_heuristics_net"]["cpu_s_median"]
    out["dfg_and_heuristics_events_per_cpu_s"] = round(n / dfg_heu)
    return out, results


def _pybeamline(events: list[Event], exact_dfg: dict[tuple[str, str], int], runs: int) -> Any:
    from pybeamline.algorithms.discovery.heuristics_miner_lossy_counting import (  # type: ignore[import-untyped]
        HeuristicsMinerLossyCounting,
    )
    from pybeamline.bevent import BEvent  # type: ignore[import-untyped]

    bevents = [BEvent(e.activity, e.case_id, event_time=e.timestamp) for e in events if not e.kind]
    times = []
    model = None
    for _ in range(runs):

        def run() -> Any:
            hm = HeuristicsMinerLossyCounting(
                max_approx_error=0.001, dependency_threshold=0.5, and_threshold=0.65
            )
            for b in bevents:
                hm.ingest_event(b)
            return hm.get_model()

        cpu, wall, model = _timed(run)
        times.append((cpu, wall))
    dfg = dict(model.dfg) if model is not None else {}
    return {
        "miner": "HeuristicsMinerLossyCounting(max_approx_error=0.001), model built at the end",
        **_rates(len(bevents), times),
        "dfg_arcs": len(dfg),
        "dfg_equal_to_exact": dfg == exact_dfg,
        "arcs_with_wrong_counts": sum(
            1 for k in set(dfg) | set(exact_dfg) if dfg.get(k) != exact_dfg.get(k)
        ),
    }


def _equal_to_pm4py(model: Any, results: dict[str, Any]) -> dict[str, bool]:
    from procvault.discovery.convert import to_declare

    dfg, start, end = results["discover_dfg"]
    hn = results["discover_heuristics_net"]
    arcs = {
        (n, o.node_name)
        for n, node in hn.nodes.items()
        for o in node.output_connections
    }  # fmt: skip
    return {
        "dfg_start_end": (model.counts.dfg(), model.counts.start_activities(),
                          model.counts.end_activities()) == (dict(dfg), dict(start), dict(end)),
        "heuristics_arcs": {(a.source, a.target) for a in model.heuristics.arcs} == arcs,
        "heuristics_dependency": {(a, b): v for a, b, v in model.heuristics.dependency}
        == {(a, b): v for a, row in hn.dependency_matrix.items() for b, v in row.items()},
        "declare": to_declare(model) == results["discover_declare"],
    }  # fmt: skip


# ------------------------------------------------------------------------------ memory
def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """This process's peak RSS (``VmHWM``: ``ru_maxrss`` would carry the parent's over the
    fork and exec that started this child)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _memory_child(total: int, checkpoint: int) -> None:
    from procvault.config.models import load_model
    from procvault.generators.simulate import Simulator

    model = load_model(DATA / "models/promtee/pnml/sepsis.pnml")
    sim = Simulator(
        model,
        seed=1,
        arrival_rate=600.0,
        mean_duration=600.0,
        noise=0.1,
        end_markers=True,
        max_events=total,
    )
    tracker = DiscoveryTracker()
    update = tracker.update
    marks: dict[str, Any] = {}
    n = 0
    t = time.perf_counter()
    for e in sim:
        update(e)
        if not e.kind:
            n += 1
            if n in (checkpoint, total):
                snap = tracker.snapshot()  # tallies the row buffer too
                marks[str(n)] = {
                    "rss_mb": round(_rss_mb(), 1),
                    "peak_rss_mb": round(_peak_mb(), 1),
                    "active_cases": tracker.active_cases,
                    "completed_cases": snap.counts.cases_completed,
                    "activities": len(snap.counts.activities),
                    "snapshot_bytes": len(msgspec.msgpack.encode(snap)),
                    "counts_bytes": len(msgspec.msgpack.encode(snap.counts)),
                }  # fmt: skip
                print(f"memory: {n:,} events, rss {marks[str(n)]['rss_mb']} MB", file=sys.stderr)
    a, b = marks[str(checkpoint)], marks[str(total)]
    print(
        json.dumps(
            {
                "stream": f"simulated from sepsis.pnml, seed 1, 600 cases/h, 10% noise, "
                f"end markers, {total:,} events",
                "checkpoints": marks,
                "rss_ratio_end_vs_checkpoint": round(b["rss_mb"] / a["rss_mb"], 3),
                "peak_rss_ratio_end_vs_checkpoint": round(b["peak_rss_mb"] / a["peak_rss_mb"], 3),
                "seconds": round(time.perf_counter() - t, 1),
            }
        )
    )


def _memory(total: int) -> Any:
    proc = subprocess.run(
        [sys.executable, __file__, "--memory-child", str(total), str(total // 10)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"memory child failed:\n{proc.stderr}")
    sys.stderr.write("".join(x + "\n" for x in proc.stderr.splitlines() if x.startswith("memory")))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def say(msg: str) -> None:
    """Progress on stderr."""
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="Sepsis passes under fresh case ids")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per system (medians)")
    ap.add_argument("--memory-events", type=int, default=5_000_000)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        _memory_child(*args.memory_child)
        return
    load_start = os.getloadavg()
    log = read_xes(DATA / "logs/sepsis_cases.xes.gz")
    events = list(log.replay(end_markers=True, repeat=args.repeat))
    n = sum(1 for e in events if not e.kind)
    df = _frame(events)
    say(f"stream: {n:,} events, {len(events) - n:,} end markers")
    ours, model = _tracker(events, n, args.runs, declare=True)
    ours_light, _ = _tracker(events, n, args.runs, declare=False)
    rate = ours["with_models"]["events_per_cpu_s_median"]
    say(f"tracker: {rate:,} events/s per core (Declare on, models included)")
    pm4py_out, results = _pm4py(df, n, args.runs)
    say("pm4py offline done")
    beam = _pybeamline(events, model.counts.dfg(), args.runs)
    say("pyBeamline done")
    out: dict[str, Any] = {
        "benchmark": "streaming_discovery",
        "python": sys.version.split()[0],
        "machine": "2 cores shared with other engineers' work",
        "load_average_start": [round(x, 2) for x in load_start],
        "stream": {
            "log": "sepsis_cases.xes.gz",
            "repeat": args.repeat,
            "events": n,
            "cases": model.counts.cases_completed,
            "activities": len(model.counts.activities),
        },
        "procvault_tracker": {
            "declare": ours,
            "dfg_heuristics": ours_light,
            "equal_to_pm4py": _equal_to_pm4py(model, results),
        },
        "pm4py_offline": pm4py_out,
        "pybeamline": beam,
    }
    p = pm4py_out
    mine = ours["with_models"]["events_per_cpu_s_median"]
    light = ours_light["with_models"]["events_per_cpu_s_median"]
    beam_rate = beam["events_per_cpu_s_median"]
    out["ratios"] = {
        "tracker_with_declare_vs_pm4py_all_three": round(
            mine / p["all_three"]["events_per_cpu_s_median"], 1
        ),
        "tracker_with_declare_vs_pm4py_declare": round(
            mine / p["discover_declare"]["events_per_cpu_s_median"], 1
        ),
        "tracker_without_declare_vs_pm4py_dfg_and_heuristics": round(
            light / p["dfg_and_heuristics_events_per_cpu_s"], 2
        ),
        "tracker_without_declare_vs_pybeamline": round(light / beam_rate, 2),
        "tracker_with_declare_vs_pybeamline": round(mine / beam_rate, 2),
    }
    if not args.no_memory:
        say(f"memory: {args.memory_events:,} simulated events in a child process")
        out["memory"] = _memory(args.memory_events)
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
