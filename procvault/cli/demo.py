"""``procvault demo``: the whole confidential pipeline on what the package ships, self-checked."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import positive as _positive

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo",
        help="run the whole confidential pipeline on bundled data, then check it",
        description="Simulates orders of the bundled order-to-cash net across a customer, a "
        "supplier and a carrier, and runs the confidential pipeline on them as real processes: "
        "a local Kafka (or --kafka), keys, a vault worker, the DP release stage, Prometheus (if "
        "installed) and three agents, the carrier's with a privacy policy (pseudonyms, PII "
        "scrubbing). Shows progress, each organization's results and the DP process map with "
        "its noise while it runs, stops everything, and ends with a self-check: the vault's "
        "per-case results equal 'procvault monitor' on the same stream, no case id, name, value "
        "or activity is in clear in any topic (activities only in the DP aggregates), the "
        "vault rejected nothing and applied nothing late, and no process is left running. "
        "Exit code 1 when a check fails.",
    )
    _add(p, "--cases", type=_positive(int), default=1000, help="orders to simulate")
    _add(
        p,
        "--rate",
        type=_positive(float),
        default=600.0,
        help="events per second of the whole stream (the agents replay in step)",
    )
    _add(p, "--seed", type=int, default=1, help="seed of the simulation")
    _add(
        p,
        "--kafka",
        metavar="HOST:PORT",
        help="use this running broker (the demo's topics get their own prefix) instead of "
        "starting a local one on free ports",
    )
    _add(
        p,
        "--run-dir",
        metavar="DIR",
        help="keep the stream, keys and logs here (default: a temporary folder, removed)",
    )
    _add(p, "--no-prometheus", action="store_true", help="do not start Prometheus")
    _add(
        p,
        "--plain",
        action="store_true",
        help="progress as plain lines, no live view (the default when not on a terminal)",
    )
    _add(
        p,
        "--timeout",
        type=_positive(float),
        default=300.0,
        metavar="SECONDS",
        help="give up when the pipeline has not finished by then",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``procvault demo``."""
    from procvault.demo.run import Demo, DemoSettings

    settings = DemoSettings(
        run_dir=Path(args.run_dir) if args.run_dir else None,
        cases=args.cases,
        rate=args.rate,
        seed=args.seed,
        kafka=args.kafka,
        prometheus=not args.no_prometheus,
        live=False if args.plain else None,
        timeout=args.timeout,
    )
    return Demo(settings).run()
