"""The tests' broker: testcontainers where a Docker engine answers, the Maven-jar broker
otherwise, an external one when ``$KAFKA_BOOTSTRAP`` names it."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
from kafka_broker import choose_broker, docker_available


def _docker(answer: bool) -> Any:
    calls: list[None] = []

    def check() -> bool:
        calls.append(None)
        return answer

    check.calls = calls  # type: ignore[attr-defined]
    return check


def test_testcontainers_where_docker_answers_jars_otherwise() -> None:
    assert choose_broker({}, _docker(True)) == "testcontainers"
    assert choose_broker({}, _docker(False)) == "jars"
    assert choose_broker({"PROCVAULT_TEST_BROKER": "auto"}, _docker(True)) == "testcontainers"


def test_an_external_broker_wins_and_docker_is_not_asked() -> None:
    docker = _docker(True)
    assert choose_broker({"KAFKA_BOOTSTRAP": "127.0.0.1:30001"}, docker) == "external"
    assert docker.calls == []


def test_forced_choices() -> None:
    docker = _docker(True)
    assert choose_broker({"PROCVAULT_TEST_BROKER": "jars"}, docker) == "jars"
    assert docker.calls == []
    assert choose_broker({"PROCVAULT_TEST_BROKER": "testcontainers"}, _docker(True)) == (
        "testcontainers"
    )
    with pytest.raises(RuntimeError, match="no Docker engine answers"):
        choose_broker({"PROCVAULT_TEST_BROKER": "testcontainers"}, _docker(False))
    with pytest.raises(ValueError, match="expected auto, testcontainers or jars"):
        choose_broker({"PROCVAULT_TEST_BROKER": "podman"}, _docker(True))


def test_docker_check_uses_testcontainers_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import testcontainers.core.docker_client as dc

    class Answering:
        def __init__(self, **kwargs: Any) -> None:
            self.client = self

        def ping(self) -> bool:
            return True

        def close(self) -> None:
            pass

    class Refusing:
        def __init__(self, **kwargs: Any) -> None:
            raise dc.docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")  # no socket probe
    monkeypatch.setattr(dc, "DockerClient", Answering)
    assert docker_available() is True
    monkeypatch.setattr(dc, "DockerClient", Refusing)
    assert docker_available() is False
    # a Unix socket that is not there: no Docker, without asking the client
    monkeypatch.setattr(dc, "DockerClient", Answering)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert docker_available() is False


def test_docker_check_agrees_with_docker_info() -> None:
    """On this machine no Docker engine runs: both say so (where a CLI is installed)."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI to compare with")
    info = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    assert docker_available() is (info.returncode == 0)
