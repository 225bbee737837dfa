"""Settings declared once: a field of a settings dataclass carries its flag, help, unit and
environment variable, and the command line is generated from it.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class S:
...     batch_ms: int = option(20, help="batch time limit", unit="ms", minimum=1)
>>> (spec,) = declared(S)
>>> spec.name, spec.flag, spec.env, spec.default, spec.help_text()
('batch_ms', '--batch-ms', None, 20, 'batch time limit, ms')

``procvault.cli.options.add_settings`` generates the flags; a setting's environment variable is
``PROCVAULT_<COMMAND>_<NAME>`` (``procvault vault --batch-ms``: ``PROCVAULT_VAULT_BATCH_MS``)
unless ``env`` names one shared by every command with that setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["Option", "OptionSpec", "declared", "option"]

_KEY: Final = "procvault.option"


@dataclass(frozen=True)
class Option:
    """How one setting appears on the command line."""

    help: str
    unit: str | None = None
    flag: str | None = None
    env: str | None = None
    metavar: str | None = None
    choices: Sequence[str] | None = None
    parse: Callable[[str], Any] | None = None
    minimum: float | None = None
    #: ``None`` written as this value on the command line (e.g. ``0``: "never")
    none_as: Any = None
    #: a strict lower bound (``0``: positive)
    above: float | None = None


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    unit: str | None = None,
    flag: str | None = None,
    env: str | None = None,
    metavar: str | None = None,
    choices: Sequence[str] | None = None,
    parse: Callable[[str], Any] | None = None,
    minimum: float | None = None,
    none_as: Any = None,
    above: float | None = None,
) -> Any:
    """A dataclass field with its command-line declaration (see the module docstring)."""
    meta = {_KEY: Option(help, unit, flag, env, metavar, choices, parse, minimum, none_as, above)}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """A declared setting with everything the command line needs."""

    name: str
    option: Option
    default: Any
    type: Any

    @property
    def flag(self) -> str:
        """The long flag."""
        return self.option.flag or "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str | None:
        """The environment variable that may supply it, when shared by several commands
        (``None``: the command's own, ``PROCVAULT_<COMMAND>_<NAME>``)."""
        return self.option.env

    @property
    def required(self) -> bool:
        """Whether it has no default."""
        return self.default is dataclasses.MISSING

    def help_text(self) -> str:
        """Its help, with the unit."""
        return f"{self.option.help}, {self.option.unit}" if self.option.unit else self.option.help


def declared(cls: type) -> list[OptionSpec]:
    """The declared settings of dataclass ``cls``, in field order."""
    out = []
    for f in dataclasses.fields(cls):
        opt = f.metadata.get(_KEY)
        if opt is None:
            continue
        default: Any = f.default
        factory: Any = f.default_factory
        if default is dataclasses.MISSING and factory is not dataclasses.MISSING:
            default = factory()
        out.append(OptionSpec(f.name, opt, default, f.type))
    return out
