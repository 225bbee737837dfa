"""bench/discovery.py runs (small settings) and prints the JSON it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "discovery.py"


def test_discovery_benchmark_smoke(shared_data: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--repeat", "1", "--runs", "1", "--memory-events", "20000"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PROCVAULT_SHARED_DATA": str(shared_data)},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stream"]["events"] == 15_214 and out["stream"]["cases"] == 1_050
    assert all(out["procvault_tracker"]["equal_to_pm4py"].values())
    for system in (out["procvault_tracker"]["declare"]["with_models"], out["pybeamline"]):
        assert system["events_per_cpu_s_median"] > 0
    assert out["pm4py_offline"]["all_three"]["events_per_cpu_s_median"] > 0
    assert set(out["ratios"]) >= {"tracker_with_declare_vs_pm4py_all_three"}
    assert set(out["memory"]["checkpoints"]) == {"2000", "20000"}
