"""bench/alignments.py runs (small settings) and prints the JSON it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "alignments.py"


def test_alignments_benchmark_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--events", "300", "--no-whole-log"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["procvault"]["events"] == 300
    assert out["procvault"]["events_per_s_median"] > 0
    if "skipped" in out["pybeamline"]:  # the bench extra is not installed
        assert out["ratio_procvault_vs_pybeamline"] is None
        return
    assert out["ratio_procvault_vs_pybeamline"] > 0
    # our prefix alignments are optimal: pyBeamline's can cost more, never less
    assert out["agreement"]["pybeamline_lower"] == 0
