"""Differentially private release of event logs (Amun, Elkoumy et al. 2023), done right.

Pure: no I/O, randomness from an explicit seed (amun mode) or OpenDP (strict mode noise).
Read ``docs/anonymize.md`` for what each mode guarantees.
"""

from .calibration import epsilon_for_prior, epsilon_worst_case, guessing_advantage
from .cases import Case, CaseLog
from .dafsa import Dafsa, Transition
from .metrics import UtilityReport, compare_logs
from .noise import OpenDPReleaser, Releaser
from .release import AnonymizeSettings, Mode, Release, ReleaseReport, Strategy, anonymize

__all__ = [
    "AnonymizeSettings",
    "Case",
    "CaseLog",
    "Dafsa",
    "Mode",
    "OpenDPReleaser",
    "Release",
    "ReleaseReport",
    "Releaser",
    "Strategy",
    "Transition",
    "UtilityReport",
    "anonymize",
    "compare_logs",
    "epsilon_for_prior",
    "epsilon_worst_case",
    "guessing_advantage",
]
