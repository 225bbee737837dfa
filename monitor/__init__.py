"""procvault's engine: pure Python, deterministic, no I/O.

The public types, importable from here (each loads its module on first use, so that importing
:mod:`procvault.monitor.event` does not load the whole engine):

* events: :class:`Event`, :class:`EventKind`, ``AttrValue``;
* conformance: :func:`compile_net`, :class:`CompiledNet`, the in-process :class:`Vault` with
  its :class:`VaultSettings`, :class:`Update`, :class:`Deviation` and :class:`CaseResult`;
* compliance: :class:`Compliance`, :class:`Rule`, :class:`Alert`;
* the vault's partition engine: :class:`PartitionEngine`, :class:`PartitionSettings`,
  :class:`Effects`;
* DP panes and their release: :class:`PrivacySettings`, :class:`KnownKeys`,
  :class:`PaneAccumulator`, :class:`ReleasePlan`, :class:`PaneReleaser`, :class:`Releaser`,
  :class:`OpenDPReleaser`, :class:`ReleaseEngine`, the records :class:`PaneRecord`,
  :class:`WindowRecord`, :class:`WithheldRecord`;
* errors: :class:`ProcvaultError`, :class:`ConfigError`, :class:`InputError`.

``docs/api.md`` runs conformance, rules and DP panes on a stream with them.

>>> from procvault.monitor import Vault, PaneAccumulator
>>> Vault.__module__, PaneAccumulator.__module__
('procvault.monitor.vault', 'procvault.monitor.privacy.panes')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .event import AttrValue, Event, EventKind

if TYPE_CHECKING:
    from .compliance import Alert, Compliance, Rule
    from .errors import ConfigError, InputError, ProcvaultError
    from .partition import Effects, PartitionEngine, PartitionSettings
    from .petri import CompiledNet, compile_net
    from .privacy import (
        KnownKeys,
        OpenDPReleaser,
        PaneAccumulator,
        PaneRecord,
        PaneReleaser,
        PrivacySettings,
        ReleasePlan,
        Releaser,
        WindowRecord,
        WithheldRecord,
    )
    from .privacy.stage import ReleaseEngine
    from .vault import CaseResult, Deviation, Update, Vault, VaultSettings

#: public name -> the module that defines it
_LAZY = {
    **dict.fromkeys(("Alert", "Compliance", "Rule"), ".compliance"),
    **dict.fromkeys(("ConfigError", "InputError", "ProcvaultError"), ".errors"),
    **dict.fromkeys(("Effects", "PartitionEngine", "PartitionSettings"), ".partition"),
    **dict.fromkeys(("CompiledNet", "compile_net"), ".petri"),
    **dict.fromkeys(
        (
            "KnownKeys",
            "OpenDPReleaser",
            "PaneAccumulator",
            "PaneRecord",
            "PaneReleaser",
            "PrivacySettings",
            "ReleasePlan",
            "Releaser",
            "WindowRecord",
            "WithheldRecord",
        ),
        ".privacy",
    ),
    "ReleaseEngine": ".privacy.stage",
    **dict.fromkeys(("CaseResult", "Deviation", "Update", "Vault", "VaultSettings"), ".vault"),
}

__all__ = [
    "Alert",
    "AttrValue",
    "CaseResult",
    "CompiledNet",
    "Compliance",
    "ConfigError",
    "Deviation",
    "Effects",
    "Event",
    "EventKind",
    "InputError",
    "KnownKeys",
    "OpenDPReleaser",
    "PaneAccumulator",
    "PaneRecord",
    "PaneReleaser",
    "PartitionEngine",
    "PartitionSettings",
    "PrivacySettings",
    "ProcvaultError",
    "ReleaseEngine",
    "ReleasePlan",
    "Releaser",
    "Rule",
    "Update",
    "Vault",
    "VaultSettings",
    "WindowRecord",
    "WithheldRecord",
    "compile_net",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
