"""Timestamp noise for released cases, in both modes.

Times are rebuilt per released copy from a *start* (the first event) and the *gaps* between
consecutive events, so noise on a gap moves every later event of the copy.

* :func:`amun_times` — the published method: Laplace noise of scale ``copies / ε_t`` on the
  min-max normalised value of each event, scaled back by its group's range; the noise on gaps is
  folded to be positive (prototype), the start noise is signed. The cumulative noise of every
  copy is then *compressed* by ``0.5 R / (A + R)``, with ``R`` the range of the original case
  starts and ``A`` the largest (over copies) smallest absolute cumulative noise, and added to the
  original timestamps. numpy floating-point noise, as the paper used.
* :func:`strict_times` — integer seconds, OpenDP discrete Laplace. A copy of a case of ``n``
  events that has ``k`` copies gets noise of scale ``unit * n * k / ε_time`` on its start and on
  each gap (``unit`` = 1 day for the start, 10 s for gaps by default), so the whole case spends
  ε_time over all its events and copies (group privacy). Negative noisy gaps become 0 (post-
  processing); nothing is compressed (compression reads the raw range of the log).

Examples
--------
>>> class NoNoise:
...     def integer_noise(self, values, *, scale): return list(values)
...     def thresholded_counts(self, counts, *, scale, threshold): return dict(counts)
>>> strict_times([(0, 1_500_000, 61_000_000)], [1], NoNoise(), epsilon=1.0,
...              start_unit=86400.0, gap_unit=10.0)
[(0, 1000000, 61000000)]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .noise import Releaser

__all__ = ["amun_times", "strict_times"]

_US = 1_000_000


def amun_times(
    times: Sequence[Sequence[int]],
    epsilons: Sequence[npt.NDArray[np.float64]],
    ranges: Sequence[npt.NDArray[np.float64]],
    copies: Sequence[int],
    starts_range: float,
    rng: np.random.Generator,
) -> list[tuple[int, ...]]:
    """Noisy timestamps (µs) for every copy, copies of case ``i`` consecutive in case order.

    Parameters
    ----------
    times
        Original timestamps (µs) per case.
    epsilons
        ε_t of each event of each case.
    ranges
        Range (seconds) of the group of each event of each case.
    copies
        Number of released copies of each case.
    starts_range
        Range (seconds) of the original case starts, for the compression.
    rng
        numpy generator (the prototype's floating-point Laplace).
    """
    cum_noise: list[npt.NDArray[np.float64]] = []
    bases: list[Sequence[int]] = []
    for t, eps, span, k in zip(times, epsilons, ranges, copies, strict=True):
        if k <= 0:
            continue
        draws = rng.laplace(0.0, 1.0, size=(k, len(t))) * (k / eps) * span
        draws[:, 1:] = np.abs(draws[:, 1:])
        cum = np.cumsum(draws, axis=1)
        for row in cum:
            cum_noise.append(row)
            bases.append(t)
    if not cum_noise:
        return []
    anonymized_range = max(float(np.min(np.abs(c))) for c in cum_noise)
    total = anonymized_range + starts_range
    factor = 0.5 * starts_range / total if total > 0 else 0.0
    out: list[tuple[int, ...]] = []
    for base, cum in zip(bases, cum_noise, strict=True):
        shift = np.rint(cum * factor * _US).astype(np.int64)
        out.append(tuple(int(b) + int(s) for b, s in zip(base, shift.tolist(), strict=True)))
    return out


def strict_times(
    times: Sequence[Sequence[int]],
    copies: Sequence[int],
    releaser: Releaser,
    *,
    epsilon: float,
    start_unit: float,
    gap_unit: float,
) -> list[tuple[int, ...]]:
    """Noisy timestamps (µs, whole seconds) for every copy, copies of a case consecutive."""
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    # one coordinate list per copy: [start, gap1, gap2, ...] in whole seconds
    coords: list[list[int]] = []
    scales: list[tuple[float, float]] = []
    for t, k in zip(times, copies, strict=True):
        if k <= 0:
            continue
        secs = [v // _US for v in t]
        row = [secs[0]] + [b - a for a, b in itertools.pairwise(secs)]
        factor = len(t) * k / epsilon
        for _ in range(k):
            coords.append(list(row))
            scales.append((start_unit * factor, gap_unit * factor))
    # draw each scale's values in one call
    slots: dict[float, list[tuple[int, int]]] = {}
    for ci, (s_start, s_gap) in enumerate(scales):
        slots.setdefault(s_start, []).append((ci, 0))
        for j in range(1, len(coords[ci])):
            slots.setdefault(s_gap, []).append((ci, j))
    for scale in sorted(slots):
        where = slots[scale]
        noisy = releaser.integer_noise([coords[ci][j] for ci, j in where], scale=scale)
        for (ci, j), value in zip(where, noisy, strict=True):
            coords[ci][j] = value
    out: list[tuple[int, ...]] = []
    for row in coords:
        acc = row[0]
        rebuilt = [acc * _US]
        for gap in row[1:]:
            acc += max(0, gap)
            rebuilt.append(acc * _US)
        out.append(tuple(rebuilt))
    return out
