"""The release stage on aiokafka and ``procvault results`` against the real local broker.

The stage runs as ``python -m procvault release`` in a subprocess. It is killed with SIGKILL
while partials flow (after the store, after publishing, anywhere) and restarted; started again
with a fresh application id; and started after its state topic was deleted (a lost state).
Every time, the released panes come in order and complete, and every pane and window keeps the
bytes first published: nothing is noised twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from procvault.cli import main
from procvault.config.dp import load_dp_policy
from procvault.config.engines import load_engines
from procvault.monitor.findings import AlertFinding, ResultBatch, encode_batch
from procvault.monitor.privacy.combiner import PanePartials
from procvault.monitor.privacy.panes import PaneAggregate, PaneClock
from procvault.monitor.privacy.plan import ReleasePlan
from procvault.monitor.privacy.records import WithheldRecord
from procvault.streams.attestation import KeyAnnouncement, SimulatedProvider
from procvault.streams.changelog import StateKeys
from procvault.streams.envelope import VaultKeys
from procvault.streams.frames import Topics, seal_partials, seal_result
from procvault.streams.kafka_io import ensure_topics, read_topic
from procvault.streams.release import sign_record, verify_record
from procvault.streams.secrets import OrgKeys, VaultSecrets, init_keyring

pytestmark = pytest.mark.kafka

POLICY = """\
version: 1
budget: {epsilon: 1.0, window: 4, delta: 1.0e-6}
panes: {length: 1m, allowed_lateness: 0s, max_panes_per_case: 2, start: 2023-03-28T10:40:00Z}
allocation: uniform
running_totals: {statistics: [cases], levels: 8, share: 0.2}
windows: [2m]
"""
BASE = 28_000_000  # pane index of 2023-03-28 10:40 UTC with 1-minute panes
PANES = 30
PARTITIONS = 2
ACTIVITY = "register request"


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
    model = shared_data / "models" / "pm4py" / "running-example.pnml"
    plan = ReleasePlan.build(load_dp_policy(policy), load_engines(model, None).known())

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
        "model": model,
        "plan": plan,
        "dir": tmp_path,
    }


# ----------------------------------------------------------------------------- helpers
def _partials(
    d: dict[str, Any], first: int, through: int, *, plan: str | None = None
) -> list[tuple[bytes, bytes]]:
    """Both partitions' reports of panes ``first..through`` (a count in each), sealed."""
    clock = PaneClock(d["plan"].settings.panes)
    keys = StateKeys(d["secrets"])
    out = []
    for part in range(PARTITIONS):
        panes = []
        for i in range(first, through + 1):
            p = clock.pane(BASE + i)
            values = (("activity", (((ACTIVITY,), 5_000 + 100 * i + part),)),)
            panes.append(PaneAggregate(p.index, p.start, p.end, values))
        report = PanePartials(
            part,
            PARTITIONS,
            plan or d["plan"].fingerprint(),
            BASE + first,
            BASE + through,
            tuple(panes),
            opens=first == 0,
        )
        out.append(seal_partials(keys, report))
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


class _PacedProducer(threading.Thread):
    """Writes one pane's partials per transaction every ``interval`` seconds, as the vault does
    (with an aborted transaction now and then); :meth:`join` re-raises."""

    def __init__(self, d: dict[str, Any], panes: range, *, interval: float) -> None:
        super().__init__(daemon=True)
        self.d, self.panes, self.interval = d, panes, interval
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
            for n in self.panes:
                async with producer.transaction():
                    for key, value in _partials(self.d, n, n):
                        await producer.send(topic, value, key=key)
                if n % 7 == 3:
                    await producer.begin_transaction()
                    for key, value in _partials(self.d, n + 1, n + 1):
                        await producer.send_and_wait(topic, value, key=key)
                    await producer.abort_transaction()
                await asyncio.sleep(self.interval)
        finally:
            await producer.stop()

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def _read(bootstrap: str, topic: str) -> list[Any]:
    return asyncio.run(read_topic(bootstrap, topic, idle_timeout=5.0, committed=True))


def _start(d: dict[str, Any], log_name: str, *extra: str) -> Any:
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
        *extra,
    ]
    with (d["dir"] / log_name).open("wb") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: Any, *, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_for(
    d: dict[str, Any], done: Callable[[list[Any]], bool], proc: Any, *, timeout: float = 60.0
) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        records = _read(d["bootstrap"], d["topics"].aggregates)
        if done(records):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; got {len(records)} records")
        if proc is not None and proc.poll() is not None:
            log = "".join(p.read_text(errors="replace") for p in d["dir"].glob("*.log"))
            raise AssertionError(f"the release stage exited with {proc.returncode}:\n{log[-3000:]}")
        time.sleep(0.5)


def _has_panes(n: int) -> Callable[[list[Any]], bool]:
    want = {b"pane/%d" % (BASE + i) for i in range(n)}
    want |= {b"window/2/%d" % (BASE + i) for i in range(1, n)}  # published with their pane
    return lambda records: want <= {r.key for r in records}


def _one_value_per_key(records: list[Any]) -> dict[bytes, bytes]:
    """Every key's value, checking that a key published twice has the same bytes."""
    out: dict[bytes, bytes] = {}
    for r in records:
        prev = out.setdefault(r.key, r.value)
        assert prev == r.value, f"{r.key!r} published with different bytes"
    return out


def _check(d: dict[str, Any], records: list[Any], n: int) -> None:
    values = _one_value_per_key(records)
    public = {e: k.public() for e, k in d["secrets"].epochs.items()}
    panes = sorted(
        verify_record(v, public).pane.index - BASE
        for k, v in values.items()
        if k.startswith(b"pane/")
    )
    assert panes == list(range(n))
    assert max(len(r.value) for r in records) < 256 * 1024


# ----------------------------------------------------------------------------- the tests
def test_release_stage_survives_kill_9_and_a_fresh_app_id_with_the_same_noise(
    deployment: dict[str, Any],
) -> None:
    d = deployment
    producer = _PacedProducer(d, range(PANES), interval=0.15)
    stage = _start(d, "release-0.log")
    producer.start()
    try:
        for k in range(3):  # killed from outside three times while partials flow
            _wait_for(d, _has_panes(4 + 6 * k), stage)
            stage.kill()
            stage.wait(10)
            stage = _start(d, f"release-{k + 1}.log")
        producer.join(60)
        records = _wait_for(d, _has_panes(PANES), stage)
        _stop(stage)
        # a fresh application id: the same state, nothing published again with other bytes
        stage = _start(d, "release-fresh.log", "--app-id", "another-id")
        _produce(d["bootstrap"], d["topics"].partials, _partials(d, PANES, PANES + 1))
        records = _wait_for(d, _has_panes(PANES + 2), stage)
    finally:
        _stop(stage)
    _check(d, records, PANES + 2)


def test_catch_up_killed_at_random_points_finishes_with_the_same_bytes(
    deployment: dict[str, Any],
) -> None:
    """A backlog of partials is waiting when the stage starts (it catches up, many steps in a
    row); it is killed with SIGKILL at random moments (start-up, storing, publishing) and
    restarted each time; it finishes every pane, and no key is ever published with other
    bytes (no pane noised twice)."""
    d = deployment
    n = 1200
    backlog = [rec for i in range(0, n, 10) for rec in _partials(d, i, min(i + 9, n - 1))]
    _produce(d["bootstrap"], d["topics"].partials, backlog)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    step = ("--panes-per-step", "8")
    stage = _start(d, "catch-up-0.log", *step)
    try:
        for k in range(4):
            if k % 2 == 0:  # at a random time since the start (may be before it is ready)
                time.sleep(rng.uniform(0.2, 5.0))
            else:  # right after a random number of panes was published
                _wait_for(d, _has_panes(rng.randrange(20, n // 2)), stage, timeout=120)
            stage.kill()
            stage.wait(10)
            stage = _start(d, f"catch-up-{k + 1}.log", *step)
        records = _wait_for(d, _has_panes(n), stage, timeout=180)
    finally:
        _stop(stage)
    print(f"seed {seed}")
    _check(d, records, n)


def test_a_lost_state_topic_never_noises_a_published_pane_again(
    deployment: dict[str, Any],
) -> None:
    d = deployment
    _produce(d["bootstrap"], d["topics"].partials, _partials(d, 0, 9))
    stage = _start(d, "release-a.log")
    try:
        _wait_for(d, _has_panes(10), stage)
    finally:
        _stop(stage)

    async def delete_state() -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=d["bootstrap"])
        await admin.start()
        try:
            await admin.delete_topics([d["topics"].release_state])
        finally:
            await admin.close()

    asyncio.run(delete_state())
    time.sleep(2.0)
    stage = _start(d, "release-b.log")
    try:
        _produce(d["bootstrap"], d["topics"].partials, _partials(d, 10, 11))
        records = _wait_for(d, _has_panes(12), stage)
    finally:
        _stop(stage)
    _check(d, records, 12)
    log = (d["dir"] / "release-b.log").read_text()
    assert "continuing after the published pane" in log


def test_partials_of_another_plan_are_refused_with_one_line(deployment: dict[str, Any]) -> None:
    d = deployment
    _produce(d["bootstrap"], d["topics"].partials, _partials(d, 0, 2, plan="a-larger-cap-plan"))
    _produce(d["bootstrap"], d["topics"].partials, _partials(d, 0, 2))
    stage = _start(d, "release-plan.log")
    try:
        records = _wait_for(d, _has_panes(3), stage)
    finally:
        _stop(stage)
    _check(d, records, 3)
    log = (d["dir"] / "release-plan.log").read_text()
    assert log.count("refused") == 1 and "same --dp-policy" in log


# ----------------------------------------------------------------------------- results
def _results(argv: list[str]) -> int:
    return main(["results", *argv])


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
    finding = AlertFinding("c-17", "R1", "Satisfied", "Violated")
    alert = encode_batch(ResultBatch(0, 1, 0, [finding]))
    sealed = seal_result(lab.alerts_public, alert, topic=alerts, keys=secrets.current)
    other_topic = seal_result(lab.alerts_public, secret_marker, topic="x", keys=secrets.current)
    asyncio.run(ensure_topics(bootstrap, [alerts]))
    _produce(bootstrap, alerts, [(b"", sealed), (b"", sealed), (b"", other_topic)])

    base = ["--kafka", f"kafka://{bootstrap}", "--topic-prefix", topics.prefix]
    base += ["--keys", str(d["keys"]), "--timeout", "20"]
    code = _results([*base, "--json", "--org", "lab", "--allow-insecure-attestation"])
    out, err = capsys.readouterr()
    assert code == 1  # something was rejected
    lines = [json.loads(x) for x in out.splitlines()]
    aggregates = [x for x in lines if x["topic"] == topics.aggregates]
    assert [x["key"] for x in aggregates] == ["pane/0", "pane/1"]
    assert aggregates[0]["record"]["kind"] == "withheld" and aggregates[0]["epoch"] == 1
    assert [x["alert"] for x in lines if x["topic"] == alerts] == [
        {"type": "alert", "case": "c-17", "rule": "R1", "old": "Satisfied", "new": "Violated"}
    ]  # the replayed copy is shown once
    assert "SECRET" not in out + err
    assert err.count("record rejected") == 4
    assert "(bad_signature)" in err and "(malformed)" in err and "(bad_tag)" in err
    assert "4 rejected" in err and "2 republished" in err

    # Without the opt-in the simulated evidence is refused: no key, every record rejected.
    code = _results([*base])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert "announcement refused" in err and "6 rejected (1 malformed, 5 unknown_epoch)" in err

    # The readable form.
    code = _results([*base, "--allow-insecure-attestation"])
    out, _err = capsys.readouterr()
    assert "pane 0" in out and "withheld (budget)" in out
