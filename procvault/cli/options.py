"""Option helpers shared by every command: env-var defaults, checked types, progress bars,
usage errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "UsageError",
    "add_option",
    "add_progress_option",
    "fail_usage",
    "positive",
    "progress_bar",
    "quiet_kafka_client_logs",
]


def env_name(dest: str) -> str:
    return "PROCVAULT_" + dest.upper()


def add_option(parser: argparse._ActionsContainer, *flags: str, **kwargs: Any) -> None:
    """``add_argument`` whose default may come from ``PROCVAULT_<DEST>`` (shown in ``--help``)."""
    dest = kwargs.get("dest") or flags[0].lstrip("-").replace("-", "_")
    env = env_name(dest)
    kind: Callable[[str], Any] = kwargs.get("type", str)
    if kwargs.get("action") == "store_true":
        kind = lambda v: v.lower() in ("1", "true", "yes", "on")  # noqa: E731
    if env in os.environ:
        kwargs.pop("required", None)  # the environment supplies it
        raw = os.environ[env]
        try:
            kwargs["default"] = kind(raw)
        except (TypeError, ValueError):
            raise SystemExit(f"procvault: error: {env}={raw!r} is not a valid value") from None
    help_text = kwargs.get("help", "")
    if kwargs.get("default") not in (None, False) and "%(default)" not in help_text:
        help_text += " (default: %(default)s)"
    kwargs["help"] = f"{help_text} [env: {env}]".strip()
    parser.add_argument(*flags, **kwargs)


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """``--progress auto|on|off`` (a bar on stderr; 'auto': when stderr is a terminal)."""
    add_option(
        p,
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="progress bar on stderr ('auto': when stderr is a terminal)",
    )


def progress_bar(mode: str, total: int | None, label: str) -> Any:
    show = mode == "on" or (mode == "auto" and sys.stderr.isatty())
    if not show:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    progress.add_task(label, total=total)
    return progress


def quiet_kafka_client_logs() -> None:
    """Silence aiokafka's routine coordinator warnings ("Marking the coordinator dead ..."): a
    consumer group looks its coordinator up again by itself, several times while a broker
    starts; errors still print."""
    import logging

    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.ERROR)


class UsageError(Exception):
    """A usage mistake found after parsing (``main`` reports it as argparse does)."""


def fail_usage(message: str) -> None:
    """Stop with a usage error (exit 2, one line)."""
    raise UsageError(message)
