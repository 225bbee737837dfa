"""``procvault dp plan``: each statistic's expected relative error per pane and window under
a DP policy, before anything runs (:mod:`procvault.results.planner`), and a pane length."""

from __future__ import annotations

import argparse
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import positive as _positive

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``dp`` command (``dp plan``) to the CLI's subparsers."""
    p = sub.add_parser("dp", help="plan a DP release: expected noise before anything runs")
    dsub = p.add_subparsers(dest="dp_command", required=True, metavar="SUBCOMMAND")
    plan = dsub.add_parser(
        "plan",
        help="each statistic's 95%% noise interval and relative error per pane and window",
        description="Reads a DP policy and the model (its activities are the known keys), "
        "prints per statistic the 95%% noise interval per pane and per window (the noise is "
        "data-independent) and, from an expected rate or a log, the relative error of the "
        "--top most frequent activities and directly-follows pairs; suggests the shortest "
        "pane length at which they are within --target.",
    )
    _add(plan, "--policy", required=True, metavar="FILE", help="the DP policy (YAML)")
    _add(plan, "--model", help="the .pnml or .bpmn model (its activities are known keys)")
    _add(plan, "--rules", metavar="FILE_OR_DIR", help="compliance rules (their ids are keys)")
    src = plan.add_mutually_exclusive_group(required=True)
    _add(
        src,
        "--rate",
        type=_positive(float),
        metavar="EV_PER_HOUR",
        help="expected events per hour (spread evenly over the activities)",
    )
    _add(src, "--log", metavar="LOG", help="measure the rates on this log (XES, CSV)")
    _add(plan, "--top", type=_positive(int), default=10, help="the K most frequent keys")
    _add(plan, "--target", type=_positive(float), default=0.2, help="relative error to reach")
    plan.set_defaults(func=cmd_plan)


def cmd_plan(args: argparse.Namespace) -> int:
    """Run ``procvault dp plan``."""
    from procvault.config.dp import load_dp_policy
    from procvault.config.engines import load_engines
    from procvault.monitor.errors import ConfigError
    from procvault.results.planner import log_rates, plan_errors, suggest_pane

    if not (args.model or args.rules):
        raise ConfigError("give --model, --rules or both (the keys known in advance)")
    settings = load_dp_policy(args.policy)
    known = load_engines(args.model, args.rules).known()
    span = None
    if args.log:
        from procvault.generators.xes import read_xes

        rates, span = log_rates(read_xes(args.log).replay(), top=args.top)
        source = f"measured on {args.log} ({span / 24:,.0f} days)"
    else:
        acts = max(len(known.keys("activity")) - 1, 1)  # without the placeholder key
        rates = {"activity": args.rate / acts, "directly_follows": args.rate / acts}
        source = f"{args.rate:g} events/hour spread over {acts} activities"
    pane = settings.panes.length
    print(f"policy {args.policy}: panes of {pane}, windows of {settings.window_panes} panes")
    print(f"expected counts: the {args.top}th most frequent key, {source}")
    print(
        f"{'statistic':<17} {'panes':>5} {'scale':>8} {'±95%':>8} {'expected':>10} {'rel.err':>8}"
    )
    for r in plan_errors(settings, known, per_hour=rates, span_hours=span):
        exp = "-" if r.expected is None else f"{r.expected:,.1f}"
        rel = "-" if r.relative is None else f"{100 * r.relative:,.0f}%"
        print(
            f"{r.statistic:<17} {r.window_panes:>5} {r.scale:>8.2f} {r.half_width:>8,} "
            f"{exp:>10} {rel:>8}"
        )
    best, tried = suggest_pane(settings, known, rates, target=args.target, span_hours=span)
    print("pane length: worst relative error of the activities and pairs (pane / longest window)")
    for length, p, w in tried:
        print(f"  {length!s:>16}  {_pct(p):>8} / {_pct(w):>8}")
    if best is None:
        print(
            f"no pane length reaches {100 * args.target:.0f}% under this policy: raise epsilon, "
            "lower max_keys or the statistics' number, or publish longer windows"
        )
    else:
        print(f"suggested pane length: {best} (within {100 * args.target:.0f}% at 95%)")
    return 0


def _pct(x: float) -> str:
    return "-" if x == float("inf") else f"{100 * x:,.0f}%"
