"""``procvault release``: the release stage, combining pane partials into noisy, signed panes
on ``results.aggregates``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import add_settings, settings_from
from procvault.cli.shared import (
    add_connection_options,
    add_observability_options,
    add_plan_options,
    kafka_address,
    serve_metrics,
)
from procvault.streams.release_stage import ReleaseStageSettings

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``release`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "release",
        help="run the release stage: combine pane partials, add DP noise, sign, publish",
        description="Runs inside the vault's trust boundary. It reads the vault workers' "
        "sealed pane partials (vault.partials), completes each pane once every event "
        "partition has closed it, noises it once under the DP policy's ledger, and publishes "
        "the record signed with the current epoch key on results.aggregates. Its state "
        "(partials, ledger, the noise drawn) is sealed on release.state and committed before "
        "anything is published: a restarted stage republishes the same bytes, never fresh "
        "noise, and continues after whatever results.aggregates already holds. Give it the "
        "same --dp-policy, --model and --rules as the vault workers: partials made under "
        "another plan are refused.",
    )
    add_connection_options(p, partitions=False, bootstrap_alias=True)
    add_plan_options(p, dp_required=True)
    add_settings(p, ReleaseStageSettings)
    _add(p, "--log-level", default="info", choices=("debug", "info", "warning", "error"))
    add_observability_options(p)
    p.set_defaults(func=cmd_release)


def cmd_release(args: argparse.Namespace) -> int:
    """Run ``procvault release`` until SIGTERM or Ctrl-C."""
    import asyncio
    import json
    import logging
    import signal
    import sys

    from procvault.config.dp import load_dp_policy
    from procvault.config.engines import load_engines
    from procvault.monitor.errors import ConfigError
    from procvault.monitor.privacy.mechanisms import OpenDPReleaser
    from procvault.monitor.privacy.plan import ReleasePlan
    from procvault.streams.frames import Topics
    from procvault.streams.release_stage import ReleaseStage
    from procvault.streams.secrets import VaultSecrets

    if not (args.model or args.rules):
        raise ConfigError("give --model, --rules or both (the keys known in advance)")
    host_port = kafka_address(args.kafka)
    engines = load_engines(args.model, args.rules, args.final_marking)
    rules = engines.rules
    plan = ReleasePlan.build(load_dp_policy(args.dp_policy, require_start=True), engines.known())
    settings = settings_from(
        ReleaseStageSettings, args, bootstrap=host_port, topics=Topics(args.topic_prefix)
    )
    # proves every mechanism's budget (for every draw thread) before anything runs
    releaser = OpenDPReleaser(plan, workers=settings.threads)
    metrics = recorder = None
    if args.metrics_port is not None:
        from procvault.metrics.exporters import ReleaseMetrics

        metrics = ReleaseMetrics(rules=[r.name for r in rules or ()], detailed=args.metrics_detail)
    if args.run_dir:
        from procvault.reports.recorder import RunRecorder

        recorder = RunRecorder(args.run_dir, "release")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("procvault release: %(message)s"))
    release_log = logging.getLogger("procvault.release")
    release_log.addHandler(handler)
    release_log.setLevel(args.log_level.upper())
    stage = ReleaseStage(
        settings,
        VaultSecrets.load(Path(args.keys) / "vault.json"),
        plan,
        releaser,
        metrics=metrics,
        recorder=recorder,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stage.stop)
        await stage.run(ready=lambda: print("procvault release: ready", file=sys.stderr))

    server = serve_metrics(args, metrics, "release")
    try:
        asyncio.run(main())
    finally:
        releaser.close()
        if recorder is not None:
            recorder.close()
        if server is not None:
            server.close()
    if stage.engine is not None:
        print(json.dumps(stage.engine.counters), file=sys.stderr)
    return 0
