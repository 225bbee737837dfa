"""Review before sharing and the agent's visible state, through the real pipeline.

* ``--review``: what the agent holds is not in its event topic until released; dropped items
  arrive as placeholders, a redacted field as its placeholder value; a restarted agent keeps
  the queue's decisions and a hold period releases the rest; the vault's results equal the
  in-process results of exactly what was released.
* ``agent pause|status|resume``: a paced agent, paused, says so and sends nothing; resumed, the
  run completes with the in-process results.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
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
    procvault,
)

from procvault.monitor.event import Event

pytestmark = pytest.mark.timeout(600)

LIMIT = 400


def _source(log: Path, limit: int) -> list[Event]:
    """The events every agent reads, with their organizations (as ``procvault agent`` does)."""
    from procvault.generators.run import first_events
    from procvault.generators.split import ActivityMapping, assign
    from procvault.generators.xes import read_xes

    mapping = ActivityMapping.from_file(SEPSIS_ORGS)
    return list(first_events(assign(read_xes(log).replay(end_markers=True), mapping), limit))


def _published(dep: Deployment, org: str) -> list[tuple[int, Event]]:
    """``(source position, event)`` of every committed event in ``events.<org>``."""
    from procvault.streams import codec
    from procvault.streams.envelope import SessionOpener
    from procvault.streams.frames import EVENT, decode_frame
    from procvault.streams.kafka_io import read_topic
    from procvault.streams.secrets import Registry, VaultSecrets

    vault = VaultSecrets.load(dep.keys / "vault.json")
    opener = SessionOpener(vault.epochs, Registry.load(dep.keys / "registry.json").sender)
    topic = dep.topics.events(org)
    try:
        records = asyncio.run(read_topic(dep.bootstrap, topic, committed=True, idle_timeout=2.0))
    except Exception:  # not created yet
        return []
    out = []
    for r in records:
        _, plain = opener.open(r.value, topic=topic, partition=r.partition)
        kind, order, _, _prev, body = decode_frame(plain)
        if kind == EVENT:
            out.append((order // 256, codec.decode(body)))  # the source position
    return sorted(out, key=lambda x: x[0])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(procvault(*args), capture_output=True, text=True, timeout=60, check=False)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_review_holds_drops_redacts_and_releases_and_the_vault_agrees(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    from procvault.organization.agent import ordered_share
    from procvault.organization.policy import verify_audit_log
    from procvault.organization.review import ReviewQueue

    events = _source(sepsis_log, LIMIT)
    share = list(ordered_share(events, "emergency"))
    review_dir, audit = tmp_path / "review", tmp_path / "audit.jsonl"
    control = tmp_path / "control"
    dep = Deployment(kafka_bootstrap, tmp_path / "deploy")
    reviewed = (
        "--limit",
        str(LIMIT),
        "--review",
        str(review_dir),
        "--audit-log",
        str(audit),
        "--control-dir",
        str(control),
    )
    queue = None
    try:
        vault = dep.vault("--source-timeout", "0")  # wait for the reviewed organization
        others = [dep.agent(org, sepsis_log, "--limit", str(LIMIT)) for org in ORGS[1:]]
        first = dep.agent("emergency", sepsis_log, *reviewed)
        _wait((review_dir / "review.sqlite").exists, 60, "the review queue")
        queue = ReviewQueue.open(review_dir)
        _wait(lambda: sum(queue.counts().values()) == len(share), 60, "every item admitted")
        held = queue.items(state="held")
        assert held and held[0].order == share[0][0]
        time.sleep(1.5)
        # held: nothing of emergency in its topic, no source position committed
        assert _published(dep, "emergency") == []
        assert dep.progress("emergency") == 0
        status = _cli("agent", "status", "--org", "emergency", "--control-dir", str(control))
        assert status.returncode == 0, status.stderr
        assert f"waiting for item {held[0].order}" in status.stdout

        # decide: redact a field of the first, release it; drop the next two
        first_item = held[0]
        field = next(k for k, _ in first_item.events[0].attributes if not k.startswith("pv:"))
        common = ("--review", str(review_dir), "--actor", "alice")
        out = _cli("review", "redact", str(first_item.order), "--field", field, *common)
        assert out.returncode == 0, out.stderr
        dropped = [held[1].order, held[2].order]
        out = _cli("review", "drop", *map(str, dropped), *common)
        assert out.returncode == 0, out.stderr
        # what each item will send, decisions applied (the queue deletes it once published)
        stored = {it.order: list(it.events) for it in queue.items(state=None)}
        out = _cli("review", "release", str(first_item.order), *common)
        assert out.returncode == 0, out.stderr
        blocked_at = held[3].order
        _wait(lambda: dep.progress("emergency") > 0, 60, "the released items' commit")
        time.sleep(1.0)
        published = _published(dep, "emergency")
        assert [o for o, _ in published] == [o for o, _ in share if o < blocked_at]
        by_order = dict(published)
        assert by_order[first_item.order].attr(field) == (
            "pv:redacted;reason=REVIEW_REDACTED;policy_version=-;actor=alice"
        )
        for o in dropped:
            ph = by_order[o]
            assert ph.activity == "pv:withheld"
            assert ph.attr("pv:reason") == "REVIEW_DROPPED" and ph.attr("pv:actor") == "alice"
            assert ph.resource is None and {k for k, _ in ph.attributes} == {
                "pv:actor",
                "pv:position",
                "pv:reason",
            }

        # the agent stops; restarted with a hold period, the decisions stand and the rest is
        # released automatically (held longer than the period already)
        first.kill9()
        again = dep.agent("emergency", sepsis_log, *reviewed, "--hold", "1")
        sent = again.wait(120)
        assert sent["resumed_at"] == len([o for o, _ in share if o < blocked_at])
        assert sent["resumed_at"] + sent["read"] == len(share)
        for a in others:
            a.wait(120)
        counts = queue.counts()
        assert counts == {"held": 0, "released": len(share) - 2, "dropped": 2}
        assert all(it.published and not it.events for it in queue.items(state=None))
        released = queue.items(state="released")

        # the vault's results are the in-process results of exactly what was published
        expected: list[Event] = []
        for i, ev in enumerate(events):
            expected.extend(stored[i] if ev.org == "emergency" else [ev])
        reference = in_process_results(expected, SHARED / SEPSIS_MODEL, SEPSIS_RULES)
        got = dep.case_results(wait_for=len(reference), timeout=120)
        stats = vault.stop()
        final = _published(dep, "emergency")
    finally:
        if queue is not None:
            queue.close()
        dep.stop_all()
    assert [o for o, _ in final] == [o for o, _ in share]  # each item once, in order
    assert [e for _, e in final] == [e for o, _ in share for e in stored[o]]
    by_actor: dict[str | None, int] = {}
    for it in released:
        by_actor[it.actor] = by_actor.get(it.actor, 0) + 1
    assert by_actor["alice"] == 1 and by_actor["hold-timer"] >= 1
    assert {it.reason for it in released if it.actor == "hold-timer"} == {"HOLD_EXPIRED"}
    # released with nobody deciding: markers only
    assert all(stored[it.order][0].kind for it in released if it.actor is None)
    assert stats is not None and sum(stats["rejected"].values()) == 0 and stats["late"] == 0
    assert got.keys() == reference.keys()
    diff = [c for c in got if got[c] != reference[c]]
    assert not diff, (diff[:3], got[diff[0]], reference[diff[0]])

    report = verify_audit_log(audit)
    assert report.outcomes == {
        "dropped": 2,
        "redacted": 1,
        "released": by_actor["alice"] + by_actor["hold-timer"],
    }
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert {e["actor"] for e in entries if e["type"] == "open"} == {"alice", "hold-timer"}
    assert all("alice" not in json.dumps(e.get("fields", {})) for e in entries)


def test_pause_status_resume_of_a_paced_agent(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    from procvault.streams.kafka_io import read_topic

    limit = 1500
    events = _source(sepsis_log, limit)
    reference = in_process_results(events, SHARED / SEPSIS_MODEL, SEPSIS_RULES)
    control = tmp_path / "control"
    dep = Deployment(kafka_bootstrap, tmp_path / "deploy")
    ctl = ("--org", "emergency", "--control-dir", str(control))

    def records() -> int:
        topic = dep.topics.events("emergency")
        return len(asyncio.run(read_topic(dep.bootstrap, topic, committed=True, idle_timeout=2)))

    try:
        vault = dep.vault("--source-timeout", "0")
        # ~17 s of log from 12 s on (starting and attesting take a few seconds)
        pace = ("--limit", str(limit), "--rate", "100", "--start-at", str(time.time() + 12))
        agents = {
            org: dep.agent(
                org, sepsis_log, *pace, *(("--control-dir", str(control)) if org == ORGS[0] else ())
            )
            for org in ORGS
        }
        dep.wait_progress("emergency", 20, timeout=90)
        status = _cli("agent", "status", *ctl, "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["state"] == "observing"

        paused = _cli("agent", "pause", *ctl)
        assert paused.returncode == 0, paused.stderr
        assert "emergency/agent-1: paused" in paused.stdout
        state = json.loads(_cli("agent", "status", *ctl, "--json").stdout)
        assert state["state"] == "paused" and state["alive"] and state["pause_requested"]
        before, position = records(), dep.progress("emergency")
        time.sleep(3.0)
        assert records() == before and dep.progress("emergency") == position
        assert position < sum(1 for e in events if e.org == "emergency")

        resumed = _cli("agent", "resume", *ctl)
        assert resumed.returncode == 0, resumed.stderr
        assert "emergency/agent-1: observing" in resumed.stdout
        sent = {org: a.wait(300) for org, a in agents.items()}
        got = dep.case_results(wait_for=len(reference), timeout=120)
        stats = vault.stop()
        after = _cli("agent", "status", *ctl)
    finally:
        dep.stop_all()
    assert sum(s["sent"] for s in sent.values()) == len(events)
    assert "paused" in agents["emergency"].stderr() and "observing" in agents["emergency"].stderr()
    assert after.returncode == 3 and "not running" in after.stdout
    assert stats is not None and stats["late"] == 0
    assert got.keys() == reference.keys()
    diff = [c for c in got if got[c] != reference[c]]
    assert not diff, (diff[:3], got[diff[0]], reference[diff[0]])
