"""The public net from what the release stage published (``procvault discover --public``).

:class:`ReleasedPanes` keeps the pane records (and withheld panes) a
:class:`~procvault.results.reader.ResultsReader` verified on ``results.aggregates``;
:func:`released_public_net` sums the noisy ``directly_follows`` and ``start_end`` values of the
chosen panes (every released pane, or the pane holding a time, or the ``window`` panes ending
there) and runs :func:`~procvault.discovery.public.public_net` on them, with a noise
description taken from the records' mechanisms (scale, ε, δ, threshold, the panes summed, the
standard deviation of the summed noise). Only released values are read: post-processing, no
privacy cost.

Examples
--------
>>> from datetime import UTC, datetime, timedelta
>>> from procvault.monitor.privacy import (Budget, DeterministicReleaser, KnownKeys,
...     PaneAggregate, PaneClock, PaneReleaser, PaneSettings, PrivacySettings, ReleasePlan,
...     StatisticSettings)
>>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
>>> settings = PrivacySettings(Budget(1.0, window=2), PaneSettings(timedelta(days=1)),
...     statistics=(StatisticSettings("directly_follows"), StatisticSettings("start_end")),
...     running_totals=None, windows=())
>>> plan = ReleasePlan.build(settings, KnownKeys.build(["A", "B"]))
>>> releaser = PaneReleaser(plan, DeterministicReleaser(plan))  # no noise: a test stand-in
>>> clock, view = PaneClock(settings.panes), ReleasedPanes()
>>> for i in range(2):
...     p = clock.pane(19723 + i)
...     agg = PaneAggregate(p.index, p.start, p.end, (
...         ("directly_follows", ((("A", "B"), 30),)),
...         ("start_end", ((("end", "B"), 30), (("start", "A"), 30)))))
...     for record in releaser.release(agg):
...         view.add(record)
>>> pub = released_public_net(view, min_count=1)
>>> pub.dfg, pub.start_activities, pub.end_activities, pub.sound
({('A', 'B'): 60}, {'A': 60}, {'B': 60}, True)
>>> pub.noise["panes"], pub.noise["statistics"]["start_end"]["sensitivity"]
(2, 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from procvault.monitor.errors import ConfigError, ProcvaultError

if TYPE_CHECKING:
    from datetime import datetime

    from procvault.discovery.public import PublicNet
    from procvault.monitor.privacy.records import (
        MechanismInfo,
        PaneRecord,
        Record,
        WithheldRecord,
    )

__all__ = ["STATISTICS_USED", "ReleasedPanes", "noise_of", "released_public_net", "sum_panes"]

#: The released statistics a public net is built from.
STATISTICS_USED = ("directly_follows", "start_end")
#: The default ``min_count``: this many standard deviations of the summed noise.
SIGMAS = 3.0


class ReleasedPanes:
    """The verified pane records, by pane index (a record sink for a
    :class:`~procvault.results.reader.ResultsReader`: ``show`` is true, so it writes no
    records). Window records are not kept: their values are sums of pane records."""

    show = True

    def __init__(self) -> None:
        self.panes: dict[int, PaneRecord] = {}
        self.withheld: dict[int, WithheldRecord] = {}

    def add(self, record: Record) -> None:
        """Keep a verified pane or withheld record (a republished one replaces its copy)."""
        from procvault.monitor.privacy.records import PaneRecord, WithheldRecord

        if isinstance(record, PaneRecord):
            self.panes[record.pane.index] = record
        elif isinstance(record, WithheldRecord):
            self.withheld[record.pane.index] = record

    def note(self, text: str) -> None:
        """Alerts are not part of a public net: ignored."""

    def tick(self) -> None:
        """Nothing to refresh while following."""

    def select(self, *, at: datetime | None = None, window: int | None = None) -> range:
        """The pane indices to sum: every pane read (``at`` and ``window`` ``None``), the pane
        holding ``at`` (default: the last one read) or the ``window`` panes ending at it."""
        seen: dict[int, PaneRecord | WithheldRecord] = {**self.panes, **self.withheld}
        if not seen:
            raise ProcvaultError("no released pane was read from results.aggregates")
        if at is None and window is None:
            return range(min(seen), max(seen) + 1)
        if at is None:
            last = max(seen)
        else:
            holding = [i for i, r in seen.items() if r.pane.start <= at < r.pane.end]
            if not holding:
                raise ProcvaultError(f"no released pane holds {at.isoformat()}")
            last = holding[0]
        n = 1 if window is None else window
        return range(last - n + 1, last + 1)


def sum_panes(records: Sequence[PaneRecord], name: str) -> dict[tuple[str, ...], int]:
    """The noisy values of statistic ``name`` summed over ``records``: every known key (zeros
    included) and the keys outside the model where their noisy count passed the threshold."""
    out: dict[tuple[str, ...], int] = {}
    for record in records:
        for stat in record.statistics:
            if stat.name == name:
                for e in (*stat.known, *stat.other):
                    out[e.key] = out.get(e.key, 0) + e.value
    return out


def _noise_sd(m: MechanismInfo, panes: int) -> float:
    q = math.exp(-1.0 / m.scale)
    return math.sqrt(2.0 * q / (1.0 - q) ** 2 * panes)


def noise_of(records: Sequence[PaneRecord], withheld: int, indices: range) -> dict[str, Any]:
    """How the values summed over ``records`` were noised, from their (data-independent)
    mechanisms: what :func:`released_public_net` writes into ``public.json``."""
    import msgspec

    first = records[0]
    if any(r.mechanisms != first.mechanisms or r.budget != first.budget for r in records):
        raise ProcvaultError(
            "the chosen panes were released under different plans: choose panes of one plan "
            "(--at/--window)"
        )
    mechs = {m.name: m for m in first.mechanisms}
    missing = [n for n in STATISTICS_USED if n not in mechs]
    if missing:
        raise ConfigError(
            f"the released panes have no {' or '.join(missing)} statistic: the release "
            "policy must name it (e.g. policies/dp/public_net.yaml)"
        )
    n = len(records)
    k = first.budget.max_panes_per_case
    stats = {
        name: {
            "mechanism": mechs[name].mechanism,
            "scale": mechs[name].scale,
            "sensitivity": mechs[name].sensitivity,
            "max_keys": mechs[name].max_keys,
            "linf": mechs[name].linf,
            "epsilon": mechs[name].epsilon,
            "delta": mechs[name].delta,
            "threshold": mechs[name].threshold,
            "sum_sd": _noise_sd(mechs[name], n),
        }
        for name in STATISTICS_USED
    }
    return {
        "source": "results.aggregates",
        "unit": "case",
        "mechanism": "discrete_laplace",
        "panes": n,
        "withheld_panes": withheld,
        "first_pane": indices.start,
        "last_pane": indices.stop - 1,
        "start": min(r.pane.start for r in records).isoformat(),
        "end": max(r.pane.end for r in records).isoformat(),
        "pane_epsilon": first.epsilon,
        "pane_delta": first.delta,
        # a case is in at most k panes; over them, the two statistics used cost it at most
        "epsilon_per_case": min(k, n) * sum(mechs[s].epsilon for s in STATISTICS_USED),
        "delta_per_case": min(k, n) * sum(mechs[s].delta for s in STATISTICS_USED),
        "budget": msgspec.to_builtins(first.budget),
        "statistics": stats,
        "other_keys": "keys outside the model's activities: summed over the panes where their "
        "noisy count reached the threshold",
    }


def released_public_net(
    view: ReleasedPanes,
    *,
    at: datetime | None = None,
    window: int | None = None,
    min_count: float | None = None,
    noise_threshold: float = 0.0,
) -> PublicNet:
    """The public net of the chosen released panes (:meth:`ReleasedPanes.select`).

    ``min_count`` ``None``: 3 standard deviations of the larger of the two statistics' summed
    noise (at least 1). Raises :class:`ProcvaultError` when no pane of the selection was
    released, :class:`ConfigError` when the panes lack a statistic or nothing is left to
    discover a net from.
    """
    from procvault.discovery.public import public_net

    indices = view.select(at=at, window=window)
    records = [view.panes[i] for i in indices if i in view.panes]
    withheld = sum(1 for i in indices if i in view.withheld)
    if not records:
        raise ProcvaultError(
            f"none of panes {indices.start}..{indices.stop - 1} was released "
            f"({withheld} withheld by the budget)"
        )
    noise = noise_of(records, withheld, indices)
    if min_count is None:
        sd = max(noise["statistics"][s]["sum_sd"] for s in STATISTICS_USED)
        min_count = float(max(1, math.ceil(SIGMAS * sd)))
    dfg: dict[tuple[str, str], float] = {}
    for key, v in sum_panes(records, "directly_follows").items():
        if len(key) == 2:
            dfg[(key[0], key[1])] = v
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for key, v in sum_panes(records, "start_end").items():
        if len(key) == 2 and key[0] in ("start", "end"):
            (starts if key[0] == "start" else ends)[key[1]] = v
    return public_net(
        dfg, starts, ends, noise=noise, min_count=min_count, noise_threshold=noise_threshold
    )
