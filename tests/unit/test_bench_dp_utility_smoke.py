"""bench/dp_utility.py runs (small settings) and prints the JSON it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dp_utility.py"


def test_dp_utility_benchmark_smoke() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--logs",
            "sepsis",
            "--max-panes",
            "72",
            "--epsilons",
            "1",
            "--advantages",
            "0.3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    sepsis = out["logs"]["sepsis"]
    assert 24 <= sepsis["panes"] <= 72 and sepsis["known_df_edges"] == 256
    runs = sepsis["runs"]
    assert [r["advantage"] for r in runs] == [None, 0.3]
    assert runs[1]["epsilon"] > runs[0]["epsilon"]
    for r in runs:
        assert r["pane"]["mae"] > 0 and 0 <= r["pane"]["emd"] <= 1
        assert r["window_1d"]["mae"] > 0
    assert sepsis["overhead"]["release_ms_per_pane"] > 0
