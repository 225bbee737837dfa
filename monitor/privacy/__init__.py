"""Differentially private results: noisy panes, sliding windows, running totals, a ledger.

Pure: no I/O, no clock, no logging; every released value's noise comes from OpenDP through a
:class:`~.mechanisms.Releaser`. The pieces, in the order data flows through them:

* :class:`~.panes.PaneAccumulator` — exact per-pane aggregates with per-case caps
  (fed by the vault's events, deviations, completed cases and rule violations);
* :class:`~.plan.ReleasePlan` — the data-independent split of the budget and the calibrated,
  OpenDP-proved mechanisms;
* :class:`~.release.PaneReleaser` — noise, thresholds, the ledger, windows, running totals;
* :mod:`~.records` — the versioned records it publishes.

Read ``docs/privacy.md`` for the mechanisms, the sensitivities and the accounting.
"""

from .budget import Budget, advantage_from_epsilon, epsilon_from_advantage
from .ledger import Ledger, LedgerState
from .mechanisms import DeterministicReleaser, OpenDPReleaser, PrivacyProofError, Releaser
from .panes import (
    AccumulatorCounters,
    AccumulatorState,
    CaseAccState,
    Pane,
    PaneAccumulator,
    PaneAggregate,
    PaneClock,
)
from .plan import MechanismSpec, ReleasePlan
from .records import (
    SCHEMA,
    PaneRecord,
    Record,
    WindowRecord,
    WithheldRecord,
    decode_record,
    encode_record,
)
from .release import PaneReleaser, ReleaseState
from .settings import (
    STATISTICS,
    KnownKeys,
    PaneSettings,
    PrivacySettings,
    RunningTotals,
    StatisticSettings,
)
from .tree import BinaryTreeCounter, TreeState

__all__ = [
    "SCHEMA",
    "STATISTICS",
    "AccumulatorCounters",
    "AccumulatorState",
    "BinaryTreeCounter",
    "Budget",
    "CaseAccState",
    "DeterministicReleaser",
    "KnownKeys",
    "Ledger",
    "LedgerState",
    "MechanismSpec",
    "OpenDPReleaser",
    "Pane",
    "PaneAccumulator",
    "PaneAggregate",
    "PaneClock",
    "PaneRecord",
    "PaneReleaser",
    "PaneSettings",
    "PrivacyProofError",
    "PrivacySettings",
    "Record",
    "ReleasePlan",
    "ReleaseState",
    "Releaser",
    "RunningTotals",
    "StatisticSettings",
    "TreeState",
    "WindowRecord",
    "WithheldRecord",
    "advantage_from_epsilon",
    "decode_record",
    "encode_record",
    "epsilon_from_advantage",
]
