"""Where released noise comes from: a small :class:`Releaser` protocol, and OpenDP behind it.

Every released value is drawn by OpenDP's exact discrete samplers (:class:`OpenDPReleaser`):
the discrete Laplace mechanism on integer vectors, and OpenDP's Laplace threshold (propose-test-
release over keys not known in advance). Each mechanism is built once from the
:class:`~procvault.monitor.privacy.plan.ReleasePlan` by chaining ``space >> then_laplace(scale)``
and its privacy map is proved with ``.check()`` before anything is drawn: a plan OpenDP cannot
prove refuses to start (:class:`PrivacyProofError`). OpenDP draws from the operating system's
CSPRNG, so released noise cannot be reproduced from a seed (a seed would let whoever learns it
subtract the noise).

:class:`DeterministicReleaser` is the stand-in for engine tests: it adds a fixed offset and is
**not** private.

Examples
--------
>>> from datetime import timedelta
>>> from procvault.monitor.privacy.budget import Budget
>>> from procvault.monitor.privacy.plan import ReleasePlan
>>> from procvault.monitor.privacy.settings import KnownKeys, PaneSettings, PrivacySettings
>>> settings = PrivacySettings(Budget(1.0, window=4, delta=1e-6), PaneSettings(timedelta(hours=1)))
>>> plan = ReleasePlan.build(settings, KnownKeys.build(["A", "B"]))
>>> r = OpenDPReleaser(plan)
>>> noisy = r.vector("activity", [10, 0])
>>> len(noisy), all(isinstance(v, int) for v in noisy)
(2, True)
>>> sorted(r.threshold("activity", {'["X"]': 10**9, '["Y"]': 0}))
['["X"]']
>>> DeterministicReleaser(plan, offset=1).vector("activity", [10, 0])
[11, 1]

Many vectors at once (:func:`draw_vectors`): every value still gets one independent draw of its
own mechanism, but the values of all requests at one scale go to OpenDP in one call (split over
``workers`` threads for long vectors: OpenDP's calls release the GIL):

>>> a, b = draw_vectors(OpenDPReleaser(plan, workers=2), [("activity", [1, 2]), ("cases", [3])])
>>> len(a), len(b)
(2, 1)
>>> draw_vectors(DeterministicReleaser(plan, offset=1), [("activity", [1, 2]), ("cases", [3])])
[[2, 3], [4]]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np

from ..errors import PrivacyProofError

if TYPE_CHECKING:
    from .plan import MechanismSpec, ReleasePlan

__all__ = [
    "DeterministicReleaser",
    "OpenDPReleaser",
    "PrivacyProofError",
    "Releaser",
    "draw_vectors",
    "opendp",
    "threshold_delta",
]


def opendp() -> Any:
    """``opendp.prelude`` with the ``contrib`` features on (imported on first use)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def vector_measurement(scale: float) -> Any:
    """Discrete Laplace on integer vectors (L1 distance) at ``scale``, built with ``>>``."""
    dp = opendp()
    space = dp.vector_domain(dp.atom_domain(T=dp.i64)), dp.l1_distance(T=dp.i64)
    return space >> dp.m.then_laplace(scale=scale)


def threshold_measurement(scale: float, threshold: int) -> Any:
    """OpenDP's Laplace threshold on a ``str -> i64`` map (L0/L1/L∞ distance)."""
    dp = opendp()
    space = (
        dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T=dp.i64)),
        dp.l01inf_distance(dp.absolute_distance(T=dp.i64)),
    )
    return space >> dp.m.then_laplace_threshold(scale=scale, threshold=threshold)


def threshold_delta(scale: float, threshold: int, d_in: tuple[int, int, int]) -> float:
    """The δ of the Laplace threshold at ``(l0, l1, l∞) = d_in``: the larger of OpenDP's map
    and the exact probability that one of ``l0`` keys the case alone holds, each with a count
    of at most ``l∞``, is released.

    OpenDP keeps a noisy count *equal* to the threshold, but its map counts ``P(Z > τ - l∞)``
    per key, leaving out the mass at ``l∞ + Z = τ`` (opendp/opendp#2922; measured in
    ``tests/unit/test_dp_findings.py``). The exact value is ``1 - (1 - p)^l0`` with
    ``p = P(Z ≥ τ - l∞) = q^(τ-l∞) / (1 + q)``, ``q = e^(-1/scale)``.

    >>> round(threshold_delta(1.0, 3, (1, 1, 1)), 6)  # OpenDP's map says 0.036397
    0.098938
    """
    l0, _, linf = d_in
    _, reported = threshold_measurement(scale, threshold).map(d_in)
    gap = threshold - linf
    if gap < 1:
        return 1.0
    q = math.exp(-1.0 / scale)
    p = math.exp(-gap / scale) / (1.0 + q)
    exact = -math.expm1(l0 * math.log1p(-p)) if p < 1.0 else 1.0
    # rounding can only make this a hair larger, never smaller, than the exact value
    return max(float(reported), min(1.0, exact * (1.0 + 1e-12)))


class Releaser(Protocol):
    """Draws the noise of a release. The shipped path is :class:`OpenDPReleaser`."""

    def vector(self, mechanism: str, values: Sequence[int]) -> list[int]:
        """``values`` plus independent noise of mechanism ``mechanism`` (one per value)."""
        ...

    def threshold(self, mechanism: str, counts: Mapping[str, int]) -> dict[str, int]:
        """Noisy ``counts``, keeping only the keys whose noisy count reaches the mechanism's
        threshold. A key absent from ``counts`` is never released."""
        ...


def draw_vectors(
    releaser: Releaser, requests: Sequence[tuple[str, Sequence[int]]]
) -> list[list[int]]:
    """``releaser.vector(mechanism, values)`` of every ``(mechanism, values)`` request, in
    order, through the releaser's ``vectors`` (as few OpenDP calls as there are scales) when it
    has one, else one :meth:`Releaser.vector` call per request."""
    many = getattr(releaser, "vectors", None)
    if many is not None:
        out: list[list[int]] = many(requests)
        return out
    return [releaser.vector(m, v) for m, v in requests]


#: Below this many values per thread, a scale's vector is drawn in one call on the caller's
#: thread (a thread hand-off costs more than it saves).
_PARALLEL_MIN: Final = 2048


class OpenDPReleaser:
    """The shipped :class:`Releaser`: one OpenDP measurement per mechanism of the plan, each
    proved with ``.check()`` when built.

    Parameters
    ----------
    plan
        The release plan; every mechanism in it is built and checked here.
    workers
        Threads that draw a long vector's values in parallel (:meth:`vectors`): each thread
        holds its own measurements, built and checked the same way, and draws a contiguous
        slice of the vector (one independent draw per value, as one call would). OpenDP's
        calls release the GIL, so draws run on several cores; ``1`` draws on the caller's
        thread only.

    Raises
    ------
    PrivacyProofError
        If OpenDP does not prove a mechanism's (ε, δ).
    """

    def __init__(self, plan: ReleasePlan, *, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._vector: dict[str, Any] = {}
        self._threshold: dict[str, Any] = {}
        self._scale: dict[str, float] = {}
        for spec in plan.mechanisms():
            self._vector[spec.name] = _checked_vector(spec)
            self._scale[spec.name] = spec.scale
            if spec.threshold is not None:
                self._threshold[spec.name] = _checked_threshold(spec)
        self.workers: Final = workers
        # per worker and scale: a measurement checked for every mechanism of that scale
        self._by_scale: list[dict[float, Any]] = [
            {spec.scale: self._vector[spec.name] for spec in plan.mechanisms()}
        ]
        for _ in range(1, workers):
            own: dict[float, Any] = {}
            for spec in plan.mechanisms():
                meas = own.get(spec.scale)
                own[spec.scale] = _checked_vector(spec, meas)
            self._by_scale.append(own)
        self._pool: ThreadPoolExecutor | None = None

    def vector(self, mechanism: str, values: Sequence[int]) -> list[int]:
        """Discrete Laplace noise on a vector, in one OpenDP call (a few µs per value)."""
        if not values:
            return []
        return [int(v) for v in self._vector[mechanism]([int(v) for v in values])]

    def vectors(self, requests: Sequence[tuple[str, Sequence[int]]]) -> list[list[int]]:
        """:meth:`vector` of every ``(mechanism, values)`` request, in order: the values of
        all requests whose mechanisms share a scale are concatenated and drawn in one OpenDP
        call per scale (or per worker's slice of it), then split back. Each value gets one
        independent discrete Laplace draw at its mechanism's scale, as with :meth:`vector`.

        ``KeyError`` for a mechanism not in the plan.
        """
        groups: dict[float, list[int]] = {}
        for i, (mechanism, _values) in enumerate(requests):
            groups.setdefault(self._scale[mechanism], []).append(i)
        out: list[list[int]] = [[] for _ in requests]
        for scale, members in groups.items():
            flat = np.fromiter(
                (v for i in members for v in requests[i][1]),
                dtype=np.int64,
                count=sum(len(requests[i][1]) for i in members),
            )
            noisy = self._draw(scale, flat)
            at = 0
            for i in members:
                n = len(requests[i][1])
                out[i] = noisy[at : at + n]
                at += n
        return out

    def _draw(self, scale: float, flat: np.ndarray[Any, Any]) -> list[int]:
        n = len(flat)
        if n == 0:
            return []
        parts = min(self.workers, n // _PARALLEL_MIN)
        if parts <= 1:
            return list(self._by_scale[0][scale](flat))
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="opendp-draw")
        slices = np.array_split(flat, parts)
        futures = [
            self._pool.submit(self._by_scale[w][scale], part) for w, part in enumerate(slices)
        ]
        out: list[int] = []
        for f in futures:
            out.extend(f.result())
        return out

    def close(self) -> None:
        """Stop the draw threads (if any were started); :meth:`vectors` starts them again."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def threshold(self, mechanism: str, counts: Mapping[str, int]) -> dict[str, int]:
        """OpenDP's Laplace threshold; ``KeyError`` if the mechanism has no threshold."""
        meas = self._threshold[mechanism]
        if not counts:
            return {}
        released = meas({str(k): int(v) for k, v in counts.items()})
        return {str(k): int(v) for k, v in released.items()}


def _checked_vector(spec: MechanismSpec, meas: Any = None) -> Any:
    """``meas`` (default: a new :func:`vector_measurement` at the spec's scale), checked."""
    if meas is None:
        meas = vector_measurement(spec.scale)
    if not meas.check(spec.sensitivity, spec.epsilon):
        raise PrivacyProofError(
            f"{spec.name}: OpenDP does not prove epsilon {spec.epsilon} for sensitivity "
            f"{spec.sensitivity} at scale {spec.scale}"
        )
    return meas


def _checked_threshold(spec: MechanismSpec) -> Any:
    if spec.threshold is None:  # pragma: no cover - callers check
        raise PrivacyProofError(f"{spec.name}: no threshold")
    meas = threshold_measurement(spec.scale, spec.threshold)
    d_in = (spec.max_keys, spec.sensitivity, spec.linf)
    eps, _ = meas.map(d_in)
    delta = threshold_delta(spec.scale, spec.threshold, d_in)
    if not (eps <= spec.epsilon and delta <= spec.delta):
        raise PrivacyProofError(
            f"{spec.name}: OpenDP does not prove ({spec.epsilon}, {spec.delta}) for the "
            f"threshold {spec.threshold} at scale {spec.scale}"
        )
    return meas


class DeterministicReleaser:
    """A stand-in :class:`Releaser` for engine tests: adds ``offset`` to every value.

    **Not private**: it exists so that tests can predict released values exactly. Thresholds
    are those of the plan, applied to ``value + offset``.
    """

    def __init__(self, plan: ReleasePlan, *, offset: int = 0) -> None:
        self.offset = offset
        self._thresholds = {s.name: s.threshold for s in plan.mechanisms()}
        self.calls = 0

    def vector(self, mechanism: str, values: Sequence[int]) -> list[int]:
        """``values`` plus the offset."""
        self.calls += 1
        return [int(v) + self.offset for v in values]

    def vectors(self, requests: Sequence[tuple[str, Sequence[int]]]) -> list[list[int]]:
        """:meth:`vector` of each request (counted as one call)."""
        self.calls += 1
        return [[int(v) + self.offset for v in values] for _m, values in requests]

    def threshold(self, mechanism: str, counts: Mapping[str, int]) -> dict[str, int]:
        """``counts`` plus the offset, keeping the values at or above the threshold."""
        tau = self._thresholds[mechanism]
        if tau is None:
            raise KeyError(mechanism)
        self.calls += 1
        out = {k: int(v) + self.offset for k, v in counts.items()}
        return {k: v for k, v in out.items() if v >= tau}
