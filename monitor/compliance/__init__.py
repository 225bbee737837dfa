"""Compliance monitoring: Declare templates and ProMTEE-style state machines, evaluated online.

The rule model (:mod:`.model`) holds frozen values; :class:`Compliance` (:mod:`.engine`)
compiles them once into per-activity dispatch tables and evaluates events one at a time with
O(1) work per rule touched. Rule files are parsed outside ``monitor/`` (by
:mod:`procvault.config.rules`).
"""

from .engine import CaseSnapshot, Compliance, RuleCounters
from .model import (
    BINARY_TEMPLATES,
    END,
    STATE_NAMES,
    TEMPLATES,
    UNARY_TEMPLATES,
    Aggregate,
    Alert,
    AttrTest,
    Correlation,
    DeclareRule,
    Guard,
    Rule,
    StateMachineRule,
    Transition,
    Window,
)

__all__ = [
    "BINARY_TEMPLATES",
    "END",
    "STATE_NAMES",
    "TEMPLATES",
    "UNARY_TEMPLATES",
    "Aggregate",
    "Alert",
    "AttrTest",
    "CaseSnapshot",
    "Compliance",
    "Correlation",
    "DeclareRule",
    "Guard",
    "Rule",
    "RuleCounters",
    "StateMachineRule",
    "Transition",
    "Window",
]
