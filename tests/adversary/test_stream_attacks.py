"""Attacks on the organizations' streams, against the real broker and a real ``procvault
vault`` process: an attacker with read and write access to every topic and no key copies,
re-produces and forges records; each is refused and counted (or harmless), and the genuine
events around them give exactly what the in-process monitor computes from them."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from attack_kit import (
    T0,
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
from pipeline_harness import ORGS, Deployment

from procvault.monitor.event import Event

pytestmark = pytest.mark.timeout(300)


def _vault(dep: Deployment) -> tuple[object, str]:
    proc = dep.vault("--source-timeout", "0", "--metrics-port", "0", "--metrics-detail")
    return proc, metrics_url(proc)


def _rejected(url: str, reason: str) -> float:
    return scrape(url).get(f'procvault_records_rejected_total{{reason="{reason}"}}', 0.0)


def _no_after_completion(dep: Deployment) -> None:
    for org in ORGS:
        kinds = [i.get("kind") for i in dep.results(org) if i["type"] == "deviation"]
        assert "after_completion" not in kinds, org


def test_replayed_records_of_completed_cases_are_refused_also_after_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    try:
        vault, url = _vault(dep)
        sources = {o: Source(dep, o) for o in ORGS}
        first = trace_events("victim-1", T0) + trace_events("bystander-1", T0 + timedelta(hours=1))
        # promising (not closing) heartbeats: the streams go on after the restart, so the later
        # case's events still meet in the merge whichever topic the vault reads first
        produce(kafka_bootstrap, send_cases(sources, first, close=False))
        assert case_results(dep, ["victim-1", "bystander-1"]) == strip_reference(reference(first))
        # the attacker re-produces every record of every organization's stream, as it is
        genuine = [r for o in ORGS for r in read(kafka_bootstrap, dep.topics.events(o))]
        produce(kafka_bootstrap, copies(genuine))
        wait_until(lambda: _rejected(url, "replay") >= len(genuine), "the replays refused")
        stats = vault.stop()
        assert stats is not None
        assert stats["rejected"]["replay"] == len(genuine)
        assert stats["applied"] == len(first)  # every genuine event (and end marker) once
        assert stats["after_completion"] == 0
        # ... and again after a restart, between genuine events of a later case
        vault, url = _vault(dep)
        produce(kafka_bootstrap, copies(genuine))
        later = trace_events("later-2", T0 + timedelta(days=1))
        produce(kafka_bootstrap, send_cases(sources, later))
        got = case_results(dep, ["victim-1", "bystander-1", "later-2"])
        wait_until(lambda: _rejected(url, "replay") >= len(genuine), "the replays refused")
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["rejected"]["replay"] == len(genuine)
    assert stats["applied"] == len(later)
    assert stats["after_completion"] == 0
    assert got == strip_reference(reference(first + later))
    _no_after_completion(dep)
    # each organization's results show each case once
    for org in ORGS:
        cases = [i["case"] for i in dep.results(org) if i["type"] == "case"]
        assert sorted(cases) == sorted(set(cases)), org


def test_a_record_copied_into_another_partition_is_refused(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    try:
        vault, url = _vault(dep)
        sources = {o: Source(dep, o) for o in ORGS}
        events = trace_events("victim-1", T0) + trace_events("bystander-1", T0 + timedelta(hours=1))
        records = send_cases(sources, events)
        # every genuine record is also copied into each other partition of its topic, at once
        moved = [
            (topic, key, value, q)
            for topic, key, value, p in records
            for q in range(dep.partitions)
            if q != p
        ]
        produce(
            kafka_bootstrap, [x for pair in zip(records, moved[::2], strict=False) for x in pair]
        )
        produce(kafka_bootstrap, moved[1::2])
        got = case_results(dep, ["victim-1", "bystander-1"])
        wait_until(lambda: _rejected(url, "bad_tag") >= len(moved), "the copies refused")
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["rejected"]["bad_tag"] == len(moved)
    assert stats["applied"] == len(events)
    assert got == strip_reference(reference(events))  # no phantom second instance
    for org in ORGS:
        devs = [i for i in dep.results(org) if i["type"] == "deviation"]
        assert all(d["kind"] != "missing_tokens" or d["case"] in got for d in devs)


def test_replayed_closed_heartbeats_complete_no_case(kafka_bootstrap: str, tmp_path: Path) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    try:
        vault, url = _vault(dep)
        sources = {o: Source(dep, o) for o in ORGS}
        first = trace_events("earlier-1", T0)
        produce(kafka_bootstrap, send_cases(sources, first))  # ... closed heartbeats at the end
        case_results(dep, ["earlier-1"])
        # the last record of every partition of every stream: the closing heartbeats
        beats = []
        for o in ORGS:
            last: dict[int, object] = {}
            for r in read(kafka_bootstrap, dep.topics.events(o)):
                last[r.partition] = r
            beats.extend(last.values())
        # a later run: open cases, the streams promise more to come
        later = trace_events("open-2", T0 + timedelta(days=1), end=False) + trace_events(
            "open-3", T0 + timedelta(days=1, hours=1), end=False
        )
        produce(kafka_bootstrap, send_cases(sources, later, close=False))
        produce(kafka_bootstrap, copies(beats))  # the old `closed` heartbeats, replayed
        wait_until(lambda: _rejected(url, "replay") >= len(beats), "the replays refused")
        early = {c for c in case_results(dep, ["open-2", "open-3"], timeout=3)}
        # the genuine ends come later, after everything their sources sent (open-2's own end
        # time would sort below open-3's events: where the two cases share a partition, the
        # keyed placement decides, the guard refuses it as resent and the flush completes it)
        open2_end = trace_events("open-2", T0 + timedelta(days=1))[-1]
        ends = [
            trace_events("open-3", T0 + timedelta(days=1, hours=1))[-1],
            Event.case_end("open-2", T0 + timedelta(days=1, hours=2), org=open2_end.org),
        ]
        produce(kafka_bootstrap, send_cases(sources, ends))
        got = case_results(dep, ["open-2", "open-3"])
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    assert len(beats) == len(ORGS) * dep.partitions
    assert stats["rejected"]["replay"] == len(beats)
    assert early == set(), "a replayed heartbeat completed a case"
    assert {c: r["completed_by"] for c, r in got.items()} == {
        "open-2": "end_marker",
        "open-3": "end_marker",
    }
    assert got == strip_reference(reference(later + ends))


def test_a_flood_of_forged_records_is_counted_and_good_events_go_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    n = 3000
    try:
        vault, url = _vault(dep)
        # first only forgeries: batches that commit nothing must count them too
        topic = dep.topics.events("emergency")
        forged = [(topic, None, os.urandom(40 + i % 300), i % dep.partitions) for i in range(n)]
        sources = {o: Source(dep, o) for o in ORGS}
        events = trace_events("victim-1", T0) + trace_events("bystander-1", T0 + timedelta(hours=1))
        records = send_cases(sources, events)
        template = records[0][2]
        assert template is not None
        # forgeries with a genuine header (a valid header tag) and a body of random bytes
        lookalike = [
            (topic, None, template[:-64] + os.urandom(64), i % dep.partitions) for i in range(n)
        ]
        produce(kafka_bootstrap, forged)
        wait_until(
            lambda: (
                sum(
                    _rejected(url, r)
                    for r in ("malformed", "bad_tag", "unknown_org", "unknown_epoch")
                )
                >= n
            ),
            "the forgeries counted",
            timeout=120,
        )
        produce(kafka_bootstrap, lookalike + records)
        got = case_results(dep, ["victim-1", "bystander-1"])
        wait_until(
            lambda: (
                sum(
                    _rejected(url, r)
                    for r in ("malformed", "bad_tag", "unknown_org", "unknown_epoch")
                )
                >= 2 * n
            ),
            "the forgeries counted",
            timeout=120,
        )
        samples = scrape(url)
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert stats is not None
    rejected = stats["rejected"]
    assert sum(rejected.values()) == 2 * n
    assert rejected["bad_tag"] >= n  # every look-alike fails its header tag
    for reason, count in rejected.items():
        assert samples.get(f'procvault_records_rejected_total{{reason="{reason}"}}', 0) == count
    assert stats["applied"] == len(events)
    assert got == strip_reference(reference(events))
