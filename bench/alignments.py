"""Online prefix alignments against pyBeamline's, on the same event stream, in one run.

Prints one JSON object. The stream is Sepsis (``logs/sepsis_cases.xes.gz``) in the log's order,
cases interleaved, against ProMTEE's ``sepsis.pnml``; both tools get the same first ``--events``
events (default 2,000: pyBeamline needs about 2 ms per event on it, so the whole log would take
half a minute per run).

* ``procvault``: :class:`~procvault.monitor.alignments.PrefixAlignments` with ``window=None``
  (every prefix alignment optimal): events/s (median of 3 runs, each on a fresh engine, so each
  pays its cold cache), p50/p99/max µs per event (a separate run timing every call).
* ``pybeamline``: ``PrefixAlignmentConformanceChecker(net, im, fm).handle_event`` (its default,
  unbounded revert window), events/s of one run.
* ``ratio_procvault_vs_pybeamline``: the two events/s figures of this run.
* ``agreement``: per case, the cost of the last prefix alignment each tool holds. pyBeamline
  re-aligns to the *final* marking and then drops trailing model moves, which is not always an
  optimal prefix alignment, so its cost can be higher; ours is checked optimal by the tests.
* ``procvault_whole_log`` (unless ``--no-whole-log``): ours on all 15,214 events, and with
  ``window=5``.

Before each timed section the garbage collector runs once and then freezes what is alive (pm4py,
the log, the other tool's leftovers), as a long-running worker would after startup: otherwise a
full collection scanning those objects (50-120 ms each here) lands inside some timed call.

    .venv/bin/python bench/alignments.py [--events 2000] [--no-whole-log]

pyBeamline comes from the ``bench`` extra. Workloads are built before any timing starts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from _timing import latency_summary, rate_summary  # bench/_timing.py

from procvault.config.models import LoadedModel, load_model
from procvault.generators._pm4py import import_pm4py
from procvault.generators.xes import read_xes
from procvault.monitor.alignments import PrefixAlignments
from procvault.monitor.petri import CompiledNet, compile_net

DATA = Path(
    os.environ.get("PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _settle_gc() -> None:
    gc.collect()
    gc.freeze()


def _ours(net: CompiledNet, stream: list[tuple[str, str]], window: int | None) -> dict[str, Any]:
    _settle_gc()
    rates = []
    for _ in range(3):
        update = PrefixAlignments(net, window=window).update
        t = time.perf_counter()
        for case, activity in stream:
            update(case, activity)
        rates.append(len(stream) / (time.perf_counter() - t))
    engine = PrefixAlignments(net, window=window)
    update = engine.update
    clock = time.perf_counter_ns
    lat = []
    costs: dict[str, int] = {}
    for case, activity in stream:
        t0 = clock()
        step = update(case, activity)
        lat.append(clock() - t0)
        costs[case] = step.cost
    return {
        "window": window,
        "events": len(stream),
        **rate_summary(rates),
        "latency_us": latency_summary(lat, digits=2),
        "costs": costs,
    }


def _pybeamline(model: LoadedModel, stream: list[tuple[str, str]]) -> dict[str, Any]:
    try:
        from pybeamline.algorithms.conformance.prefix_alignments.prefix_alignments_conformance import (  # noqa: E501
            PrefixAlignmentConformanceChecker,
        )
        from pybeamline.bevent import BEvent
    except ImportError:
        return {"skipped": "pybeamline is not installed (pip install -e '.[bench]')"}
    checker = PrefixAlignmentConformanceChecker(
        model.net, model.initial_marking, model.final_marking
    )
    events = [BEvent(activity, case) for case, activity in stream]
    _settle_gc()
    handle = checker.handle_event
    t = time.perf_counter()
    for e in events:
        handle(e)
    seconds = time.perf_counter() - t
    return {
        "version": metadata.version("pybeamline"),
        "events": len(stream),
        "seconds": round(seconds, 2),
        "events_per_s": round(len(stream) / seconds),
        "costs": {
            case: int(state.get_last().cost) for case, state in checker.case_administration.items()
        },
    }


def run(events: int, whole_log: bool) -> dict[str, Any]:
    """The comparison on the first ``events`` Sepsis events (also used by bench/conformance.py)."""
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    import_pm4py()  # quietly, before pyBeamline imports it
    model = load_model(DATA / "models/promtee/pnml/sepsis.pnml")
    net = compile_net(model.net, model.initial_marking, model.final_marking)
    log = [(e.case_id, e.activity) for e in read_xes(DATA / "logs/sepsis_cases.xes.gz").events]
    stream = log[:events]
    say(f"sepsis: {len(stream):,} of {len(log):,} events, {len({c for c, _ in stream})} cases")

    ours = _ours(net, stream, None)
    say("pybeamline ...")
    theirs = _pybeamline(model, stream)
    ours_costs = ours.pop("costs")
    out: dict[str, Any] = {
        "benchmark": "prefix_alignments",
        "python": sys.version.split()[0],
        "stream": (
            f"logs/sepsis_cases.xes.gz in log order: the first {len(stream):,} of "
            f"{len(log):,} events, {len(ours_costs)} cases"
        ),
        "model": "models/promtee/pnml/sepsis.pnml (final marking: sink place)",
        "gc": "collected and frozen before each timed section",
        "procvault": ours,
        "pybeamline": {k: v for k, v in theirs.items() if k != "costs"},
        "ratio_procvault_vs_pybeamline": None,
    }
    if "costs" in theirs:
        out["ratio_procvault_vs_pybeamline"] = round(
            ours["events_per_s_median"] / theirs["events_per_s"], 1
        )
        pairs = [(ours_costs[c], theirs["costs"][c]) for c in ours_costs]
        out["agreement"] = {
            "cases": len(pairs),
            "same_cost": sum(a == b for a, b in pairs),
            "pybeamline_higher": sum(b > a for a, b in pairs),
            "pybeamline_lower": sum(b < a for a, b in pairs),
        }
    if whole_log:
        say("whole log ...")
        whole = _ours(net, log, None)
        whole.pop("costs")
        windowed = _ours(net, log, 5)
        windowed.pop("costs")
        out["procvault_whole_log"] = {"unbounded": whole, "window_5": windowed}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000, help="events of the stream for both")
    ap.add_argument("--no-whole-log", action="store_true", help="skip our whole-log figures")
    args = ap.parse_args()
    json.dump(run(args.events, not args.no_whole_log), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
