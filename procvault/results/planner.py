"""``procvault dp plan``: each statistic's expected relative error, before anything runs.

The noise of every statistic is data-independent (the policy and the known keys fix each
mechanism's scale: :class:`~procvault.monitor.privacy.plan.ReleasePlan`), so its 95% interval
per pane and per window
(:func:`~procvault.monitor.privacy.intervals.half_width`) is known in advance.
What it is relative to depends on the stream: from an expected rate (events per hour, spread
evenly over the statistic's known keys) or measured on a log (per pane, the count of the
statistic's ``top``-th most frequent key: cases that executed an activity, cases with a
directly-follows pair, uncapped, in the median pane that has any event). The relative error is
the 95% half-width over that count. Capping (``max_keys``) lowers released counts further; it
is not counted here.

:func:`suggest_pane` tries the pane lengths of :data:`CANDIDATES` (counts scale with the pane's
length; the policy's windows keep their number of panes) and returns the shortest whose
``top`` activities and pairs are within ``target`` in a pane or in the longest window.

>>> from datetime import timedelta
>>> from procvault.monitor.privacy import Budget, KnownKeys, PaneSettings, PrivacySettings
>>> settings = PrivacySettings(Budget(1.0, window=24), PaneSettings(timedelta(hours=1)))
>>> known = KnownKeys.build(["A", "B"])
>>> rows = plan_errors(settings, known, per_hour={"activity": 50.0, "directly_follows": 20.0})
>>> [(r.statistic, r.window_panes) for r in rows][:2]
[('activity', 1), ('activity', 24)]
>>> rows[1].relative < rows[0].relative  # a window sums more than its noise grows
True
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from procvault.monitor.privacy.intervals import half_width

if TYPE_CHECKING:
    from procvault.monitor.privacy.settings import KnownKeys, PrivacySettings

__all__ = ["CANDIDATES", "ErrorRow", "log_rates", "plan_errors", "suggest_pane"]

#: Pane lengths :func:`suggest_pane` tries.
CANDIDATES: Final = (
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=1),
    timedelta(days=7),
    timedelta(days=30),
    timedelta(days=91),
    timedelta(days=365),
)


@dataclass(frozen=True, slots=True)
class ErrorRow:
    """One statistic in a pane (``window_panes == 1``) or a window of that many panes."""

    statistic: str
    window_panes: int
    scale: float
    half_width: int
    expected: float | None
    relative: float | None


def log_rates(events: Iterable[Any], top: int = 10) -> tuple[dict[str, float], float]:
    """From a log's events (``procvault.generators.xes`` order): per statistic the count of
    its ``top``-th most frequent key per hour of the log (``activity``: cases executing it;
    ``directly_follows``: cases with the pair), and the log's length in hours."""
    acts: dict[str, set[str]] = {}
    pairs: dict[tuple[str, str], set[str]] = {}
    last: dict[str, str] = {}
    first_ts = last_ts = None
    for e in events:
        if getattr(e, "is_marker", False):
            continue
        first_ts = e.timestamp if first_ts is None else first_ts
        last_ts = e.timestamp
        acts.setdefault(e.activity, set()).add(e.case_id)
        prev = last.get(e.case_id)
        if prev is not None:
            pairs.setdefault((prev, e.activity), set()).add(e.case_id)
        last[e.case_id] = e.activity
    if first_ts is None or last_ts is None:
        return {}, 0.0
    hours = max((last_ts - first_ts).total_seconds() / 3600.0, 1.0)

    def nth(counts: Iterable[int]) -> float:
        ordered = sorted(counts, reverse=True)
        return float(ordered[min(top, len(ordered)) - 1]) if ordered else 0.0

    return {
        "activity": nth(len(c) for c in acts.values()) / hours,
        "directly_follows": nth(len(c) for c in pairs.values()) / hours,
    }, hours


def plan_errors(
    settings: PrivacySettings,
    known: KnownKeys,
    *,
    per_hour: Mapping[str, float] | None = None,
    span_hours: float | None = None,
) -> list[ErrorRow]:
    """Per statistic of the policy, a row per pane and per window: the noise's 95%
    half-width and, with ``per_hour`` (a key's expected count per hour), the relative error;
    with ``span_hours`` (the log's length), a pane or window longer than the log expects the
    whole log's count, not more."""
    from procvault.monitor.privacy.plan import ReleasePlan

    plan = ReleasePlan.build(settings, known)
    hours = settings.panes.length.total_seconds() / 3600.0
    rows: list[ErrorRow] = []
    windows = sorted({1, *settings.window_panes})
    for spec in plan.statistics:
        for n in windows:
            h = half_width(spec.scale, panes=n)
            rate = (per_hour or {}).get(spec.name)
            covered = hours * n if span_hours is None else min(hours * n, span_hours)
            expected = None if rate is None else rate * covered
            rel = None if not expected else h / expected
            rows.append(ErrorRow(spec.name, n, spec.scale, h, expected, rel))
    return rows


def suggest_pane(
    settings: PrivacySettings,
    known: KnownKeys,
    per_hour: Mapping[str, float],
    *,
    target: float = 0.2,
    span_hours: float | None = None,
) -> tuple[timedelta | None, list[tuple[timedelta, float, float]]]:
    """The shortest pane length of :data:`CANDIDATES` whose activities and pairs are within
    ``target`` relative error in a pane or the longest window (``None``: none is), and per
    candidate ``(length, worst relative error in a pane, in the longest window)``. Candidates
    longer than ``span_hours`` (the log) are skipped; with ``span_hours``, the last candidate
    is one pane holding the whole log (its length in whole days, rounded up).

    >>> from procvault.config.dp import parse_dp_policy
    >>> from procvault.monitor.privacy.settings import KnownKeys
    >>> s = parse_dp_policy({"version": 1, "budget": {"epsilon": 1.0, "window": 1},
    ...     "panes": {"length": "1h", "max_panes_per_case": 1},
    ...     "statistics": {"activity": {"max_keys": 1}}, "running_totals": False})
    >>> best, tried = suggest_pane(s, KnownKeys.build(["A"]), {"activity": 1.0},
    ...                            span_hours=24 * 40)
    >>> [(length.days, round(pane, 2)) for length, pane, _ in tried]  # (1 h, 6 h, 1 d, ...)
    [(0, 3.0), (0, 0.5), (1, 0.12), (7, 0.02), (30, 0.0), (40, 0.0)]
    >>> str(best)  # (its 1-day window, the policy's default, is within 20%)
    '6:00:00'
    """
    tried: list[tuple[timedelta, float, float]] = []
    best = None
    lengths = [
        c for c in CANDIDATES if span_hours is None or c.total_seconds() / 3600.0 <= span_hours
    ]
    if span_hours is not None:
        whole = timedelta(days=math.ceil(span_hours / 24.0))
        if not lengths or whole > lengths[-1]:
            lengths.append(whole)
    for length in lengths:
        s = dataclasses.replace(
            settings,
            panes=dataclasses.replace(settings.panes, length=length),
            windows=tuple(length * n for n in settings.window_panes),
        )
        rows = [
            r
            for r in plan_errors(s, known, per_hour=per_hour, span_hours=span_hours)
            if r.statistic in ("activity", "directly_follows")
        ]
        if not rows:
            break
        pane = max(r.relative or math.inf for r in rows if r.window_panes == 1)
        fits = [
            r.window_panes
            for r in rows
            if span_hours is None or r.window_panes * length.total_seconds() / 3600.0 <= span_hours
        ]
        longest = max(fits, default=1)  # a window longer than the log says nothing
        window = max(r.relative or math.inf for r in rows if r.window_panes == longest)
        tried.append((length, pane, window))
        if best is None and min(pane, window) <= target:
            best = length
    return best, tried


def median(values: Iterable[float]) -> float:
    """The median (0 for none)."""
    vals = list(values)
    return statistics.median(vals) if vals else 0.0
