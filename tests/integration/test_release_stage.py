"""The release stage (faust-streaming) and ``procvault results`` against the real local broker.

The stage runs as ``python -m procvault release`` in a subprocess and is killed with SIGKILL
three times: once by its own fault injection right after a durable state write and before
publishing (the window where fresh noise would otherwise be drawn again), twice from outside
while partials flow, each time restarted at once while a transactional producer keeps writing
partials (faust resumes reading the source before it seeks back to the committed offset, which
once skipped a partial and stalled every later release). The released panes must come in order,
complete, signed, and every pane and window must keep the values first drawn.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from procvault.cli import results as results_cmd
from procvault.cli.release import CRASH_ENV
from procvault.config.dp import load_dp_policy, parse_dp_policy
from procvault.monitor.privacy.mechanisms import OpenDPReleaser
from procvault.monitor.privacy.panes import PaneAggregate, PaneClock
from procvault.monitor.privacy.plan import ReleasePlan
from procvault.monitor.privacy.records import PaneRecord, WithheldRecord
from procvault.streams.attestation import KeyAnnouncement, SimulatedProvider
from procvault.streams.envelope import VaultKeys
from procvault.streams.frames import Partial, Topics, seal_partial, seal_result
from procvault.streams.kafka_io import ensure_topics, read_topic
from procvault.streams.release import record_key, sign_record, verify_record
from procvault.streams.release_stage import ReleaseCore, SourceReader
from procvault.streams.secrets import OrgKeys, VaultSecrets, init_keyring

pytestmark = pytest.mark.kafka

POLICY = """\
version: 1
budget: {epsilon: 1.0, window: 4, delta: 1.0e-6}
panes: {length: 1m, allowed_lateness: 0s, max_panes_per_case: 2}
allocation: uniform
running_totals: {statistics: [cases], levels: 8, share: 0.2}
windows: [2m]
"""
BASE = 28_000_000  # pane index of 2023-03-28 10:40 UTC with 1-minute panes
PANES = 20
PARTITIONS = 2
ACTIVITY = "register request"
PANE_SETTINGS = parse_dp_policy(yaml.safe_load(POLICY), source="test").panes


@pytest.fixture
def deployment(
    kafka_bootstrap: str, topic: str, tmp_path: Path, shared_data: Path
) -> dict[str, Any]:
    keys = tmp_path / "keys"
    init_keyring(keys, ["lab"])
    policy = tmp_path / "dp.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    secrets = VaultSecrets.load(keys / "vault.json")
    topics = Topics(topic + ".")

    async def setup() -> None:
        from aiokafka import AIOKafkaProducer

        await ensure_topics(kafka_bootstrap, [topics.keys, topics.partials, topics.aggregates])
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            ann = KeyAnnouncement.create(
                secrets, SimulatedProvider(secrets.identity), nonce=os.urandom(16)
            )
            await producer.send_and_wait(topics.keys, ann.to_bytes())
        finally:
            await producer.stop()

    asyncio.run(setup())
    return {
        "bootstrap": kafka_bootstrap,
        "keys": keys,
        "policy": policy,
        "secrets": secrets,
        "topics": topics,
        "model": shared_data / "models" / "pm4py" / "running-example.pnml",
        "dir": tmp_path,
    }


# ----------------------------------------------------------------------------- helpers
def _partials(secrets: VaultSecrets, pane: int) -> list[tuple[bytes, bytes]]:
    clock = PaneClock(PANE_SETTINGS)
    p = clock.pane(BASE + pane)
    out = []
    for part in range(PARTITIONS):
        values = (("activity", (((ACTIVITY,), 5_000 + 100 * pane + part),)),)
        agg = PaneAggregate(p.index, p.start, p.end, values)
        out.append(seal_partial(secrets.state_key, Partial(part, PARTITIONS, agg)))
    return out


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    async def run() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True
        )
        await producer.start()
        try:
            for key, value in records:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(run())


def _produce_aborted(bootstrap: str, topic: str, record: tuple[bytes, bytes]) -> None:
    async def run() -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, transactional_id=f"{topic}-aborter"
        )
        await producer.start()
        try:
            await producer.begin_transaction()
            await producer.send_and_wait(topic, record[1], key=record[0])
            await producer.abort_transaction()
        finally:
            await producer.stop()

    asyncio.run(run())


class _PacedProducer(threading.Thread):
    """Writes partials in Kafka transactions, one pane (both partitions) per transaction, one
    transaction every ``interval`` seconds, as the vault does (commit markers take offsets),
    with an aborted transaction after each of ``abort_after`` panes; :meth:`join` re-raises."""

    def __init__(
        self,
        d: dict[str, Any],
        panes: list[list[tuple[bytes, bytes]]],
        *,
        interval: float,
        abort_after: frozenset[int] = frozenset(),
    ) -> None:
        super().__init__(daemon=True)
        self.d, self.panes, self.interval, self.abort_after = d, panes, interval, abort_after
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        topic = self.d["topics"].partials
        producer = AIOKafkaProducer(
            bootstrap_servers=self.d["bootstrap"], transactional_id=f"{topic}-paced"
        )
        await producer.start()
        try:
            for n, records in enumerate(self.panes):
                async with producer.transaction():
                    for key, value in records:
                        await producer.send(topic, value, key=key)
                self.sent = n + 1
                if n in self.abort_after:
                    await producer.begin_transaction()
                    bogus = seal_partial(self.d["secrets"].state_key, _bogus_partial(n % PANES))
                    await producer.send_and_wait(topic, bogus[1], key=bogus[0])
                    await producer.abort_transaction()
                await asyncio.sleep(self.interval)
        finally:
            await producer.stop()

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def _commit_group_offset(bootstrap: str, group: str, topic: str, offset: int) -> None:
    async def run() -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.commit({tp: offset})
        finally:
            await consumer.stop()

    asyncio.run(run())


def _read(bootstrap: str, topic: str) -> list[Any]:
    return asyncio.run(read_topic(bootstrap, topic, idle_timeout=5.0))


def _start(
    d: dict[str, Any], log_name: str, *, crash_after: int | None = None, extra: tuple[str, ...] = ()
) -> Any:
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    if crash_after is not None:
        env[CRASH_ENV] = str(crash_after)
    cmd = [
        sys.executable,
        "-m",
        "procvault",
        "release",
        "--kafka",
        d["bootstrap"],
        "--topic-prefix",
        d["topics"].prefix,
        "--keys",
        str(d["keys"]),
        "--dp-policy",
        str(d["policy"]),
        "--model",
        str(d["model"]),
        "--data-dir",
        str(d["dir"] / "faust-data"),
        "--session-timeout",
        "6",
        "--instance-id",
        "release-1",
        *extra,
    ]
    with (d["dir"] / log_name).open("wb") as log:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )


def _stop(proc: Any, *, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_for(
    d: dict[str, Any], done: Callable[[list[Any]], bool], proc: Any, *, timeout: float = 40.0
) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        records = _read(d["bootstrap"], d["topics"].aggregates)
        if done(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; got keys {[r.key for r in records]}")
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the release stage exited with {proc.returncode}")
        time.sleep(0.5)


def _pane_keys(records: list[Any]) -> set[bytes]:
    return {r.key for r in records if r.key.startswith(b"pane/")}


def _has_panes(n: int) -> Callable[[list[Any]], bool]:
    want = {b"pane/%d" % (BASE + i) for i in range(n)}
    want |= {b"window/2/%d" % (BASE + i) for i in range(1, n)}  # published with their pane
    return lambda records: want <= {r.key for r in records}


# ----------------------------------------------------------------------------- the tests
def test_release_stage_survives_kill_9_with_the_same_noise(deployment: dict[str, Any]) -> None:
    d = deployment
    bootstrap, topics, secrets = d["bootstrap"], d["topics"], d["secrets"]
    started = time.monotonic()

    # Panes 0-2 from both partitions; the stage kills itself (SIGKILL) right after the third
    # durable write of released records, before publishing them. The group's offset is
    # committed past the first partial, as faust does past a gap it skipped: the stage must
    # read it back itself.
    _produce(bootstrap, topics.partials, [r for i in range(3) for r in _partials(secrets, i)])
    _commit_group_offset(bootstrap, f"{topics.prefix}procvault-release", topics.partials, 1)
    proc = _start(d, "stage-1.log", crash_after=3)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert b"partial(s) at offsets [0] of" in (d["dir"] / "stage-1.log").read_bytes()
    before = _read(bootstrap, topics.aggregates)
    assert _pane_keys(before) == {b"pane/%d" % (BASE + i) for i in range(2)}

    # What it had stored but not published: the table's changelog, opened as the stage does.
    changelog = _read(bootstrap, f"{topics.prefix}procvault-release-state-changelog")
    store: dict[bytes, bytes] = {}
    for rec in changelog:
        if rec.value is None:
            store.pop(rec.key, None)
        else:
            store[rec.key] = rec.value
    plan = ReleasePlan.build(load_dp_policy(d["policy"]), _known(d["model"]))
    unpublished = ReleaseCore(plan, OpenDPReleaser(plan), secrets, store).outbox
    assert [k for k, _v in unpublished] == [
        b"pane/%d" % (BASE + 2),
        b"window/2/%d" % (BASE + 2),
    ]

    # A partial in an aborted transaction must never count (the stage reads read_committed).
    bogus = seal_partial(secrets.state_key, _bogus_partial(3))
    _produce_aborted(bootstrap, topics.partials, bogus)

    proc = _start(d, "stage-2.log")
    try:
        after_restart = _wait_for(d, _has_panes(3), proc)
        published = {(r.key, r.value) for r in after_restart}
        assert set(unpublished) <= published  # the stored noise, byte for byte

        _produce(bootstrap, topics.partials, _partials(secrets, 3))
        _wait_for(d, _has_panes(4), proc)
        _produce(bootstrap, topics.partials, _partials(secrets, 4)[:1])
        time.sleep(0.3)
        proc.kill()  # SIGKILL from outside, with a partial of pane 4 not yet complete
        proc.wait(timeout=10)

        # Restart at once while partials keep coming (no waiting for the worker to be ready):
        # records arrive while faust starts, resumes the source and seeks it to the committed
        # offset. Transactions leave commit markers (offset gaps) and one aborted record.
        rest = [_partials(secrets, 4)[1:]] + [_partials(secrets, i) for i in range(5, PANES)]
        producer = _PacedProducer(d, rest, interval=0.5, abort_after=frozenset({2, 9}))
        proc = _start(d, "stage-3.log")
        producer.start()
        _wait_for(d, _has_panes(8), proc)
        proc.kill()  # and again, mid-stream
        proc.wait(timeout=10)
        run_dir = d["dir"] / "run"
        observed = ("--metrics-port", "0", "--run-dir", str(run_dir))
        proc = _start(d, "stage-4.log", extra=observed)
        producer.join(timeout=30)
        final = _wait_for(d, _has_panes(PANES), proc)
        metrics = _scrape(d["dir"] / "stage-4.log")
    finally:
        _stop(proc)

    # Every record verifies; panes are complete and in order; nothing has two values.
    public = {secrets.current_epoch: secrets.current.public()}
    values: dict[bytes, bytes] = {}
    first_order: list[int] = []
    for rec in final:
        record = verify_record(rec.value, public)
        assert record_key(record) == rec.key
        assert values.setdefault(rec.key, rec.value) == rec.value, rec.key
        if isinstance(record, PaneRecord | WithheldRecord) and record.pane.index not in first_order:
            first_order.append(record.pane.index)
        if isinstance(record, PaneRecord):
            activity = next(s for s in record.statistics if s.name == "activity")
            assert all(abs(e.value) < 100_000 for e in activity.known)  # no aborted 10**9
    assert first_order == [BASE + i for i in range(PANES)]
    windows = sorted(k for k in values if k.startswith(b"window/"))
    assert windows == [b"window/2/%d" % (BASE + i) for i in range(1, PANES)]
    for rec in before:  # what was published before the crash is what stays published
        assert values[rec.key] == rec.value

    # Nothing readable in the internal topics (activity names are public only in releases).
    for name in (topics.partials, f"{topics.prefix}procvault-release-state-changelog"):
        for rec in _read(bootstrap, name):
            assert ACTIVITY.encode() not in (rec.value or b"")

    # What the last stage reported (published records per kind, ledger, latency, last pane).
    assert metrics['procvault_releases_total{kind="pane"}'] >= 1
    assert metrics['procvault_releases_total{kind="window"}'] >= 1
    assert metrics["procvault_release_latency_seconds_count"] >= 1
    spent = metrics["procvault_privacy_epsilon_spent"]
    assert 0 < spent <= 1.0
    assert spent + metrics["procvault_privacy_epsilon_remaining"] == pytest.approx(1.0)
    last = verify_record(values[b"pane/%d" % (BASE + PANES - 1)], public)
    assert isinstance(last, PaneRecord)
    cases = {e.key[0]: e.value for s in last.statistics if s.name == "cases" for e in s.known}
    for outcome, value in cases.items():
        assert metrics[f'procvault_released_pane_cases{{outcome="{outcome}"}}'] == value
    assert (run_dir / "release-1" / "memory_usage.csv").read_text().count("\n") >= 2
    assert time.monotonic() - started < 60


def _scrape(log: Path) -> dict[str, float]:
    """The samples of the stage's metrics endpoint (its address is on the stage's stderr)."""
    import re
    import urllib.request

    match = re.search(rb"metrics at (http://\S+)", log.read_bytes())
    assert match, f"no metrics address in {log}"
    with urllib.request.urlopen(match.group(1).decode(), timeout=5) as resp:
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _known(model: Path) -> Any:
    from procvault.cli.monitor import load_engines
    from procvault.cli.pipeline import known_keys

    m, _net, rules = load_engines(str(model), None)
    return known_keys(m, rules)


def _bogus_partial(pane: int) -> Partial:
    p = PaneClock(PANE_SETTINGS).pane(BASE + pane)
    agg = PaneAggregate(p.index, p.start, p.end, (("activity", (((ACTIVITY,), 10**9),)),))
    return Partial(0, PARTITIONS, agg)


def test_source_reader_reads_committed_records_of_a_range(kafka_bootstrap: str, topic: str) -> None:
    """What the stage reads back to fill a gap: committed records only, in order; a range of
    commit markers and aborted records holds nothing."""

    async def run() -> None:
        from aiokafka import AIOKafkaProducer

        await ensure_topics(kafka_bootstrap, [topic])
        plain = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        tx = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=topic)
        await plain.start()
        await tx.start()
        try:
            first = (await plain.send_and_wait(topic, b"v", key=b"k")).offset
            async with tx.transaction():  # two records and a commit marker
                futures = [await tx.send(topic, b"v", key=b"k") for _ in range(2)]
            in_tx = [(await f).offset for f in futures]
            await tx.begin_transaction()  # an aborted record and its marker
            await tx.send_and_wait(topic, b"aborted", key=b"k")
            await tx.abort_transaction()
            last = (await plain.send_and_wait(topic, b"v", key=b"k")).offset
        finally:
            await tx.stop()
            await plain.stop()
        assert [first, *in_tx] == [0, 1, 2]
        assert last > 3  # the commit marker at 3, at least the aborted record after it
        reader = SourceReader(kafka_bootstrap, topic)
        try:
            got = []
            for start, end in [(None, last), (3, last), (1, 2), (2, last), (0, 0)]:
                recs = await reader.read(0, start, end)
                assert all(r.value == b"v" for r in recs)
                got.append([r.offset for r in recs])
        finally:
            await reader.close()
        assert got == [[0, 1, 2], [], [1], [2], []]

    asyncio.run(run())


# ----------------------------------------------------------------------------- results
def _results(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="procvault")
    results_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["results", *argv])
    return int(args.func(args))


def test_results_verifies_aggregates_and_opens_the_orgs_alerts(
    deployment: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    d = deployment
    bootstrap, topics, secrets = d["bootstrap"], d["topics"], d["secrets"]
    from datetime import UTC, datetime

    from procvault.monitor.privacy.records import PaneInfo

    t = datetime(2024, 1, 1, tzinfo=UTC)
    good = [
        sign_record(WithheldRecord(pane=PaneInfo(i, t, t), reason="budget"), secrets.current)
        for i in range(2)
    ]
    secret_marker = b"SECRET-CONTENT"
    forged_keys = VaultKeys.generate(epoch=secrets.current_epoch)
    forged = sign_record(WithheldRecord(pane=PaneInfo(99, t, t), reason="budget"), forged_keys)
    flipped = good[1][:-3] + (b"1" if good[1][-3:-2] == b"0" else b"0") + good[1][-2:]
    junk = b"not an envelope " + secret_marker
    _produce(
        bootstrap,
        topics.aggregates,
        [
            (b"pane/0", good[0]),
            (b"pane/99", forged),
            (b"pane/1", good[1]),
            (b"pane/1", good[1]),  # republished after a restart: shown once
            (b"pane/7", flipped),
            (b"junk", junk),
        ],
    )
    lab = OrgKeys.load(d["keys"] / "org-lab.json")
    alerts = topics.alerts("lab")
    alert = b'{"type":"alert","rule":"R1","case":"c-17"}'
    sealed = seal_result(lab.alerts_public, alert, topic=alerts, keys=secrets.current)
    other_topic = seal_result(lab.alerts_public, secret_marker, topic="x", keys=secrets.current)
    asyncio.run(ensure_topics(bootstrap, [alerts]))
    _produce(bootstrap, alerts, [(b"", sealed), (b"", other_topic)])

    base = ["--kafka", f"kafka://{bootstrap}", "--topic-prefix", topics.prefix]
    base += ["--keys", str(d["keys"]), "--timeout", "20"]
    code = _results([*base, "--json", "--org", "lab", "--allow-insecure-attestation"])
    out, err = capsys.readouterr()
    assert code == 1  # something was rejected
    lines = [json.loads(x) for x in out.splitlines()]
    aggregates = [x for x in lines if x["topic"] == topics.aggregates]
    assert [x["key"] for x in aggregates] == ["pane/0", "pane/1"]
    assert aggregates[0]["record"]["kind"] == "withheld" and aggregates[0]["epoch"] == 1
    assert [x["alert"] for x in lines if x["topic"] == alerts] == [json.loads(alert)]
    assert "SECRET" not in out + err
    assert err.count("record rejected") == 4
    assert "(bad_signature)" in err and "(malformed)" in err and "(bad_tag)" in err
    assert "4 rejected" in err and "1 republished" in err

    # Without the opt-in the simulated evidence is refused: no key, every record rejected.
    code = _results([*base])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "announcement refused" in err and "6 rejected (1 malformed, 5 unknown_epoch)" in err

    # The readable form.
    code = _results([*base, "--allow-insecure-attestation"])
    out, _err = capsys.readouterr()
    assert "pane 0" in out and "withheld (budget)" in out
