"""Online conformance throughput and latency, against pm4py's streaming token replay, in one run.

Prints one JSON object:

* ``sepsis``: Sepsis with ProMTEE's ``sepsis.pnml``, the log replayed ``--repeat`` times under
  fresh case ids (with end-of-case markers). Our :class:`Vault` (token replay): events/s (median
  of 3 runs, each on a fresh vault, so each includes its cold cache), p50/p99 µs per event
  (a separate run timing every call), and the first pass alone (cold). pm4py's streaming TBR
  (``pm4py.streaming.algo.conformance.tbr``) on the same stream: events/s, and how many cases
  it reports differently (missing, remaining, fit) from pm4py's offline replay, against our 0.
* ``roadtraffic``: roadtraffic100traces with pm4py's 23-silent-transition model, its 390 events
  replayed under fresh case ids to at least 15,000 events.
* ``alignments``: our prefix-alignment mode against pyBeamline's
  ``PrefixAlignmentConformanceChecker`` on the first ``--alignment-events`` Sepsis events
  (pyBeamline needs ~2 ms per event; ``pip install -e '.[bench]'``); see bench/alignments.py.
* ``memory`` (unless ``--no-memory``): a simulated stream from ``sepsis.pnml`` (10% noise, end
  markers) through one vault; RSS after 500k and after ``--memory-events`` events.

    .venv/bin/python bench/conformance.py [--repeat 20] [--memory-events 5000000] [--no-memory]

Workloads are built before any timing starts. All ratios compare figures from this same run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from _timing import latency_summary, rate_summary  # bench/_timing.py

from procvault.config.models import LoadedModel, load_model
from procvault.generators._pm4py import import_pm4py
from procvault.generators.simulate import Simulator
from procvault.generators.xes import read_xes
from procvault.monitor.event import Event
from procvault.monitor.petri import compile_net
from procvault.monitor.vault import Vault

DATA = Path(
    os.environ.get("PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _stream(log_path: Path, repeat: int) -> list[Event]:
    base = list(read_xes(log_path).replay(end_markers=True))
    return [
        e if k == 0 else msgspec.structs.replace(e, case_id=f"{e.case_id}#{k}")
        for k in range(repeat)
        for e in base
    ]


def _throughput(model: LoadedModel, events: list[Event], runs: int = 3) -> dict[str, Any]:
    net = compile_net(model.net, model.initial_marking, model.final_marking)
    rates = []
    for _ in range(runs):
        update = Vault(net).update
        t = time.perf_counter()
        for e in events:
            update(e)
        rates.append(len(events) / (time.perf_counter() - t))
    update = Vault(net).update
    clock = time.perf_counter_ns
    lat = []
    for e in events:
        t0 = clock()
        update(e)
        lat.append(clock() - t0)
    return {**rate_summary(rates), "latency_us": latency_summary(lat)}


def _cold_pass(model: LoadedModel, events: list[Event]) -> int:
    net = compile_net(model.net, model.initial_marking, model.final_marking)
    update = Vault(net).update
    t = time.perf_counter()
    for e in events:
        update(e)
    return round(len(events) / (time.perf_counter() - t))


def _pm4py_streaming(
    model: LoadedModel, events: list[Event]
) -> tuple[float, dict[str, dict[str, Any]]]:
    """pm4py's streaming TBR on the stream: events/s and its per-case results at termination."""
    from pm4py.streaming.algo.conformance.tbr import algorithm as streaming_tbr

    checker = streaming_tbr.apply(model.net, model.initial_marking, model.final_marking)
    dicts = [
        None if e.is_marker else {"case:concept:name": e.case_id, "concept:name": e.activity}
        for e in events
    ]
    results: dict[str, dict[str, Any]] = {}
    logging.disable(logging.CRITICAL)  # it logs every deviation; printing is not what we time
    sink = io.StringIO()  # and prints a traceback whenever it raises internally
    try:
        with contextlib.redirect_stderr(sink):
            t = time.perf_counter()
            for e, d in zip(events, dicts, strict=True):
                if d is None:
                    results[e.case_id] = checker.terminate(e.case_id)
                else:
                    checker.receive(d)
            seconds = time.perf_counter() - t
    finally:
        logging.disable(logging.NOTSET)
    return len(events) / seconds, results


def _offline(model: LoadedModel, log_path: Path) -> dict[str, tuple[int, int, bool]]:
    pm4py = import_pm4py()
    log = pm4py.read_xes(str(log_path), return_legacy_log_object=True)
    diag = pm4py.conformance_diagnostics_token_based_replay(
        log, model.net, model.initial_marking, model.final_marking
    )
    return {
        t.attributes["concept:name"]: (
            d["missing_tokens"],
            d["remaining_tokens"],
            d["trace_is_fit"],
        )
        for t, d in zip(log, diag, strict=True)
    }


def _ours_vs_offline(
    model: LoadedModel, events: list[Event], offline: dict[str, tuple[int, int, bool]]
) -> int:
    vault = Vault(compile_net(model.net, model.initial_marking, model.final_marking))
    disagree = 0
    for e in events:
        for r in vault.update(e).completed:
            if (r.missing, r.remaining, r.is_fit) != offline[r.case_id]:
                disagree += 1
    return disagree


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory(
    model: LoadedModel, total: int, checkpoint: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    net = compile_net(model.net, model.initial_marking, model.final_marking)
    vault = Vault(net)
    sim = Simulator(
        model,
        seed=1,
        arrival_rate=600.0,
        mean_duration=600.0,
        noise=0.1,
        end_markers=True,
        max_events=total,
    )
    update = vault.update
    marks: dict[str, Any] = {}
    n = 0
    t = time.perf_counter()
    for e in sim:
        update(e)
        if not e.is_marker:
            n += 1
            if n in (checkpoint, total):
                st = vault.state()
                marks[str(n)] = {
                    "rss_mb": round(_rss_mb(), 1),
                    "peak_rss_mb": round(
                        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                    ),
                    "active_cases": st.active_cases,
                    "cached_markings": st.cached_markings,
                    "remembered_completed": st.remembered_completed,
                }
                progress(f"memory: {n:,} events, rss {marks[str(n)]['rss_mb']} MB")
    a, b = marks[str(checkpoint)], marks[str(total)]
    return {
        "stream": f"simulated from sepsis.pnml, seed 1, 600 cases/h, 10% noise, {total:,} events",
        "checkpoints": marks,
        "rss_ratio_end_vs_checkpoint": round(b["rss_mb"] / a["rss_mb"], 3),
        "peak_rss_ratio_end_vs_checkpoint": round(b["peak_rss_mb"] / a["peak_rss_mb"], 3),
        "seconds": round(time.perf_counter() - t, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="Sepsis passes under fresh case ids")
    ap.add_argument("--memory-events", type=int, default=5_000_000)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument(
        "--alignment-events", type=int, default=2_000, help="stream prefix for the alignment run"
    )
    args = ap.parse_args()
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    sepsis_log = DATA / "logs/sepsis_cases.xes.gz"
    sepsis = load_model(DATA / "models/promtee/pnml/sepsis.pnml")
    stream = _stream(sepsis_log, args.repeat)
    n_pass = len(stream) // args.repeat
    offline = _offline(sepsis, sepsis_log)
    say(f"sepsis: {len(stream):,} events")
    ours = _throughput(sepsis, stream)
    cold = _cold_pass(sepsis, stream[:n_pass])
    ours_disagree = _ours_vs_offline(sepsis, stream[:n_pass], offline)
    say("sepsis: pm4py streaming TBR")
    pm4py_rate, pm4py_results = _pm4py_streaming(sepsis, stream)
    pm4py_disagree = 0
    for case, expected in offline.items():
        r = pm4py_results.get(case)
        if r is None or (r["missing"], r["remaining"], r["is_fit"]) != expected:
            pm4py_disagree += 1

    road_log = DATA / "logs/roadtraffic100traces.xes.gz"
    road = load_model(DATA / "models/pm4py/roadtraffic.pnml")
    road_stream = _stream(road_log, 39)  # 39 x 390 events = 15,210 (+ end markers)
    say(f"roadtraffic: {len(road_stream):,} stream items")
    road_ours = _throughput(road, road_stream)
    road_pm4py_rate, _ = _pm4py_streaming(road, road_stream)

    out: dict[str, Any] = {
        "benchmark": "online_conformance",
        "python": sys.version.split()[0],
        "sepsis": {
            "model": "models/promtee/pnml/sepsis.pnml (final marking: sink place)",
            "stream_items": len(stream),
            "repeat": args.repeat,
            "procvault_tbr": {
                **ours,
                "cold_first_pass_events_per_s": cold,
                "cases_disagreeing_with_pm4py_offline": ours_disagree,
            },
            "pm4py_streaming_tbr": {
                "events_per_s": round(pm4py_rate),
                "cases_disagreeing_with_pm4py_offline": pm4py_disagree,
                "cases": len(offline),
            },
            "ratio_procvault_vs_pm4py_streaming": round(
                ours["events_per_s_median"] / pm4py_rate, 1
            ),
        },
        "roadtraffic": {
            "model": "models/pm4py/roadtraffic.pnml (23 silent transitions)",
            "stream_items": len(road_stream),
            "procvault_tbr": road_ours,
            "pm4py_streaming_tbr": {"events_per_s": round(road_pm4py_rate)},
            "ratio_procvault_vs_pm4py_streaming": round(
                road_ours["events_per_s_median"] / road_pm4py_rate, 1
            ),
        },
    }
    say("alignments: procvault prefix alignments vs pyBeamline")
    from alignments import run as run_alignments  # bench/alignments.py, beside this script

    out["alignments"] = run_alignments(args.alignment_events, whole_log=False)
    if not args.no_memory:
        out["memory"] = _memory(sepsis, args.memory_events, args.memory_events // 10, say)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
