"""bench/conformance.py runs (small settings) and prints the JSON it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "conformance.py"


def test_conformance_benchmark_smoke() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--repeat",
            "1",
            "--memory-events",
            "20000",
            "--alignment-events",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    sepsis = out["sepsis"]
    assert sepsis["procvault_tbr"]["cases_disagreeing_with_pm4py_offline"] == 0
    assert sepsis["pm4py_streaming_tbr"]["cases"] == 1_050
    assert sepsis["ratio_procvault_vs_pm4py_streaming"] > 0
    assert out["roadtraffic"]["stream_items"] >= 15_000
    assert set(out["memory"]["checkpoints"]) == {"2000", "20000"}
    assert out["alignments"]["procvault"]["events_per_s_median"] > 0
