"""The privacy budget: ε per case over any ``w`` consecutive panes, and how to set it.

A budget is a pure value: ``epsilon`` (per case, over any ``window`` consecutive panes), the
``delta`` that key thresholds may spend over the same window, and ``window`` itself. Users who
think in business terms give a *guessing advantage* instead of ε (Elkoumy et al.): the largest
amount by which any attacker's probability of guessing a yes/no fact about one case may grow.
At the worst-case prior ``P = (1 - a) / 2`` the advantage ``a`` needs

    ε = -ln(P / (1 - P) · (1 / (a + P) - 1)) = 2 · ln((1 + a) / (1 - a)),

which bounds every attacker whatever his prior. (The paper calls the advantage δ; here it is
``advantage`` so that it is never confused with the δ of (ε, δ)-differential privacy.)

Budgets are compared with exact rational arithmetic (:class:`fractions.Fraction` of the floats),
so ``w`` uniform shares never add up to more than the budget through rounding.

Examples
--------
>>> round(epsilon_from_advantage(0.2), 4), round(epsilon_from_advantage(0.4), 4)
(0.8109, 1.6946)
>>> b = Budget.from_advantage(0.3, window=24)
>>> round(b.epsilon, 4), b.window
(1.2381, 24)
>>> share = uniform_share(b.epsilon, b.window)
>>> Fraction(share) * 24 <= Fraction(b.epsilon)
True

References
----------
G. Elkoumy, A. Pankova, M. Dumas. Differentially private release of event logs for process
mining. Information Systems 115 (2023) 102161.

G. Kellaris, S. Papadopoulos, X. Xiao, D. Papadias. Differentially private event sequences
over infinite streams. PVLDB 7(12), 2014 (w-event privacy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "Budget",
    "advantage_from_epsilon",
    "epsilon_from_advantage",
    "round_down_share",
    "uniform_share",
]


def epsilon_from_advantage(advantage: float) -> float:
    """ε that keeps every attacker's guessing advantage at or below ``advantage``.

    Parameters
    ----------
    advantage
        The bound on posterior minus prior, strictly between 0 and 1.

    Examples
    --------
    >>> round(epsilon_from_advantage(0.3), 6)
    1.238078
    >>> epsilon_from_advantage(1.0)
    Traceback (most recent call last):
    ...
    ValueError: the guessing advantage must be in (0, 1), got 1.0
    """
    a = float(advantage)
    if math.isnan(a) or not 0.0 < a < 1.0:
        raise ValueError(f"the guessing advantage must be in (0, 1), got {advantage}")
    return 2.0 * math.log((1.0 + a) / (1.0 - a))


def advantage_from_epsilon(epsilon: float) -> float:
    """The inverse of :func:`epsilon_from_advantage`: ``tanh(ε / 4)``.

    >>> round(advantage_from_epsilon(epsilon_from_advantage(0.25)), 12)
    0.25
    """
    if not epsilon > 0 or math.isinf(epsilon):
        raise ValueError(f"epsilon must be positive and finite, got {epsilon}")
    return math.tanh(epsilon / 4.0)


def round_down_share(total: float, parts: int) -> float:
    """The largest float ``x <= total / parts`` with ``parts * x <= total`` exactly.

    >>> x = round_down_share(1.0, 3)
    >>> Fraction(x) * 3 <= 1
    True
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    x = total / parts
    while Fraction(x) * parts > Fraction(total):
        x = math.nextafter(x, 0.0)
    return x


def uniform_share(epsilon: float, window: int) -> float:
    """ε per pane under the uniform allocation: ``ε / w`` (rounded down, as
    :func:`round_down_share`).

    >>> uniform_share(1.0, 4)
    0.25
    """
    return round_down_share(epsilon, window)


@dataclass(frozen=True, slots=True)
class Budget:
    """ε (and δ) per case over any ``window`` consecutive panes.

    Parameters
    ----------
    epsilon
        The ε every case is protected by over any ``window`` consecutive panes.
    window
        ``w`` of w-event privacy, in panes (``1`` protects each pane on its own).
    delta
        The δ the key thresholds may spend over the same window (``0`` forbids releasing keys
        that are not known in advance).
    advantage
        The guessing advantage ε was derived from, if it was (informational).

    Examples
    --------
    >>> Budget(1.0, window=0)
    Traceback (most recent call last):
    ...
    ValueError: the budget window must be at least 1 pane, got 0
    """

    epsilon: float
    window: int
    delta: float = 0.0
    advantage: float | None = None

    def __post_init__(self) -> None:
        if math.isnan(self.epsilon) or not 0.0 < self.epsilon < math.inf:
            raise ValueError(f"epsilon must be positive and finite, got {self.epsilon}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"the budget window must be at least 1 pane, got {self.window}")
        if math.isnan(self.delta) or not 0.0 <= self.delta < 1.0:
            raise ValueError(f"delta must be in [0, 1), got {self.delta}")

    @classmethod
    def from_advantage(cls, advantage: float, *, window: int, delta: float = 0.0) -> Budget:
        """The budget whose ε is :func:`epsilon_from_advantage` of ``advantage``."""
        return cls(epsilon_from_advantage(advantage), window, delta, advantage)
