"""Agents with the shipped pseudonymising policies (policies/orgs/{emergency,lab,ward}.yaml) on
the real broker: each organization has its own resource key (--key-file), the case ids are
pseudonymised with the consortium's key from the keyring, so the vault still sees one case per
Sepsis case across the three organizations, and no clear case id reaches it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pipeline_harness import ORGS, REPO, SEPSIS_ORGS, Deployment

pytestmark = pytest.mark.timeout(600)

LIMIT = 1500  # activity events of the log (and their cases' end markers)


def test_agents_apply_the_shipped_policies_and_cases_keep_one_pseudonym(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    from procvault.generators.run import first_events
    from procvault.generators.split import ActivityMapping, assign
    from procvault.generators.xes import read_xes

    log = read_xes(sepsis_log)
    share = first_events(
        assign(log.replay(end_markers=True), ActivityMapping.from_file(SEPSIS_ORGS)), LIMIT
    )
    clear = {e.case_id for e in share}
    dep = Deployment(kafka_bootstrap, tmp_path / "deploy")
    try:
        dep.vault("--source-timeout", "0")
        agents = []
        for i, org in enumerate(ORGS):
            key = tmp_path / f"{org}.key"
            key.write_text(f"the {org}'s own pseudonym key, number {i}\n")
            policy = REPO / "policies" / "orgs" / f"{org}.yaml"
            agents.append(
                dep.agent(
                    org, sepsis_log, "--policy", str(policy), "--key-file", str(key),
                    "--limit", str(LIMIT),
                )
            )  # fmt: skip
        sent = [a.wait(300) for a in agents]
        assert all(s["sent"] > 0 for s in sent), sent
        cases = dep.case_results(wait_for=len(clear))
    finally:
        dep.stop_all()
    assert len(cases) == len(clear)  # one pseudonym per case in all three organizations
    assert all(re.fullmatch(r"c_[0-9a-f]{24}", c) for c in cases), list(cases)[:3]
    assert not set(cases) & clear
