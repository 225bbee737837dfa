"""Timestamps of released cases, in both modes.

* :func:`amun_times` — the published method: each copy of a case gets Laplace noise of scale
  ``copies / ε_t`` on the min-max normalised value of each event (its start offset, then its
  gaps), scaled back by its group's range; the noise on gaps is folded to be positive (as the
  prototype does; the paper only says the order of events is kept), the start noise is signed.
  Then timestamp compression, Eq. (4): with ``R`` the range of the original case starts and ``A``
  the range of the noisy case starts, every noisy relative time (Sect. 3.2: a case's start offset,
  here from the earliest noisy start, and each gap) is multiplied by ``R / (A + R) / 2``, and the
  case is placed from the original first start on, so every start falls between the original
  first and last (Sect. 3.7). numpy floating-point noise, as the paper used.
* :func:`release_time_histograms` and :func:`synthesize_times` — strict mode. No real case's
  timestamps are released. Two noisy histograms are: the case starts over a public window (one
  count per case), and per directly-follows edge of the released variants the gaps over a
  public doubling grid (one count per gap, so a case of length ``L`` moves ``L - 1`` counts).
  Discrete Laplace from OpenDP with the scale set by that sensitivity, checked by OpenDP's
  privacy map before drawing. Every released case then gets a start and gaps sampled from those
  histograms (post-processing): timestamps that depend on the data only through the noisy
  counts, so adding or removing one case changes their distribution by at most ``e^ε``.

Examples
--------
>>> import random
>>> class Exact:  # a stand-in that adds no noise, to show what is counted
...     def integer_noise(self, values, *, scale): return list(values)
...     def thresholded_counts(self, counts, *, scale, threshold): return dict(counts)
...     def coins(self): return random.Random(0)
>>> day = 86_400
>>> hist = release_time_histograms(
...     [(("a", "b"), (0, 30 * 1_000_000))] * 50, {("a", "b")}, releaser=Exact(),
...     window=(0, day), start_unit=day, gap_unit=10.0, epsilon_start=0.1, epsilon_gap=0.3)
>>> hist.start_edges, hist.start_counts
((0, 86400), (50,))
>>> hist.gap_edges[:5], hist.gap_counts[("a", "b")][:4]
((0, 10, 20, 40, 80), (0, 0, 50, 0))
>>> start, end = synthesize_times(hist, ("a", "b"), random.Random(1))
>>> 0 <= start < day * 1_000_000, 20 <= (end - start) // 1_000_000 < 40
(True, True)
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..errors import PrivacyProofError
from .noise import OpenDPReleaser, Releaser, check_scale

__all__ = [
    "GAP_CAP_SECONDS",
    "TimeHistograms",
    "amun_times",
    "gap_edges",
    "release_time_histograms",
    "synthesize_times",
]

_US = 1_000_000

#: Gaps are clamped below the first power-of-two multiple of the gap unit that reaches this
#: (two years): the top of the public grid.
GAP_CAP_SECONDS = 2 * 365 * 86_400


def amun_times(
    times: Sequence[Sequence[int]],
    epsilons: Sequence[npt.NDArray[np.float64]],
    ranges: Sequence[npt.NDArray[np.float64]],
    copies: Sequence[int],
    *,
    first_start: int,
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
    first_start
        The original log's earliest case start (µs): public in the paper's attack model.
    starts_range
        ``R``: the range (seconds) of the original log's case starts, for Eq. (4).
    rng
        numpy generator (the prototype's floating-point Laplace).

    >>> out = amun_times([(0, 60_000_000), (3_600_000_000, 3_660_000_000)],
    ...                  [np.array([1.0, 1.0])] * 2, [np.array([3600.0, 0.0])] * 2, [1, 1],
    ...                  first_start=0, starts_range=3600.0, rng=np.random.default_rng(0))
    >>> min(t[0] for t in out), max(t[0] for t in out) < 1_800_000_000
    (0, True)
    >>> all(0 < t[1] - t[0] < 30_000_000 for t in out)  # a 60 s gap compressed by R/(A+R)/2
    True
    """
    starts: list[float] = []
    gaps: list[npt.NDArray[np.float64]] = []
    for t, eps, span, k in zip(times, epsilons, ranges, copies, strict=True):
        if k <= 0:
            continue
        secs = np.asarray(t, dtype=np.float64) / _US
        rel = np.empty(len(secs), dtype=np.float64)
        rel[0] = secs[0] - first_start / _US
        rel[1:] = np.diff(secs)
        draws = rng.laplace(0.0, 1.0, size=(k, len(t))) * (k / eps) * span
        draws[:, 1:] = np.abs(draws[:, 1:])
        for row in draws:
            noisy = rel + row
            starts.append(float(noisy[0]))
            gaps.append(noisy[1:])
    if not starts:
        return []
    lowest = min(starts)
    anonymized_range = max(starts) - lowest
    total = anonymized_range + starts_range
    factor = 0.5 * starts_range / total if total > 0 else 0.5
    out: list[tuple[int, ...]] = []
    for start, gap in zip(starts, gaps, strict=True):
        row = np.concatenate(([start - lowest], gap)) * factor
        secs = np.cumsum(row)
        out.append(tuple(first_start + int(v) for v in np.rint(secs * _US).astype(np.int64)))
    return out


def gap_edges(unit: float) -> tuple[int, ...]:
    """The public grid for gaps (whole seconds): ``0, u, 2u, 4u, ...`` up to the first edge at or
    above :data:`GAP_CAP_SECONDS`, with ``u`` the unit rounded up to a whole second.

    >>> gap_edges(10.0)[:6], len(gap_edges(10.0)), gap_edges(10.0)[-1] >= GAP_CAP_SECONDS
    ((0, 10, 20, 40, 80, 160), 25, True)
    """
    u = max(1, math.ceil(unit))
    edges = [0, u]
    while edges[-1] < GAP_CAP_SECONDS:
        edges.append(edges[-1] * 2)
    return tuple(edges)


@dataclass(frozen=True)
class TimeHistograms:
    """Strict mode's released time statistics (noisy counts; the only time data it releases).

    Attributes
    ----------
    start_edges
        Bin edges of case starts, in seconds since the epoch (``len(start_counts) + 1``).
    start_counts
        Noisy number of case starts per bin.
    gap_edges
        Bin edges of gaps, in seconds (:func:`gap_edges`).
    gap_counts
        Per directly-follows edge of the released variants, the noisy number of gaps per bin.
    start_scale, gap_scale
        The noise scales, for the clean-up before sampling.
    """

    start_edges: tuple[int, ...]
    start_counts: tuple[int, ...]
    gap_edges: tuple[int, ...]
    gap_counts: Mapping[tuple[str, str], tuple[int, ...]]
    start_scale: float
    gap_scale: float


def _check_epsilon(releaser: OpenDPReleaser, scale: float, sensitivity: int, eps: float) -> None:
    proved = releaser.vector_epsilon(scale=scale, sensitivity=sensitivity)
    if proved > eps * (1 + 1e-9):
        raise PrivacyProofError(
            f"OpenDP proves epsilon {proved} for sensitivity {sensitivity} at scale {scale}, "
            f"more than the {eps} allotted"
        )


def release_time_histograms(
    cases: Sequence[tuple[tuple[str, ...], Sequence[int]]],
    released: Collection[tuple[str, ...]],
    *,
    releaser: Releaser,
    window: tuple[int, int],
    start_unit: float,
    gap_unit: float,
    epsilon_start: float,
    epsilon_gap: float,
    n_released: int | None = None,
) -> TimeHistograms:
    """Noisy start and gap histograms of the cases whose variant is in ``released``.

    Parameters
    ----------
    cases
        ``(activities, timestamps in µs)`` of every input case.
    released
        The released variants (public: the output of the thresholded variant histogram).
    releaser
        The noise source.
    window
        ``(first, last)`` in seconds since the epoch: the public range of case starts. Starts
        outside it are clamped into it.
    start_unit
        Seconds: the narrowest start bin.
    gap_unit
        Seconds: the first gap bin (:func:`gap_edges`).
    epsilon_start, epsilon_gap
        The budget of each histogram.
    n_released
        The released number of cases (public); sets how many start bins the window is cut
        into: ``max(1, min(window / start_unit, n_released · ε_start / 4))``, so a bin holds
        about four times the noise scale on average. Default: ``len(cases)``, for tests.

    Sensitivity (adding or removing one case, given the public ``released``): a case whose
    variant is not released counts nowhere; one whose variant is released adds 1 to one start
    bin (L1 sensitivity 1 of the start histogram) and 1 to one gap bin per gap, ``L - 1`` gaps
    for a case of ``L`` events (L1 sensitivity ``c = max(L) - 1`` over the released variants of
    all gap histograms together). Hence scales ``1 / ε_start`` and ``c / ε_gap``.
    """
    if epsilon_start <= 0 or epsilon_gap <= 0:
        raise ValueError("epsilon_start and epsilon_gap must be > 0")
    lo, hi = int(window[0]), int(window[1])
    if hi < lo:
        raise ValueError(f"the window ends before it starts: {window}")
    proof = releaser if isinstance(releaser, OpenDPReleaser) else OpenDPReleaser()
    rel = set(released)
    mine = [(acts, t) for acts, t in cases if acts in rel]
    width = hi - lo
    n_hat = len(cases) if n_released is None else n_released
    start_scale = check_scale(1.0 / epsilon_start)
    by_budget = int(n_hat * epsilon_start / 4)
    by_unit = int(width // max(1.0, start_unit))
    n_bins = max(1, min(by_unit, by_budget))
    s_edges = (*(lo + (width * i) // n_bins for i in range(n_bins)), max(hi, lo + 1))
    s_counts = [0] * n_bins
    for _, t in mine:
        start = min(max(t[0] // _US, lo), hi)
        s_counts[min(n_bins - 1, bisect.bisect_right(s_edges, start) - 1)] += 1
    _check_epsilon(proof, start_scale, 1, epsilon_start)
    noisy_starts = tuple(releaser.integer_noise(s_counts, scale=start_scale))

    g_edges = gap_edges(gap_unit)
    n_gap_bins = len(g_edges) - 1
    edges = sorted({e for v in rel for e in itertools.pairwise(v)})
    c = max((len(v) - 1 for v in rel), default=0)
    noisy_gaps: dict[tuple[str, str], tuple[int, ...]] = {}
    gap_scale = check_scale(max(c, 1) / epsilon_gap)
    if edges:
        index = {e: i for i, e in enumerate(edges)}
        flat = [0] * (len(edges) * n_gap_bins)
        top = g_edges[-1] - 1
        for acts, t in mine:
            for (a, b), (t0, t1) in zip(
                itertools.pairwise(acts), itertools.pairwise(t), strict=True
            ):
                gap = min(max((t1 - t0) // _US, 0), top)
                k = bisect.bisect_right(g_edges, gap) - 1
                flat[index[(a, b)] * n_gap_bins + k] += 1
        _check_epsilon(proof, gap_scale, c, epsilon_gap)
        noisy = releaser.integer_noise(flat, scale=gap_scale)
        for e, i in index.items():
            noisy_gaps[e] = tuple(noisy[i * n_gap_bins : (i + 1) * n_gap_bins])
    return TimeHistograms(
        start_edges=s_edges,
        start_counts=noisy_starts,
        gap_edges=g_edges,
        gap_counts=noisy_gaps,
        start_scale=start_scale,
        gap_scale=gap_scale,
    )


#: The clean-up keeps a bin when pure noise would reach its count in at most this share of
#: histograms (``P(Z >= cut) <= e^(-cut/scale)``, over every bin of one histogram).
SPURIOUS_SHARE = 0.05


def _cleaned(counts: Sequence[int], scale: float) -> list[float]:
    """Noisy counts as sampling weights: bins below ``scale · ln(bins / 0.05)`` are dropped (an
    empty histogram keeps a spurious bin with probability at most 0.05), the rest kept as they
    are. Post-processing: it reads only the noisy counts and public scales.

    >>> _cleaned([100, 3, -2, 40], 5.0)
    [100.0, 0.0, 0.0, 40.0]
    """
    if len(counts) == 1:
        return [float(max(counts[0], 0))]
    cut = scale * math.log(len(counts) / SPURIOUS_SHARE)
    return [float(v) if v >= cut else 0.0 for v in counts]


def _pick(weights: Sequence[float], coins: random.Random) -> int:
    return coins.choices(range(len(weights)), weights=weights, k=1)[0]


def synthesize_times(
    hist: TimeHistograms, activities: Sequence[str], coins: random.Random
) -> tuple[int, ...]:
    """Timestamps (µs, whole seconds) for one released case of ``activities``, sampled from the
    released histograms only: a start bin by its cleaned noisy count, a second uniformly inside
    it; per gap, a bin of its edge's cleaned histogram (falling back to all edges pooled, then
    to the first bin), a second uniformly inside it.
    """
    weights = _cleaned(hist.start_counts, hist.start_scale)
    b = _pick(weights, coins) if sum(weights) > 0 else coins.randrange(len(weights))
    lo, hi = hist.start_edges[b], hist.start_edges[b + 1]
    t = coins.randrange(lo, max(hi, lo + 1))
    out = [t * _US]
    edges = hist.gap_edges
    for e in itertools.pairwise(activities):
        w = _gap_weights(hist, e)
        k = _pick(w, coins) if sum(w) > 0 else 0
        t += coins.randrange(edges[k], edges[k + 1])
        out.append(t * _US)
    return tuple(out)


def _gap_weights(hist: TimeHistograms, edge: tuple[str, str]) -> list[float]:
    own = hist.gap_counts.get(edge)
    if own is not None:
        w = _cleaned(own, hist.gap_scale)
        if sum(w) > 0:
            return w
    n = len(hist.gap_edges) - 1
    pooled = [0.0] * n
    for counts in hist.gap_counts.values():
        for i, v in enumerate(_cleaned(counts, hist.gap_scale)):
            pooled[i] += v
    if sum(pooled) > 0:
        return pooled
    raw = [0.0] * n
    for counts in hist.gap_counts.values():
        for i, v in enumerate(counts):
            raw[i] += v
    return [max(v, 0.0) for v in raw]
