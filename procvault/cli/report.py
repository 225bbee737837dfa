"""``procvault report RUN_DIR``: ProMTEE-style CSVs and PNG plots of a recorded run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``report`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "report",
        help="write ProMTEE-compatible CSVs and PNG plots from a recorded run",
        description="Read what the processes of a run recorded under RUN_DIR (one subfolder "
        "per process: memory_usage.csv, events.csv, throughput.csv) and write "
        "delay_result.csv, latency.csv (ProMTEE's formats), latency_summary.csv, "
        "throughput.csv, <process>/memory_usage.csv and the plots latency_distribution.png, "
        "latency_trend.png, memory_usage.png, throughput.png.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder")
    _add(p, "--out", metavar="DIR", help="output folder (default: RUN_DIR/report)")
    _add(p, "--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """``procvault report``."""
    from procvault.reports.run_report import write_report

    run_dir = Path(args.run_dir)
    summary = write_report(run_dir, Path(args.out) if args.out else None)
    if args.json:
        print(
            json.dumps(
                {
                    "out_dir": str(summary.out_dir),
                    "processes": summary.processes,
                    "events": summary.events,
                    "files": [str(f) for f in summary.files],
                    "notes": summary.notes,
                }
            )
        )
    else:
        print(
            f"report of {run_dir} ({', '.join(summary.processes)}; {summary.events:,} events) "
            f"in {summary.out_dir}: {len(summary.files)} files",
            file=sys.stderr,
        )
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0
