"""``procvault observe``: a local Prometheus (Debian package) scraping the local processes."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import add_settings, settings_from
from procvault.metrics.prometheus import PrometheusSettings

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``observe`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        "observe",
        help="run a local Prometheus scraping the local vault, agents and release stage",
        description="Start the machine's prometheus binary (Debian package) with the shared "
        "scrape config compose/prometheus/prometheus.yml, the same file compose uses, copied "
        "into DATA_DIR beside a generated targets/local.json. Prints the URL once Prometheus "
        "is ready; Ctrl-C or SIGTERM stops it.",
    )
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="[ROLE=]HOST:PORT",
        help="a /metrics endpoint to scrape, e.g. vault=127.0.0.1:9100 (repeatable; ROLE "
        "becomes the 'role' label: vault, agent, release)",
    )
    _add(
        p,
        "--targets-file",
        metavar="FILE",
        help="more targets: a Prometheus file_sd JSON list, or one [ROLE=]HOST:PORT a line",
    )
    add_settings(p, PrometheusSettings)
    p.set_defaults(func=cmd_observe)


def cmd_observe(args: argparse.Namespace) -> int:
    """``procvault observe``."""
    from procvault.metrics.prometheus import (
        LocalPrometheus,
        parse_target,
        read_targets_file,
    )
    from procvault.monitor.errors import ConfigError

    targets = [parse_target(t) for t in args.target]
    if args.targets_file:
        targets += read_targets_file(Path(args.targets_file))
    if not targets:
        raise ConfigError("no targets: give --target [ROLE=]HOST:PORT or --targets-file FILE")
    settings = settings_from(PrometheusSettings, args)
    data_dir = Path(settings.data_dir or tempfile.mkdtemp(prefix="pv-prom-"))
    prom = LocalPrometheus(
        data_dir=data_dir,
        targets=targets,
        config=Path(settings.config) if settings.config else None,
        port=settings.port,
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        prom.start(timeout=settings.timeout)
        print(f"Prometheus is ready at {prom.url} (data in {data_dir}); Ctrl-C stops it")
        for t in targets:
            print(f"  scraping {t.address} (role {t.role})")
        sys.stdout.flush()
        while not stop.wait(0.5):
            if not prom.running:
                print(f"procvault: error: prometheus exited; see {prom.log_file}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        prom.stop()
        signal.signal(signal.SIGTERM, previous)
    print("Prometheus stopped", file=sys.stderr)
    return 0
