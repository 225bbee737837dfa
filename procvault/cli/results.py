"""``procvault results``: read the pipeline's results, verify them, show them.

The vault's public keys per epoch come from its signed announcements on ``vault.keys``: only
from those that chain to the vault identity pinned in ``DIR/registry.json`` (the identity's
certificate over the epoch's keys, the epoch key's signature) and whose attestation evidence is
accepted (simulated evidence only with ``--allow-insecure-attestation``, hardware evidence with
``--attestation-policy``); anything else on ``vault.keys`` is counted and skipped. Every
record of ``results.aggregates`` is verified against them before it is parsed; with ``--org``
the organization's alerts (``results.alerts.<org>``) are opened with its key file
(``DIR/org-<org>.json``) and their vault signature checked. A record that fails is counted
and named by its position and a short reason, never shown.
A record republished unchanged (the release stage after a restart) is shown once.

``--map`` shows the DP process map of the latest pane (``--window N``: of the latest window of
N panes) instead of the records, live with ``--follow``; ``--graph FILE.png|FILE.svg`` writes
it as an image (:class:`MapView`, :mod:`procvault.processmap.draw`).

Exit code: 0, or 1 if any record was rejected (or ``--graph`` had no record to draw).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import iso_time
from procvault.cli.options import positive as _positive
from procvault.cli.shared import (
    add_attestation_options,
    add_connection_options,
    attestation_verifier,
    kafka_address,
)
from procvault.results.mapview import MapView
from procvault.results.reader import ResultsReader

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``results`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "results",
        help="read, verify and show the DP aggregates (and an organization's alerts)",
        description="Reads the vault's key announcements (vault.keys), then every signed DP "
        "record on results.aggregates, verifying each against the announced key of its "
        "epoch; with --org also the organization's encrypted alerts, opened with its key "
        "file. Rejected records are counted and never shown. Reads with read_committed. "
        "Without --follow it stops at the end of the topics; exit code 1 if anything was "
        "rejected. --map shows the DP process map of the latest pane instead of the records "
        "(live with --follow); --graph writes it as a PNG or SVG image.",
    )
    add_connection_options(p, partitions=False, bootstrap_alias=True)
    _add(p, "--org", help="also read this organization's alerts (needs DIR/org-ORG.json)")
    _add(p, "--follow", action="store_true", help="keep reading new records until interrupted")
    _add(p, "--json", action="store_true", help="one JSON object per record on stdout")
    view = p.add_argument_group(
        "process map",
        "the DP process map of the latest pane (or window): post-processing of the released "
        "noisy values only",
    )
    _add(
        view,
        "--map",
        action="store_true",
        help="show the process map instead of the records (live with --follow)",
    )
    _add(
        view,
        "--graph",
        metavar="FILE.png|FILE.svg",
        help="write the latest process map as a graph image (rewritten while --follow runs)",
    )
    _add(
        view,
        "--window",
        dest="map_window",
        type=_positive(int),
        metavar="N",
        help="map the latest window record of N panes (default: the latest pane)",
    )
    _add(
        view,
        "--at",
        dest="map_at",
        type=iso_time,
        metavar="TIME",
        help="map the pane (or --window) holding this time (ISO 8601, UTC unless it says "
        "otherwise; default: the latest)",
    )
    _add(
        view,
        "--min-count",
        type=_non_negative_int,
        metavar="N",
        help="show pairs (and draw activities) with a noisy count of at least N "
        "(default: 3 noise standard deviations, from the record's mechanisms)",
    )
    _add(
        view,
        "--top",
        type=_positive(int),
        default=3,
        help="--map: strongest next activities listed per activity",
    )
    add_attestation_options(p, timeout=False)
    _add(
        p,
        "--timeout",
        type=_positive(float),
        default=30.0,
        help="without --follow: give up when the topics' ends are not reached in this time",
    )
    p.set_defaults(func=cmd_results)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def cmd_results(args: argparse.Namespace) -> int:
    """Run ``procvault results``."""
    from procvault.monitor.errors import ConfigError
    from procvault.streams.frames import Topics
    from procvault.streams.secrets import OrgKeys, Registry

    host_port = kafka_address(args.kafka)
    view = _map_view(args)
    registry = Registry.load(Path(args.keys) / "registry.json")
    org_keys = None
    if args.org:
        org_keys = OrgKeys.load(Path(args.keys) / f"org-{args.org}.json")
        if org_keys.org != args.org:
            raise ConfigError(f"org-{args.org}.json holds the keys of {org_keys.org!r}")
    reader = ResultsReader(
        host_port,
        Topics(args.topic_prefix),
        identity=registry.identity,
        verifier=attestation_verifier(args, registry.identity, "results"),
        org_keys=org_keys,
        out=sys.stdout,
        json_lines=args.json,
        view=view,
    )
    problem = None
    if view is None:
        stats = asyncio.run(reader.run(follow=args.follow, timeout=args.timeout))
    else:
        with view.live(args.follow):
            stats = asyncio.run(reader.run(follow=args.follow, timeout=args.timeout))
        problem = view.finish()
    print(stats.summary(), file=sys.stderr)
    if problem is not None:
        from procvault.monitor.errors import ProcvaultError

        raise ProcvaultError(problem)
    return 1 if stats.rejected else 0


def _map_view(args: argparse.Namespace) -> MapView | None:
    """The :class:`MapView` the options ask for (checked before anything is read)."""
    from procvault.monitor.errors import ConfigError
    from procvault.processmap.draw import graph_format

    wants = args.map or args.graph
    if not wants:
        for flag, value in (
            ("--window", args.map_window),
            ("--min-count", args.min_count),
            ("--at", args.map_at),
        ):
            if value is not None:
                raise ConfigError(f"{flag} needs --map or --graph")
        return None
    if args.map and args.json:
        raise ConfigError("choose --map or --json")
    graph = None
    if args.graph:
        try:
            graph_format(args.graph)
        except ValueError as exc:
            raise ConfigError(f"--graph: {exc}") from None
        graph = Path(args.graph)
        if not graph.parent.is_dir():
            raise ConfigError(f"--graph: folder {str(graph.parent)!r} does not exist")
    return MapView(
        show=args.map,
        graph=graph,
        window=args.map_window,
        min_count=args.min_count,
        top=args.top,
        at=args.map_at,
    )
