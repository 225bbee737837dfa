"""The privacy ledger: ε (and δ) per case over any ``w`` consecutive panes, enforced.

The ledger records what each released pane charged. Before a pane is released it checks every
window of ``w`` consecutive panes that contains the pane: if the charge would lift any case's
loss in any of them above the budget, the release is withheld (and says so) and nothing is
charged. Charges are data-independent (they come from the plan), so withholding reveals
nothing about the data. Sums are exact (:class:`fractions.Fraction` of the floats: a float
converts to a fraction exactly, so the ``k`` largest charges are picked among the floats and
only they are summed as fractions, once per distinct window of charges).

It models w-event privacy (Kellaris et al. 2014) with the case as the unit. A pane's release
is ε-DP for one case's contribution to it, and a pane the case does not contribute to does not
depend on the case at all; a case contributes to at most ``k`` panes (``panes_per_case``), so
its loss over a window is at most the sum of the ``k`` largest charges in it. That is what the
ledger bounds (with ``k >= w``: the sum of the window's charges). Running totals are charged
once, for a case's whole life, as a ``reserved`` ε that counts against every window.

Examples
--------
>>> ledger = Ledger(epsilon=1.0, delta=0.0, window=3)
>>> [ledger.spend(p, 0.5) for p in range(4)]
[True, True, False, True]
>>> ledger.spent(2), ledger.spent(3)
((1.0, 0.0), (1.0, 0.0))
>>> restored = Ledger(epsilon=1.0, delta=0.0, window=3, state=ledger.snapshot())
>>> restored.spend(4, 0.5), restored.spend(5, 0.5)
(True, False)
>>> capped = Ledger(epsilon=1.0, delta=0.0, window=3, panes_per_case=2)
>>> [capped.spend(p, 0.5) for p in range(4)]  # a case is in at most 2 of any 3 panes
[True, True, True, True]
"""

from __future__ import annotations

import heapq
from fractions import Fraction

import msgspec

__all__ = ["Ledger", "LedgerState"]

_NONE = (0.0, 0.0)
_MEMO_LIMIT = 4096  # distinct windows of charges remembered (the same few recur pane after pane)


class LedgerState(msgspec.Struct, frozen=True):
    """A :class:`Ledger`'s charges, as a value: ``(pane, ε, δ)`` for the panes that still
    share a window with the latest one, in pane order."""

    charges: tuple[tuple[int, float, float], ...] = ()
    latest: int | None = None
    version: int = 1


class Ledger:
    """Enforces ``epsilon``/``delta`` per case over any ``window`` consecutive panes.

    Parameters
    ----------
    epsilon, delta
        The budget of any ``window`` consecutive panes.
    window
        ``w``, in panes.
    reserved
        ε already committed for every case's whole life (the running totals); it counts
        against every window.
    panes_per_case
        ``k``: the most panes one case contributes to (``None``: no cap).
    state
        A snapshot to resume from.
    """

    def __init__(
        self,
        *,
        epsilon: float,
        delta: float,
        window: int,
        reserved: float = 0.0,
        panes_per_case: int | None = None,
        state: LedgerState | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if panes_per_case is not None and panes_per_case < 1:
            raise ValueError(f"panes_per_case must be >= 1, got {panes_per_case}")
        self.per_case = window if panes_per_case is None else min(panes_per_case, window)
        if not epsilon > 0 or not delta >= 0 or not reserved >= 0:
            raise ValueError("epsilon must be > 0, delta and reserved >= 0")
        self._eps = Fraction(epsilon)
        self._delta = Fraction(delta)
        self._reserved = Fraction(reserved)
        if self._reserved > self._eps:
            raise ValueError(f"reserved {reserved} exceeds the budget {epsilon}")
        self.window = window
        self._charges: dict[int, tuple[float, float]] = {}
        self._latest: int | None = None
        self._memo: dict[tuple[float, ...], Fraction] = {}
        if state is not None:
            if state.version != 1:
                raise ValueError(f"unsupported ledger state version {state.version}")
            self._charges = {p: (float(e), float(d)) for p, e, d in state.charges}
            self._latest = state.latest

    def can_spend(self, pane: int, epsilon: float, delta: float = 0.0) -> bool:
        """Whether charging ``(epsilon, delta)`` to ``pane`` keeps every case within budget in
        every window of ``w`` panes."""
        if pane in self._charges:
            return False
        w = self.window
        new = (float(epsilon), float(delta))
        limit = self._eps - self._reserved
        if self._latest is None or pane > self._latest:
            # nothing is charged after ``pane``: the window ending at it holds every charge
            # of any window containing it
            starts = [pane - w + 1]
        else:
            starts = list(range(pane - w + 1, pane + 1))
        for start in starts:
            charges = [
                new if p == pane else self._charges.get(p, _NONE) for p in range(start, start + w)
            ]
            e_sum = self._worst(tuple(c[0] for c in charges))
            d_sum = self._worst(tuple(c[1] for c in charges))
            if e_sum > limit or d_sum > self._delta:
                return False
        return True

    def _worst(self, values: tuple[float, ...]) -> Fraction:
        """What one case can lose from these charges: the sum of the ``k`` largest, exact."""
        got = self._memo.get(values)
        if got is None:
            top = values if self.per_case >= len(values) else heapq.nlargest(self.per_case, values)
            got = sum(map(Fraction, top), Fraction(0))
            if len(self._memo) >= _MEMO_LIMIT:
                self._memo.clear()
            self._memo[values] = got
        return got

    def spend(self, pane: int, epsilon: float, delta: float = 0.0) -> bool:
        """Charge ``pane`` if the budget allows it; ``False`` means: withhold the release.

        Raises ``ValueError`` for a negative charge.
        """
        if epsilon < 0 or delta < 0:
            raise ValueError("charges must be >= 0")
        if not self.can_spend(pane, epsilon, delta):
            return False
        self._charges[pane] = (float(epsilon), float(delta))
        if self._latest is None or pane > self._latest:
            self._latest = pane
        self._prune()
        return True

    def spent(self, end_pane: int) -> tuple[float, float]:
        """The most ε and δ one case can have lost to the ``window`` panes ending at
        ``end_pane`` (without the reserve)."""
        charges = [
            self._charges.get(p, _NONE) for p in range(end_pane - self.window + 1, end_pane + 1)
        ]
        return float(self._worst(tuple(c[0] for c in charges))), float(
            self._worst(tuple(c[1] for c in charges))
        )

    def _prune(self) -> None:
        if self._latest is None:
            return
        # a pane at or before latest - 2w + 1 shares no window with a pane after latest - w
        horizon = self._latest - 2 * self.window + 1
        for p in [p for p in self._charges if p < horizon]:
            del self._charges[p]

    def snapshot(self) -> LedgerState:
        """The charges as a value."""
        return LedgerState(
            tuple((p, e, d) for p, (e, d) in sorted(self._charges.items())),
            self._latest,
        )
