"""Utility of an anonymized log against its original.

* ``emd_freq`` / ``emd_time`` — the paper's measures, computed the way Amun computes them: the
  directly-follows graph (DFG) of each log (no artificial start/end edges), edges missing on one
  side filled with 0, and the 1-D Wasserstein distance (``scipy.stats.wasserstein_distance``
  with unit weights) between the two *lists of edge values*. For frequency the values are the
  edge counts. For time they are, per edge, the **sum** of the gaps in whole hours (truncated
  towards zero, pandas' ``astype("timedelta64[h]")``) as ``earth_movers_distance.py`` computes
  them; the distance is then divided by 24 * 30 = 720, as the authors' ``comparison/
  parsing_results.py`` does before tabulating (``# in month``). So ``emd_time`` is in *months*,
  the unit of the paper's Table 6. The lists are compared as distributions, so an edge's value
  may be matched with another edge's: comparable with the paper, but blind to which edge moved.
* ``emd_time_sum_hours`` — the same distance before the division (hours).
* ``emd_time_mean_hours`` — our variant: the distance between per-edge *mean* gaps in hours.
  Unlike the sum, it does not grow with the number of cases.
* ``mae_freq`` / ``mae_time_hours`` — aligned: mean absolute difference per edge of frequency
  and of mean gap (hours), over the union of edges.
* variants lost, and R1: the number of released variants absent from the original (must be 0).

Examples
--------
>>> a = CaseLog.from_cases([Case("1", ("R", "V"), (0, 3_600_000_000)),
...                         Case("2", ("R", "D"), (0, 7_200_000_000))])
>>> b = CaseLog.from_cases([Case("x", ("R", "V"), (0, 7_200_000_000))])
>>> r = compare_logs(a, b)
>>> r.emd_freq, r.emd_time_sum_hours, r.emd_time_mean_hours, r.variants_lost, r.new_variants
(0.5, 0.5, 0.5, 1, 0)
>>> r.emd_time == 0.5 / 720
True
>>> r.mae_freq, r.mae_time_hours
(0.5, 1.5)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .cases import Case, CaseLog

__all__ = ["HOURS_PER_MONTH", "Case", "UtilityReport", "compare_logs", "dfg", "wasserstein_1d"]

_HOUR_US = 3_600_000_000
#: Hours per "month" in the authors' tabulation of the time EMD (``/24.0/30.0``).
HOURS_PER_MONTH = 24 * 30

Edge = tuple[str, str]


def dfg(log: CaseLog) -> tuple[dict[Edge, int], dict[Edge, int], dict[Edge, int]]:
    """Per edge: directly-follows count, summed whole hours (prototype), summed µs.

    Whole hours are truncated towards zero, as pandas' ``astype("timedelta64[h]")`` does.
    """
    freq: dict[Edge, int] = {}
    hours: dict[Edge, int] = {}
    micros: dict[Edge, int] = {}
    for case in log.cases:
        acts, times = case.activities, case.times
        for i in range(1, len(acts)):
            edge = (acts[i - 1], acts[i])
            gap = times[i] - times[i - 1]
            freq[edge] = freq.get(edge, 0) + 1
            whole = gap // _HOUR_US if gap >= 0 else -(-gap // _HOUR_US)
            hours[edge] = hours.get(edge, 0) + whole
            micros[edge] = micros.get(edge, 0) + gap
    return freq, hours, micros


def wasserstein_1d(u: Sequence[float], v: Sequence[float]) -> float:
    """W1 distance between two equally sized samples (mean gap between their sorted values).

    >>> wasserstein_1d([0, 1, 3], [5, 6, 8])
    5.0
    """
    if len(u) != len(v):
        raise ValueError("samples must have the same size")
    if not u:
        return 0.0
    return sum(abs(a - b) for a, b in zip(sorted(u), sorted(v), strict=True)) / len(u)


@dataclass(frozen=True)
class UtilityReport:
    """How far an anonymized log is from its original (see the module docstring)."""

    emd_freq: float
    emd_time: float
    emd_time_sum_hours: float
    emd_time_mean_hours: float
    mae_freq: float
    mae_time_hours: float
    cases_original: int
    cases_anonymized: int
    events_original: int
    events_anonymized: int
    variants_original: int
    variants_anonymized: int
    variants_lost: int
    new_variants: int

    @property
    def r1_holds(self) -> bool:
        """True if no released variant is absent from the original (requirement R1)."""
        return self.new_variants == 0

    def as_dict(self) -> dict[str, float | int | bool]:
        """Plain values, for JSON."""
        out: dict[str, float | int | bool] = dict(asdict(self))
        out["r1_holds"] = self.r1_holds
        return out


def compare_logs(original: CaseLog, anonymized: CaseLog) -> UtilityReport:
    """Utility measures of ``anonymized`` against ``original``."""
    f1, h1, m1 = dfg(original)
    f2, h2, m2 = dfg(anonymized)
    keys = sorted(set(f1) | set(f2))
    v_f1 = [f1.get(k, 0) for k in keys]
    v_f2 = [f2.get(k, 0) for k in keys]
    v_h1 = [h1.get(k, 0) for k in keys]
    v_h2 = [h2.get(k, 0) for k in keys]

    def mean_hours(m: dict[Edge, int], f: dict[Edge, int], k: Edge) -> float:
        return m[k] / f[k] / _HOUR_US if f.get(k) else 0.0

    v_m1 = [mean_hours(m1, f1, k) for k in keys]
    v_m2 = [mean_hours(m2, f2, k) for k in keys]
    n = len(keys) or 1
    mae_freq = sum(abs(a - b) for a, b in zip(v_f1, v_f2, strict=True)) / n
    mae_time = sum(abs(a - b) for a, b in zip(v_m1, v_m2, strict=True)) / n
    orig_variants = set(original.variants)
    anon_variants = set(anonymized.variants)
    emd_sum_hours = wasserstein_1d(v_h1, v_h2)
    return UtilityReport(
        emd_freq=wasserstein_1d(v_f1, v_f2),
        emd_time=emd_sum_hours / HOURS_PER_MONTH,
        emd_time_sum_hours=emd_sum_hours,
        emd_time_mean_hours=wasserstein_1d(v_m1, v_m2),
        mae_freq=mae_freq,
        mae_time_hours=mae_time,
        cases_original=len(original.cases),
        cases_anonymized=len(anonymized.cases),
        events_original=original.n_events,
        events_anonymized=anonymized.n_events,
        variants_original=len(orig_variants),
        variants_anonymized=len(anon_variants),
        variants_lost=len(orig_variants - anon_variants),
        new_variants=len(anon_variants - orig_variants),
    )
