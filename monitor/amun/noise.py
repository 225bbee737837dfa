"""Where strict mode's randomness comes from: a small protocol, OpenDP and the OS CSPRNG behind it.

Strict mode never draws a released value from ``numpy``/``random`` floating-point noise: counts
are integers and their noise comes from OpenDP's exact discrete samplers; every other random
choice (which bin a synthetic timestamp falls in, the new case ids, the output order) comes from
the operating system's CSPRNG (:class:`random.SystemRandom`, i.e. ``os.urandom``). Neither can be
seeded, so strict output is not reproducible from ``--seed``; that is deliberate (anyone who knew
the seed of a seeded source could subtract the noise or re-derive the ids). Engine tests plug in
a seeded stand-in through the :class:`Releaser` protocol.

Each mechanism is built once per scale and its privacy map is checked before a value is drawn
(:meth:`OpenDPReleaser.threshold_for`, :meth:`OpenDPReleaser.vector_epsilon`).

**The threshold's δ.** OpenDP 0.16's ``make_laplace_threshold`` keeps a key whose noisy count is
*at least* the threshold τ, but its privacy map reports ``P(Z ≥ τ)`` as δ for a key of count 1,
leaving out the mass at exactly ``1 + Z = τ`` (opendp/opendp#2922). The probability that a
key held by one case is released is ``P(1 + Z ≥ τ) = q^(τ-1) / (1 + q)`` with ``q = e^(-1/scale)``
for OpenDP's discrete Laplace; :meth:`OpenDPReleaser.histogram_privacy` reports the larger of
that and OpenDP's figure, so the thresholds here are one above what OpenDP's map alone gives.

Examples
--------
>>> r = OpenDPReleaser()
>>> noisy = r.integer_noise([0, 10, 20], scale=1.0)
>>> len(noisy), all(isinstance(v, int) for v in noisy)
(3, True)
>>> tau = r.threshold_for(epsilon=1.0, delta=1e-6)
>>> r.thresholded_counts({"a": 10_000, "b": 1}, scale=1.0, threshold=tau).keys()
dict_keys(['a'])
>>> r.integer_noise([5], scale=0.0)
Traceback (most recent call last):
...
ValueError: noise scale must be a positive finite number, got 0.0 (0 would release ...)
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..errors import PrivacyProofError

__all__ = ["OpenDPReleaser", "Releaser", "check_scale", "threshold_release_probability"]


def check_scale(scale: float) -> float:
    """Return ``scale`` as a float if it is a positive finite number; raise otherwise.

    >>> check_scale(2)
    2.0
    >>> check_scale(float("inf"))
    Traceback (most recent call last):
    ...
    ValueError: noise scale must be a positive finite number, got inf (0 would release ...)
    """
    value = float(scale)
    if not value > 0.0 or math.isinf(value):
        raise ValueError(
            f"noise scale must be a positive finite number, got {scale} "
            "(0 would release the values un-noised)"
        )
    return value


def threshold_release_probability(*, scale: float, threshold: int) -> float:
    """Probability that a key of true count 1 survives a Laplace threshold of ``threshold``.

    The key is kept when ``1 + Z >= threshold`` with ``Z`` OpenDP's discrete Laplace of
    ``scale`` (``P(Z = k) ∝ e^(-|k|/scale)``), so the probability is ``P(Z >= threshold - 1)
    = q^(threshold-1) / (1 + q)``, ``q = e^(-1/scale)`` (for ``threshold >= 1``). This is the δ
    of the thresholded histogram for one case.

    >>> round(threshold_release_probability(scale=1.0, threshold=3), 6)
    0.098938
    """
    s = check_scale(scale)
    if threshold < 1:
        return 1.0
    q = math.exp(-1.0 / s)
    # rounding can only make this a hair larger, never smaller, than the exact value
    return min(1.0, math.exp(-(threshold - 1) / s) / (1.0 + q) * (1.0 + 1e-12))


class Releaser(Protocol):
    """Strict mode's only sources of randomness for anything it releases."""

    def integer_noise(self, values: Sequence[int], *, scale: float) -> list[int]:
        """``values`` plus independent discrete Laplace noise of ``scale`` (``scale > 0``)."""
        ...

    def thresholded_counts(
        self, counts: Mapping[str, int], *, scale: float, threshold: int
    ) -> dict[str, int]:
        """Noisy ``counts`` (discrete Laplace of ``scale``), keeping keys whose noisy count is at
        least ``threshold``: a key with a true count of zero is never released."""
        ...

    def coins(self) -> random.Random:
        """The generator for every other random choice (synthetic times, ids, order)."""
        ...


def _dp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


class OpenDPReleaser:
    """The shipped :class:`Releaser`: OpenDP 0.16 discrete Laplace, and ``os.urandom`` coins.

    Measurements are cached per scale; one call draws a whole vector (a few µs per value).
    """

    def __init__(self) -> None:
        self._vector: dict[float, Any] = {}
        self._threshold: dict[tuple[float, int], Any] = {}
        self._coins = random.SystemRandom()

    def _vector_mech(self, scale: float) -> Any:
        mech = self._vector.get(scale)
        if mech is None:
            dp = _dp()
            mech = dp.m.make_laplace(
                dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l1_distance(T=dp.i64), scale=scale
            )
            self._vector[scale] = mech
        return mech

    def _threshold_mech(self, scale: float, threshold: int) -> Any:
        key = (scale, threshold)
        mech = self._threshold.get(key)
        if mech is None:
            dp = _dp()
            mech = dp.m.make_laplace_threshold(
                dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=dp.i64)),
                dp.l01inf_distance(dp.absolute_distance(T=dp.i64)),
                scale=scale,
                threshold=threshold,
            )
            self._threshold[key] = mech
        return mech

    def coins(self) -> random.Random:
        """``random.SystemRandom``: the operating system's CSPRNG, which cannot be seeded."""
        return self._coins

    def integer_noise(self, values: Sequence[int], *, scale: float) -> list[int]:
        """Discrete Laplace noise on a vector of integers; the scale is checked first.

        >>> OpenDPReleaser().integer_noise([], scale=1.0)
        []
        """
        s = check_scale(scale)
        if not values:
            return []
        return [int(v) for v in self._vector_mech(s)([int(v) for v in values])]

    def vector_epsilon(self, *, scale: float, sensitivity: int) -> float:
        """ε of the vector mechanism at ``scale`` when the input moves by ``sensitivity`` in L1,
        by OpenDP's privacy map.

        >>> OpenDPReleaser().vector_epsilon(scale=4.0, sensitivity=2)
        0.5
        """
        if sensitivity < 0:
            raise ValueError(f"sensitivity must be >= 0, got {sensitivity}")
        return float(self._vector_mech(check_scale(scale)).map(int(sensitivity)))

    def thresholded_counts(
        self, counts: Mapping[str, int], *, scale: float, threshold: int
    ) -> dict[str, int]:
        """OpenDP's Laplace-threshold histogram (propose-test-release over unknown keys)."""
        s = check_scale(scale)
        if not counts:
            return {}
        released = self._threshold_mech(s, int(threshold))(
            {str(k): int(v) for k, v in counts.items()}
        )
        return {str(k): int(v) for k, v in released.items()}

    def histogram_privacy(self, *, scale: float, threshold: int) -> tuple[float, float]:
        """(ε, δ) of the thresholded histogram when one case changes one count by one.

        ε is OpenDP's; δ is the larger of OpenDP's and :func:`threshold_release_probability`
        (see the module docstring for why they differ).
        """
        s = check_scale(scale)
        eps, delta = self._threshold_mech(s, int(threshold)).map((1, 1, 1))
        exact = threshold_release_probability(scale=s, threshold=int(threshold))
        return float(eps), max(float(delta), exact)

    def threshold_for(self, *, epsilon: float, delta: float) -> int:
        """The smallest threshold for which the histogram is (ε, δ)-DP per case at scale
        ``1 / epsilon``. Raises :class:`PrivacyProofError` if none up to 10^9 is.

        >>> OpenDPReleaser().threshold_for(epsilon=1.0, delta=1e-6)
        15
        """
        if epsilon <= 0 or not 0 < delta < 1:
            raise ValueError(f"need epsilon > 0 and delta in (0, 1), got {epsilon}, {delta}")
        scale = 1.0 / epsilon
        lo, hi = 1, 2
        while not self._fits(scale, hi, epsilon, delta):
            lo, hi = hi, hi * 2
            if hi > 10**9:
                raise PrivacyProofError(
                    f"no threshold gives ({epsilon}, {delta})-DP at scale {scale}"
                )
        while lo < hi:
            mid = (lo + hi) // 2
            if self._fits(scale, mid, epsilon, delta):
                hi = mid
            else:
                lo = mid + 1
        return hi

    def _fits(self, scale: float, threshold: int, epsilon: float, delta: float) -> bool:
        eps, dlt = self.histogram_privacy(scale=scale, threshold=threshold)
        return eps <= epsilon * (1 + 1e-9) and dlt <= delta
