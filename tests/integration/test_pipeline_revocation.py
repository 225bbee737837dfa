"""Revocation through the real pipeline: an organization revokes a case and a resource while
its agent is publishing; the vault drops them from every later result and acknowledges."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pipeline_harness import (
    ORGS,
    SEPSIS_MODEL,
    SEPSIS_ORGS,
    SEPSIS_RULES,
    SHARED,
    Deployment,
    in_process_results,
)

from procvault.cli import main

pytestmark = pytest.mark.timeout(600)


def _revoke(dep: Deployment, *what: str) -> None:
    """``procvault revoke`` in-process."""
    code = main(
        [
            "revoke",
            "--org",
            "emergency",
            "--keys",
            str(dep.keys),
            *what,
            "--kafka",
            dep.bootstrap,
            "--topic-prefix",
            dep.prefix,
            "--partitions",
            str(dep.partitions),
            "--allow-insecure-attestation",
        ]
    )
    assert code == 0


def _choose(events: list[Any], org_of: dict[str, str]) -> tuple[str, str]:
    """A case with events early and late in the log, and a resource of ``emergency`` busy
    late in the log."""
    n = len(events)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, e in enumerate(events):
        first.setdefault(e.case_id, i)
        last[e.case_id] = i
    victim = next(c for c in first if first[c] < 0.1 * n and last[c] > 0.9 * n)
    late = Counter(
        e.resource
        for e in events[int(0.7 * n) :]
        if e.resource and not e.kind and org_of.get(e.activity) == "emergency"
    )
    return victim, late.most_common(1)[0][0]


@pytest.fixture
def grouped_log(sepsis_log: Path, tmp_path: Path) -> Path:
    """Sepsis with each event's ``org:group`` as its resource (Sepsis has no resources)."""
    import msgspec

    from procvault.generators.xes import read_xes
    from procvault.generators.xes_write import write_xes

    out = tmp_path / "grouped.xes"
    write_xes(
        (
            msgspec.structs.replace(e, resource=str(e.attr("org:group") or "") or None)
            for e in read_xes(sepsis_log).events
        ),
        out,
    )
    return out


def test_revoking_a_case_and_a_resource_mid_stream(
    kafka_bootstrap: str, tmp_path: Path, grouped_log: Path
) -> None:
    import yaml

    from procvault.generators.xes import read_xes

    sepsis_log = grouped_log
    org_of = yaml.safe_load(SEPSIS_ORGS.read_text())["activities"]
    events = list(read_xes(sepsis_log).replay(end_markers=True))
    victim, resource = _choose(events, org_of)
    reference = in_process_results(events, SHARED / SEPSIS_MODEL, SEPSIS_RULES)
    emergency_share = sum(1 for e in events if not e.kind and org_of[e.activity] == "emergency")
    dep = Deployment(kafka_bootstrap, tmp_path)
    try:
        vault = dep.vault()
        agents = [dep.agent(org, sepsis_log, "--rate", "1200") for org in ORGS]
        dep.wait_progress("emergency", emergency_share // 5, timeout=120)
        _revoke(dep, "--case", victim)
        _revoke(dep, "--resource", resource)
        for a in agents:
            a.wait(300)
        cases = dep.case_results(wait_for=len(reference) - 1, timeout=180)
        deadline = time.monotonic() + 60
        while True:
            items = dep.results("emergency")
            acks = [i for i in items if i["type"] == "revocation"]
            if len(acks) >= 1 + dep.partitions or time.monotonic() > deadline:
                break
            time.sleep(1)
        stats = vault.stop()
    finally:
        dep.stop_all()

    # acknowledged: the case by its partition, the resource by every partition
    assert Counter((a.get("case"), a.get("resource"), a["status"]) for a in acks) == Counter(
        {(victim, None, "applied"): 1, (None, resource, "applied"): dep.partitions}
    )
    assert {a["partition"] for a in acks if a.get("resource")} == set(range(dep.partitions))
    assert stats is not None
    assert stats["revocations"] == 1 + dep.partitions
    assert stats["rejected"]["bad_signature"] == 0
    assert stats["revoked_events"] > 0
    # the case: no result anywhere, nothing about it after the acknowledgement
    assert victim not in cases and victim in reference
    ack_at = next(
        i for i, it in enumerate(items) if it["type"] == "revocation" and it.get("case") == victim
    )
    assert not [it for it in items[ack_at + 1 :] if it.get("case") == victim]
    # the resource: only cases it worked on differ from the in-process run, and some do
    worked_on = {e.case_id for e in events if e.resource == resource}
    differ = {c for c, r in cases.items() if r != reference[c]}
    assert differ and differ <= worked_on
    assert set(cases) == set(reference) - {victim}
