"""An organization that goes silent mid-stream (its agent killed) is reported loudly (a log
line, ``procvault_source_notices_total{kind="source_silent"}``, ``silent_sources`` on the
verdicts of the cases that ran meanwhile); its later events, once its agent is restarted, are
applied and counted ``late``, never rejected (issue 22 item 3)."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest
from pipeline_harness import ORGS, Deployment

pytestmark = pytest.mark.timeout(900)

SEPSIS_EVENTS = 15214
SEPSIS_CASES = 1050


def _metric(url: str, name: str, labels: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_silent_organization_is_reported_and_its_late_events_counted_late(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path / "deploy")
    try:
        vault = dep.vault("--source-timeout", "5", "--metrics-port", "0")
        url = re.search(r"metrics at (http://\S+)", vault.stderr())
        assert url is not None, vault.stderr()
        # paced, so that ward can be cut off mid-stream
        agents = {org: dep.agent(org, sepsis_log, "--rate", "1500") for org in ORGS}
        dep.wait_progress("ward", 2000, timeout=120)
        agents["ward"].kill9()
        for org in ("emergency", "lab"):
            agents[org].wait(300)
        vault.wait_for("ward is silent", 120)
        assert _metric(url.group(1), "procvault_source_notices_total", 'kind="source_silent"') >= 1
        # ward comes back: its agent resumes after what it committed
        again = dep.agent("ward", sepsis_log).wait(300)
        vault.wait_for("ward is back", 60)
        items = [i for org in ORGS for i in dep.results(org)]
        deadline = time.monotonic() + 120
        while len({i["case"] for i in items if i["type"] == "case"}) < SEPSIS_CASES:
            assert time.monotonic() < deadline, "not every case got a result"
            time.sleep(1.0)
            items = [i for org in ORGS for i in dep.results(org)]
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    # every event ward sent after its restart came after the merge had passed it: late
    assert again["resumed_at"] > 0 and stats["late"] == again["sent"] > 0, (again, stats)
    assert sum(stats["rejected"].values()) == 0, stats["rejected"]
    # each record once: applied, or (an event of a case completed meanwhile) after completion
    assert stats["applied"] + stats["after_completion"] == SEPSIS_EVENTS + SEPSIS_CASES, stats
    flagged = {
        i["case"] for i in items if i["type"] == "case" and "ward" in i.get("silent_sources", ())
    }
    assert flagged, "no verdict carries the silent organization"
    notices = {(i["kind"], i["org"]) for i in items if i["type"] == "notice"}
    assert ("source_silent", "ward") in notices and ("source_back", "ward") in notices, notices
