"""The benchmarks without a smoke test elsewhere run with small settings and print the JSON
they promise, so that they cannot go stale (bench/pipeline.py: tests/integration)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

#: each bench is a fresh process that reads real logs: minutes on a loaded machine
pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


def _bench(name: str, *args: str, timeout: float = 900) -> Any:
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_envelope_bench() -> None:
    out = _bench("envelope.py")
    assert out["events"] == 15_214
    assert out["encode_seal"]["events_per_s_median"] > 0
    assert out["open_decode"]["us_per_event"] > 0
    assert out["mean_record_bytes"] > out["mean_plaintext_bytes"]


def test_anonymize_bench() -> None:
    out = _bench("anonymize.py", "--seeds", "1", "--large-events", "2000", "--presence-runs", "2")
    assert set(out["sepsis"]) == {"0.2", "0.3", "0.4"}
    for delta in out["sepsis"].values():
        assert delta["strict"]["cases_out"] >= 0 and delta["amun"]["seconds"] > 0
    assert "running-example" in out["logs"]
    assert out["large"]["synthetic_events"] >= 2000
    assert out["presence"]["runs"] == 2


def test_pii_bench_quality() -> None:
    out = _bench("pii.py", "--quality-only", "--runs", "1")
    assert out["records"] == 1000
    for kind in ("email", "phone", "iban", "card", "name"):
        assert kind in out["per_kind"], sorted(out["per_kind"])
        assert 0 <= out["per_kind"][kind]["recall"] <= 1


def test_formal_bench_one_configuration() -> None:
    if shutil.which("spin") is None:
        pytest.skip("spin is not installed")
    out = _bench("formal.py", "--runs", "1", "--only", "release/large")
    large = out["large"]["release/large"]
    assert large["states"] > out["small_baselines"][large["baseline"]]["states"]


def test_monitor_xes_bench_one_round() -> None:
    base = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", "6424efd^{commit}"], check=False
    )
    if base.returncode != 0:
        pytest.skip("the base commit is not in this clone (shallow?)")
    out = _bench("monitor_xes.py", "--rounds", "1", "--runs", "1")
    assert out["identical_case_results"] is True and out["identical_counts"] is True
    assert out["base"]["seconds_median"] > 0 and out["head"]["seconds_median"] > 0


def test_release_profile_bench() -> None:
    out = _bench("release_profile.py", "--panes", "60", "--step", "16", "--draw-threads", "2")
    assert out["workload"]["noise_draws_per_pane"] == 556
    assert out["panes_released"] >= out["workload"]["panes"]  # from the policy's public start
    assert out["records_signed"] >= out["panes_released"]
    assert out["panes_per_cpu_second"] > 0 and out["opendp_draws_per_cpu_second"] > 0
    assert set(out["seconds"]) == {"open", "release", "seal_state", "sign_records"}
