"""Load a differential-privacy release policy (``policies/dp/*.yaml``) into
:class:`~procvault.monitor.privacy.settings.PrivacySettings`.

Every mistake is a one-line :class:`~procvault.monitor.errors.ConfigError` naming the file and
the key (``default.yaml: budget.window: must be an integer >= 1, got 0``). The schema is in
``docs/privacy.md``; durations are written ``500ms``, ``30s``, ``5m``, ``1h``, ``1d`` or ``1w``.

>>> s = parse_dp_policy({"version": 1, "budget": {"advantage": 0.3, "window": 24},
...                      "panes": {"length": "1h"}}, source="demo.yaml")
>>> round(s.budget.epsilon, 4), s.budget.window, s.panes.length
(1.2381, 24, datetime.timedelta(seconds=3600))
>>> parse_dp_policy({"version": 1, "budget": {"epsilon": 1, "advantage": 0.3, "window": 2},
...                  "panes": {"length": "1h"}}, source="demo.yaml")
Traceback (most recent call last):
...
procvault.monitor.errors.ConfigError: demo.yaml: budget: give epsilon or advantage, not both
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

from procvault.config.yamlfile import load_yaml_file
from procvault.monitor.durations import parse_duration
from procvault.monitor.errors import ConfigError
from procvault.monitor.privacy.budget import Budget, epsilon_from_advantage
from procvault.monitor.privacy.settings import (
    STATISTICS,
    PaneSettings,
    PrivacySettings,
    RunningTotals,
    StatisticSettings,
)

__all__ = ["load_dp_policy", "parse_dp_policy", "parse_duration"]

_VERSION: Final = 1
_TOP: Final = (
    "version",
    "budget",
    "panes",
    "allocation",
    "statistics",
    "running_totals",
    "windows",
)


class _Problem(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)


def load_dp_policy(path: str | os.PathLike[str], *, require_start: bool = False) -> PrivacySettings:
    """Read and check a DP policy file; :class:`ConfigError` names the file and the key.

    ``require_start``: the vault and the release stage need a public ``panes.start`` (with
    ``auto`` the first pane released would be the first one with data, which depends on the
    data); offline evaluations may leave it ``auto``.
    """
    file = Path(path)
    doc = load_yaml_file(file, "DP policy")
    settings = parse_dp_policy(doc, source=file.name)
    if require_start and settings.panes.start is None:
        raise ConfigError(
            f"{file.name}: panes.start: required by the vault and the release stage: the "
            "public first pane, an ISO time such as 2024-01-01T00:00:00Z ('auto' would start "
            "the schedule at the first event, which depends on the data)"
        )
    return settings


def parse_dp_policy(doc: object, *, source: str = "<policy>") -> PrivacySettings:
    """Check a parsed DP policy document; see :func:`load_dp_policy`."""
    try:
        return _parse(doc)
    except (_Problem, ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _table(value: object, where: str, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _Problem(where, f"must be a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), allowed, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            path = f"{where}.{key}" if where else str(key)
            raise _Problem(path, f"unknown key{suggestion}; allowed: {', '.join(allowed)}")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(where, f"must be a number, got {value!r}")
    return float(value)


def _integer(value: object, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _Problem(where, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _start(value: object) -> datetime | None:
    """``panes.start``: an ISO time with a zone (the public schedule's first pane) or
    ``auto`` (the first pane observed: the schedule then depends on the data)."""
    if value == "auto" or value is None:
        return None
    return _when(value, "panes.start", " (or 'auto')")


def _when(value: object, where: str, alternative: str = "") -> datetime:
    """An ISO time with a zone (a YAML timestamp or date, or a string), in UTC."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, date):
        when = datetime(value.year, value.month, value.day, tzinfo=UTC)
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise _Problem(where, f"{value!r} is not an ISO time{alternative}") from None
    else:
        raise _Problem(where, f"{value!r} is not an ISO time{alternative}")
    if when.tzinfo is None:
        raise _Problem(where, f"{value!r} has no time zone (write e.g. ...T00:00:00Z)")
    return when.astimezone(UTC)


def _parse(doc: object) -> PrivacySettings:
    top = _table(doc, "", _TOP)
    if top.get("version") != _VERSION:
        raise _Problem("version", f"must be {_VERSION}, got {top.get('version')!r}")
    for required in ("budget", "panes"):
        if required not in top:
            raise _Problem(required, "is required")
    budget = _budget(top["budget"])
    panes_doc = _table(
        top["panes"],
        "panes",
        ("length", "allowed_lateness", "max_panes_per_case", "start", "origin"),
    )
    if "length" not in panes_doc:
        raise _Problem("panes.length", "is required")
    try:
        panes = PaneSettings(
            parse_duration(panes_doc["length"], "panes.length"),
            parse_duration(panes_doc.get("allowed_lateness", 0), "panes.allowed_lateness"),
            start=_start(panes_doc.get("start", "auto")),
            **(
                {"origin": _when(panes_doc["origin"], "panes.origin")}
                if "origin" in panes_doc
                else {}
            ),
        )
    except ValueError as exc:
        raise _Problem("panes", str(exc).lstrip(": ")) from None
    kwargs: dict[str, Any] = {}
    if "max_panes_per_case" in panes_doc:
        kwargs["max_panes_per_case"] = _integer(
            panes_doc["max_panes_per_case"], "panes.max_panes_per_case"
        )
    allocation = top.get("allocation", "uniform")
    if allocation != "uniform":
        alloc = _table(allocation, "allocation", ("pane_epsilon",))
        if "pane_epsilon" not in alloc:
            raise _Problem("allocation", "is 'uniform' or {pane_epsilon: X}")
        kwargs["pane_epsilon"] = _number(alloc["pane_epsilon"], "allocation.pane_epsilon")
    if "statistics" in top:
        kwargs["statistics"] = _statistics(top["statistics"])
    if "running_totals" in top:
        kwargs["running_totals"] = _totals(top["running_totals"])
    if "windows" in top:
        windows = top["windows"]
        if not isinstance(windows, list):
            raise _Problem("windows", "must be a list of durations")
        kwargs["windows"] = tuple(parse_duration(w, f"windows[{i}]") for i, w in enumerate(windows))
    return PrivacySettings(budget, panes, **kwargs)


def _budget(value: object) -> Budget:
    doc = _table(value, "budget", ("epsilon", "advantage", "window", "delta"))
    if ("epsilon" in doc) == ("advantage" in doc):
        raise _Problem(
            "budget",
            "give epsilon or advantage, not both"
            if "epsilon" in doc
            else "give epsilon (per case) or advantage (guessing advantage)",
        )
    if "window" not in doc:
        raise _Problem("budget.window", "is required (panes; 1 protects each pane alone)")
    window = _integer(doc["window"], "budget.window")
    delta = _number(doc.get("delta", 0.0), "budget.delta")
    try:
        if "advantage" in doc:
            adv = _number(doc["advantage"], "budget.advantage")
            epsilon_from_advantage(adv)  # checks the range
            return Budget.from_advantage(adv, window=window, delta=delta)
        return Budget(_number(doc["epsilon"], "budget.epsilon"), window, delta)
    except ValueError as exc:
        raise _Problem("budget", str(exc)) from None


def _statistics(value: object) -> tuple[StatisticSettings, ...]:
    doc = _table(value, "statistics", tuple(STATISTICS))
    out = []
    for name, body in doc.items():
        where = f"statistics.{name}"
        fields = _table(
            {} if body is None else body, where, ("weight", "max_keys", "clamp", "unit")
        )
        try:
            out.append(
                StatisticSettings(
                    name,
                    weight=_number(fields["weight"], f"{where}.weight")
                    if "weight" in fields
                    else None,
                    max_keys=_integer(fields["max_keys"], f"{where}.max_keys")
                    if "max_keys" in fields
                    else None,
                    clamp=_integer(fields["clamp"], f"{where}.clamp")
                    if "clamp" in fields
                    else None,
                    unit=parse_duration(fields["unit"], f"{where}.unit")
                    if "unit" in fields
                    else None,
                )
            )
        except ValueError as exc:
            raise _Problem(where, str(exc).removeprefix(f"statistic {name!r}: ")) from None
    if not out:
        raise _Problem("statistics", "lists no statistic")
    return tuple(out)


def _totals(value: object) -> RunningTotals | None:
    if value is None or value is False:
        return None
    doc = _table(value, "running_totals", ("statistics", "levels", "share"))
    kwargs: dict[str, Any] = {}
    if "statistics" in doc:
        stats = doc["statistics"]
        if not isinstance(stats, list) or not all(isinstance(s, str) for s in stats):
            raise _Problem("running_totals.statistics", "must be a list of statistic names")
        kwargs["statistics"] = tuple(stats)
    if "levels" in doc:
        kwargs["levels"] = _integer(doc["levels"], "running_totals.levels")
    if "share" in doc:
        kwargs["share"] = _number(doc["share"], "running_totals.share")
    try:
        return RunningTotals(**kwargs)
    except ValueError as exc:
        raise _Problem("running_totals", str(exc).removeprefix("running totals: ")) from None
