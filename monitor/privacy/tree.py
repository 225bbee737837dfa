"""Running totals since the start by the binary-tree mechanism (continual counting).

The binary mechanism of Chan, Shi and Song keeps one noisy partial sum per level of a binary
tree over the panes: after pane ``t`` it closes the node at the level of ``t``'s lowest set bit
(the sum of the ``2**i`` panes it spans), noises that node once, and answers the running total
as the sum of the noisy nodes named by the set bits of ``t``. Each pane lies in one node per
level, so with ``L`` levels a case that moves the per-pane vectors by ``Δ`` in total moves the
released nodes by at most ``L * Δ``; the error of a total is the sum of at most ``L`` noises
(``O(log t)`` instead of the ``O(t)`` of adding up noisy panes). Totals are available for
``2**L - 1`` panes; then :meth:`BinaryTreeCounter.step` returns ``None``.

The exact node sums are part of the state (sealed with the vault's state, never published).

Examples
--------
>>> from procvault.monitor.privacy.mechanisms import Releaser
>>> class Plus100:  # a stand-in releaser: "noise" of +100 per node
...     def vector(self, mechanism, values): return [v + 100 for v in values]
...     def threshold(self, mechanism, counts): return dict(counts)
>>> tree = BinaryTreeCounter(size=1, levels=3, mechanism="totals", releaser=Plus100())
>>> [tree.step([1]) for _ in range(8)]
[[101], [102], [203], [104], [205], [206], [307], None]

Several steps with their noise drawn at once: :meth:`BinaryTreeCounter.prepare` each step's
vector (it returns the node to noise), then :meth:`BinaryTreeCounter.finish` each noisy node,
in the same order; the totals are those of :meth:`BinaryTreeCounter.step`:

>>> tree = BinaryTreeCounter(size=1, levels=3, mechanism="totals", releaser=Plus100())
>>> nodes = [tree.prepare([1]) for _ in range(8)]
>>> nodes
[[1], [2], [1], [4], [1], [2], [1], None]
>>> [tree.finish([v + 100 for v in n]) for n in nodes if n is not None]
[[101], [102], [203], [104], [205], [206], [307]]

References
----------
T.-H. H. Chan, E. Shi, D. Song. Private and continual release of statistics. ACM TISSEC 14(3),
2011.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Final

import msgspec

from .mechanisms import Releaser

__all__ = ["BinaryTreeCounter", "TreeState"]


class TreeState(msgspec.Struct, frozen=True):
    """A :class:`BinaryTreeCounter` as a value: the step count and, per level, the exact and
    the noisy node sums (empty tuples for zero nodes)."""

    t: int
    exact: tuple[tuple[int, ...], ...]
    noisy: tuple[tuple[int, ...], ...]
    version: int = 1


class BinaryTreeCounter:
    """Continual counting of integer vectors (see the module docstring).

    Parameters
    ----------
    size
        The length of the counted vectors.
    levels
        ``L``: the tree's height.
    mechanism
        The releaser mechanism noising each node.
    releaser
        Where the noise comes from.
    state
        A snapshot to resume from.
    """

    def __init__(
        self,
        *,
        size: int,
        levels: int,
        mechanism: str,
        releaser: Releaser,
        state: TreeState | None = None,
    ) -> None:
        if size < 1 or levels < 1:
            raise ValueError("size and levels must be >= 1")
        self.size: Final = size
        self.levels: Final = levels
        self.mechanism: Final = mechanism
        self._releaser = releaser
        self._t = 0
        zero = [0] * size
        self._exact: list[list[int]] = [list(zero) for _ in range(levels)]
        self._noisy: list[list[int]] = [list(zero) for _ in range(levels)]
        self._pending: deque[tuple[int, int]] = deque()
        self._finished = 0  # (t, level) prepared, not finished
        if state is not None:
            self._restore(state)

    @property
    def t(self) -> int:
        """The number of steps taken."""
        return self._t

    @property
    def finished(self) -> int:
        """The step whose total :meth:`finish` returned last (:meth:`step`: the same as
        :attr:`t`)."""
        return self._finished

    @property
    def exhausted(self) -> bool:
        """Whether the tree's horizon (``2**levels - 1`` steps) is reached."""
        return self._t >= (1 << self.levels) - 1

    def step(self, x: Sequence[int]) -> list[int] | None:
        """Add one pane's vector; return the noisy running total, or ``None`` past the horizon."""
        node = self.prepare(x)
        if node is None:
            return None
        return self.finish(self._releaser.vector(self.mechanism, node))

    def prepare(self, x: Sequence[int]) -> list[int] | None:
        """Add one pane's vector and return the exact node it closes, which the caller noises
        (with this counter's mechanism) and hands to :meth:`finish`; ``None`` past the horizon
        (then there is nothing to finish)."""
        if len(x) != self.size:
            raise ValueError(f"expected a vector of {self.size}, got {len(x)}")
        if self.exhausted:
            return None
        self._t += 1
        t = self._t
        i = (t & -t).bit_length() - 1
        node = [int(v) for v in x]
        for j in range(i):
            lower = self._exact[j]
            for k in range(self.size):
                node[k] += lower[k]
            self._exact[j] = [0] * self.size
        self._exact[i] = node
        self._pending.append((t, i))
        return list(node)

    def finish(self, noisy: Sequence[int]) -> list[int]:
        """The noisy running total of the oldest prepared step, given its node's noise."""
        if not self._pending:
            raise ValueError("finish() without a prepared step")
        if len(noisy) != self.size:
            raise ValueError(f"expected a vector of {self.size}, got {len(noisy)}")
        t, i = self._pending.popleft()
        self._finished = t
        for j in range(i):
            self._noisy[j] = [0] * self.size
        self._noisy[i] = [int(v) for v in noisy]
        total = [0] * self.size
        for j in range(self.levels):
            if t >> j & 1:
                row = self._noisy[j]
                for k in range(self.size):
                    total[k] += row[k]
        return total

    def snapshot(self) -> TreeState:
        """The counter as a value (every prepared step must be finished)."""
        if self._pending:
            raise ValueError("snapshot() with prepared steps not finished")

        def pack(rows: list[list[int]]) -> tuple[tuple[int, ...], ...]:
            return tuple(() if not any(r) else tuple(r) for r in rows)

        return TreeState(self._t, pack(self._exact), pack(self._noisy))

    def _restore(self, state: TreeState) -> None:
        if state.version != 1:
            raise ValueError(f"unsupported tree state version {state.version}")
        if len(state.exact) != self.levels or len(state.noisy) != self.levels:
            raise ValueError("tree state does not match the number of levels")

        def unpack(row: tuple[int, ...]) -> list[int]:
            if not row:
                return [0] * self.size
            if len(row) != self.size:
                raise ValueError("tree state does not match the vector size")
            return list(row)

        self._t = self._finished = state.t
        self._exact = [unpack(r) for r in state.exact]
        self._noisy = [unpack(r) for r in state.noisy]
