"""Option helpers shared by every command: env-var defaults, checked types, progress bars,
usage errors."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from procvault.streams.settings import OptionSpec, declared

__all__ = [
    "UsageError",
    "add_option",
    "add_progress_option",
    "add_settings",
    "apply_environment",
    "fail_usage",
    "iso_time",
    "iter_commands",
    "option_env",
    "positive",
    "progress_bar",
    "quiet_kafka_client_logs",
    "settings_from",
]


_S = TypeVar("_S")

#: Attribute of an argparse action added by :func:`add_option`: its environment variable
#: (``""``: named after the command, see :func:`apply_environment`).
_ENV_ATTR = "procvault_env"


def env_name(command: Sequence[str], name: str) -> str:
    """The environment variable of option ``name`` (its first long flag without the dashes) of
    ``command`` (its words after ``procvault``) when the option is not shared by several
    commands.

    >>> env_name(["vault"], "batch-ms"), env_name(["review", "list"], "case")
    ('PROCVAULT_VAULT_BATCH_MS', 'PROCVAULT_REVIEW_LIST_CASE')
    """
    words = [*command, name]
    return "PROCVAULT_" + "_".join(w.upper().replace("-", "_") for w in words)


def add_option(
    parser: argparse._ActionsContainer, *flags: str, env: str | None = None, **kwargs: Any
) -> argparse.Action:
    """``add_argument`` whose default may come from an environment variable (shown in
    ``--help``).

    The variable is ``env`` for an option with one meaning in several commands (declared once
    in :mod:`procvault.cli.shared`), else ``PROCVAULT_<COMMAND>_<DEST>``; it is read by
    :func:`apply_environment` once the whole parser is built.
    """
    action = parser.add_argument(*flags, **kwargs)
    setattr(action, _ENV_ATTR, env or "")
    return action


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


def iter_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command of ``parser`` with its words after ``procvault``, parents first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield from iter_commands(sub, (*path, name))


def option_env(action: argparse.Action) -> str | None:
    """The environment variable of an option after :func:`apply_environment` (``None``: it has
    none)."""
    env = getattr(action, _ENV_ATTR, None)
    return env or None


def apply_environment(
    parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None
) -> None:
    """Name every option's environment variable, take its default from ``environ`` (default:
    ``os.environ``) and say both in its help; a bad value stops with a one-line error."""
    environ = os.environ if environ is None else environ
    for path, command in iter_commands(parser):
        for action in command._actions:
            env = getattr(action, _ENV_ATTR, None)
            if env is None:
                continue
            if not env:
                long = [f for f in action.option_strings if f.startswith("--")]
                env = env_name(path, long[0][2:] if long else action.dest)
            setattr(action, _ENV_ATTR, env)
            if env in environ:
                raw = environ[env]
                kind: Callable[[str], Any] = action.type or str  # type: ignore[assignment]
                if isinstance(action, argparse._StoreTrueAction):
                    kind = _bool
                try:
                    value = kind(raw)
                except (TypeError, ValueError, argparse.ArgumentTypeError):
                    raise SystemExit(
                        f"procvault: error: {env}={raw!r} is not a valid value"
                    ) from None
                if action.choices is not None and value not in action.choices:
                    choices = ", ".join(map(str, action.choices))
                    raise SystemExit(f"procvault: error: {env}={raw!r}: choose from {choices}")
                action.default = value
                action.required = False  # the environment supplies it
            help_text = action.help or ""
            shown = action.default is not None and action.default is not False
            if shown and "%(default)" not in help_text and "(default:" not in help_text:
                help_text += " (default: %(default)s)"
            action.help = f"{help_text} [env: {env}]".strip()


def _parser_of(spec: OptionSpec, kind: Any) -> Callable[[str], Any]:
    """How the text of ``spec``'s flag becomes its value (``kind``: the field's type)."""
    args = typing.get_args(kind)
    optional = type(None) in args
    if optional:
        (kind,) = [a for a in args if a is not type(None)]
    if spec.option.parse is not None:
        base: Callable[[str], Any] = spec.option.parse
    elif typing.get_origin(kind) is tuple:
        (item, *_) = typing.get_args(kind)

        def base(text: str) -> Any:
            return tuple(item(v.strip()) for v in text.split(",") if v.strip())
    elif kind in (int, float, str):
        base = kind
    else:
        raise TypeError(f"{spec.name}: no command-line form for {kind!r}")
    minimum, above, none_as = spec.option.minimum, spec.option.above, spec.option.none_as

    def parse(text: str) -> Any:
        value = base(text)
        if optional and none_as is not None and value == none_as:
            return None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be > {above:g}, got {text}")
        return value

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse's "invalid int value"
    return parse


def add_settings(parser: argparse._ActionsContainer, cls: type) -> list[OptionSpec]:
    """Add one option per setting declared in dataclass ``cls`` (see
    :mod:`procvault.streams.settings`): its flag, help with unit and default, type, minimum
    and environment variable come from the declaration; returns the declarations
    (:func:`settings_from` reads the values back)."""
    hints = typing.get_type_hints(cls)
    specs = declared(cls)
    for spec in specs:
        opt = spec.option
        kind = hints[spec.name]
        help_text = spec.help_text()
        kwargs: dict[str, Any] = {"dest": spec.name, "help": help_text}
        if kind is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = _parser_of(spec, kind)
            if opt.metavar or opt.unit:
                kwargs["metavar"] = opt.metavar or str(opt.unit).upper()
            if opt.choices is not None:
                kwargs["choices"] = tuple(opt.choices)
        if spec.required:
            kwargs["required"] = True
        else:
            shown = opt.none_as if spec.default is None and opt.none_as is not None else None
            kwargs["default"] = spec.default
            if shown is not None:
                kwargs["help"] = f"{help_text} (default: {shown})"
        add_option(parser, spec.flag, env=opt.env, **kwargs)
    return specs


def settings_from(cls: type[_S], args: argparse.Namespace, **fixed: Any) -> _S:
    """``cls`` built from the options :func:`add_settings` added (and ``fixed`` values for its
    settings that are not options)."""
    values = {spec.name: getattr(args, spec.name) for spec in declared(cls)}
    return cls(**{**values, **fixed})


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def iso_time(text: str) -> Any:
    """An ISO 8601 time for an option (UTC unless it says otherwise).

    >>> iso_time("2014-06-01").isoformat()
    '2014-06-01T00:00:00+00:00'
    """
    from datetime import UTC, datetime

    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2014-06-01 or 2014-06-01T12:00)"
        ) from None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def add_progress_option(p: argparse.ArgumentParser) -> None:
    """``--progress auto|on|off`` (a bar on stderr; 'auto': when stderr is a terminal)."""
    add_option(
        p,
        "--progress",
        env="PROCVAULT_PROGRESS",
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
