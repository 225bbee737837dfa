"""The consortium's results policy: what each organization receives from the vault.

A small YAML file (``policies/consortium/*.yaml``)::

    version: 1
    results:
      verdict: default      # or full, or a list of fields (see below)
      deviations: own       # own | participants
      rule_changes: participants   # participants | own

``verdict`` fields: ``is_fit``, ``fitness``, ``missing``, ``remaining``, ``produced``,
``consumed``, ``events``, ``unknown_activities``, ``own_events``, ``alignment_cost``,
``rules``. ``default`` grants the token-replay verdict, the organization's own event count,
the alignment cost and the rules' final states, not the counters of every organization's
events; ``full`` grants all. See :class:`~procvault.monitor.findings.ResultsPolicy`.

>>> from pathlib import Path
>>> repo = Path(__file__).resolve().parents[2]
>>> load_results_policy(repo / "policies" / "consortium" / "default.yaml").grants("events")
False
>>> load_results_policy(repo / "policies" / "consortium" / "full.yaml").grants("events")
True
"""

from __future__ import annotations

import os
from pathlib import Path

from procvault.monitor.errors import ConfigError
from procvault.monitor.findings import ResultsPolicy

from .yamlfile import load_yaml_file

__all__ = ["load_results_policy"]


def load_results_policy(path: str | os.PathLike[str]) -> ResultsPolicy:
    """Read a results policy; one-line :class:`ConfigError` naming the file otherwise."""
    file = Path(path)
    doc = load_yaml_file(file, "results policy")
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise ConfigError(f"{file.name}: a results policy is a mapping with version: 1")
    unknown = sorted(set(doc) - {"version", "results"})
    if unknown:
        raise ConfigError(f"{file.name}: unknown key {unknown[0]!r} (allowed: version, results)")
    section = doc.get("results", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{file.name}: results: must be a mapping")
    unknown = sorted(set(section) - {"verdict", "deviations", "rule_changes"})
    if unknown:
        raise ConfigError(
            f"{file.name}: results.{unknown[0]}: unknown key (allowed: verdict, deviations, "
            "rule_changes)"
        )
    try:
        return ResultsPolicy.from_mapping(section)
    except ConfigError as exc:
        raise ConfigError(f"{file.name}: results.{exc}") from None
