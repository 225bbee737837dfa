"""Attacks around the agents, against the real broker and real ``procvault agent`` and
``procvault vault`` processes: forged and misplaced progress records on ``agent.progress``,
and a leaked session of an older key epoch after ``procvault keys rotate`` while the agents
run. The agents neither skip nor repeat an event, and the results are exactly the in-process
monitor's on the log."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from attack_kit import (
    T0,
    Record,
    Source,
    case_results,
    metrics_url,
    produce,
    read,
    reference,
    scrape,
    strip_reference,
    wait_until,
)
from pipeline_harness import ORGS, Deployment, procvault

from procvault.monitor.event import Event

pytestmark = pytest.mark.timeout(400)

CASES = 20


@pytest.fixture(scope="module")
def small_log(sepsis_log: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first Sepsis cases (real data, a few hundred events)."""
    from procvault.generators.xes import read_xes
    from procvault.generators.xes_write import write_xes

    log = read_xes(sepsis_log)
    keep: list[str] = []
    for e in log.events:
        if e.case_id not in keep:
            keep.append(e.case_id)
        if len(keep) > CASES:
            break
    chosen = set(keep[:CASES])
    out = tmp_path_factory.mktemp("log") / "small.xes"
    write_xes((e for e in log.events if e.case_id in chosen), out)
    return out


def _reference(log: Path) -> dict[str, dict[str, object]]:
    from procvault.generators.xes import read_xes

    return strip_reference(reference(read_xes(log).replay(end_markers=True)))


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


def test_forged_and_misplaced_progress_records_are_refused(
    kafka_bootstrap: str, tmp_path: Path, small_log: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    want = _reference(small_log)
    try:
        vault = dep.vault("--source-timeout", "0")
        others = [dep.agent(o, small_log) for o in ORGS if o != "emergency"]
        # emergency's agent is killed half-way (its open transaction aborted) ...
        first = dep.agent("emergency", small_log, "--rate", "30")
        wait_until(lambda: dep.progress("emergency") > 60, "emergency under way", 120)
        first.kill9()
        progress = read(kafka_bootstrap, dep.topics.progress)
        key = b"emergency/agent-1"
        mine = [r for r in progress if r.key == key]
        lab = [r for r in progress if r.key == b"lab/agent-1"]
        assert len(mine) >= 2 and lab
        # ... the attacker writes its own progress records for it ...
        forged: list[Record] = [
            (dep.topics.progress, key, json.dumps({"position": 999999}).encode(), 0),
            (dep.topics.progress, key, b"\xff\x00 not json at all", 0),
            (dep.topics.progress, key, lab[-1].value, 0),  # lab's genuine record
            (dep.topics.progress, key, mine[0].value, 0),  # emergency's oldest, again
            (dep.topics.progress, key, None, 0),  # a tombstone
        ]
        produce(kafka_bootstrap, forged)
        # ... and it restarts without its local progress file: agent.progress decides
        again = dep.agent("emergency", small_log, "--control-dir", str(tmp_path / "fresh"))
        again.wait(180)
        for a in others:
            a.wait(180)
        got = case_results(dep, list(want))
        stats = vault.stop()
        errors = again.stderr()
        # the broker sees partitions, never a per-case key (placement by a keyed hash)
        streams = [r for o in ORGS for r in read(kafka_bootstrap, dep.topics.events(o))]
    finally:
        dep.stop_all()
    assert stats is not None
    _no_traceback(errors)
    assert "3 record(s) on" in errors and "do not verify (forged or damaged): ignored" in errors
    assert got == want  # nothing skipped
    # nothing sent twice: every event (and end marker) applied once, none refused as resent
    assert stats["rejected"]["resent"] == 0 and stats["rejected"]["gap"] == 0
    assert stats["applied"] == _events(small_log)
    assert streams and all(r.key is None for r in streams)
    assert len({r.partition for r in streams}) == dep.partitions


def _events(log: Path) -> int:
    from procvault.generators.xes import read_xes

    return sum(1 for _ in read_xes(log).replay(end_markers=True))


def test_rotation_while_agents_run_and_a_leaked_old_epoch_session(
    kafka_bootstrap: str, tmp_path: Path, small_log: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    want = _reference(small_log)
    try:
        vault = dep.vault("--source-timeout", "0")
        agents = [dep.agent(o, small_log, "--rate", "8", "--reattest-interval", "1") for o in ORGS]
        wait_until(lambda: dep.progress("emergency") > 20, "the agents under way", 120)
        rotated = subprocess.run(
            procvault("keys", "rotate", str(dep.keys)), capture_output=True, text=True, check=False
        )
        assert rotated.returncode == 0, rotated.stderr
        vault.stop()
        vault = dep.vault("--source-timeout", "0", "--metrics-port", "0")
        url = metrics_url(vault)
        for a in agents:
            a.wait_for("a new producer session under it", 120)
        # someone holding a session of epoch 1 (its keys leaked) injects into emergency's
        # stream once emergency has moved to epoch 2
        leaked = Source(dep, "emergency", producer="agent-1", epoch=1)
        p = leaked.partition_of("zz-injected")
        inject = [
            leaked.event(
                Event.create("zz-injected", "ER Registration", T0, org="emergency"), partition=p
            )
            for _ in range(3)
        ]
        time.sleep(2)  # (the vault has read emergency's first frames of epoch 2)
        produce(kafka_bootstrap, inject)
        sent = [a.wait(240)["sent"] for a in agents]
        got = case_results(dep, list(want))
        wait_until(
            lambda: scrape(url).get('procvault_records_rejected_total{reason="old_epoch"}', 0) >= 3,
            "the old-epoch records refused",
        )
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["rejected"]["old_epoch"] == 3
    assert got == want  # nothing lost
    assert stats["rejected"]["resent"] == 0 and stats["rejected"]["gap"] == 0  # nothing repeated
    assert "zz-injected" not in case_results(dep, ["zz-injected"], timeout=1)
    assert sum(sent) > 0
