"""bench/compliance.py runs (small settings) and prints the JSON it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "compliance.py"


def test_compliance_benchmark_smoke() -> None:
    pytest.importorskip("regopy")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--rules", "10", "--repeat", "1", "--rego-events", "40"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    result = out["results"]["10"]
    assert result["native"]["events_per_s_median"] > 0
    assert result["native"]["latency_us"]["p99"] >= result["native"]["latency_us"]["p50"]
    # the per-event timing includes the end-of-case markers, which complete the cases
    assert result["native"]["case_ends_timed"] == 1050
    assert result["native"]["latency_us_case_end"]["p50"] > 0
    assert result["native"]["latency_us_activity"]["p50"] > 0
    assert result["rego"]["rules"] == 10 and result["rego"]["events"] == 40
    assert result["rego"]["failed_evaluations"] == 0
    assert result["ratio_native_vs_rego"] > 1
