"""bench/policy.py and bench/pii.py run (small settings) and print the JSON they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(script: str, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out: dict[str, object] = json.loads(proc.stdout)
    return out


def test_policy_benchmark_smoke() -> None:
    out = _run("policy.py", "--runs", "1", "--repeat", "1")
    assert out["policy_clauses"] == 20
    for mode in ("scrub_off", "scrub_on", "scrub_on_free_text"):
        row = out[mode]
        assert isinstance(row, dict)
        assert row["events"] == 15_214 + 1_050
        assert row["events_per_s_median"] > 0
        decisions = row["decisions"]
        assert decisions["emitted"] + decisions["placeholders"] == decisions["events"]


def test_pii_benchmark_smoke() -> None:
    out = _run("pii.py", "--runs", "1", "--repeat", "1")
    per_kind = out["per_kind"]
    assert isinstance(per_kind, dict)
    assert set(per_kind) == {"email", "phone", "iban", "card", "national_id", "name"}
    throughput = out["throughput_scrub_on"]
    assert isinstance(throughput, dict) and throughput["events_per_s_median"] > 0
