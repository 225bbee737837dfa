"""``procvault models``: publish the exact consortium models the vault workers discover (run
with ``procvault vault --discover``), signed and sealed to each granted organization; see
:mod:`procvault.streams.model_publisher` and docs/discovery.md."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import positive as _positive

__all__ = ["cmd_models", "register"]


def register(sub: Any) -> None:
    """Add the ``models`` subcommand."""
    p = sub.add_parser(
        "models",
        help="publish the exact discovered models (DFG, heuristics net, Declare) to the "
        "consortium's organizations",
        description="Runs in the vault's trust domain beside the release stage: reads the "
        "sealed per-partition partial models the vault workers write with --discover "
        "(vault.discovery, read_committed), merges the newest of every partition (exactly what "
        "one worker would have counted), derives the heuristics net and the Declare model and "
        "publishes them on results.models.<org>, signed with the vault's epoch key and sealed "
        "to each organization named by --to. Organizations read them with `procvault discover "
        "--from`. See docs/discovery.md.",
    )
    _add(p, "--kafka", required=True, metavar="HOST:PORT", help="Kafka bootstrap server")
    _add(p, "--topic-prefix", default="", metavar="PREFIX", help="prefix of every topic name")
    _add(p, "--keys", required=True, metavar="DIR", help="the vault's keyring folder")
    _add(
        p,
        "--to",
        metavar="ORGS",
        help="comma-separated organizations granted the exact models (default: every "
        "registered organization)",
    )
    _add(
        p,
        "--every",
        type=_positive(float),
        default=30.0,
        help="least seconds between two releases while the models change",
    )
    _add(
        p,
        "--once",
        action="store_true",
        help="publish once every partition's streams have closed, then exit",
    )
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    """Run ``procvault models``."""
    from procvault.monitor.errors import ConfigError
    from procvault.streams.frames import Topics
    from procvault.streams.model_publisher import ModelPublisher
    from procvault.streams.secrets import Registry, VaultSecrets

    keys = Path(args.keys)
    secrets = VaultSecrets.load(keys / "vault.json")
    registry = Registry.load(keys / "registry.json")
    if registry.identity != secrets.identity_public:
        raise ConfigError(f"{keys / 'registry.json'} pins another vault identity")
    orgs = [o for o in args.to.split(",") if o] if args.to else sorted(registry.orgs)
    publisher = ModelPublisher(
        args.kafka,
        Topics(args.topic_prefix),
        secrets,
        registry,
        orgs,
        every=args.every,
        once=args.once,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("procvault models: %(message)s"))
    logger = logging.getLogger("procvault.models")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, publisher.stop)
        return await publisher.run()

    releases = asyncio.run(main())
    refused = dict(publisher.rejected)
    print(f"procvault models: {releases} release(s); refused {refused or 0}", file=sys.stderr)
    return 0
