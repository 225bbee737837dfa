"""Observability of a real run: the real Prometheus (Debian package) scrapes a running vault
worker, the release stage and three agents during a replay of Sepsis; every query of every
Grafana panel returns data; no label value is a case id, activity or attribute value of the
log; ``procvault report`` turns what the vault recorded into CSVs and plots."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pipeline_harness import (
    ORGS,
    WEEKLY_DP,
    Deployment,
    procvault,
)
from test_dashboards import QUERIES

from procvault.metrics.prometheus import LocalPrometheus, Target

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(300)]


def _endpoint(proc: Any) -> str:
    """``HOST:PORT`` of a process's metrics endpoint (it prints the URL on start)."""
    proc.wait_for("metrics at", 60)
    m = re.search(r"metrics at http://([\d.]+:\d+)/", proc.stderr())
    assert m, proc.stderr()[-2000:]
    return m.group(1)


def test_prometheus_scrapes_a_real_run_and_every_panel_has_data(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("the Debian prometheus package is missing: run scripts/setup.sh")
    dp = tmp_path / "dp.yaml"
    dp.write_text(WEEKLY_DP)
    run_dir = tmp_path / "run"
    dep = Deployment(kafka_bootstrap, tmp_path / "deploy")
    obs = ("--metrics-port", "0")
    detail = ("--metrics-detail",)  # every panel, the data-describing ones too
    prom = None
    try:
        vault = dep.vault("--dp-policy", str(dp), "--run-dir", str(run_dir), *obs, *detail)
        release = dep.release(dp, *obs, *detail)
        start_at = str(time.time() + 8)
        pace = ("--repeat", "3", "--rate", "500", "--start-at", start_at, *obs)
        agents = [dep.agent(org, sepsis_log, *pace) for org in ORGS]
        targets = [Target(_endpoint(vault), "vault"), Target(_endpoint(release), "release")]
        targets += [Target(_endpoint(a), "agent") for a in agents]
        prom = LocalPrometheus(data_dir=tmp_path / "prometheus", targets=targets, port=0)
        prom.start(timeout=30)
        prom.wait_for_targets(timeout=30)
        deadline = time.monotonic() + 90
        probe = (
            "count(rate(procvault_agent_events_sent_total[1m]) > 0)"
            " + count(rate(procvault_events_applied_total[1m]) > 0)"
            " + count(rate(procvault_releases_total[1m]) > 0)"
        )
        while time.monotonic() < deadline:  # rate() needs two scrapes with progress
            result = prom.query(probe)["result"]
            if result and float(result[0]["value"][1]) >= 5:
                break
            time.sleep(1.0)
        empty = []
        for panel, expr in QUERIES:
            data = prom.query(expr)
            assert data["resultType"] == "vector", (panel, expr)
            values = [float(s["value"][1]) for s in data["result"]]
            if not values:
                empty.append((panel, expr))
            assert all(math.isfinite(v) for v in values), (panel, expr, values)
        label_values: dict[str, list[str]] = {}
        for name in prom.api("labels"):
            label_values[name] = prom.api(f"label/{name}/values")
        vault.stop()  # gracefully: its recorder writes what it buffered
        release.stop()
    finally:
        if prom is not None:
            prom.stop()
        dep.stop_all()
    assert not empty, f"panels without data in a real run: {empty}"

    # no label value is data: compare against every case id, activity, resource and value
    from procvault.generators.xes import read_xes

    log = read_xes(sepsis_log)
    data_values = set()
    for e in log.replay(repeat=3):
        data_values.update({e.case_id, e.activity})
        if e.resource:
            data_values.add(e.resource)
        data_values.update(str(v) for _k, v in e.attributes)
    leaked = {
        (name, v)
        for name, values in label_values.items()
        if name not in ("__name__", "job", "instance", "role", "le", "quantile")
        for v in values
        if v in data_values
    }
    assert not leaked, sorted(leaked)[:10]
    assert "org" in label_values and set(label_values["org"]) <= {*ORGS, "unregistered"}

    # what the vault recorded becomes ProMTEE-style CSVs and plots
    out = tmp_path / "report"
    done = subprocess.run(
        procvault("report", str(run_dir), "--out", str(out)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    written = {p.name for p in out.rglob("*")}
    assert {"delay_result.csv", "latency.csv"} <= written, written
    assert any(n.endswith(".png") for n in written), written
    summary = json.loads(next(out.rglob("report.json")).read_text())
    assert summary, summary
