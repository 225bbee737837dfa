"""The tracker's memory stays flat as the stream grows: RSS of a child process after 1M simulated
events at most 1.1x its RSS after 100k (the bench runs the same child to 5M), and the tracker's
own state (its snapshot) no larger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "discovery.py"


def test_rss_and_state_do_not_grow_with_the_stream(shared_data: Path) -> None:
    total = 1_000_000
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--memory-child", str(total), str(total // 10)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PROCVAULT_SHARED_DATA": str(shared_data)},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    early, late = out["checkpoints"][str(total // 10)], out["checkpoints"][str(total)]
    assert late["completed_cases"] > 9 * early["completed_cases"]  # the stream did grow
    assert out["rss_ratio_end_vs_checkpoint"] <= 1.1, out
    assert late["snapshot_bytes"] <= 1.1 * early["snapshot_bytes"], out
    assert late["active_cases"] < 2 * early["active_cases"], out
