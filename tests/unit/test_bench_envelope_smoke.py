"""bench/envelope.py runs (a small log, one run) and prints the JSON it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "envelope.py"


def test_envelope_benchmark_smoke(shared_data: Path) -> None:
    log = shared_data / "logs" / "running-example.xes.gz"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "1", "--log", str(log)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["open"]["events_per_s_median"] > 0
    assert set(out["forged"]) == {
        "new_session_random_tag",
        "known_session_wrong_tag",
        "attacker_sender_key",
    }
    for figures in out["forged"].values():
        assert figures["events_per_s_median"] > 0 and figures["ratio_to_open"] > 0
        assert figures["sessions_cached_after"] == 1  # forged records leave no session behind
    assert out["bar"] == 0.5 and isinstance(out["meets_bar"], bool)
