"""Attacks on the vault's sealed state and on its workers, against the real broker and real
``procvault vault`` processes: an attacker with Kafka access and no key re-produces an older
sealed changelog value, injects tombstones and garbage into ``vault.changelog``, or freezes a
worker until another takes its partitions over and then lets it run again. The restored state
is what the partition last committed (what was set aside is counted and named in one log
line), and the results are exactly the in-process monitor's, each once."""

from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from attack_kit import (
    T0,
    TRACE,
    Source,
    case_results,
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
from pipeline_harness import ORGS, Deployment, Proc

from procvault.monitor.findings import decode_batch, finding_to_dict
from procvault.streams.frames import open_result
from procvault.streams.secrets import OrgKeys, VaultSecrets

pytestmark = pytest.mark.timeout(300)


def _vault(dep: Deployment, worker: str = "vault-1") -> tuple[Proc, str]:
    proc = dep.vault(
        "--source-timeout", "0", "--metrics-port", "0", "--metrics-detail", worker=worker
    )
    return proc, metrics_url(proc)


def _applied(url: str) -> float:
    return scrape(url).get("procvault_events_applied_total", 0.0)


def _case_in_three_commits(dep: Deployment) -> tuple[dict[str, Source], list[Any], list[Any]]:
    """Run a vault while the first part of a case and then a second part are applied (each
    committed in its own transactions); returns the sources, the events sent and the
    changelog's records (log order, one partition)."""
    vault, url = _vault(dep)
    sources = {o: Source(dep, o) for o in ORGS}
    events = trace_events("victim-1", T0)
    sent: list[Any] = []
    for part in (events[:4], events[4:7]):
        produce(dep.bootstrap, send_cases(sources, part, close=False))
        sent.extend(part)
        n = len(sent)
        wait_until(lambda: _applied(url) >= n, "the events applied")  # noqa: B023
        time.sleep(1.0)  # (the idle commit of the merge positions)
    stats = vault.stop()
    assert stats is not None and stats["applied"] == 7
    return sources, sent, read(dep.bootstrap, dep.topics.changelog)


def _older_value(changelog: list[Any]) -> Any:
    """The attacker's pick: the first of several values under one case key (it sees the keys,
    not what they hold)."""
    counts = Counter(r.key for r in changelog if r.key.startswith(b"c"))
    key = next(k for k, n in counts.items() if n >= 2)
    return next(r for r in changelog if r.key == key)


def _finish(dep: Deployment, sources: dict[str, Source], sent: list[Any]) -> dict[str, Any]:
    rest = trace_events("victim-1", T0)[7:]
    produce(dep.bootstrap, send_cases(sources, rest))
    got = case_results(dep, ["victim-1"])
    assert got == strip_reference(reference(sent + rest))
    return got


def test_an_older_sealed_value_re_produced_before_a_restart_is_set_aside(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    try:
        sources, sent, changelog = _case_in_three_commits(dep)
        old = _older_value(changelog)
        produce(kafka_bootstrap, [(old.topic, old.key, old.value, old.partition)])
        vault, _url = _vault(dep)
        vault.wait_for("restored 1 cases")
        _finish(dep, sources, sent)
        stats = vault.stop()
        log = vault.stderr()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["stale_state"] == 1
    assert stats["applied"] == len(TRACE) + 1 - 7
    assert "set aside 1 changelog value(s) older than what the partition committed" in log


def test_tombstones_and_garbage_in_the_changelog_are_set_aside(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    try:
        sources, sent, changelog = _case_in_three_commits(dep)
        keys = sorted({r.key for r in changelog})
        injected = [(dep.topics.changelog, k, None, 0) for k in keys]  # a tombstone per key
        injected += [(dep.topics.changelog, k, b"\x01" + bytes(80), 0) for k in keys]
        injected += [(dep.topics.changelog, b"p0", b"\x00" * 16, 0)]  # not even the vault's key
        produce(kafka_bootstrap, injected)
        vault, _url = _vault(dep)
        vault.wait_for("restored 1 cases")
        _finish(dep, sources, sent)
        stats = vault.stop()
        log = vault.stderr()
    finally:
        dep.stop_all()
    assert stats is not None
    assert stats["stale_state"] == len(injected)
    assert stats["applied"] == len(TRACE) + 1 - 7
    assert f"and {len(injected)} the vault did not write" in log


def _raw_results(dep: Deployment, org: str) -> list[tuple[tuple[int, int, int], list[Any]]]:
    """Every result record of ``org`` (committed), replays included: (ident, items)."""
    keys = OrgKeys.load(dep.keys / f"org-{org}.json")
    vault = VaultSecrets.load(dep.keys / "vault.json")
    announced = {e: k.public() for e, k in vault.epochs.items()}
    topic = dep.topics.alerts(org)
    out = []
    for r in read(dep.bootstrap, topic):
        batch = decode_batch(open_result(keys.alerts, r.value, topic=topic, keys=announced))
        out.append(
            (
                (batch.partition, batch.commit, batch.chunk),
                [finding_to_dict(f) for f in batch.items],
            )
        )
    return out


def test_a_frozen_worker_is_fenced_when_it_wakes_and_nothing_is_applied_twice(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path)
    n_cases = 12
    events = [e for i in range(n_cases) for e in trace_events(f"case-{i}", T0 + timedelta(hours=i))]
    try:
        zombie, zurl = _vault(dep, worker="vault-1")
        sources = {o: Source(dep, o) for o in ORGS}
        half = [e for e in events if e.timestamp < T0 + timedelta(hours=n_cases // 2)]
        produce(kafka_bootstrap, send_cases(sources, half, close=False))
        # frozen as soon as it has applied events (most likely before their commit): its
        # session times out while it holds work it has not committed
        wait_until(lambda: _applied(zurl) >= 1, "the first events applied", 120, poll=0.005)
        zombie.popen.send_signal(signal.SIGSTOP)
        try:
            # the rest arrives meanwhile, so the heir's first commit differs from the zombie's
            rest = [e for e in events if e not in half]
            produce(kafka_bootstrap, send_cases(sources, rest))
            heir, _url = _vault(dep, worker="vault-2")
            heir.wait_for("assigned partitions [0, 1, 2]", 90)
            got = case_results(dep, [f"case-{i}" for i in range(n_cases)])
        finally:
            zombie.popen.send_signal(signal.SIGCONT)
        time.sleep(5)  # the zombie wakes up, tries to go on and finds itself fenced or expelled
        zombie.stop(60)  # (a woken zombie may be rejoining the group: its JSON is not needed)
        hstats = heir.stop(60)
        zlog, hlog = zombie.stderr(), heir.stderr()
    finally:
        dep.stop_all()
    assert hstats is not None, hlog[-3000:]
    assert got == strip_reference(reference(events))
    for org in ORGS:
        raw = _raw_results(dep, org)
        by_ident: dict[tuple[int, int, int], list[Any]] = {}
        for ident, items in raw:
            assert by_ident.setdefault(ident, items) == items, "two batches under one version"
        cases = [i["case"] for items in by_ident.values() for i in items if i["type"] == "case"]
        assert sorted(cases) == sorted(set(cases)), f"{org}: a case result twice"
    assert "revoked partitions" in zlog or "fenced" in zlog, zlog[-2000:]
