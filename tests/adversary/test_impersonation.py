"""Impersonating the vault, against the real local broker: someone with read and write access
to the topics and no key of the deployment answers the agents' challenges with keys of its own.
Agents (``procvault agent``) and readers (``procvault results``) refuse it, in simulated and in
hardware mode, because every announcement must chain to the vault identity pinned in
``registry.json``. The hardware path runs through the CLI on the real SGX and TDX quotes
(``../shared/data/attestation``) served by a folder laid out like configfs-tsm or Gramine's
``/dev/attestation``. Also: the genuine vault is trusted (with one loud warning when its evidence
is simulated), forged answers beside it change nothing, and its attestation responder is
rate-limited."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_harness import Deployment, Proc, last_json

from procvault.monitor.privacy.records import PaneInfo, WithheldRecord
from procvault.streams.attestation import (
    AttestationError,
    Evidence,
    KeyAnnouncement,
    SimulatedProvider,
    SimulatedVerifier,
    report_data,
)
from procvault.streams.frames import Topics
from procvault.streams.provisioning import attest_vault
from procvault.streams.release import record_key, sign_record
from procvault.streams.secrets import Registry, VaultSecrets

pytestmark = pytest.mark.timeout(300)

TDX_NOW, SGX_NOW, OUTDATED_NOW = 1_750_330_000, 1_750_331_000, 1_771_412_400
TDX_REGISTERS = {
    "mrtd": "mr_td",
    "rtmr0": "rt_mr0",
    "rtmr1": "rt_mr1",
    "rtmr2": "rt_mr2",
    "rtmr3": "rt_mr3",
    "mrconfigid": "mr_config_id",
    "mrowner": "mr_owner",
}


# ----------------------------------------------------------------------------- the adversary
class FakeVault:
    """Answers every nonce on ``vault.attest`` with ``answer(nonce)`` (a list of record
    values), from a thread of its own, until the ``with`` block ends."""

    def __init__(self, bootstrap: str, topics: Topics, answer: Callable[[bytes], list[bytes]]):
        self.bootstrap, self.topics, self.answer = bootstrap, topics, answer
        self.answered = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from procvault.streams.kafka_io import ensure_topics

        await ensure_topics(self.bootstrap, [self.topics.attest, self.topics.keys])
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await consumer.start()
        await producer.start()
        try:
            tp = TopicPartition(self.topics.attest, 0)
            consumer.assign([tp])
            await consumer.seek_to_end(tp)
            await consumer.position(tp)
            self._ready.set()
            while not self._stop.is_set():
                batch = await consumer.getmany(tp, timeout_ms=100)
                for rec in batch.get(tp, ()):
                    for value in self.answer(rec.value):
                        await producer.send_and_wait(self.topics.keys, value)
                    self.answered += 1
        finally:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await consumer.stop()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await producer.stop()

    def __enter__(self) -> FakeVault:
        self._thread.start()
        assert self._ready.wait(30), "the fake vault did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


class QuoteProvider:
    """Evidence made of a fixed (real) hardware quote, whatever the report data."""

    def __init__(self, kind: str, quote: bytes) -> None:
        self.kind, self.quote = kind, quote

    def evidence(self, report_data: bytes) -> Evidence:
        return Evidence(self.kind, report_data, self.quote)


def impersonator_answers(
    genuine: VaultSecrets, provider: Any = None
) -> Callable[[bytes], list[bytes]]:
    """Every answer someone without the vault identity can make for a nonce: keys certified by
    an identity of its own, the genuine (public) certificate re-signed by its own epoch key, and
    bytes that are no announcement at all (a float epoch, wrong types, not JSON)."""
    mallory = VaultSecrets.generate()
    own = provider or SimulatedProvider(mallory.identity)

    def answer(nonce: bytes) -> list[bytes]:
        out = [KeyAnnouncement.create(mallory, own, nonce=nonce).to_bytes()]
        cert = genuine.certificate()  # public: it is in every genuine announcement
        identity = genuine.identity_public
        ev = own.evidence(report_data(cert.keys, nonce, identity))
        unsigned = KeyAnnouncement(cert, identity, nonce, time.time(), ev, b"")
        out.append(
            KeyAnnouncement(
                cert,
                identity,
                nonce,
                unsigned.issued_at,
                ev,
                mallory.current.sign(unsigned.payload()),
            ).to_bytes()
        )
        good = json.loads(out[0])
        payload = json.loads(good["payload"])
        payload["certificate"]["epoch"] = 1.5
        good["payload"] = json.dumps(payload)
        out += [json.dumps(good).encode(), b'{"epoch": 1.5, "x25519": 7}', b"\xff\x00 not json"]
        return out

    return answer


# ----------------------------------------------------------------------------- helpers
def _agent(dep: Deployment, log: Path, *extra: str, name: str = "agent", env: Any = None) -> Proc:
    return dep.start(
        name,
        "agent",
        *dep._common(),
        "--org",
        "lab",
        "--from",
        str(log),
        "--control-dir",
        str(dep.root / f"control-{name}-{len(dep.procs)}"),
        *extra,
        env=env,
    )


def _finish(proc: Proc, timeout: float = 90) -> tuple[int, str]:
    rc = proc.popen.wait(timeout)
    return rc, proc.stderr()


def _error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("procvault: error: ")]
    assert len(errors) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def _topic_records(bootstrap: str, topic: str) -> int:
    from procvault.streams.kafka_io import read_topic

    try:
        return len(asyncio.run(read_topic(bootstrap, topic, idle_timeout=2.0)))
    except Exception:  # the topic was never created: nothing was sent
        return 0


def _quote_body(shared_data: Path, name: str, now: int) -> dict[str, Any]:
    import dcap_qvl

    d = shared_data / "attestation"
    col = dcap_qvl.QuoteCollateralV3.from_json((d / f"{name}_collateral.json").read_text())
    result = json.loads(dcap_qvl.verify((d / name).read_bytes(), col, now).to_json())
    body = next(iter(result["report"].values()))
    while "report_data" not in body:
        body = body["base"]
    return body  # type: ignore[no-any-return]


def _policy_file(
    root: Path, shared_data: Path, quote: str, now: int, name: str = "policy.yaml", **changes: Any
) -> Path:
    """An attestation policy pinning the measurements of the real ``quote``, with offline
    collateral verified as of ``now`` (the samples' collateral is from 2025-2026)."""
    d = shared_data / "attestation"
    body = _quote_body(shared_data, quote, now)
    if quote.startswith("tdx"):
        policy: dict[str, Any] = {
            "kind": "tdx",
            "measurements": {n: body[f] for n, f in TDX_REGISTERS.items()},
        }
    else:
        policy = {"kind": "sgx", "measurements": {"mrenclave": body["mr_enclave"]}}
    policy["measurements"].update(changes.pop("measurements", {}))
    policy.update(changes)
    policy["collateral"] = {"file": str(d / f"{quote}_collateral.json"), "verify_at": now}
    path = root / name
    path.write_text(yaml.safe_dump(policy))
    return path


@contextlib.contextmanager
def fake_configfs_tsm(root: Path, quote: list[Path]) -> Iterator[Path]:
    """A folder laid out like ``/sys/kernel/config/tsm/report``: every entry created in it gets
    ``provider`` (``tdx_guest``) and an ``outblob`` with the quote ``quote[0]`` names (what the
    kernel does on ``mkdir``; the list can be changed while it runs)."""
    root.mkdir()
    stop = threading.Event()

    def kernel() -> None:
        while not stop.is_set():
            for entry in root.iterdir():
                if entry.is_dir() and not (entry / "provider").exists():
                    (entry / "outblob").write_bytes(quote[0].read_bytes())
                    (entry / "provider").write_text("tdx_guest\n")
            stop.wait(0.002)

    t = threading.Thread(target=kernel, daemon=True)
    t.start()
    try:
        yield root
    finally:
        stop.set()
        t.join(10)


# ----------------------------------------------------------------------------- agents
def test_agent_refuses_an_impersonator_in_simulated_mode(
    kafka_bootstrap: str, tmp_path: Path, running_example_log: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    genuine = VaultSecrets.load(dep.keys / "vault.json")
    try:
        with FakeVault(kafka_bootstrap, dep.topics, impersonator_answers(genuine)) as fake:
            agent = _agent(
                dep,
                running_example_log,
                "--allow-insecure-attestation",
                "--attestation-timeout",
                "8",
            )
            rc, err = _finish(agent)
            assert fake.answered >= 1
    finally:
        dep.stop_all()
    assert rc == 1
    line = _error_line(err)
    assert "no valid key announcement bound to this nonce within 8 s" in line
    assert "not certified by the pinned vault identity" in line
    assert "not signed by the certified epoch key" in line
    assert "not a key announcement" in line
    assert "trusting SIMULATED" not in err
    assert _topic_records(kafka_bootstrap, dep.topics.events("lab")) == 0


def test_agent_refuses_an_impersonator_in_hardware_mode(
    kafka_bootstrap: str, tmp_path: Path, running_example_log: Path, shared_data: Path
) -> None:
    """The impersonator relays a real, verifying TDX quote: without the identity it still
    fails the chain, before any evidence is looked at."""
    pytest.importorskip("dcap_qvl")
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    genuine = VaultSecrets.load(dep.keys / "vault.json")
    quote = (shared_data / "attestation" / "tdx_quote").read_bytes()
    policy = _policy_file(tmp_path, shared_data, "tdx_quote", TDX_NOW)
    answers = impersonator_answers(genuine, QuoteProvider("tdx-dcap", quote))
    try:
        with FakeVault(kafka_bootstrap, dep.topics, answers):
            agent = _agent(
                dep,
                running_example_log,
                "--attestation-policy",
                str(policy),
                "--attestation-timeout",
                "8",
            )
            rc, err = _finish(agent)
    finally:
        dep.stop_all()
    assert rc == 1
    line = _error_line(err)
    assert "not certified by the pinned vault identity" in line
    assert _topic_records(kafka_bootstrap, dep.topics.events("lab")) == 0


def test_the_genuine_vault_is_trusted_with_one_loud_warning_despite_forged_answers(
    kafka_bootstrap: str, tmp_path: Path, running_example_log: Path
) -> None:
    """Beside the genuine vault, an impersonator answers every nonce (forged announcements,
    a float epoch, non-JSON): the agent ignores them, re-verifies every second, warns once that
    it trusts simulated evidence and sends everything. The environment variable that switches
    the opt-in on is named in that warning."""
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    genuine = VaultSecrets.load(dep.keys / "vault.json")
    try:
        dep.vault("--source-timeout", "0")
        with FakeVault(kafka_bootstrap, dep.topics, impersonator_answers(genuine)):
            flag = _agent(
                dep,
                running_example_log,
                "--allow-insecure-attestation",
                "--reattest-interval",
                "1",
                "--rate",
                "12",
                name="flag",
            )
            rc, err = _finish(flag)
            assert rc == 0, err[-3000:]
            env = _agent(
                dep,
                running_example_log,
                "--producer",
                "agent-env",
                name="env",
                env={"PROCVAULT_ALLOW_INSECURE_ATTESTATION": "1"},
            )
            rc_env, err_env = _finish(env)
            assert rc_env == 0, err_env[-3000:]
    finally:
        dep.stop_all()
    stats = last_json(err)
    assert stats is not None and stats["sent"] > 0 and stats["read"] == stats["sent"]
    assert err.count("WARNING: trusting SIMULATED attestation evidence") == 1
    assert "accepted because of --allow-insecure-attestation" in err
    assert "announcement refused (not_pinned)" in err  # the forged answers were seen, counted
    assert err.count("announcement refused (not_pinned)") == 1  # ... and said once
    assert "Traceback" not in err
    assert err_env.count("WARNING: trusting SIMULATED attestation evidence") == 1
    assert "PROCVAULT_ALLOW_INSECURE_ATTESTATION=1 in the environment" in err_env


def test_agent_refuses_simulated_evidence_without_opt_in(
    kafka_bootstrap: str, tmp_path: Path, running_example_log: Path
) -> None:
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    try:
        dep.vault()
        rc, err = _finish(_agent(dep, running_example_log, "--attestation-timeout", "30"))
    finally:
        dep.stop_all()
    assert rc == 1
    assert "simulated-INSECURE evidence refused" in _error_line(err)
    assert _topic_records(kafka_bootstrap, dep.topics.events("lab")) == 0


def test_agent_stops_sending_when_re_verification_fails(
    kafka_bootstrap: str, tmp_path: Path, running_example_log: Path
) -> None:
    """The vault goes away while the agent runs: the next re-verification gets no answer, the
    agent stops (its open transaction aborted) and says why."""
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    try:
        vault = dep.vault()
        agent = _agent(
            dep,
            running_example_log,
            "--allow-insecure-attestation",
            "--reattest-interval",
            "2",
            "--attestation-timeout",
            "4",
            "--rate",
            "2",
        )
        agent.wait_for("trusting SIMULATED", 60)
        vault.stop()
        rc, err = _finish(agent, 60)
        sent_before_the_end = dep.progress("lab")
    finally:
        dep.stop_all()
    assert rc == 1
    line = _error_line(err)
    assert "the vault is no longer trusted: no valid key announcement bound to this nonce" in line
    assert sent_before_the_end < 42  # the running example has 42 events: it did not finish


# ----------------------------------------------------------------------------- hardware, CLI
def test_hardware_vault_through_the_cli_tdx_policy_passes_and_fails_as_configured(
    kafka_bootstrap: str, tmp_path: Path, running_example_log: Path, shared_data: Path
) -> None:
    """``procvault vault --attestation tdx`` reads a real TDX quote from a configfs-tsm folder.
    With the quote's own measurements the policy's measurement and TCB checks pass and the
    agent refuses only because the quote's report data does not bind the vault's keys (a real
    quote over our keys needs a real TD); a wrong RTMR or MROWNER, and the outdated TCB of the
    other sample, fail with one-line reasons. ``procvault results`` refuses its announcements
    the same way, without a traceback."""
    pytest.importorskip("dcap_qvl")
    d = shared_data / "attestation"
    served = [d / "tdx_quote"]
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    cases = [
        ("right", _policy_file(tmp_path, shared_data, "tdx_quote", TDX_NOW, "right.yaml"),
         "evidence does not bind the announced keys, epoch and nonce"),
        ("rtmr2", _policy_file(tmp_path, shared_data, "tdx_quote", TDX_NOW, "rtmr2.yaml",
                               measurements={"rtmr2": "ab" * 48}),
         "RTMR2 d833feef2cd94514... is not in the policy"),
        ("mrowner", _policy_file(tmp_path, shared_data, "tdx_quote", TDX_NOW, "mrowner.yaml",
                                 measurements={"mrowner": "01" * 48}),
         "MROWNER 0000000000000000... is not in the policy"),
    ]  # fmt: skip
    outcomes: dict[str, tuple[int, str]] = {}
    try:
        with fake_configfs_tsm(tmp_path / "tsm", served) as tsm:
            dep.vault("--attestation", "tdx", "--attestation-dir", str(tsm))
            for name, policy, _ in cases:
                agent = _agent(dep, running_example_log, "--attestation-policy", str(policy),
                               "--attestation-timeout", "30", name=name)  # fmt: skip
                outcomes[name] = _finish(agent)
            # the outdated sample (another platform's TCB level, its own collateral)
            served[0] = d / "tdx_quote_outdated"
            outdated = tmp_path / "outdated.yaml"
            policy = yaml.safe_load((tmp_path / "right.yaml").read_text())
            policy["collateral"] = {
                "file": str(d / "tdx_quote_outdated_collateral.json"),
                "verify_at": OUTDATED_NOW,
            }
            outdated.write_text(yaml.safe_dump(policy))
            agent = _agent(dep, running_example_log, "--attestation-policy", str(outdated),
                           "--attestation-timeout", "30", name="outdated")  # fmt: skip
            outcomes["outdated"] = _finish(agent)
            served[0] = d / "tdx_quote"
            asyncio.run(_ensure(kafka_bootstrap, dep.topics.aggregates))
            results = dep.start("results", "results", "--kafka", kafka_bootstrap, "--keys",
                                str(dep.keys), "--topic-prefix", dep.prefix,
                                "--attestation-policy", str(tmp_path / "right.yaml"))  # fmt: skip
            _, results_err = _finish(results)
    finally:
        dep.stop_all()
    for name, _, reason in cases:
        rc, err = outcomes[name]
        assert rc == 1, (name, err[-2000:])
        assert _error_line(err).endswith(reason), (name, _error_line(err))
    rc, err = outcomes["outdated"]
    assert rc == 1 and "No matching TCB level found" in _error_line(err)
    assert "WARNING" in err and "verify_at" in err  # the pinned verification time is said
    assert _topic_records(kafka_bootstrap, dep.topics.events("lab")) == 0
    assert "Traceback" not in results_err
    assert "refused (evidence)" in results_err and "does not bind" in results_err


def test_hardware_vault_through_the_cli_sgx_gramine(
    kafka_bootstrap: str, tmp_path: Path, running_example_log: Path, shared_data: Path
) -> None:
    """``procvault vault --attestation gramine-sgx`` reads the real SGX quote from a folder
    laid out like ``/dev/attestation``: refused for its TCB status by a strict policy, and for
    the key binding by one that accepts the status."""
    pytest.importorskip("dcap_qvl")
    gramine = tmp_path / "attestation"
    gramine.mkdir()
    (gramine / "quote").write_bytes((shared_data / "attestation" / "sgx_quote").read_bytes())
    (gramine / "attestation_type").write_text("dcap\n")
    strict = _policy_file(tmp_path, shared_data, "sgx_quote", SGX_NOW, "strict.yaml")
    relaxed = _policy_file(
        tmp_path, shared_data, "sgx_quote", SGX_NOW, "relaxed.yaml",
        tcb_statuses=["UpToDate", "ConfigurationAndSWHardeningNeeded"],
    )  # fmt: skip
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    try:
        dep.vault("--attestation", "gramine-sgx", "--attestation-dir", str(gramine))
        out = {}
        for name, policy in (("strict", strict), ("relaxed", relaxed)):
            agent = _agent(dep, running_example_log, "--attestation-policy", str(policy),
                           "--attestation-timeout", "30", name=name)  # fmt: skip
            out[name] = _finish(agent)
    finally:
        dep.stop_all()
    assert (gramine / "user_report_data").stat().st_size == 64  # the vault asked for its keys
    rc, err = out["strict"]
    assert rc == 1
    assert "TCB status ConfigurationAndSWHardeningNeeded is not accepted" in _error_line(err)
    rc, err = out["relaxed"]
    assert rc == 1
    assert _error_line(err).endswith("evidence does not bind the announced keys, epoch and nonce")


# ----------------------------------------------------------------------------- readers
async def _ensure(bootstrap: str, topic: str) -> None:
    from procvault.streams.kafka_io import ensure_topics

    await ensure_topics(bootstrap, [topic])


async def _publish(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    from procvault.streams.kafka_io import ensure_topics

    await ensure_topics(bootstrap, sorted({t for t, _, _ in records}))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


@pytest.mark.parametrize("mode", ["simulated", "hardware"])
def test_results_refuses_an_impersonators_keys_and_its_records(
    kafka_bootstrap: str, tmp_path: Path, shared_data: Path, mode: str
) -> None:
    """An impersonator announces keys of its own (with simulated evidence of its own identity,
    or a real TDX quote) and publishes an aggregate signed with them, next to a float epoch and
    non-JSON on ``vault.keys``: ``procvault results`` takes no key from it, rejects the record
    and exits 1, with one-line warnings and no traceback. The genuine vault's announcement and
    record, in simulated mode, are accepted and shown."""
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    genuine = VaultSecrets.load(dep.keys / "vault.json")
    mallory = VaultSecrets.generate()
    if mode == "hardware":
        pytest.importorskip("dcap_qvl")
        quote = (shared_data / "attestation" / "tdx_quote").read_bytes()
        provider: Any = QuoteProvider("tdx-dcap", quote)
        opts = [
            "--attestation-policy",
            str(_policy_file(tmp_path, shared_data, "tdx_quote", TDX_NOW)),
        ]
    else:
        provider = SimulatedProvider(mallory.identity)
        opts = ["--allow-insecure-attestation"]
    t = datetime(2024, 1, 1, tzinfo=UTC)
    forged = WithheldRecord(pane=PaneInfo(7, t, t), reason="budget")
    fake_ann = KeyAnnouncement.create(mallory, provider, nonce=os.urandom(16)).to_bytes()
    float_epoch = json.loads(fake_ann)
    payload = json.loads(float_epoch["payload"])
    payload["certificate"]["epoch"] = 1.0
    float_epoch["payload"] = json.dumps(payload)
    records: list[tuple[str, bytes | None, bytes]] = [
        (dep.topics.keys, None, fake_ann),
        (dep.topics.keys, None, json.dumps(float_epoch).encode()),
        (dep.topics.keys, None, b"\x00\x01 not json"),
        (dep.topics.aggregates, record_key(forged), sign_record(forged, mallory.current)),
    ]
    if mode == "simulated":
        real = WithheldRecord(pane=PaneInfo(8, t, t), reason="budget")
        records += [
            (
                dep.topics.keys,
                None,
                KeyAnnouncement.create(
                    genuine, SimulatedProvider(genuine.identity), nonce=os.urandom(16)
                ).to_bytes(),
            ),
            (dep.topics.aggregates, record_key(real), sign_record(real, genuine.current)),
        ]
    asyncio.run(_publish(kafka_bootstrap, records))
    proc = dep.start(
        "results", "results", "--kafka", kafka_bootstrap, "--keys", str(dep.keys),
        "--topic-prefix", dep.prefix, "--json", *opts,
    )  # fmt: skip
    rc, err = _finish(proc)
    assert rc == 1
    assert "Traceback" not in err
    summary = err.strip().splitlines()[-1]
    # its record claims epoch 1: with the genuine epoch 1 known it fails that key's signature;
    # with no key accepted (hardware mode refuses the genuine one too) its epoch is unknown
    why = "bad_signature" if mode == "simulated" else "unknown_epoch"
    assert f"1 rejected (1 {why})" in summary, err
    assert "(3 refused: 2 malformed, 1 not_pinned)" in summary, summary
    if mode == "simulated":
        assert "results: 1 withheld" in summary  # the genuine record
    else:
        assert "results: no records" in summary
    assert f"record rejected ({why})" in err
    assert "announcement refused (not_pinned)" in err


def test_readers_attest_in_process_and_refuse_a_chained_answer_with_wrong_binding(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """``attest_vault`` (what ``procvault revoke`` runs): the vault's own answer (chained to the
    identity) whose evidence binds other keys fails at once; an old genuine answer to another
    nonce proves nothing about the vault now (the round times out)."""
    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    genuine = VaultSecrets.load(dep.keys / "vault.json")
    pinned = Registry.load(dep.keys / "registry.json").identity
    verifier = SimulatedVerifier(pinned, allow_insecure=True)

    class OtherKeys:
        def evidence(self, rd: bytes) -> Evidence:
            other = VaultSecrets.generate().current.public()
            return SimulatedProvider(genuine.identity).evidence(
                report_data(other, b"x" * 16, pinned)
            )

    def wrong_binding(nonce: bytes) -> list[bytes]:
        return [KeyAnnouncement.create(genuine, OtherKeys(), nonce=nonce).to_bytes()]

    old = KeyAnnouncement.create(genuine, SimulatedProvider(genuine.identity), nonce=b"o" * 16)
    with (
        FakeVault(kafka_bootstrap, dep.topics, wrong_binding),
        pytest.raises(AttestationError, match="does not bind"),
    ):
        asyncio.run(attest_vault(kafka_bootstrap, dep.topics, pinned, verifier, timeout=20))
    with (
        FakeVault(kafka_bootstrap, dep.topics, lambda _n: [old.to_bytes()]),
        pytest.raises(AttestationError, match="no valid key announcement bound"),
    ):
        asyncio.run(attest_vault(kafka_bootstrap, dep.topics, pinned, verifier, timeout=5, retry=1))


# ----------------------------------------------------------------------------- the responder
def test_the_attestation_responder_answers_a_nonce_once_and_is_rate_limited(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """50 copies of one nonce get one answer; a flood of 2,000 distinct nonces gets at most the
    burst plus the rate, the rest counted as dropped; once the bucket has refilled an agent is
    answered again."""
    from procvault.streams.kafka_io import read_topic

    def nonces() -> list[bytes]:
        values = asyncio.run(read_topic(kafka_bootstrap, dep.topics.keys, idle_timeout=2))
        return [KeyAnnouncement.from_bytes(r.value).nonce for r in values]

    dep = Deployment(kafka_bootstrap, tmp_path, partitions=1)
    pinned = Registry.load(dep.keys / "registry.json").identity
    try:
        vault = dep.vault("--attestation-rate", "5")  # bursts of 10
        time.sleep(2.5)  # the bucket is full
        asyncio.run(_publish(kafka_bootstrap, [(dep.topics.attest, None, b"R" * 16)] * 50))
        time.sleep(1.0)
        assert nonces().count(b"R" * 16) == 1
        before = len(nonces())
        flood = [(dep.topics.attest, None, i.to_bytes(16, "big")) for i in range(2000)]
        started = time.monotonic()
        asyncio.run(_publish(kafka_bootstrap, flood))
        time.sleep(1.0)
        elapsed = time.monotonic() - started
        answers = len(nonces()) - before
        time.sleep(1.0)
        keys = asyncio.run(
            attest_vault(
                kafka_bootstrap,
                dep.topics,
                pinned,
                SimulatedVerifier(pinned, allow_insecure=True),
                timeout=30,
            )
        )
        stats = vault.stop()
    finally:
        dep.stop_all()
    assert keys == VaultSecrets.load(dep.keys / "vault.json").current.public()
    assert 1 <= answers <= 10 + 5 * elapsed + 1, (answers, elapsed)
    assert stats is not None
    counted = stats["attestation_requests"]
    assert counted["answered"] == 1 + answers + 1  # the copied nonce, the flood, the agent
    assert counted["repeated"] >= 49  # (the agent may have asked twice)
    assert counted["rate_limited"] == 2000 - answers
