"""Where strict mode's noise comes from: a small protocol, and OpenDP behind it.

Strict mode never draws a released value from ``numpy``/``random`` floating-point noise: counts
and timestamps are integers, and their noise comes from OpenDP's exact discrete samplers
(:class:`OpenDPReleaser`). OpenDP draws from the operating system's CSPRNG, so strict output is
not reproducible from ``--seed``; that is deliberate (a seeded noise source would let anyone who
learns the seed subtract the noise). Engine tests plug in a seeded stand-in through the
:class:`Releaser` protocol.

Each mechanism is built once per scale and its privacy map is checked with OpenDP before a
value is drawn (:meth:`OpenDPReleaser.threshold_for`).

Examples
--------
>>> r = OpenDPReleaser()
>>> noisy = r.integer_noise([0, 10, 20], scale=1.0)
>>> len(noisy), all(isinstance(v, int) for v in noisy)
(3, True)
>>> tau = r.threshold_for(epsilon=1.0, delta=1e-6)
>>> r.thresholded_counts({"a": 10_000, "b": 1}, scale=1.0, threshold=tau).keys()
dict_keys(['a'])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["OpenDPReleaser", "Releaser"]


class Releaser(Protocol):
    """Adds noise to integers. Strict mode calls nothing else to randomise released values."""

    def integer_noise(self, values: Sequence[int], *, scale: float) -> list[int]:
        """``values`` plus independent discrete Laplace noise of ``scale``."""
        ...

    def thresholded_counts(
        self, counts: Mapping[str, int], *, scale: float, threshold: int
    ) -> dict[str, int]:
        """Noisy ``counts`` (discrete Laplace of ``scale``), keeping keys whose noisy count is at
        least ``threshold``: a key with a true count of zero is never released."""
        ...


def _dp() -> Any:
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


class OpenDPReleaser:
    """The shipped :class:`Releaser`: OpenDP 0.16 discrete Laplace, vector-at-a-time.

    Measurements are cached per scale; one call draws a whole vector (a few µs per value).
    """

    def __init__(self) -> None:
        self._vector: dict[float, Any] = {}
        self._threshold: dict[tuple[float, int], Any] = {}

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

    def integer_noise(self, values: Sequence[int], *, scale: float) -> list[int]:
        """Discrete Laplace noise on a vector of integers.

        >>> OpenDPReleaser().integer_noise([5], scale=0.0)
        [5]
        """
        if not values:
            return []
        if scale == 0.0:
            return list(values)
        return [int(v) for v in self._vector_mech(float(scale))([int(v) for v in values])]

    def thresholded_counts(
        self, counts: Mapping[str, int], *, scale: float, threshold: int
    ) -> dict[str, int]:
        """OpenDP's Laplace-threshold histogram (propose-test-release over unknown keys)."""
        if not counts:
            return {}
        released = self._threshold_mech(float(scale), int(threshold))(
            {str(k): int(v) for k, v in counts.items()}
        )
        return {str(k): int(v) for k, v in released.items()}

    def histogram_privacy(self, *, scale: float, threshold: int) -> tuple[float, float]:
        """(ε, δ) of the thresholded histogram when one case changes one count by one."""
        eps, delta = self._threshold_mech(float(scale), int(threshold)).map((1, 1, 1))
        return float(eps), float(delta)

    def threshold_for(self, *, epsilon: float, delta: float) -> int:
        """The smallest threshold for which OpenDP proves the histogram (ε, δ)-DP per case, at
        scale ``1 / epsilon``. Raises ``ValueError`` if none up to 10^9 does."""
        if epsilon <= 0 or not 0 < delta < 1:
            raise ValueError(f"need epsilon > 0 and delta in (0, 1), got {epsilon}, {delta}")
        scale = 1.0 / epsilon
        lo, hi = 1, 2
        while not self._fits(scale, hi, epsilon, delta):
            lo, hi = hi, hi * 2
            if hi > 10**9:
                raise ValueError(f"no threshold gives ({epsilon}, {delta})-DP at scale {scale}")
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
