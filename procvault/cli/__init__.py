"""The ``procvault`` command: it parses options and wires the packages together, nothing more.

Every option can also be set with a ``PROCVAULT_*`` environment variable; ``--help`` names it.
Errors that procvault raises on purpose print as one line (``procvault: error: ...``) with exit
code 2 for bad input or configuration and 1 for everything else; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from procvault import __version__
from procvault.cli.options import UsageError

EXIT_USAGE = 2
EXIT_FAILURE = 1


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render ``docs/cli.md``)."""
    parser = argparse.ArgumentParser(
        prog="procvault",
        description="Confidential, privacy-preserving online process monitoring.",
    )
    parser.add_argument("--version", action="version", version=f"procvault {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from procvault.cli import (
        anonymize,
        consent,
        demo,
        discover,
        monitor,
        observe,
        pipeline,
        policy,
        release,
        report,
        results,
        review,
        sources,
    )

    demo.register(sub)
    sources.register(sub)
    monitor.register(sub)
    anonymize.register(sub)
    policy.register(sub)
    pipeline.register(sub)
    review.register(sub)
    consent.register(sub)
    release.register(sub)
    results.register(sub)
    observe.register(sub)
    report.register(sub)
    discover.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    os.environ.setdefault("PM4PY_SHOW_PROGRESS_BAR", "false")
    from procvault.monitor.errors import ConfigError, InputError, ProcvaultError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        parser.error(str(exc))
    except (InputError, ConfigError) as exc:
        print(f"procvault: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ProcvaultError as exc:
        print(f"procvault: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("procvault: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    return 0
