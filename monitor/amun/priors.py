"""Amun's per-event prior knowledge and per-event ε_t (attack h2), as the paper computes them.

Each event gets a *relative time*: for the first event of a case, the time since the earliest
case start of the log; for the others, the time since the previous event of the case. Events
are grouped as Sect. 3.5.1 says: every case's first event (the events leaving the DAFSA's source
state s0) in **one** start group, whatever its activity, and every other event by its DAFSA
transition ``(source, activity, target)``. Within its group an event's value is min-max
normalised to [0, 1], and its prior ``p_k`` is the share of the group's values within the
precision ``r`` of it (the paper uses 1 day for case starts and 10 s for relative times), read
from the group's empirical CDF, Eq. (1): ``F(x + r') - F(x - r')`` with ``r' = r / range`` (the
share of the group's values in ``(x - r', x + r']``).
A group whose values are all equal gets the worst-case prior ``(1 - δ) / 2``. The event's ε_t
then follows from Eq. (3) with sensitivity 1 (the normalised range).

Everything here is computed from the raw log and is *not* differentially private: the priors,
the group ranges and therefore the noise scales depend on other cases' values. Only ``--mode
amun`` uses this module; strict mode calibrates on the worst-case prior instead.

Examples
--------
>>> import numpy as np
>>> values = np.array([0.0, 10.0, 20.0, 1000.0])
>>> p = prior_knowledge(values, np.zeros(4, dtype=np.int64), np.full(4, 15.0), delta=0.2)
>>> p.prior.round(3).tolist()
[0.5, 0.75, 0.5, 0.25]
>>> p.lo.tolist(), p.hi.tolist()
([0.0, 0.0, 0.0, 0.0], [1000.0, 1000.0, 1000.0, 1000.0])
>>> q = prior_knowledge(values, np.zeros(4, dtype=np.int64), np.full(4, 15.0), delta=0.2,
...                     exclude_minimum=True)
>>> q.prior.round(3).tolist()  # the prototype's rule: the minimum never counts
[0.25, 0.5, 0.5, 0.25]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "AMUN_EPS_NO_GAIN",
    "AMUN_EPS_ZERO_PRIOR",
    "START_GROUP",
    "CasePriors",
    "PriorTable",
    "amun_event_epsilons",
    "case_priors",
    "high_risk_cases",
    "prior_knowledge",
    "relative_seconds",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: ε the prototype assigns when ``p_k + δ >= 1`` (the attacker cannot gain δ; the paper would
#: need no noise). Labelled: a constant of the Amun prototype, kept for comparability.
AMUN_EPS_NO_GAIN = 0.7
#: ε the prototype assigns when ``p_k == 0`` (Eq. (3) gives ε = ∞). Prototype constant.
AMUN_EPS_ZERO_PRIOR = 10.0


@dataclass(frozen=True)
class PriorTable:
    """Per-event prior and the range of the event's group.

    Attributes
    ----------
    prior
        ``p_k`` of each event.
    lo, hi
        Minimum and maximum relative time of the event's group (same unit as the input).
    """

    prior: FloatArray
    lo: FloatArray
    hi: FloatArray


def prior_knowledge(
    values: FloatArray,
    groups: IntArray,
    precision: FloatArray,
    *,
    delta: float,
    exclude_minimum: bool = False,
) -> PriorTable:
    """Per-event prior ``p_k`` from the empirical distribution of the event's group.

    Parameters
    ----------
    values
        Relative time of each event.
    groups
        Group (DAFSA transition) of each event.
    precision
        The attacker's precision ``r`` for each event, in the unit of ``values``.
    delta
        The guessing-advantage bound (only used for constant groups).
    exclude_minimum
        Use the prototype's lower bound instead of Eq. (1): ``x - r'`` clamped at the group's
        minimum and ``F(min)`` subtracted, so the minimum never counts in its own
        neighbourhood. Amun mode never uses it; it is here because the paper's Table 2 prints
        the B and C priors this rule gives (with a 10-minute precision), see
        ``docs/anonymize.md``.
    """
    n = len(values)
    if not (len(groups) == len(precision) == n):
        raise ValueError("values, groups and precision must have the same length")
    prior = np.empty(n, dtype=np.float64)
    lo = np.empty(n, dtype=np.float64)
    hi = np.empty(n, dtype=np.float64)
    if n == 0:
        return PriorTable(prior, lo, hi)
    order = np.lexsort((values, groups))
    sorted_groups = groups[order]
    bounds = np.flatnonzero(np.diff(sorted_groups)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [n]))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        idx = order[s:e]
        v = values[idx]  # sorted ascending within the group
        vmin, vmax = float(v[0]), float(v[-1])
        lo[idx] = vmin
        hi[idx] = vmax
        if vmax == vmin:
            prior[idx] = (1.0 - delta) / 2.0
            continue
        span = vmax - vmin
        x = (v - vmin) / span
        r = np.minimum(precision[idx] / span, 1.0)
        size = float(e - s)
        cdf_plus = np.searchsorted(x, x + r, side="right") / size
        # Eq. (1): F(x - r) with F(y) = 0 below the minimum. The prototype clamps x - r at 0 and
        # then reads F(0), which drops the group's minimum from its own neighbourhood.
        low = np.maximum(x - r, 0.0) if exclude_minimum else x - r
        cdf_minus = np.searchsorted(x, low, side="right") / size
        prior[idx] = cdf_plus - cdf_minus
    return PriorTable(prior, lo, hi)


def amun_event_epsilons(prior: FloatArray, delta: float) -> FloatArray:
    """ε_t of each event by Eq. (3), with the prototype's constants for the corner cases.

    >>> amun_event_epsilons(np.array([0.4, 0.0, 0.9]), 0.2).round(4).tolist()
    [0.8109, 10.0, 0.7]
    """
    p = np.asarray(prior, dtype=np.float64)
    out = np.full(p.shape, AMUN_EPS_NO_GAIN, dtype=np.float64)
    regular = (p > 0) & (p + delta < 1)
    pr = p[regular]
    out[regular] = -np.log(pr / (1.0 - pr) * (1.0 / (delta + pr) - 1.0))
    out[p == 0] = AMUN_EPS_ZERO_PRIOR
    return out


_US = 1_000_000

#: Group id of every case's first event: Sect. 3.5.1 groups all events leaving s0 together.
START_GROUP = -1


def relative_seconds(times: Sequence[Sequence[int]]) -> tuple[list[FloatArray], float]:
    """Relative times (seconds) of each case's events, and the range of the case starts.

    The first event's value is the time since the earliest case start of the log; every other
    event's is the time since the previous event of its case.

    >>> rel, starts_range = relative_seconds([(0, 30_000_000), (60_000_000, 61_000_000)])
    >>> [r.tolist() for r in rel], starts_range
    ([[0.0, 30.0], [60.0, 1.0]], 60.0)
    """
    first = min(t[0] for t in times)
    last = max(t[0] for t in times)
    out: list[FloatArray] = []
    for t in times:
        secs = np.asarray(t, dtype=np.float64) / _US
        r = np.empty(len(secs), dtype=np.float64)
        r[0] = secs[0] - first / _US
        r[1:] = np.diff(secs)
        out.append(r)
    return out, (last - first) / _US


@dataclass(frozen=True)
class CasePriors:
    """Per case, per event: the prior ``p_k`` and the range of the event's transition group.

    Attributes
    ----------
    prior
        One array per case, ``p_k`` of each of its events.
    span
        One array per case, ``max - min`` (seconds) of each event's group (for a first event,
        the range of the start group: every case start).
    normalised
        One array per case, each event's relative time min-max normalised within its group
        (0 in a group whose values are all equal).
    starts_range
        Range (seconds) of the case starts.
    """

    prior: list[FloatArray]
    span: list[FloatArray]
    normalised: list[FloatArray]
    starts_range: float


def case_priors(
    times: Sequence[Sequence[int]],
    transitions: Sequence[Sequence[int]],
    *,
    delta: float,
    start_precision: float,
    relative_precision: float,
    exclude_minimum: bool = False,
) -> CasePriors:
    """Amun's prior knowledge of every event of every case (attack h2).

    Parameters
    ----------
    times
        Timestamps (µs) of each case's events.
    transitions
        DAFSA transition id of each case's events. A case's first event goes to the start
        group (:data:`START_GROUP`) whatever its transition; every other event to its
        transition's group.
    delta
        The guessing-advantage bound (for groups whose values are all equal).
    start_precision, relative_precision
        The attacker's precision (seconds) for case starts and for relative times.
    exclude_minimum
        The prototype's lower bound (see :func:`prior_knowledge`); amun mode never uses it.
    """
    rel, starts_range = relative_seconds(times)
    per_case = []
    for t in transitions:
        g = np.asarray(t, dtype=np.int64).copy()
        if len(g):
            g[0] = START_GROUP
        per_case.append(g)
    groups = np.concatenate(per_case)
    precision = np.concatenate(
        [np.concatenate(([start_precision], np.full(len(r) - 1, relative_precision))) for r in rel]
    )
    table = prior_knowledge(
        np.concatenate(rel), groups, precision, delta=delta, exclude_minimum=exclude_minimum
    )
    bounds = np.cumsum([0] + [len(r) for r in rel]).tolist()
    span = table.hi - table.lo
    values = np.concatenate(rel)
    safe = np.where(span > 0, span, 1.0)
    norm = np.where(span > 0, (values - table.lo) / safe, 0.0)
    return CasePriors(
        prior=[table.prior[a:b] for a, b in itertools.pairwise(bounds)],
        span=[span[a:b] for a, b in itertools.pairwise(bounds)],
        normalised=[norm[a:b] for a, b in itertools.pairwise(bounds)],
        starts_range=starts_range,
    )


def high_risk_cases(priors: Sequence[FloatArray], delta: float) -> list[bool]:
    """Which cases Amun's filtering drops: those with an event where ``p_k + δ >= 1``.

    If that is every case, only the cases with an event of ``p_k = 1`` (the prototype's rule,
    ``guessing_advantage_partitioned.py``).

    >>> high_risk_cases([np.array([0.2, 0.5]), np.array([0.3])], 0.5)
    [True, False]
    >>> high_risk_cases([np.array([0.6]), np.array([1.0])], 0.5)
    [False, True]
    """
    risky = [bool(np.any(p + delta >= 1.0)) for p in priors]
    if risky and all(risky):
        risky = [bool(np.any(p >= 1.0)) for p in priors]
    return risky
