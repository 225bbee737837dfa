"""The release plan: from a policy to one proved mechanism per statistic. Data-independent.

:meth:`ReleasePlan.build` splits the budget once, at start-up:

1. The running totals (if any) reserve ``share * ε`` for every case's whole life.
2. What is left, ``ε_w``, is what the panes of any ``w`` consecutive panes may spend on one
   case. A case contributes to at most ``k = max_panes_per_case`` panes, and a pane it does not
   contribute to costs it nothing, so under the uniform allocation each pane gets
   ``ε_p = ε_w / min(k, w)`` (rounded down, so that ``min(k, w)`` shares never exceed ``ε_w``).
   The budget's δ is shared the same way.
3. Each statistic ``s`` gets ``ε_s = ε_p * weight_s / Σ weights``; its discrete Laplace scale is
   the smallest ``b_s >= Δ_s / ε_s`` for which OpenDP proves ``ε_s`` at sensitivity ``Δ_s``
   (``Δ_s = max_keys * clamp``).
4. A statistic whose keys are not all known in advance also gets ``δ_s`` of the pane's δ and
   the smallest threshold ``τ_s`` for which OpenDP's Laplace-threshold map proves ``ε_s`` and
   the exact δ (OpenDP's map understates it by the mass at the threshold, see
   :func:`~.mechanisms.threshold_delta`) is at most ``δ_s``, at
   ``(l0, l1, l∞) = (max_keys, Δ_s, clamp)``.
5. The running totals' tree noises each node at the scale proving ``share * ε`` for
   ``levels * Σ max_keys``: each pane is in one node per level, and a case adds at most
   ``max_keys`` first contributions per totalled statistic over its life.

Known and unknown keys of one statistic share the per-case cap ``max_keys``, so the known part
(pure ε) and the thresholded part compose, for each pair of neighbouring inputs, to
``(Δ_s / b_s, δ_s)``, not twice ε (see ``docs/privacy.md``).

Examples
--------
>>> from datetime import timedelta
>>> from procvault.monitor.privacy.budget import Budget
>>> from procvault.monitor.privacy.settings import KnownKeys, PaneSettings, PrivacySettings
>>> settings = PrivacySettings(Budget(1.0, window=4, delta=1e-6), PaneSettings(timedelta(hours=1)))
>>> plan = ReleasePlan.build(settings, KnownKeys.build(["A", "B"]))
>>> round(plan.totals_epsilon, 9), round(plan.window_epsilon, 9), round(plan.pane_epsilon, 9)
(0.2, 0.8, 0.2)
>>> df = plan.spec("directly_follows")
>>> df.sensitivity, round(df.scale, 3), df.threshold is not None
(3, 47.5, True)
>>> sum(s.epsilon for s in plan.statistics) <= plan.pane_epsilon
True
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal

from .budget import round_down_share
from .mechanisms import (
    PrivacyProofError,
    threshold_delta,
    threshold_measurement,
    vector_measurement,
)
from .settings import Key, KnownKeys, PrivacySettings

__all__ = ["MechanismSpec", "ReleasePlan"]

#: Name of the running totals' mechanism.
TOTALS: Final = "running_totals"
_SLACK: Final = 1.0 - 1e-9  # room for the rounding of OpenDP's maps
_MAX_THRESHOLD: Final = 2**40


@dataclass(frozen=True, slots=True)
class MechanismSpec:
    """One mechanism of the plan (all public: it is published with every release).

    Attributes
    ----------
    name
        The statistic, or ``"running_totals"``.
    scale
        The discrete Laplace scale ``b`` (standard deviation ``≈ b √2``).
    sensitivity
        The L1 distance one case can move the released vector (``d_in`` of the proof).
    max_keys, linf
        How many keys (L0) one case can touch and by how much each (L∞).
    epsilon
        The ε it spends per case (per pane; for the running totals, per case lifetime).
    threshold
        For keys not known in advance: the smallest noisy count released (``None``: such
        keys are never released).
    delta
        The δ the threshold costs per pane (0 without one).
    mechanism
        Always ``"discrete_laplace"``.
    """

    name: str
    scale: float
    sensitivity: int
    max_keys: int
    linf: int
    epsilon: float
    threshold: int | None = None
    delta: float = 0.0
    mechanism: Literal["discrete_laplace"] = "discrete_laplace"

    @property
    def variance(self) -> float:
        """The variance of one noise draw: ``2 e^(-1/b) / (1 - e^(-1/b))²``."""
        q = math.exp(-1.0 / self.scale)
        return 2.0 * q / (1.0 - q) ** 2


@dataclass(frozen=True, slots=True)
class ReleasePlan:
    """Every data-independent number of a release; build it with :meth:`build`.

    Attributes
    ----------
    settings, known
        What it was built from.
    statistics
        One mechanism per released statistic, in release order.
    totals
        The running totals' mechanism, or ``None``.
    totals_keys
        The running totals' ``(statistic, key)`` vector, in order.
    pane_epsilon, pane_delta
        What one released pane charges to the ledger.
    window_epsilon, window_delta
        What the panes of any ``w`` consecutive panes may spend on one case together.
    totals_epsilon
        What the running totals spend per case over its whole life (0 without them).
    """

    settings: PrivacySettings
    known: KnownKeys
    statistics: tuple[MechanismSpec, ...]
    totals: MechanismSpec | None
    totals_keys: tuple[tuple[str, Key], ...]
    pane_epsilon: float
    pane_delta: float
    window_epsilon: float
    window_delta: float
    totals_epsilon: float

    def fingerprint(self) -> str:
        """A digest of the policy and known keys (32 hex digits): the vault stamps it on
        every pane partial, and the release stage refuses partials made under another plan
        (larger caps noised as if smaller), as it refuses to resume a state of another plan.

        The text digested is the ``repr`` of frozen dataclasses of tuples, numbers, strings
        and times: the same in every process.
        """
        text = repr((self.settings, self.known))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @classmethod
    def build(cls, settings: PrivacySettings, known: KnownKeys) -> ReleasePlan:
        """Split the budget and calibrate every mechanism with OpenDP's privacy maps.

        Raises ``ValueError`` (or :class:`PrivacyProofError`) when the policy cannot work.
        """
        budget = settings.budget
        eps, w = budget.epsilon, budget.window
        totals_cfg = settings.running_totals
        eps_tree = round_down_share(eps * totals_cfg.share, 1) if totals_cfg else 0.0
        eps_window = _rest(eps, eps_tree)
        # a case contributes to at most k panes, so at most min(k, w) charges of any window
        # of w panes are its loss: the uniform share divides by that, not by w
        per_case = min(settings.max_panes_per_case, w)
        if settings.pane_epsilon is None:
            eps_pane = round_down_share(eps_window, per_case)
        elif settings.pane_epsilon <= eps_window * (1 + 1e-12):  # equal but for rounding
            eps_pane = min(settings.pane_epsilon, eps_window)
        else:
            raise ValueError(
                f"pane_epsilon {settings.pane_epsilon} exceeds the {eps_window} left for panes "
                "after the running totals: no pane could ever be released"
            )
        panes_per_window = max(1, min(per_case, math.floor(eps_window / eps_pane)))
        delta_pane = round_down_share(budget.delta, panes_per_window) if budget.delta else 0.0
        thresholded = [s.name for s in settings.statistics if s.spec.thresholded and delta_pane > 0]
        delta_stat = round_down_share(delta_pane, len(thresholded)) if thresholded else 0.0
        total_weight = math.fsum(s.share for s in settings.statistics)
        specs: list[MechanismSpec] = []
        for s in settings.statistics:
            eps_s = eps_pane * s.share / total_weight * _SLACK
            sens = s.sensitivity()
            scale = _calibrate(sens, eps_s, s.name)
            if s.name in thresholded:
                tau = _threshold(scale, (s.m, sens, s.c), eps_s, delta_stat, s.name)
                specs.append(MechanismSpec(s.name, scale, sens, s.m, s.c, eps_s, tau, delta_stat))
            else:
                specs.append(MechanismSpec(s.name, scale, sens, s.m, s.c, eps_s))
        if sum(Fraction(s.epsilon) for s in specs) > Fraction(eps_pane):
            raise PrivacyProofError("the statistics' epsilons exceed the pane's share")
        if sum(Fraction(s.delta) for s in specs) > Fraction(delta_pane):
            raise PrivacyProofError("the thresholds' deltas exceed the pane's share")
        totals: MechanismSpec | None = None
        totals_keys: tuple[tuple[str, Key], ...] = ()
        if totals_cfg is not None:
            totals_keys = tuple(
                (name, key) for name in totals_cfg.statistics for key in known.keys(name)
            )
            if not totals_keys:
                raise ValueError("running totals: the totalled statistics have no known keys")
            per_level = sum(
                min(settings.statistic(n).m, len(known.keys(n))) for n in totals_cfg.statistics
            )
            sens = totals_cfg.levels * per_level
            eps_t = eps_tree * _SLACK
            totals = MechanismSpec(TOTALS, _calibrate(sens, eps_t, TOTALS), sens, sens, 1, eps_t)
        return cls(
            settings,
            known,
            tuple(specs),
            totals,
            totals_keys,
            eps_pane,
            delta_pane,
            eps_window,
            budget.delta,
            eps_tree,
        )

    def mechanisms(self) -> tuple[MechanismSpec, ...]:
        """Every mechanism: the statistics', then the running totals' if any."""
        return self.statistics + ((self.totals,) if self.totals else ())

    def spec(self, name: str) -> MechanismSpec:
        """The mechanism of statistic ``name``."""
        for s in self.mechanisms():
            if s.name == name:
                return s
        raise KeyError(name)


def _rest(total: float, used: float) -> float:
    """The largest float ``x`` with ``x + used <= total`` exactly."""
    x = total - used
    while Fraction(x) + Fraction(used) > Fraction(total):
        x = math.nextafter(x, 0.0)
    return x


def _calibrate(sensitivity: int, epsilon: float, name: str) -> float:
    """The smallest scale (from ``Δ / ε`` upwards) at which OpenDP proves ``epsilon``."""
    if not epsilon > 0:
        raise ValueError(f"{name}: no epsilon left for it")
    scale = sensitivity / epsilon
    for _ in range(64):
        if vector_measurement(scale).check(sensitivity, epsilon):
            return scale
        scale = math.nextafter(scale, math.inf) * (1 + 1e-15)
    raise PrivacyProofError(f"{name}: OpenDP proves no scale near {sensitivity / epsilon}")


def _threshold(
    scale: float, d_in: tuple[int, int, int], epsilon: float, delta: float, name: str
) -> int:
    """The smallest threshold at which OpenDP proves ``epsilon`` and the exact δ
    (:func:`~.mechanisms.threshold_delta`, never below OpenDP's) is at most ``delta``."""

    def fits(tau: int) -> bool:
        # ``check`` raises on incomparable (ε, δ) pairs, so compare the map by hand
        eps, _ = threshold_measurement(scale, tau).map(d_in)
        return bool(eps <= epsilon and threshold_delta(scale, tau, d_in) <= delta)

    hi = 1
    while not fits(hi):
        hi *= 2
        if hi > _MAX_THRESHOLD:
            raise PrivacyProofError(f"{name}: no threshold proves ({epsilon}, {delta})")
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi
