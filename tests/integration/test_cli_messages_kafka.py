"""What the CLI says about Kafka topics it cannot print (real broker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from procvault.cli import main
from procvault.streams.envelope import ProducerSession, VaultKeys


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


def test_tail_names_an_encrypted_topic(
    kafka_bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    vault = VaultKeys.generate(epoch=1)
    sender = ProducerSession(vault.public(), X25519PrivateKey.generate(), org="lab", producer="a")
    sealed = sender.seal(b"secret event", topic=topic, partition=0)
    asyncio.run(_produce(kafka_bootstrap, topic, [sealed]))
    code = main(["tail", f"kafka://{kafka_bootstrap}/{topic}", "--idle-timeout", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "encrypted record at offset 0 (sealed by organization 'lab'" in err
    assert "use procvault results" in err or "with procvault results" in err
    assert "malformed" not in err and "secret" not in err and "Traceback" not in err


def test_tail_names_a_record_in_another_format(
    kafka_bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_produce(kafka_bootstrap, topic, [b"\x07not an event"]))
    code = main(["tail", f"kafka://{kafka_bootstrap}/{topic}", "--idle-timeout", "3"])
    err = capsys.readouterr().err
    assert code == 2
    assert "is not a plaintext procvault event" in err and len(err.strip().splitlines()) == 1


def test_results_for_an_org_without_a_release_stage(
    kafka_bootstrap: str, topic: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The vault ran (keys and alerts topics exist), the release stage never did."""
    from procvault.streams.frames import Topics
    from procvault.streams.kafka_io import ensure_topics
    from procvault.streams.secrets import init_keyring

    keys = tmp_path / "keys"
    init_keyring(keys, ["lab", "ward"])
    topics = Topics(f"{topic}.")
    asyncio.run(ensure_topics(kafka_bootstrap, [topics.keys, topics.alerts("lab")]))
    common = ["--kafka", kafka_bootstrap, "--keys", str(keys), "--topic-prefix", topics.prefix]
    common += ["--allow-insecure-attestation", "--timeout", "20"]
    assert main(["results", *common, "--org", "lab"]) == 0
    err = capsys.readouterr().err
    assert "no DP aggregates" in err and "release stage has not published" in err
    # without --org there is nothing to show: a one-line error naming the release stage
    assert main(["results", *common]) == 1
    err = capsys.readouterr().err
    assert "run procvault release" in err and "Traceback" not in err
