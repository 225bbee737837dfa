"""The confidential pipeline end to end on the real broker: agents, vault worker, results."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_harness import (
    ORGS,
    SEPSIS_MODEL,
    SEPSIS_RULES,
    SHARED,
    WEEKLY_DP,
    Deployment,
    in_process_results,
)
from pipeline_harness import (
    procvault as procvault_cmd,
)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def patients_log(sepsis_log: Path, tmp_path: Path) -> Path:
    """Sepsis with long case ids ("patient-..."), so that a scan for them in raw bytes is
    meaningful (Sepsis' own ids are one to three letters, found by chance in any ciphertext)."""
    import msgspec

    from procvault.generators.xes import read_xes
    from procvault.generators.xes_write import write_xes

    log = read_xes(sepsis_log)
    out = tmp_path / "patients.xes"
    write_xes(
        (msgspec.structs.replace(e, case_id=f"patient-{e.case_id}-0317") for e in log.events), out
    )
    return out


def _needles(log_path: Path) -> tuple[set[bytes], set[bytes]]:
    """``(case ids, resources and attribute values; activity names)`` of a log, as UTF-8."""
    from procvault.generators.xes import read_xes

    log = read_xes(log_path)
    data: set[bytes] = set()
    activities: set[bytes] = set()
    for e in log.events:
        data.add(e.case_id.encode())
        activities.add(e.activity.encode())
        if e.resource and len(e.resource) >= 4:
            data.add(e.resource.encode())
        for k, v in e.attributes:
            # lifecycle:transition holds XES vocabulary ("complete"), not data
            if isinstance(v, str) and len(v) >= 4 and k != "lifecycle:transition":
                data.add(v.encode())
    return data, activities


async def _topic_bytes(bootstrap: str, prefix: str) -> dict[str, list[bytes]]:
    """The raw keys and values of every record (aborted ones too) of every topic of a run."""
    from aiokafka.admin import AIOKafkaAdminClient

    from procvault.streams.kafka_io import read_topic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()
    out: dict[str, list[bytes]] = {}
    for name in names:
        records = await read_topic(bootstrap, name, idle_timeout=2.0)
        out[name] = [(r.key or b"") + b"|" + (r.value or b"") for r in records]
    return out


def test_sepsis_across_three_orgs_equals_in_process_and_nothing_is_in_clear(
    kafka_bootstrap: str, tmp_path: Path, patients_log: Path
) -> None:
    import asyncio
    import json
    import subprocess
    import time

    from procvault.generators.xes import read_xes

    reference = in_process_results(
        read_xes(patients_log).replay(end_markers=True), SHARED / SEPSIS_MODEL, SEPSIS_RULES
    )
    dp = tmp_path / "dp.yaml"
    dp.write_text(WEEKLY_DP)
    run_dir = tmp_path / "run"
    dep = Deployment(kafka_bootstrap, tmp_path / "deploy")
    try:
        vault = dep.vault("--dp-policy", str(dp), "--run-dir", str(run_dir), "--metrics-port", "0")
        release = dep.release(dp)
        agents = [dep.agent(org, patients_log, "--run-dir", str(run_dir)) for org in ORGS]
        sent = [a.wait(300) for a in agents]
        assert sum(s["sent"] for s in sent) == 15214 + 1050
        got = dep.case_results(wait_for=len(reference))
        # the running vault's recorded events are on disk already (procvault report works live)
        time.sleep(2.5)
        recorded_live = (run_dir / "vault-1" / "events.csv").read_text().count("\n") - 1
        stats = vault.stop()
        shown = subprocess.run(
            procvault_cmd(
                "results",
                "--kafka",
                kafka_bootstrap,
                "--keys",
                str(dep.keys),
                "--topic-prefix",
                dep.prefix,
                "--allow-insecure-attestation",
                "--json",
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        release.stop()
        raw = asyncio.run(_topic_bytes(kafka_bootstrap, dep.prefix))
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["applied"] == 15214 + 1050
    assert recorded_live == stats["applied"]
    assert "Marking the coordinator dead" not in vault.stderr()  # aiokafka's routine warnings
    for org, agent_stats in zip(ORGS, sent, strict=True):  # each agent recorded what it sent
        rows = (run_dir / f"agent-{org}" / "throughput.csv").read_text().splitlines()
        assert rows[0] == "Timestamp,Events" and int(rows[-1].split(",")[1]) == agent_stats["sent"]
    assert sum(stats["rejected"].values()) == 0
    assert stats["late"] == 0
    assert got.keys() == reference.keys()
    diff = [c for c in got if got[c] != reference[c]]
    assert not diff, (diff[:3], [got[c] for c in diff[:1]], [reference[c] for c in diff[:1]])

    # the release stage published signed, verified DP panes
    assert shown.returncode == 0, shown.stderr[-2000:]
    released = [json.loads(line) for line in shown.stdout.splitlines() if line.startswith("{")]
    assert any(r["record"]["kind"] == "pane" for r in released), shown.stdout[:2000]

    # nothing in clear: no case id, resource or attribute value in any topic or file of the
    # run; activity names only inside the DP aggregates (public by design)
    data, activities = _needles(patients_log)
    # a 3-byte name ("CRP") turns up by chance in megabytes of ciphertext; 5 bytes do not
    activities = {a for a in activities if len(a) >= 5}
    assert dep.topics.events("lab") in raw and dep.topics.changelog in raw
    assert dep.topics.partials in raw and dep.topics.aggregates in raw
    for topic, blobs in raw.items():
        blob = b"\n".join(blobs)
        found = {n for n in data if n in blob}
        assert not found, (topic, sorted(found)[:5])
        if topic != dep.topics.aggregates:
            found = {n for n in activities if n in blob}
            assert not found, (topic, sorted(found)[:5])
    files = [f for f in (tmp_path / "deploy").rglob("*") if f.is_file()]
    files += [f for f in run_dir.rglob("*") if f.is_file()]
    assert any(f.suffix == ".csv" for f in files)
    for f in files:
        if f.parent == dep.keys:
            continue  # key material, written by `procvault keys`, not by the workers
        blob = f.read_bytes()
        found = {n for n in data | activities if n in blob}
        assert not found, (f, sorted(found)[:5])


def _reference_panes(events: list, dp_path: Path) -> dict[int, object]:
    """The exact pane aggregates of an uninterrupted in-process run (non-empty panes)."""
    from procvault.config.dp import load_dp_policy
    from procvault.config.engines import load_engines
    from procvault.monitor.compliance import Compliance
    from procvault.monitor.privacy import KnownKeys, PaneAccumulator
    from procvault.monitor.vault import Vault

    engines = load_engines(str(SHARED / SEPSIS_MODEL), str(SEPSIS_RULES))
    model, net, rules = engines.model, engines.net, engines.rules
    vault = Vault(net, compliance=Compliance(rules))
    labels = {t.label for t in model.net.transitions if t.label is not None}
    acc = PaneAccumulator(
        load_dp_policy(dp_path), KnownKeys.build(labels, rules=[r.name for r in rules])
    )
    panes = []
    for ev in events:
        panes.extend(acc.observe_replayed(ev, vault.update(ev)))
    panes.extend(acc.observe_tick(events[-1].timestamp, vault.flush_update()))
    panes.extend(acc.flush())
    return {p.index: p for p in panes if not p.is_empty}


def _pipeline_panes(dep: Deployment) -> dict[int, object]:
    """The pane partials the vault published, merged per pane; no (pane, partition) twice."""
    import asyncio

    from procvault.config.dp import load_dp_policy
    from procvault.config.engines import load_engines
    from procvault.monitor.privacy.plan import ReleasePlan
    from procvault.streams.changelog import StateKeys
    from procvault.streams.frames import open_partials
    from procvault.streams.kafka_io import read_topic
    from procvault.streams.secrets import VaultSecrets

    key = StateKeys(VaultSecrets.load(dep.keys / "vault.json"))
    dp = dep.root / "dp.yaml"
    plan = ReleasePlan.build(
        load_dp_policy(dp), load_engines(SHARED / SEPSIS_MODEL, SEPSIS_RULES).known()
    ).fingerprint()
    records = asyncio.run(read_topic(dep.bootstrap, dep.topics.partials, committed=True))
    seen: set[tuple[int, int]] = set()
    merged: dict[int, object] = {}
    for r in records:
        report = open_partials(key, r.key, r.value, plan=plan)
        for i in range(report.first, report.through + 1):
            ident = (i, report.partition)
            assert ident not in seen, f"pane {i} of partition {report.partition} closed twice"
            seen.add(ident)
        for agg in report.panes:
            i = agg.index
            merged[i] = merged[i].merge(agg) if i in merged else agg
    return {i: p for i, p in merged.items() if not p.is_empty}


def test_kill9_vault_and_agent_lose_nothing_and_count_nothing_twice(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    import random
    import time

    from procvault.generators.xes import read_xes

    repeat = 7  # 106,498 events + 7,350 end markers
    dp = tmp_path / "dp.yaml"
    dp.write_text(WEEKLY_DP)
    log = read_xes(sepsis_log)
    events = list(log.replay(end_markers=True, repeat=repeat))
    reference = in_process_results(events, SHARED / SEPSIS_MODEL, SEPSIS_RULES)
    reference_panes = _reference_panes(events, dp)
    rng = random.Random(20261124)
    dep = Deployment(kafka_bootstrap, tmp_path)
    vault_args = ("--dp-policy", str(dp), "--session-timeout", "6")
    try:
        vault = dep.vault(*vault_args)
        pace = ("--repeat", str(repeat), "--rate", "4000")
        agents = {org: dep.agent(org, sepsis_log, *pace) for org in ORGS}
        # kill -9 an agent once it has committed part of its share, start it again
        dep.wait_progress("lab", rng.randint(1_000, 20_000))
        agents["lab"].kill9()
        resumed = dep.agent("lab", sepsis_log, *pace)
        kills = 0
        for _ in range(3):  # kill -9 the vault at random points, start it again
            time.sleep(rng.uniform(1.0, 4.0))
            vault.kill9()
            kills += 1
            vault = dep.vault(*vault_args)
        sent = [agents["emergency"].wait(300), agents["ward"].wait(300), resumed.wait(300)]
        assert resumed.popen.returncode == 0 and sent[2]["resumed_at"] > 0
        got = dep.case_results(wait_for=len(reference), timeout=180)
        # the partials of the last panes follow the last cases in the same transaction
        stats = vault.stop()
        pipeline_panes = _pipeline_panes(dep)
    finally:
        dep.stop_all()
    assert kills == 3 and stats is not None
    assert sum(stats["rejected"].values()) == 0
    assert got.keys() == reference.keys()
    diff = [c for c in got if got[c] != reference[c]]
    assert not diff, (diff[:3], got[diff[0]], reference[diff[0]])
    for org in ORGS:  # every organization got each of its cases' results exactly once
        cases = [i["case"] for i in dep.results(org) if i["type"] == "case"]
        assert len(cases) == len(set(cases))
    assert pipeline_panes.keys() == reference_panes.keys()
    differ = {}
    for i in sorted(pipeline_panes):
        got, want = pipeline_panes[i], reference_panes[i]
        if got == want:
            continue
        names = {n for n, _ in got.values + want.values}
        differ[i] = {
            n: (got.statistic(n), want.statistic(n))
            for n in sorted(names)
            if got.statistic(n) != want.statistic(n)
        }
        fnames = {n for n, _ in got.firsts + want.firsts}
        differ[i].update(
            {
                f"first:{n}": (got.first_contributions(n), want.first_contributions(n))
                for n in sorted(fnames)
                if got.first_contributions(n) != want.first_contributions(n)
            }
        )
    assert not differ, differ


def test_two_workers_on_four_partitions_equal_one_across_a_rebalance(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    import time

    from procvault.generators.xes import read_xes

    repeat = 3
    reference = in_process_results(
        read_xes(sepsis_log).replay(end_markers=True, repeat=repeat),
        SHARED / SEPSIS_MODEL,
        SEPSIS_RULES,
    )
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=4)
    try:
        first = dep.vault("--session-timeout", "6", worker="vault-a")
        agents = [
            dep.agent(org, sepsis_log, "--repeat", str(repeat), "--rate", "800") for org in ORGS
        ]
        dep.wait_progress("lab", 3_000)
        # a second worker joins while events flow: partitions move to it
        second = dep.vault("--session-timeout", "6", worker="vault-b")
        second.wait_for("assigned partitions [", 60)  # (its first, maybe empty, share)
        assert dep.progress("lab") < 24_660  # still flowing
        for a in agents:
            a.wait(300)
        got = dep.case_results(wait_for=len(reference), timeout=180)
        time.sleep(1.0)
        stats = [first.stop(), second.stop()]
    finally:
        dep.stop_all()
    assert all(s is not None for s in stats)
    assert all(s["applied"] > 0 for s in stats), stats  # both did part of the work
    assert sum(sum(s["rejected"].values()) for s in stats) == 0
    assert got.keys() == reference.keys()
    diff = [c for c in got if got[c] != reference[c]]
    assert not diff, (diff[:3], got[diff[0]], reference[diff[0]])
    for org in ORGS:  # each case's result reached each of its organizations exactly once
        cases = [i["case"] for i in dep.results(org) if i["type"] == "case"]
        assert len(cases) == len(set(cases))
