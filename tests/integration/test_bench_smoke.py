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


@pytest.mark.timeout(1500)  # six vault runs (one of the base), the faust baseline, agents
def test_pipeline_benchmark_smoke(kafka_bootstrap: str) -> None:
    """bench/pipeline.py on the session's broker, one round, one run, a fast latency pass,
    against the base commit's vault (its own worktree, keyring and agents)."""
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
    alone = out["vault_alone"]
    for figure in (alone["one_worker"], alone["two_workers"], alone["base"]["one_worker"]):
        assert figure["events_per_s_median"] > 0 and figure["cpu_us_per_event_median"] > 0
    assert alone["base"]["commit"] == "6424efd"
    ratio = (
        alone["one_worker"]["events_per_s_median"]
        / alone["base"]["one_worker"]["events_per_s_median"]
    )
    assert abs(alone["head_over_base"] - ratio) < 0.01 and len(alone["head_over_base_runs"]) == 1
    assert out["faust_baseline"]["events_per_s_median"] > 0 and out["vault_vs_faust"] > 0
    assert out["live"]["events"] == out["events"] and out["live"]["events_per_s"] > 0
    assert out["latency"]["items"] > 0
    assert out["latency"]["p99_ms"] >= out["latency"]["p50_ms"] > 0
