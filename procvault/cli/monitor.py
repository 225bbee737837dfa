"""``procvault monitor``: replay a log through the conformance and compliance engines in-process."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from array import array
from datetime import timedelta
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import add_progress_option, progress_bar
from procvault.cli.options import positive as _positive

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``monitor`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "monitor",
        help="check a log against a model and/or compliance rules, event by event, in-process",
        description="Replay an XES log as a stream (with end-of-case markers) through the "
        "online conformance engine (--model) and/or the compliance engine (--rules, native; "
        "--promtee-rules with --manifest, ProMTEE's Rego rules through regopy, a slow "
        "reference path evaluated trace by trace in worker processes). events_per_second and "
        "latency_us measure the native engines alone over the replay loop (the log is parsed, "
        "the model and rules compiled before timing starts); seconds is the whole run.",
    )
    p.add_argument("log", help="the .xes or .xes.gz file")
    _add(p, "--model", help="the .pnml or .bpmn model")
    _add(p, "--rules", metavar="FILE_OR_DIR", help="native compliance rules (YAML file or folder)")
    _add(
        p,
        "--promtee-rules",
        metavar="DIR",
        help="a ProMTEE rule folder (.rego + .yaml), evaluated with regopy (needs --manifest)",
    )
    _add(p, "--manifest", metavar="FILE", help="ProMTEE extraction manifest (with --promtee-rules)")
    _add(
        p,
        "--final-marking",
        metavar="PLACE",
        help="final place when the model has none (default: the unique sink place)",
    )
    _add(
        p,
        "--mode",
        choices=("tbr", "alignments"),
        default="tbr",
        help="'tbr': token replay; 'alignments': token replay plus incremental prefix "
        "alignments (alignment_cost per case)",
    )
    _add(
        p,
        "--window",
        type=int,
        metavar="EVENTS",
        help="alignments: how many recent events may be revised (default: unbounded, optimal)",
    )
    _add(p, "--case-results", metavar="FILE", help="write one JSON line per completed case")
    _add(p, "--json", action="store_true", help="print the summary as JSON on stdout")
    _add(
        p,
        "--top-deviations",
        type=_positive(int),
        default=10,
        metavar="N",
        help="how many activities and transitions to list by their deviations",
    )
    add_progress_option(p)
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
    from procvault.generators.xes import read_xes
    from procvault.monitor.errors import ConfigError
    from procvault.monitor.summary import RunSummary
    from procvault.monitor.vault import Vault, VaultSettings

    if args.mode == "alignments" and not args.model:
        raise ConfigError("--mode alignments needs --model")
    if not (args.model or args.rules or args.promtee_rules):
        raise ConfigError("give --model, --rules or --promtee-rules (or a model and rules)")
    if args.rules and args.promtee_rules:
        raise ConfigError("--rules and --promtee-rules are exclusive: run them one at a time")
    if bool(args.promtee_rules) != bool(args.manifest):
        raise ConfigError("--promtee-rules and --manifest go together")
    from procvault.config.engines import load_engines

    engines = load_engines(args.model, args.rules, args.final_marking)
    model, net, rules = engines.model, engines.net, engines.rules
    compliance = None
    if rules is not None:
        from procvault.monitor.compliance import Compliance

        compliance = Compliance(rules)
    promtee = None
    if args.promtee_rules:
        from procvault.reference.promtee import load_manifest, load_promtee_rules

        promtee = load_promtee_rules(args.promtee_rules, skip_invalid=True)
        for name, reason in promtee.skipped:
            print(f"warning: ProMTEE rule {name} left out: {reason}", file=sys.stderr)
        load_manifest(args.manifest)  # fail now, not in a worker
    log = read_xes(args.log)
    # Streamed: each event is built from the log's columns as the engine takes it.
    n_stream = log.n_events + log.n_cases  # events and end markers (at most)
    settings = VaultSettings(
        complete_on_final_marking=args.complete_on_final_marking,
        idle_timeout=None if args.idle_timeout is None else timedelta(seconds=args.idle_timeout),
    )
    aligner = None
    if args.mode == "alignments" and net is not None:
        from procvault.monitor.alignments import PrefixAlignments

        aligner = PrefixAlignments(net, window=args.window)
    vault = (
        Vault(net, settings, compliance=compliance, alignments=aligner)
        if net is not None or compliance is not None
        else None
    )
    results: list[Any] = []
    run = RunSummary()
    lat = array("q", bytes(8 * n_stream))  # per-update ns, not a Python int per event
    n_updates = 0
    clock = time.perf_counter_ns
    bar = progress_bar(args.progress, n_stream, "monitoring") if vault is not None else None
    if vault is not None:
        update = vault.update
        step = 4096  # progress is advanced outside the timed update, every `step` events
        if bar is not None:
            bar.start()
        try:
            # The conformance engine reads no attributes: only rules need them built.
            for ev in log.replay(end_markers=True, attributes=compliance is not None):
                t0 = clock()
                up = update(ev)
                lat[n_updates] = clock() - t0
                n_updates += 1
                if up:
                    if up.deviations:
                        run.add_deviations(up.deviations)
                    if up.alerts:
                        run.add_alerts(len(up.alerts))
                    results.extend(up.completed)
                if bar is not None and not n_updates % step:
                    bar.update(bar.task_ids[0], completed=n_updates)
        finally:
            if bar is not None:
                bar.update(bar.task_ids[0], completed=n_updates, total=n_updates)
                bar.stop()
    loop_ns = sum(lat)  # the engine's time alone (events are built between the updates)
    if vault is not None:
        results.extend(vault.flush())
    if promtee is not None:
        results = _with_promtee(args, log, results)
    run.add_results(results)
    deviations, alerts = run.deviations, run.alerts

    if args.case_results:
        try:
            with Path(args.case_results).open("w", encoding="utf-8") as fh:
                for r in results:
                    fh.write(json.dumps(r.to_dict()) + "\n")
        except OSError as exc:
            raise ConfigError(f"{args.case_results}: cannot write: {exc.strerror}") from None

    import numpy as np

    lat_sorted = np.sort(np.frombuffer(lat, dtype=np.int64)[:n_updates]) if n_updates else None
    n_events = run.events
    rule_states = run.rule_states
    labels = dict(zip(net.transition_names, net.transition_labels, strict=True)) if net else {}
    mean_fitness, log_fitness = run.mean_fitness, run.log_fitness
    summary = {
        "log": str(args.log),
        "model": str(args.model) if args.model else None,
        "final_marking_source": model.final_marking_source if model else None,
        "mode": args.mode,
        "events": n_events,
        "cases": len(results),
        "fitting_cases": sum(r.is_fit for r in results) if net else None,
        "mean_fitness": round(mean_fitness, 6) if mean_fitness is not None and net else None,
        "log_fitness": round(log_fitness, 6) if log_fitness is not None and net else None,
        "tokens": run.to_dict()["tokens"] if net else None,
        "deviations": deviations,
        "deviations_by_activity": [
            {"activity": a, "deviations": sum(k.values()), "by_kind": k}
            for a, k in run.top_activities(args.top_deviations)
        ],
        "deviations_by_transition": [
            {"transition": t, "label": labels.get(t), "deviations": n}
            for t, n in run.top_transitions(args.top_deviations)
        ],
        "rules": args.rules or args.promtee_rules,
        "alerts": alerts,
        "rule_states": rule_states,
        "seconds": round(time.perf_counter() - started, 3),
        "events_per_second": round(n_updates / (loop_ns / 1e9))
        if loop_ns and vault is not None
        else None,
        "latency_us": {
            "p50": round(int(lat_sorted[n_updates // 2]) / 1000, 3),
            "p99": round(int(lat_sorted[min(n_updates - 1, int(n_updates * 0.99))]) / 1000, 3),
        }
        if lat_sorted is not None
        else {"p50": 0.0, "p99": 0.0},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(_text_report(summary, model), file=sys.stderr)
    return 0


def _text_report(summary: dict[str, Any], model: Any) -> str:
    """The human-readable summary: totals, fitness, deviations, rule verdicts, engine speed."""
    lines = [f"{summary['events']:,} events, {summary['cases']:,} cases"]
    if model is not None and summary["mean_fitness"] is not None:
        lines[0] += (
            f"; {summary['fitting_cases']:,} fitting; log fitness {summary['log_fitness']} "
            f"(pm4py token-based), mean case fitness {summary['mean_fitness']}; "
            f"final marking from {model.final_marking_source}"
        )
    if summary["deviations"]:
        lines.append(f"{summary['deviations']:,} deviations; most frequent by activity:")
        for row in summary["deviations_by_activity"]:
            kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(row["by_kind"].items()))
            lines.append(f"  {row['deviations']:>7,}  {row['activity']}  ({kinds})")
        if summary["deviations_by_transition"]:
            lines.append("by transition fired without being enabled:")
            for row in summary["deviations_by_transition"]:
                label = row["label"] if row["label"] is not None else "(silent)"
                name = f"{label} [{row['transition']}]" if label != row["transition"] else label
                lines.append(f"  {row['deviations']:>7,}  {name}")
    elif model is not None:
        lines.append("no deviations")
    if summary["rule_states"]:
        lines.append(f"rules ({summary['alerts']:,} alerts), cases per final state:")
        for rule, states in sorted(summary["rule_states"].items()):
            counts = ", ".join(f"{s} {n:,}" for s, n in sorted(states.items()))
            lines.append(f"  {rule}: {counts}")
    if summary["events_per_second"] is not None:
        lines.append(
            f"engine {summary['events_per_second']:,} events/s, "
            f"p50 {summary['latency_us']['p50']} µs, p99 {summary['latency_us']['p99']} µs"
        )
    return "\n".join(lines)


def _with_promtee(args: argparse.Namespace, log: Any, results: list[Any]) -> list[Any]:
    """Attach the final states of ProMTEE's Rego rules (reference path) to the case results."""
    from procvault.monitor.vault import CaseResult
    from procvault.reference.promtee import evaluate_cases

    cases: dict[str, list[Any]] = {}
    for ev in log.events:
        cases.setdefault(ev.case_id, []).append(ev)
    states, _errors = evaluate_cases(args.promtee_rules, args.manifest, list(cases.items()))
    if not results:
        return [
            CaseResult(
                c,
                len(evs),
                0,
                0,
                0,
                0,
                1.0,
                True,
                0,
                "end_marker",
                rules=states[c],
                conformance=False,
            )
            for c, evs in cases.items()
        ]
    return [r._replace(rules=states.get(r.case_id, {})) for r in results]
