"""Strict mode's noise source: checked scales, and the variant threshold's δ as measured."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from procvault.monitor.amun import OpenDPReleaser, epsilon_worst_case
from procvault.monitor.amun.noise import threshold_release_probability

DOC = Path(__file__).resolve().parents[2] / "docs" / "anonymize.md"


@pytest.mark.parametrize("scale", [0.0, -1.0, math.inf, math.nan])
def test_integer_noise_refuses_a_scale_that_would_not_noise(scale: float) -> None:
    with pytest.raises(ValueError, match="noise scale must be a positive finite number"):
        OpenDPReleaser().integer_noise([5, 7], scale=scale)
    with pytest.raises(ValueError, match="noise scale must be a positive finite number"):
        OpenDPReleaser().thresholded_counts({"a": 5}, scale=scale, threshold=3)


def test_a_key_of_one_case_is_released_as_often_as_the_delta_says() -> None:
    """OpenDP keeps a noisy count equal to the threshold; 100,000 keys of count 1 at scale 1 and
    threshold 3 are kept at the rate P(1 + Z >= 3), not at the P(Z >= 3) OpenDP 0.16's privacy
    map reports (opendp/opendp#2922)."""
    r = OpenDPReleaser()
    n = 100_000
    kept = len(r.thresholded_counts({f"k{i}": 1 for i in range(n)}, scale=1.0, threshold=3))
    exact = threshold_release_probability(scale=1.0, threshold=3)
    assert exact == pytest.approx(math.exp(-2) / (1 + math.exp(-1)))
    sigma = math.sqrt(n * exact * (1 - exact))
    assert abs(kept - n * exact) < 6 * sigma, (kept, n * exact)
    _, reported = r.histogram_privacy(scale=1.0, threshold=3)
    assert reported >= exact  # what strict mode uses is never below the measured rate


# The defaults: time_share 0.5, suppression delta 1e-6.
THRESHOLDS = {0.2: 34, 0.3: 23, 0.4: 17}


@pytest.mark.parametrize(("delta", "threshold"), sorted(THRESHOLDS.items()))
def test_default_thresholds_keep_a_single_case_variant_below_the_suppression_delta(
    delta: float, threshold: int
) -> None:
    r = OpenDPReleaser()
    eps = epsilon_worst_case(delta) / 2
    assert r.threshold_for(epsilon=eps, delta=1e-6) == threshold
    assert threshold_release_probability(scale=1 / eps, threshold=threshold) <= 1e-6
    assert threshold_release_probability(scale=1 / eps, threshold=threshold - 1) > 1e-6


def test_the_threshold_table_in_the_docs_is_the_computed_one() -> None:
    rows = re.findall(r"^ *\| (0\.[234]) \| (0\.\d+) \| (\d+) \|$", DOC.read_text(), re.MULTILINE)
    assert {float(d): int(t) for d, _, t in rows} == THRESHOLDS
    for d, eps_cf, _ in rows:
        assert float(eps_cf) == round(epsilon_worst_case(float(d)) / 2, 3)
