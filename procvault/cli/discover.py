"""``procvault discover``: discover the models of a log in-process, or compare two saved models.

``procvault discover LOG --out DIR`` streams the log (in replay order, with end-of-case
markers) through the discovery tracker, the centralized reference of what the vault discovers,
derives the heuristics net and the Declare model and writes ``model.json``, PNML, BPMN,
``declare.json``, pm4py's ``.dfg`` and pictures into DIR (``procvault.discovery.write_models``).
``procvault discover --compare A B`` shows what changed from model A to model B (a
``model.json`` or the folder holding it). ``procvault discover --public --from HOST:PORT``
builds the public net from the verified DP aggregates (``procvault.results.publicnet``). The
command only parses, reads and writes; the tracker lives in ``procvault.monitor.discovery``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import add_progress_option, fail_usage, progress_bar
from procvault.cli.options import positive as _positive

__all__ = ["cmd_discover", "register"]


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def register(sub: Any) -> None:
    """Add the ``discover`` subcommand to the CLI's subparsers."""
    from procvault.monitor.discovery import TEMPLATES, HeuristicsSettings

    h = HeuristicsSettings()
    p = sub.add_parser(
        "discover",
        help="discover a log's DFG, heuristics net and Declare model; compare two models",
        description="Stream an XES log through the discovery tracker in-process (the "
        "centralized reference of what the vault discovers) and write into --out: model.json "
        "(counts, heuristics net, Declare model), heuristics.pnml and heuristics.bpmn (the "
        "heuristics net as pm4py converts it), declare.json, dfg.dfg (pm4py's format) and "
        "pictures. The models equal pm4py's discover_dfg, discover_heuristics_net and "
        "discover_declare with the same parameters. With --compare A B, show what changed "
        "from model A to model B instead. See docs/discovery.md.",
    )
    p.add_argument("log", nargs="?", help="the .xes or .xes.gz file")
    _add(p, "--out", metavar="DIR", help="the folder to write the models into")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="compare two saved models (model.json files or the folders holding them)",
    )
    _add(
        p,
        "--pictures",
        default="png",
        help="picture formats, comma-separated: png, svg, or 'none'",
    )
    _add(p, "--no-declare", action="store_true", help="do not tally or write the Declare model")
    _add(
        p,
        "--dependency-threshold",
        type=float,
        default=h.dependency_threshold,
        help="Heuristics Miner: dependency threshold",
    )
    _add(
        p,
        "--and-threshold",
        type=float,
        default=h.and_threshold,
        help="Heuristics Miner: AND threshold",
    )
    _add(
        p,
        "--loop-two-threshold",
        type=float,
        default=h.loop_two_threshold,
        help="Heuristics Miner: length-two loop threshold",
    )
    _add(
        p,
        "--min-act-count",
        type=_count,
        default=h.min_act_count,
        help="Heuristics Miner: least events of an activity in the net",
    )
    _add(
        p,
        "--min-dfg-occurrences",
        type=_count,
        default=h.min_dfg_occurrences,
        help="Heuristics Miner: least count of an arc in the net",
    )
    _add(
        p,
        "--templates",
        help=f"Declare templates, comma-separated (default: all of {', '.join(TEMPLATES)})",
    )
    _add(
        p,
        "--min-support-ratio",
        type=_ratio,
        help="Declare: least support / cases (default: chosen as pm4py does)",
    )
    _add(
        p,
        "--min-confidence-ratio",
        type=_ratio,
        help="Declare: least confidence / support (default: chosen as pm4py does)",
    )
    _add(
        p,
        "--limit",
        type=_positive(int),
        default=20,
        help="--compare: entries shown per section",
    )
    _add(p, "--json", action="store_true", help="print the summary (or comparison) as JSON")
    add_progress_option(p)
    released = p.add_argument_group(
        "the vault's release",
        "--from HOST:PORT reads the exact models `procvault models` published for --org "
        "(instead of a LOG): verified against the vault's announced keys (chained to the "
        "identity pinned in --keys/registry.json) and opened with --keys/org-ORG.json; the "
        "heuristics net and Declare model are derived again from the released counts with "
        "the options above.",
    )
    _add(released, "--from", dest="source", metavar="HOST:PORT", help="Kafka bootstrap server")
    _add(released, "--org", help="the organization whose release to read")
    _add(released, "--keys", metavar="DIR", help="folder with registry.json and org-ORG.json")
    _add(released, "--topic-prefix", default="", metavar="PREFIX", help="prefix of every topic")
    _add(
        released,
        "--timeout",
        type=_positive(float),
        default=30.0,
        help="give up when the topics' ends are not reached in this time",
    )
    from procvault.cli.shared import add_attestation_options

    add_attestation_options(released)
    public = p.add_argument_group(
        "the public net",
        "--public with --from HOST:PORT reads the DP aggregates on results.aggregates instead "
        "(verified as `procvault results` verifies them; no --org): sums the noisy "
        "directly_follows and start_end values of the released panes (all of them, or --at "
        "and --window) and writes public.pnml, public.json (with the noise the values were "
        "released with) and pictures into --out: pm4py's inductive miner on released values "
        "only, so no privacy cost. The release policy must name start_end "
        "(policies/dp/public_net.yaml).",
    )
    _add(public, "--public", action="store_true", help="build the public net (needs --from)")
    from procvault.cli.options import iso_time

    _add(
        public,
        "--at",
        dest="public_at",
        type=iso_time,
        metavar="TIME",
        help="sum the pane holding this time (with --window: the N panes ending there); "
        "ISO 8601, UTC unless it says otherwise (default: every released pane)",
    )
    _add(
        public,
        "--window",
        dest="public_window",
        type=_positive(int),
        metavar="N",
        help="sum the N panes ending at --at (default: at the last pane read)",
    )
    _add(
        public,
        "--min-count",
        dest="public_min_count",
        type=_count,
        metavar="N",
        help="keep arcs and start/end activities with a summed noisy count of at least N "
        "(default: 3 standard deviations of the summed noise, from the records' mechanisms)",
    )
    _add(
        public,
        "--noise-threshold",
        type=_ratio,
        default=0.0,
        help="pm4py's inductive-miner noise_threshold (0: the plain inductive miner)",
    )
    p.set_defaults(func=cmd_discover)


def cmd_discover(args: argparse.Namespace) -> int:
    """Run ``procvault discover``."""
    if args.compare:
        if args.log or args.out:
            fail_usage("--compare takes two models and no LOG or --out")
        return _compare(args)
    if args.public:
        if not args.source or args.log or args.org:
            fail_usage("--public reads the DP aggregates: give --from HOST:PORT, no LOG or --org")
        if not args.out or not args.keys:
            fail_usage("--public needs --keys and --out")
        return _public(args)
    for flag, value in (
        ("--at", args.public_at),
        ("--window", args.public_window),
        ("--min-count", args.public_min_count),
    ):
        if value is not None:
            fail_usage(f"{flag} needs --public")
    if args.source:
        if args.log:
            fail_usage("--from reads the vault's release: give no LOG")
        if not args.out or not args.org or not args.keys:
            fail_usage("--from needs --org, --keys and --out")
        return _released(args)
    if not args.log or not args.out:
        fail_usage("give LOG and --out DIR (or --compare A B, or --from HOST:PORT)")
    return _discover(args)


def _released(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from procvault.cli.shared import attestation_verifier, kafka_address
    from procvault.discovery.files import write_models
    from procvault.monitor.discovery import build_model
    from procvault.monitor.errors import ConfigError, ProcvaultError
    from procvault.results.models import read_models
    from procvault.streams.frames import Topics
    from procvault.streams.secrets import OrgKeys, Registry

    heuristics, declare, formats = _settings(args)
    keys = Path(args.keys)
    registry = Registry.load(keys / "registry.json")
    org_keys = OrgKeys.load(keys / f"org-{args.org}.json")
    if org_keys.org != args.org:
        raise ConfigError(f"org-{args.org}.json holds the keys of {org_keys.org!r}")
    found = asyncio.run(
        read_models(
            kafka_address(args.source),
            Topics(args.topic_prefix),
            identity=registry.identity,
            verifier=attestation_verifier(args, registry.identity, "discover"),
            org_keys=org_keys,
            timeout=args.timeout,
        )
    )
    refused = sum(found.rejected.values())
    if found.model is None:
        raise ProcvaultError(
            f"no verified model release for {args.org}"
            + (f" ({refused} refused: {dict(found.rejected)})" if refused else "")
        )
    counts = found.model.counts
    if declare is not None and not counts.declare:
        declare = None
    model = build_model(counts, heuristics=heuristics, declare=declare)
    written = write_models(model, args.out, pictures=formats)
    summary = {
        "source": args.source,
        "org": args.org,
        "out": str(args.out),
        "finished": found.finished,
        "partitions": found.partitions,
        "releases": found.releases,
        "refused": dict(found.rejected),
        "events": counts.events,
        "cases": counts.cases_completed,
        "activities": len(counts.activities),
        "dfg_arcs": len(counts.pairs),
        "files": [p.name for p in written],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        state = "whole stream" if found.finished else "so far (streams still open)"
        print(
            f"the vault's release for {args.org} ({state}, {found.partitions} partitions): "
            f"{counts.events:,} events, {counts.cases_completed:,} cases, "
            f"{len(counts.activities)} activities, {len(counts.pairs)} directly-follows arcs"
        )
        print(f"wrote {len(written)} files to {args.out}: {', '.join(summary['files'])}")
        if refused:
            print(f"refused {refused} record(s): {dict(found.rejected)}", file=sys.stderr)
    return 1 if refused else 0


def _public(args: argparse.Namespace) -> int:
    import asyncio
    import io
    from pathlib import Path

    from procvault.cli.shared import attestation_verifier, kafka_address
    from procvault.discovery.public import write_public_net
    from procvault.results.publicnet import ReleasedPanes, released_public_net
    from procvault.results.reader import ResultsReader
    from procvault.streams.frames import Topics
    from procvault.streams.secrets import Registry

    _, _, formats = _settings(args)
    registry = Registry.load(Path(args.keys) / "registry.json")
    panes = ReleasedPanes()
    reader = ResultsReader(
        kafka_address(args.source),
        Topics(args.topic_prefix),
        identity=registry.identity,
        verifier=attestation_verifier(args, registry.identity, "discover"),
        out=io.StringIO(),
        view=panes,
    )
    stats = asyncio.run(reader.run(timeout=args.timeout))
    print(stats.summary(), file=sys.stderr)
    pub = released_public_net(
        panes,
        at=args.public_at,
        window=args.public_window,
        min_count=None if args.public_min_count is None else float(args.public_min_count),
        noise_threshold=args.noise_threshold,
    )
    written = write_public_net(pub, args.out, pictures=formats)
    record = pub.record()
    noise = pub.noise
    summary = {
        "source": args.source,
        "out": str(args.out),
        "panes": noise["panes"],
        "withheld_panes": noise["withheld_panes"],
        "first_pane": noise["first_pane"],
        "last_pane": noise["last_pane"],
        "epsilon_per_case": noise["epsilon_per_case"],
        "min_count": pub.min_count,
        "sound": pub.sound,
        "places": record.places,
        "transitions": record.transitions,
        "dfg_arcs": len(pub.dfg),
        "start_activities": len(pub.start_activities),
        "end_activities": len(pub.end_activities),
        "rejected": stats.rejected,
        "files": [p.name for p in written],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"the public net of {noise['panes']} released pane(s) "
            f"({noise['withheld_panes']} withheld): {'sound' if pub.sound else 'NOT sound'}, "
            f"{record.places} places, {record.transitions} transitions, from "
            f"{len(pub.dfg)} arcs, {len(pub.start_activities)} start and "
            f"{len(pub.end_activities)} end activities with a noisy count >= {pub.min_count:g}"
        )
        print(f"wrote {len(written)} files to {args.out}: {', '.join(summary['files'])}")
    return 1 if stats.rejected or not pub.sound else 0


def _compare(args: argparse.Namespace) -> int:
    import msgspec

    from procvault.discovery.changes import diff, render_diff
    from procvault.discovery.files import read_model

    a, b = (read_model(x) for x in args.compare)
    d = diff(a, b)
    if args.json:
        print(
            json.dumps(
                {"before": args.compare[0], "after": args.compare[1], **msgspec.to_builtins(d)}
            )
        )
    else:
        print(render_diff(d, limit=args.limit))
    return 0


def _settings(args: argparse.Namespace) -> tuple[Any, Any, tuple[str, ...]]:
    from procvault.monitor.discovery import DeclareSettings, HeuristicsSettings
    from procvault.monitor.errors import ConfigError

    heuristics = HeuristicsSettings(
        dependency_threshold=args.dependency_threshold,
        and_threshold=args.and_threshold,
        loop_two_threshold=args.loop_two_threshold,
        min_act_count=args.min_act_count,
        min_dfg_occurrences=args.min_dfg_occurrences,
    )
    declare = None
    if not args.no_declare:
        kw: dict[str, Any] = {
            "min_support_ratio": args.min_support_ratio,
            "min_confidence_ratio": args.min_confidence_ratio,
        }
        if args.templates:
            kw["templates"] = tuple(t.strip() for t in args.templates.split(",") if t.strip())
        declare = DeclareSettings(**kw)
    elif args.templates or args.min_support_ratio is not None or args.min_confidence_ratio:
        raise ConfigError(
            "--templates and the Declare ratios need the Declare model (no --no-declare)"
        )
    formats = tuple(f.strip().lower() for f in args.pictures.split(",") if f.strip())
    if formats == ("none",):
        formats = ()
    bad = sorted(set(formats) - {"png", "svg"})
    if bad:
        raise ConfigError(f"--pictures takes png, svg or none, not {', '.join(bad)}")
    return heuristics, declare, formats


def _discover(args: argparse.Namespace) -> int:
    from procvault.discovery.files import write_models
    from procvault.generators.xes import read_xes
    from procvault.monitor.discovery import DiscoveryTracker, TrackerSettings, build_model

    started = time.perf_counter()
    heuristics, declare, formats = _settings(args)
    log = read_xes(args.log)
    events = list(log.replay(end_markers=True))
    tracker = DiscoveryTracker(TrackerSettings(declare=declare is not None))
    update = tracker.update
    bar = progress_bar(args.progress, len(events), "discovering")
    t0 = time.perf_counter()
    if bar is None:
        for ev in events:
            update(ev)
    else:
        task = bar.task_ids[0]
        step = 10_000
        with bar:
            for i in range(0, len(events), step):
                for ev in events[i : i + step]:
                    update(ev)
                bar.advance(task, len(events[i : i + step]))
    tracker.flush()
    counts = tracker.counts()
    track_s = time.perf_counter() - t0
    model = build_model(counts, heuristics=heuristics, declare=declare)
    written = write_models(model, args.out, pictures=formats)
    summary: dict[str, Any] = {
        "log": str(args.log),
        "out": str(args.out),
        "events": counts.events,
        "cases": counts.cases_completed,
        "activities": len(counts.activities),
        "dfg_arcs": len(counts.pairs),
        "heuristics_nodes": len(model.heuristics.nodes),
        "heuristics_arcs": len(model.heuristics.arcs),
        "declare_constraints": None if model.declare is None else len(model.declare.constraints),
        "tracker_events_per_second": round(counts.events / track_s) if track_s > 0 else None,
        "seconds": round(time.perf_counter() - started, 2),
        "files": [p.name for p in written],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        decl = summary["declare_constraints"]
        print(
            f"{summary['events']:,} events, {summary['cases']:,} cases, "
            f"{summary['activities']} activities, {summary['dfg_arcs']} directly-follows arcs; "
            f"heuristics net: {summary['heuristics_nodes']} nodes, "
            f"{summary['heuristics_arcs']} arcs"
            + ("" if decl is None else f"; Declare: {decl} constraints")
        )
        print(f"wrote {len(written)} files to {args.out}: {', '.join(summary['files'])}")
        print(
            f"tracker {summary['tracker_events_per_second']:,} events/s; "
            f"{summary['seconds']} s in all",
            file=sys.stderr,
        )
    return 0
