"""A curious organization (its own keys only) and the results, against the real broker and a
real ``procvault vault`` process: revocations of what an organization did not contribute,
events in its topic that claim another organization, frames that break its chain, and what
each organization can read of the results (also after the attacker replays them)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from attack_kit import (
    EMERGENCY,
    LAB,
    T0,
    WARD,
    Source,
    case_results,
    copies,
    metrics_url,
    produce,
    read,
    reference,
    scrape,
    send_cases,
    strip_reference,
    trace_events,
    wait_until,
)
from pipeline_harness import ORGS, Deployment, procvault

from procvault.monitor.event import Event
from procvault.streams.envelope import RejectedRecord
from procvault.streams.frames import REVOKE, open_result
from procvault.streams.kafka_io import ensure_topics
from procvault.streams.revocation import Revocation, sign_revocation
from procvault.streams.secrets import OrgKeys, VaultSecrets

pytestmark = pytest.mark.timeout(300)

OWN = {"emergency": set(EMERGENCY), "lab": set(LAB), "ward": set(WARD)}


def _vault(dep: Deployment, *extra: str, results: str = "full") -> tuple[Any, str]:
    proc = dep.vault(
        "--source-timeout", "0", "--metrics-port", "0", "--metrics-detail", *extra, results=results
    )
    return proc, metrics_url(proc)


def _cli(dep: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        procvault(
            *args,
            "--kafka",
            dep.bootstrap,
            "--keys",
            str(dep.keys),
            "--topic-prefix",
            dep.prefix,
            "--allow-insecure-attestation",
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _revoke_record(src: Source, rev: Revocation, signer: Any, partition: int) -> Any:
    """A ``REVOKE`` frame sealed in ``src``'s session (unchained, as ``procvault revoke``)."""
    from procvault.streams.frames import encode_frame

    frame = encode_frame(REVOKE, 0, 0, sign_revocation(rev, signer), prev=(0, 0))
    return (
        src.topic,
        None,
        src.session.seal(frame, topic=src.topic, partition=partition),
        partition,
    )


def test_an_organization_can_revoke_only_what_it_contributed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    lab_only = (("lab", "Leucocytes"), ("lab", "CRP"), ("lab", "LacticAcid"))
    try:
        vault, _url = _vault(dep)
        sources = {o: Source(dep, o) for o in ORGS}
        shared = trace_events("shared-1", T0)
        mine = trace_events("lab-2", T0 + timedelta(hours=1), lab_only)
        opened = [e for e in shared + mine if not e.is_marker]
        produce(kafka_bootstrap, send_cases(sources, opened, close=False))
        # ward revokes a case it never took part in (through the real CLI, its own keys)
        refused = _cli(dep, "revoke", "--org", "ward", "--case", "lab-2")
        assert refused.returncode == 0, refused.stderr
        # ... and, sealed in its own stream, a revocation in lab's name signed with its key
        ward = OrgKeys.load(dep.keys / "org-ward.json")
        assert ward.signing is not None
        p = sources["lab"].partition_of("lab-2")
        in_lab_name = Revocation.for_case("lab", "lab-2", policy="p", issued_at=T0)
        produce(kafka_bootstrap, [_revoke_record(sources["ward"], in_lab_name, ward.signing, p)])
        # emergency revokes a case it took part in: applied
        applied = _cli(dep, "revoke", "--org", "emergency", "--case", "shared-1")
        assert applied.returncode == 0, applied.stderr
        ends = [e for e in shared + mine if e.is_marker]
        produce(kafka_bootstrap, send_cases(sources, ends))
        got = case_results(dep, ["lab-2"])
        acks = {o: [i for i in dep.results(o) if i["type"] == "revocation"] for o in ORGS}
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["revocations_refused"] == 1
    assert stats["rejected"]["bad_signature"] == 1
    assert stats["revocations"] == 1
    assert got == strip_reference(reference(mine))  # lab's case is untouched
    assert {(a["status"], a.get("reason")) for a in acks["ward"]} == {
        ("refused", "not_a_participant")
    }
    assert [a["status"] for a in acks["lab"]] == []
    assert "applied" in {a["status"] for a in acks["emergency"]}


def test_a_curious_organization_claims_another_org_and_breaks_its_chain(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    try:
        vault, url = _vault(dep)
        sources = {o: Source(dep, o) for o in ORGS}
        first = trace_events("case-1", T0)
        second = trace_events("case-2", T0 + timedelta(hours=1))
        records = send_cases(sources, first, close=False)
        em = sources["emergency"]
        p = em.partition_of("case-2")
        # an event inside emergency's topic that claims to be lab's
        lie = em.event(
            Event.create("case-2", "CRP", T0 + timedelta(minutes=59), org="lab"), genuine=False
        )
        # a frame whose `prev` skips a frame that was never sent (a gap), then the chain goes on
        head = em.chain.heads[p]
        em.chain.heads[p] = (head[0], head[1] + 7)
        gap = em.event(
            Event.create(
                "case-2", "ER Triage", T0 + timedelta(minutes=59, seconds=30), org="emergency"
            ),
            genuine=False,
        )
        em.chain.heads[p] = head  # (the next frame links to the last one the vault took)
        produce(kafka_bootstrap, [*records, lie, gap, *send_cases(sources, second)])
        got = case_results(dep, ["case-1", "case-2"])
        wait_until(
            lambda: scrape(url).get('procvault_source_notices_total{kind="source_gap"}', 0) >= 1,
            "the source_gap notice",
        )
        notices = {o: [i for i in dep.results(o) if i["type"] == "notice"] for o in ORGS}
        stats = vault.stop()
        log = vault.stderr()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["rejected"]["wrong_org"] == 1
    assert stats["rejected"]["gap"] >= 1
    assert got == strip_reference(reference(first + second))  # neither the lie nor the gap
    assert [n["kind"] for n in notices["emergency"]] == ["source_gap"]
    assert notices["lab"] == [] and notices["ward"] == []
    assert "a record of emergency's stream is missing" in log


def test_each_organization_reads_only_its_own_results_and_replays_are_shown_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    # a case that deviates at every organization: lab and ward act before the registration
    odd = (
        ("ward", "Admission NC"),
        ("lab", "CRP"),
        ("emergency", "IV Liquid"),
        ("emergency", "ER Registration"),
        ("lab", "Leucocytes"),
        ("ward", "Release A"),
    )
    try:
        vault, _url = _vault(dep, results="default")
        sources = {o: Source(dep, o) for o in ORGS}
        events = trace_events("odd-1", T0, odd) + trace_events("fine-2", T0 + timedelta(hours=1))
        produce(kafka_bootstrap, send_cases(sources, events))
        case_results(dep, ["odd-1", "fine-2"])
        items = {o: dep.results(o) for o in ORGS}
        # the attacker re-produces every record of lab's results topic
        topic = dep.topics.alerts("lab")
        genuine = read(kafka_bootstrap, topic)
        produce(kafka_bootstrap, copies(genuine))
        # ... and copies one of emergency's into lab's topic
        other = read(kafka_bootstrap, dep.topics.alerts("emergency"))[0]
        produce(kafka_bootstrap, [(topic, other.key, other.value, 0)])
        # (no release stage runs here: its topic is empty)
        asyncio.run(ensure_topics(kafka_bootstrap, [dep.topics.aggregates]))
        shown = _cli(dep, "results", "--org", "lab", "--json")
        vault.stop()
    finally:
        dep.stop_all()
    deviations = [i for o in ORGS for i in items[o] if i["type"] in ("deviation", "alert")]
    assert deviations, "the case was meant to deviate"
    for org in ORGS:
        for item in items[org]:
            if "activity" in item:
                assert item["activity"] in OWN[org], (org, item)
    # another organization's key opens none of lab's records
    emergency = OrgKeys.load(dep.keys / "org-emergency.json")
    vault_keys = VaultSecrets.load(dep.keys / "vault.json")
    announced = {e: k.public() for e, k in vault_keys.epochs.items()}
    for r in genuine:
        with pytest.raises(RejectedRecord):
            open_result(emergency.alerts, r.value, topic=topic, keys=announced)
    # `procvault results` shows each of lab's items once, and says what it dropped
    lines = [json.loads(x) for x in shown.stdout.splitlines() if x.startswith("{")]
    alerts = [x["alert"] for x in lines if "alert" in x]
    assert alerts, (shown.returncode, shown.stdout[-2000:], shown.stderr[-2000:])
    assert sorted(json.dumps(a, sort_keys=True) for a in alerts) == sorted(
        json.dumps(a, sort_keys=True) for a in items["lab"]
    )
    assert f"{len(genuine)} republished duplicates" in shown.stderr, shown.stderr
    assert "1 rejected" in shown.stderr, shown.stderr


def test_a_curious_organization_copies_a_case_to_a_second_partition(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """An agent that sends a case's events to a partition the case's id does not place it on
    (which would give the case a second set of DP caps there) is refused on that partition
    (``misplaced``, counted) and the results are those of the genuine records alone."""
    dep = Deployment(kafka_bootstrap, tmp_path)
    try:
        vault, _url = _vault(dep)
        sources = {o: Source(dep, o) for o in ORGS}
        case = trace_events("case-1", T0)
        em = sources["emergency"]
        other = (em.partition_of("case-1") + 1) % dep.partitions
        mine = [e for e in case if e.org == "emergency"]
        genuine = [sources[e.org].event(e) for e in sorted(case, key=lambda e: e.timestamp)]
        copies = [em.event(e, partition=other, genuine=False) for e in mine]
        end = max(e.timestamp for e in case) + timedelta(seconds=1)
        closing = [r for s in sources.values() for r in s.heartbeat(end, closed=True)]
        produce(kafka_bootstrap, [*genuine, *copies, *closing])
        got = case_results(dep, ["case-1"])
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    assert mine and stats["rejected"]["misplaced"] == len(mine)
    assert got == strip_reference(reference(case))
