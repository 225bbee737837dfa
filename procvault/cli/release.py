"""``procvault release``: the release stage (faust-streaming), combining pane partials into
noisy, signed panes on ``results.aggregates``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import positive as _positive
from procvault.cli.pipeline import (
    _add_observability_options,
    _serve_metrics,
    kafka_address,
    known_keys,
)

__all__ = ["register"]

#: Testing only: SIGKILL the stage after this many durable writes, before it publishes them.
CRASH_ENV = "PROCVAULT_TEST_RELEASE_CRASH_AFTER_PERSIST"


def register(sub: Any) -> None:
    """Add the ``release`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "release",
        help="run the release stage: combine pane partials, add DP noise, sign, publish",
        description="A faust-streaming worker inside the vault's trust boundary. It reads the "
        "vault workers' sealed pane partials (vault.partials), completes each pane once every "
        "event partition has closed it, noises it once under the DP policy's ledger, and "
        "publishes the record signed with the current epoch key on results.aggregates. Its "
        "state (partials, ledger, the noise drawn) is a faust table sealed with the state "
        "key, written to Kafka before anything is published: a restarted stage republishes "
        "the same values, never fresh noise. Give it the same --dp-policy, --model and "
        "--rules as the vault workers.",
    )
    _add(p, "--kafka", "--bootstrap", required=True, metavar="HOST:PORT", help="Kafka bootstrap")
    _add(
        p,
        "--topic-prefix",
        default="",
        metavar="PREFIX",
        help="prefix of every topic name and of the application id",
    )
    _add(p, "--keys", required=True, metavar="DIR", help="the keyring folder (its vault.json)")
    _add(p, "--dp-policy", required=True, metavar="FILE", help="the DP release policy (YAML)")
    _add(p, "--model", help="the .pnml or .bpmn model (its activities are known keys)")
    _add(p, "--rules", metavar="FILE_OR_DIR", help="compliance rules (their ids are known keys)")
    _add(p, "--final-marking", metavar="PLACE", help="final place when the model has none")
    _add(
        p,
        "--data-dir",
        default="procvault-release-data",
        metavar="DIR",
        help="faust's local data folder",
    )
    _add(p, "--app-id", default="procvault-release", help="faust application id (consumer group)")
    _add(
        p,
        "--session-timeout",
        type=_positive(float),
        default=30.0,
        help="seconds before the group gives a dead worker's partition to another (6-300)",
    )
    _add(
        p,
        "--instance-id",
        help="static group membership id: a restarted worker takes its partition back at once",
    )
    _add(
        p,
        "--panes-per-step",
        type=_positive(int),
        default=16,
        help="panes released between two durable state writes",
    )
    _add(p, "--replication-factor", type=_positive(int), default=1, help="of created topics")
    _add(p, "--log-level", default="info", choices=("debug", "info", "warning", "error"))
    _add_observability_options(p)
    p.set_defaults(func=cmd_release)


def cmd_release(args: argparse.Namespace) -> int:
    """Run ``procvault release`` until SIGTERM or Ctrl-C."""
    from procvault.cli.monitor import load_engines
    from procvault.config.dp import load_dp_policy
    from procvault.monitor.errors import ConfigError
    from procvault.streams.frames import Topics
    from procvault.streams.release_stage import ReleaseStageSettings, run_worker
    from procvault.streams.secrets import VaultSecrets

    if not (args.model or args.rules):
        raise ConfigError("give --model, --rules or both (the keys known in advance)")
    host_port = kafka_address(args.kafka)
    model, _net, rules = load_engines(args.model, args.rules, args.final_marking)
    crash = os.environ.get(CRASH_ENV)
    settings = ReleaseStageSettings(
        bootstrap=host_port,
        secrets=VaultSecrets.load(Path(args.keys) / "vault.json"),
        privacy=load_dp_policy(args.dp_policy),
        known=known_keys(model, rules),
        data_dir=Path(args.data_dir),
        topics=Topics(args.topic_prefix),
        app_id=args.app_id,
        session_timeout=args.session_timeout,
        instance_id=args.instance_id,
        max_panes_per_step=args.panes_per_step,
        replication_factor=args.replication_factor,
        crash_after_persist=int(crash) if crash else None,
    )
    metrics = recorder = None
    if args.metrics_port is not None:
        from procvault.metrics.exporters import ReleaseMetrics

        metrics = ReleaseMetrics(rules=[r.name for r in rules or ()])
    if args.run_dir:
        from procvault.reports.recorder import RunRecorder

        recorder = RunRecorder(args.run_dir, args.instance_id or "release")
    server = _serve_metrics(args, metrics, "release")
    try:
        return run_worker(settings, loglevel=args.log_level, metrics=metrics, recorder=recorder)
    finally:
        if recorder is not None:
            recorder.close()
        if server is not None:
            server.close()
