"""Amun's per-event prior knowledge and per-event ε_t (attack h2), as the paper computes them.

Each event gets a *relative time*: for the first event of a case, the time since the earliest
case start of the log; for the others, the time since the previous event of the case. Events
on the same DAFSA transition form a group. Within its group an event's value is min-max
normalised to [0, 1], and its prior ``p_k`` is the share of the group's values within the
precision ``r`` of it (the paper uses 1 day for case starts and 10 s for relative times), read
from the group's empirical CDF: ``F(min(x + r', 1)) - F(max(x - r', 0))`` with ``r' = r / range``.
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
[0.25, 0.5, 0.5, 0.25]
>>> p.lo.tolist(), p.hi.tolist()
([0.0, 0.0, 0.0, 0.0], [1000.0, 1000.0, 1000.0, 1000.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "AMUN_EPS_NO_GAIN",
    "AMUN_EPS_ZERO_PRIOR",
    "PriorTable",
    "amun_event_epsilons",
    "prior_knowledge",
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
    values: FloatArray, groups: IntArray, precision: FloatArray, *, delta: float
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
        cdf_plus = np.searchsorted(x, np.minimum(x + r, 1.0), side="right") / size
        cdf_minus = np.searchsorted(x, np.maximum(x - r, 0.0), side="right") / size
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
