"""Shared helpers of the Amun tests: the running-example log and a seeded noise stand-in."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from procvault.generators.xes import read_xes
from procvault.monitor.amun import CaseLog

#: The paper's 6-case running example: its Table 1, cell by cell (activities A to E).
RUNNING_EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "amun_table1.xes"


def running_example() -> CaseLog:
    """The 6-case running example as cases (ids "1" to "6")."""
    return CaseLog.from_events(read_xes(RUNNING_EXAMPLE).events)


class SeededReleaser:
    """Discrete Laplace and coins from seeded generators: reproducible, for tests only.

    (Strict mode ships with OpenDP and the OS CSPRNG; a seeded source would let the seed holder
    remove the noise and re-derive the ids.)
    """

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self._coins = random.Random(seed)
        self.calls: list[tuple[str, float, int]] = []

    def coins(self) -> random.Random:
        return self._coins

    def _draw(self, n: int, scale: float) -> list[int]:
        if not scale > 0:
            raise ValueError(f"noise scale must be a positive finite number, got {scale}")
        p = 1.0 - math.exp(-1.0 / scale)
        a = self.rng.geometric(p, size=n) - self.rng.geometric(p, size=n)
        return [int(x) for x in a]

    def integer_noise(self, values: Sequence[int], *, scale: float) -> list[int]:
        self.calls.append(("vector", scale, len(values)))
        return [v + z for v, z in zip(values, self._draw(len(values), scale), strict=True)]

    def thresholded_counts(
        self, counts: Mapping[str, int], *, scale: float, threshold: int
    ) -> dict[str, int]:
        self.calls.append(("threshold", scale, threshold))
        keys = sorted(counts)
        noisy = self.integer_noise([counts[k] for k in keys], scale=scale)
        return {k: v for k, v in zip(keys, noisy, strict=True) if v >= threshold}
