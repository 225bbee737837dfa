"""``procvault monitor``: replay a log through the conformance engine in-process."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from procvault.cli import _add, _positive

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``monitor`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "monitor",
        help="check a log against a model, event by event, in-process",
        description="Replay an XES log as a stream (with end-of-case markers) through the "
        "online conformance engine. events_per_second and latency_us measure the engine alone "
        "over the replay loop (the log is parsed and the model compiled before timing starts); "
        "seconds is the whole run.",
    )
    p.add_argument("log", help="the .xes or .xes.gz file")
    _add(p, "--model", required=True, help="the .pnml or .bpmn model")
    _add(
        p,
        "--final-marking",
        metavar="PLACE",
        help="final place when the model has none (default: the unique sink place)",
    )
    _add(p, "--mode", choices=("tbr", "alignments"), default="tbr", help="conformance technique")
    _add(p, "--case-results", metavar="FILE", help="write one JSON line per completed case")
    _add(p, "--json", action="store_true", help="print the summary as JSON on stdout")
    _add(
        p,
        "--complete-on-final-marking",
        action="store_true",
        help="complete a case when it reaches the final marking (later events are late)",
    )
    _add(
        p,
        "--idle-timeout",
        type=_positive(float),
        metavar="SECONDS",
        help="complete a case after this much event time without events",
    )
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace) -> int:
    """Run ``procvault monitor``."""
    started = time.perf_counter()
    from procvault.generators.models import load_model
    from procvault.generators.xes import read_xes
    from procvault.monitor.petri import ModelError, compile_net
    from procvault.monitor.vault import Vault, VaultSettings
    from procvault.streams.errors import ConfigError, InputError

    if args.mode == "alignments":
        raise ConfigError("--mode alignments is not available yet in this build; use --mode tbr")
    model = load_model(args.model, final_marking=args.final_marking)
    try:
        net = compile_net(model.net, model.initial_marking, model.final_marking)
    except ModelError as exc:
        raise InputError(f"{args.model}: {exc}") from None
    log = read_xes(args.log)
    events = list(log.replay(end_markers=True))
    vault = Vault(
        net,
        VaultSettings(
            complete_on_final_marking=args.complete_on_final_marking,
            idle_timeout=None
            if args.idle_timeout is None
            else timedelta(seconds=args.idle_timeout),
        ),
    )
    results = []
    deviations = 0
    lat = [0] * len(events)
    update = vault.update
    clock = time.perf_counter_ns
    loop_start = clock()
    for i, ev in enumerate(events):
        t0 = clock()
        up = update(ev)
        lat[i] = clock() - t0
        if up:
            deviations += len(up.deviations)
            results.extend(up.completed)
    loop_ns = clock() - loop_start
    results.extend(vault.flush())

    if args.case_results:
        try:
            with Path(args.case_results).open("w", encoding="utf-8") as fh:
                for r in results:
                    fh.write(json.dumps(r.to_dict()) + "\n")
        except OSError as exc:
            raise ConfigError(f"{args.case_results}: cannot write: {exc.strerror}") from None

    lat.sort()
    n_events = sum(r.events for r in results)
    summary = {
        "log": str(args.log),
        "model": str(args.model),
        "final_marking_source": model.final_marking_source,
        "mode": args.mode,
        "events": n_events,
        "cases": len(results),
        "fitting_cases": sum(r.is_fit for r in results),
        "mean_fitness": round(sum(r.fitness for r in results) / len(results), 6)
        if results
        else None,
        "deviations": deviations,
        "seconds": round(time.perf_counter() - started, 3),
        "events_per_second": round(len(events) / (loop_ns / 1e9)) if loop_ns else None,
        "latency_us": {
            "p50": round(lat[len(lat) // 2] / 1000, 3),
            "p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000, 3),
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['events']:,} events, {summary['cases']:,} cases "
            f"({summary['fitting_cases']:,} fitting, mean fitness {summary['mean_fitness']}), "
            f"{deviations:,} deviations; final marking from {model.final_marking_source}; "
            f"engine {summary['events_per_second']:,} events/s, "
            f"p50 {summary['latency_us']['p50']} µs, p99 {summary['latency_us']['p99']} µs",
            file=sys.stderr,
        )
    return 0
