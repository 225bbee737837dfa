"""How far a released number can be from the exact one: 95% intervals from the mechanism.

Every record says its mechanisms (:class:`~procvault.monitor.privacy.records.MechanismInfo`:
``discrete_laplace`` with its ``scale``), which are data-independent, so the noise's
distribution is public and an interval costs no privacy budget:

* a pane's value ``v`` of a statistic noised at scale ``b``: ``v ± h`` with ``h`` from
  OpenDP's :func:`opendp.accuracy.discrete_laplacian_scale_to_accuracy` (``P[|noise| >= a] =
  alpha``; ``h = floor(a)``);
* a window's value sums ``m = panes - withheld_panes`` independent draws: ``h`` is the 95%
  quantile of the absolute value of that sum, computed exactly from the discrete Laplace
  distribution (its ``m``-fold convolution, by FFT; for ``m = 1`` it matches OpenDP's);
* a rate ``n / d`` of two noisy counts: both at 97.5% (so both hold together with at least
  95%, Bonferroni), ``[max(n - h_n, 0) / (d + h_d), (n + h_n) / max(d - h_d, 0)]``, clamped to
  the rate's range. A rate whose interval is as wide as the rate itself or wider says little and is
  withheld (:func:`rate`).

>>> half_width(10.0), half_width(10.0, panes=4) > half_width(10.0)
(30, True)
>>> r = rate(80, 100, 3, 5, upper=1.0)
>>> round(r.value, 2), round(r.low, 3), round(r.high, 3), r.withheld
(0.8, 0.733, 0.874, False)
>>> rate(2, 3, 30, 30, upper=1.0).withheld
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .records import MechanismInfo

__all__ = ["LEVEL", "Rate", "half_width", "mechanism_half_width", "rate"]

#: The coverage of every interval shown.
LEVEL: Final = 0.95


@lru_cache(maxsize=256)
def half_width(scale: float, *, panes: int = 1, level: float = LEVEL) -> int:
    """The half-width ``h`` with ``P[|S| <= h] >= level`` for ``S`` the sum of ``panes``
    independent discrete Laplace draws of ``scale`` (0 without noise)."""
    if scale <= 0 or panes <= 0:
        return 0
    if panes == 1:
        from .mechanisms import opendp

        dp = opendp()
        accuracy: float = dp.discrete_laplacian_scale_to_accuracy(scale, 1.0 - level)
        return math.floor(accuracy)
    import numpy as np

    q = math.exp(-1.0 / scale)
    sd = math.sqrt(2.0 * q / (1.0 - q) ** 2 * panes)
    half = int(40 * scale + 20 * sd + 64)
    n = 1 << math.ceil(math.log2(2 * half + 1))
    k = np.arange(n)
    k = np.minimum(k, n - k)  # circular distance: index i holds the value i (or i - n)
    pmf = (1.0 - q) / (1.0 + q) * q ** k.astype(float)
    total = np.fft.irfft(np.fft.rfft(pmf) ** panes, n)
    total = np.clip(total, 0.0, None)
    # P[|S| <= h] = p(0) + 2 * (p(1) + ... + p(h)) (symmetric)
    cum = total[0] + 2.0 * np.cumsum(total[1 : n // 2])
    h = int(np.searchsorted(cum, level)) + 1
    return h


def mechanism_half_width(
    mechanisms: Iterable[MechanismInfo],
    statistic: str,
    *,
    panes: int = 1,
    level: float = LEVEL,
) -> int | None:
    """:func:`half_width` of ``statistic``'s mechanism among ``mechanisms`` (``None`` when
    it is not among them, or its mechanism is not one this module knows)."""
    for m in mechanisms:
        if m.name == statistic:
            if m.mechanism != "discrete_laplace":
                return None
            return half_width(m.scale, panes=panes, level=level)
    return None


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate of two noisy counts with its interval (``withheld``: the interval is wider than
    the rate, or there is nothing to divide by; then ``value`` is not to be shown)."""

    value: float | None
    low: float
    high: float
    withheld: bool

    def text(self) -> str:
        """``80.0% (73.3-87.4%)``, or ``withheld (noise)``."""
        if self.withheld or self.value is None:
            return "withheld (noise wider than the rate)"
        return f"{100 * self.value:.1f}% ({100 * self.low:.1f}-{100 * self.high:.1f}%)"


def rate(num: int, den: int, h_num: int, h_den: int, *, upper: float | None = None) -> Rate:
    """``num / den`` (each clamped at 0) with the joint interval of the module docstring;
    ``h_num``/``h_den`` are half-widths at 97.5% each (:func:`half_width` with
    ``level=0.975``). ``upper``: the rate's largest possible value (1 for a share)."""
    n, d = max(num, 0), max(den, 0)
    top = math.inf if upper is None else upper
    if d <= 0:
        return Rate(None, 0.0, top, True)
    value = min(n / d, top)
    low = min(max(n - h_num, 0) / (d + h_den), top)
    high = (n + h_num) / (d - h_den) if d - h_den > 0 else math.inf
    high = min(high, top)
    return Rate(value, low, high, high - low >= value)
