"""The confidential pipeline end to end on the real broker: agents, vault worker, results."""

from __future__ import annotations

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

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def sepsis_reference(sepsis_log: Path) -> dict[str, dict]:
    from procvault.generators.xes import read_xes

    log = read_xes(sepsis_log)
    return in_process_results(log.replay(end_markers=True), SHARED / SEPSIS_MODEL, SEPSIS_RULES)


def test_sepsis_across_three_orgs_equals_in_process(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path, sepsis_reference: dict
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    try:
        vault = dep.vault()
        agents = [dep.agent(org, sepsis_log) for org in ORGS]
        sent = [a.wait(300) for a in agents]
        assert sum(s["sent"] for s in sent) == 15214 + 1050
        got = dep.case_results(wait_for=len(sepsis_reference))
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["applied"] == 15214 + 1050
    assert sum(stats["rejected"].values()) == 0
    assert stats["late"] == 0
    assert got.keys() == sepsis_reference.keys()
    diff = [c for c in got if got[c] != sepsis_reference[c]]
    assert not diff, (diff[:3], [got[c] for c in diff[:1]], [sepsis_reference[c] for c in diff[:1]])
