"""The benchmarks run (so they cannot go stale) and print the JSON they promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_replay_benchmark_smoke(kafka_bootstrap: str, sepsis_log: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "replay.py"),
            "--log",
            str(sepsis_log),
            "--runs",
            "1",
            "--repeat",
            "1",
            "--million-rounds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["events_per_run"] == 15_214
    assert out["null_sink"]["events_per_s_median"] > 0
    assert out["kafka"]["events_per_s_median"] > 0
    assert out["kafka"]["producer_settings"]["acks"] == "all"
    assert out["kafka_vs_null"] > 0
    sepsis, doubled = out["readers"]
    assert (sepsis["events"], doubled["events"]) == (15_214, 30_428)
    assert sepsis["scan"]["peak_rss_mb"] > 0 and sepsis["pm4py_over_scan"]["parse_replay_time"] > 0


@pytest.mark.timeout(1500)  # five vault runs, the faust baseline and agents on a shared machine
def test_pipeline_benchmark_smoke(kafka_bootstrap: str) -> None:
    """bench/pipeline.py on the session's broker, one round, one run, a fast latency pass."""
    args = ["--repeat", "1", "--runs", "1", "--rate", "4000"]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "pipeline.py"), *args],
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
        env={**os.environ, "KAFKA_BOOTSTRAP": kafka_bootstrap},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["events"] == 15_214 + 1050  # events and end-of-case markers, three organizations
    for figure in ("one_worker", "two_workers"):
        assert out["vault_alone"][figure]["events_per_s_median"] > 0
    assert out["faust_baseline"]["events_per_s_median"] > 0 and out["vault_vs_faust"] > 0
    assert out["live"]["events"] == out["events"] and out["live"]["events_per_s"] > 0
    assert out["latency"]["items"] > 0
    assert out["latency"]["p99_ms"] >= out["latency"]["p50_ms"] > 0
