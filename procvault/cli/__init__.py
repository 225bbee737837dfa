"""The ``procvault`` command: it parses options and wires the packages together, nothing more.

Every option can also be set with a ``PROCVAULT_*`` environment variable; ``--help`` names it
and ``docs/cli.md`` lists them all: one variable per meaning (``PROCVAULT_KAFKA`` for every
command's ``--kafka``; ``PROCVAULT_<COMMAND>_<OPTION>`` for an option of one command).
Errors that procvault raises on purpose print as one line (``procvault: error: ...``) with exit
code 2 for bad input or configuration and 1 for everything else; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Final

from procvault import __version__
from procvault.cli.options import UsageError, apply_environment

EXIT_USAGE = 2
EXIT_FAILURE = 1


# ----------------------------------------------------------------------------- parser
#: The module of ``procvault.cli`` that registers each command, in ``--help`` order.
COMMANDS: Final = {
    "demo": ("demo",),
    "sources": ("replay", "simulate", "kafka", "tail"),
    "monitor": ("monitor",),
    "anonymize": ("anonymize", "compare"),
    "policy": ("policy", "audit"),
    "pipeline": ("keys", "vault", "agent"),
    "review": ("review",),
    "consent": ("revoke",),
    "release": ("release",),
    "results": ("results",),
    "dp": ("dp",),
    "observe": ("observe",),
    "report": ("report",),
    "discover": ("discover",),
    "models": ("models",),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full argument parser (also used to render ``docs/cli.md``); with ``command``, one
    that knows only that command's module (what :func:`main` uses, to start fast: a command's
    module imports the settings classes it generates its options from)."""
    parser = argparse.ArgumentParser(
        prog="procvault",
        description="Confidential, privacy-preserving online process monitoring.",
    )
    parser.add_argument("--version", action="version", version=f"procvault {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [m for m, names in COMMANDS.items() if command in names] or list(COMMANDS)
    for module in modules:
        importlib.import_module(f"procvault.cli.{module}").register(sub)
    apply_environment(parser)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word), or ``None`` (``--help``, ``--version``)."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    os.environ.setdefault("PM4PY_SHOW_PROGRESS_BAR", "false")
    from procvault.monitor.errors import ConfigError, InputError, ProcvaultError

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
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
