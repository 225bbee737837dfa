"""Results do not depend on start order (issue 22 item 3), on the real broker, Sepsis split
three ways by examples/sepsis_orgs.yaml:

* agents started 60 s after the vault, whose ``--source-timeout`` is 5 s: the timeout runs only
  after an organization's first contact, so nothing is applied early;
* one agent started after the other two finished: the merge holds for it.

(An organization that goes silent mid-stream: tests/integration/test_silent_source.py.)
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from pipeline_harness import (
    ORGS,
    SEPSIS_MODEL,
    SEPSIS_RULES,
    SHARED,
    Deployment,
    in_process_results,
)

pytestmark = pytest.mark.timeout(900)

SEPSIS_EVENTS = 15214
SEPSIS_CASES = 1050


def _reference(sepsis_log: Path) -> dict[str, dict]:
    from procvault.generators.xes import read_xes

    return in_process_results(
        read_xes(sepsis_log).replay(end_markers=True), SHARED / SEPSIS_MODEL, SEPSIS_RULES
    )


def _equal(got: dict[str, dict], reference: dict[str, dict]) -> None:
    assert got.keys() == reference.keys(), (len(got), len(reference))
    diff = [c for c in reference if got[c] != reference[c]]
    assert not diff, (len(diff), diff[:3], got[diff[0]], reference[diff[0]])


def test_agents_started_60s_after_the_vault_equal_monitor(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    reference = _reference(sepsis_log)
    dep = Deployment(kafka_bootstrap, tmp_path / "deploy")
    try:
        vault = dep.vault("--source-timeout", "5")
        time.sleep(60.0)  # twelve source timeouts: none may run before first contact
        assert vault.popen.poll() is None
        agents = [dep.agent(org, sepsis_log) for org in ORGS]
        sent = [a.wait(300) for a in agents]
        assert sum(s["sent"] for s in sent) == SEPSIS_EVENTS + SEPSIS_CASES
        got = dep.case_results(wait_for=len(reference))
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["applied"] == SEPSIS_EVENTS + SEPSIS_CASES
    assert stats["late"] == 0
    assert sum(stats["rejected"].values()) == 0, stats["rejected"]
    log = vault.stderr()
    assert "is silent" not in log, log[-2000:]
    assert re.search(r"waiting for (emergency|lab|ward)", log), log[-2000:]
    _equal(got, reference)


def test_one_agent_started_after_the_others_finished_equals_monitor(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    reference = _reference(sepsis_log)
    dep = Deployment(kafka_bootstrap, tmp_path / "deploy")
    try:
        vault = dep.vault("--source-timeout", "5")
        first = [dep.agent(org, sepsis_log) for org in ("emergency", "lab")]
        sent = [a.wait(300) for a in first]
        time.sleep(10.0)  # two source timeouts after the two finished; ward never heard from
        early = [i for org in ("emergency", "lab") for i in dep.results(org)]
        assert not [i for i in early if i["type"] == "case"], "a case completed without ward"
        sent.append(dep.agent("ward", sepsis_log).wait(300))
        assert sum(s["sent"] for s in sent) == SEPSIS_EVENTS + SEPSIS_CASES
        got = dep.case_results(wait_for=len(reference))
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["late"] == 0
    assert sum(stats["rejected"].values()) == 0, stats["rejected"]
    assert "is silent" not in vault.stderr()
    _equal(got, reference)
