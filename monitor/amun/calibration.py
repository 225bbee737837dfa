"""From a guessing-advantage bound δ to the ε of a Laplace mechanism (Elkoumy et al., Sect. 4).

An attacker who wants to learn a yes/no fact about one case (attack h1: "did this case go
through this prefix/suffix?") or to guess a value to within a precision (attack h2: "how long
did this activity take?") starts with a *prior* probability ``p`` of guessing right. After an
ε-differentially private release with sensitivity ``r`` his posterior is at most
``p / (p + (1 - p) * exp(-ε r))``. Bounding the *advantage* (posterior minus prior) by δ gives the
paper's Eq. (3)::

    ε = -(1 / r) * ln( p / (1 - p) * (1 / (δ + p) - 1) )

ε grows without bound as ``p`` goes to 0 or to ``1 - δ`` and is smallest at the worst-case
prior ``p = (1 - δ) / 2``, where it simplifies to ``2 ln((1 + δ) / (1 - δ))`` (the ε the paper
uses for the trace-variant noise, Prop. A.4). An attacker with ``p + δ >= 1`` cannot gain δ at
all, so no noise is needed (ε = ∞).

References
----------
G. Elkoumy, A. Pankova, M. Dumas. Differentially private release of event logs for process
mining. Information Systems 115 (2023) 102161. arXiv:2201.03010.
"""

from __future__ import annotations

import math

from ..privacy.budget import epsilon_from_advantage

__all__ = [
    "check_delta",
    "epsilon_for_prior",
    "epsilon_worst_case",
    "guessing_advantage",
    "worst_case_prior",
]


def check_delta(delta: float) -> float:
    """Return ``delta`` as a float if it lies strictly between 0 and 1; raise otherwise.

    >>> check_delta(0.2)
    0.2
    >>> check_delta(1.0)
    Traceback (most recent call last):
    ...
    ValueError: delta (the guessing-advantage bound) must be in (0, 1), got 1.0
    """
    value = float(delta)
    if not 0.0 < value < 1.0 or math.isnan(value):
        raise ValueError(f"delta (the guessing-advantage bound) must be in (0, 1), got {delta}")
    return value


def worst_case_prior(delta: float) -> float:
    """The prior that needs the most noise to keep the advantage at δ: ``(1 - δ) / 2``.

    >>> worst_case_prior(0.2)
    0.4
    """
    return (1.0 - check_delta(delta)) / 2.0


def epsilon_for_prior(delta: float, prior: float, sensitivity: float = 1.0) -> float:
    """Eq. (3): the largest ε that keeps an attacker with prior ``prior`` below advantage δ.

    Parameters
    ----------
    delta
        The guessing-advantage bound, in (0, 1).
    prior
        The attacker's prior probability of a correct guess, in [0, 1].
    sensitivity
        ``r``, how far the protected value may move (1 for counts and for min-max normalised
        times).

    Returns ``math.inf`` when no noise is needed (``prior == 0`` or ``prior + delta >= 1``).

    Examples
    --------
    >>> round(epsilon_for_prior(0.2, 0.4), 4)
    0.8109
    >>> epsilon_for_prior(0.2, 0.9)
    inf
    >>> round(guessing_advantage(epsilon_for_prior(0.3, 0.1), 0.1), 6)
    0.3
    """
    delta = check_delta(delta)
    if not 0.0 <= prior <= 1.0:
        raise ValueError(f"prior must be in [0, 1], got {prior}")
    if sensitivity <= 0:
        raise ValueError(f"sensitivity must be > 0, got {sensitivity}")
    if prior == 0.0 or prior + delta >= 1.0:
        return math.inf
    ratio = prior / (1.0 - prior) * (1.0 / (delta + prior) - 1.0)
    return -math.log(ratio) / sensitivity


def epsilon_worst_case(delta: float) -> float:
    """ε at the worst-case prior, ``2 ln((1 + δ) / (1 - δ))`` (Prop. A.4's ε_d).

    It bounds the advantage of *every* attacker, whatever his prior, which is why it needs no
    data to compute.

    >>> round(epsilon_worst_case(0.2), 4)
    0.8109
    >>> round(epsilon_worst_case(0.4), 4)
    1.6946
    """
    return epsilon_from_advantage(check_delta(delta))


def guessing_advantage(epsilon: float, prior: float) -> float:
    """The largest posterior-minus-prior an ε-DP release allows an attacker with ``prior``.

    >>> round(guessing_advantage(epsilon_worst_case(0.2), 0.4), 6)
    0.2
    >>> guessing_advantage(math.inf, 0.3)
    0.7
    """
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if not 0.0 <= prior <= 1.0:
        raise ValueError(f"prior must be in [0, 1], got {prior}")
    if math.isinf(epsilon):
        return 1.0 - prior
    posterior = prior / (prior + (1.0 - prior) * math.exp(-epsilon)) if prior > 0 else 0.0
    return posterior - prior
