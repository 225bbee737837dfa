"""The compose deployment references only files, configs and commands that exist in the repo."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import yaml

from procvault.metrics.prometheus import default_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
SPEC = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
SERVICES = SPEC["services"]
PROCVAULT = sorted(n for n, s in SERVICES.items() if s.get("image") == "procvault:dev")


def test_the_procvault_image_builds_from_the_repository() -> None:
    for name in PROCVAULT:
        build = SERVICES[name]["build"]
        context = (COMPOSE / build["context"]).resolve()
        assert context == REPO
        dockerfile = context / build["dockerfile"]
        assert dockerfile.is_file()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for src in sources:
                assert (REPO / src).exists(), src


def test_bind_mounts_exist() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), (name, source)


def test_grafana_provisioning_points_at_the_dashboards_and_the_datasource() -> None:
    prov = COMPOSE / "grafana" / "provisioning"
    (ds,) = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    (provider,) = yaml.safe_load((prov / "dashboards" / "procvault.yml").read_text())["providers"]
    assert (
        f"./grafana/dashboards:{provider['options']['path']}:ro" in SERVICES["grafana"]["volumes"]
    )
    assert ds["url"] == "http://prometheus:9090"
    dashboards = sorted((COMPOSE / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        for panel in json.loads(path.read_text())["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] == ds["uid"], panel["title"]


def test_compose_prometheus_uses_the_shared_config() -> None:
    assert "./prometheus:/etc/prometheus:ro" in SERVICES["prometheus"]["volumes"]
    assert default_config() == COMPOSE / "prometheus" / "prometheus.yml"
    targets = json.loads((COMPOSE / "prometheus" / "targets" / "compose.json").read_text())
    for group in targets:
        for address in group["targets"]:
            assert address.split(":")[0] in SERVICES, address
            assert address.endswith(":9100")


def _subparser(name: str) -> argparse.ArgumentParser:
    from procvault.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert name in sub.choices, f"no subcommand {name!r}"
    return sub.choices[name]  # type: ignore[no-any-return]


def _command(service: str) -> list[str]:
    return [str(x) for x in SERVICES[service]["command"]]


def _flags(command: list[str]) -> dict[str, str | None]:
    """``--flag[=value]`` words of a command (values given as the next word are not used)."""
    out: dict[str, str | None] = {}
    for word in command:
        if word.startswith("--"):
            flag, eq, value = word.partition("=")
            out[flag] = value if eq else None
    return out


def _environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _env_names(parser: argparse.ArgumentParser) -> set[str]:
    """The ``PROCVAULT_*`` variables a parser reads (named in each option's help)."""
    return {
        m.group(1)
        for a in parser._actions
        for m in [re.search(r"\[env: (PROCVAULT_[A-Z0-9_]+)\]", a.help or "")]
        if m
    }


def _mounted(service: str) -> dict[str, Path]:
    """Container path -> host folder of each bind mount."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (COMPOSE / source).resolve()
    return out


@pytest.mark.parametrize("service", PROCVAULT)
def test_every_flag_and_variable_is_the_cli_s(service: str) -> None:
    """Each flag is exactly an option of the service's subcommand (no abbreviation argparse
    would also accept), each PROCVAULT_* variable one the subcommand reads."""
    command = _command(service)
    parser = _subparser(command[0])
    known = {s for a in parser._actions for s in a.option_strings}
    for flag in _flags(command):
        assert flag in known, f"{service}: {command[0]} has no option {flag}"
    env = [k for k in _environment(service) if k.startswith("PROCVAULT_")]
    assert set(env) <= _env_names(parser), (service, env)
    assert all(k.startswith("PROCVAULT_") or k == "PYTHONUNBUFFERED" for k in env)


def test_no_open_markers() -> None:
    text = (COMPOSE / "docker-compose.yml").read_text()
    assert "OPTIONS" not in text and "to be checked" not in text and "TODO" not in text


def test_vault_and_release_check_the_model_and_rules() -> None:
    for service in PROCVAULT:
        command = _command(service)
        if command[0] in ("vault", "release"):
            flags = _flags(command)
            assert flags.get("--model"), service
            assert flags.get("--rules"), service
            assert flags.get("--dp-policy"), service


def test_key_setup_is_idempotent_and_orgs_agree() -> None:
    """``keys init --if-missing`` (a second ``compose up`` keeps the keyring); the registered
    organizations are exactly the agents' and the split map's."""
    keys = _command("keys")
    assert keys[:2] == ["keys", "init"] and "--if-missing" in keys
    orgs = set(keys[keys.index("--orgs") + 1].split(","))
    agents = {_flags(_command(n))["--org"] for n in PROCVAULT if _command(n)[0] == "agent"}
    assert agents == orgs
    for name in PROCVAULT:
        flags = _flags(_command(name))
        if "--split-map" in flags:
            mapping = yaml.safe_load(
                (REPO / str(flags["--split-map"]).removeprefix("/app/")).read_text()
            )
            assert set(mapping["activities"].values()) == orgs, name
        assert "--split-hash" not in flags, name


def test_start_order_safe() -> None:
    """Everything that reads the keyring waits for it; the vault's merge waits for every
    registered organization (no --expect-orgs narrowing it, no zero-wait source timeout) and
    agents keep retrying (restart on failure) until the vault answers."""
    for name in PROCVAULT:
        if name == "keys":
            continue
        deps = SERVICES[name]["depends_on"]
        assert deps["keys"] == {"condition": "service_completed_successfully"}, name
        assert deps["kafka"] == {"condition": "service_healthy"}, name
        flags = _flags(_command(name))
        assert "--expect-orgs" not in flags, name
        if _command(name)[0] == "agent":
            assert SERVICES[name]["restart"] == "on-failure", name


def test_mounted_files_come_from_the_documented_step() -> None:
    """Every /app/logs and /app/models path a command names is mounted from a folder that
    scripts/compose-data.sh fills; every other /app path is in the image (the repository)."""
    script = (REPO / "scripts" / "compose-data.sh").read_text()
    made = set(re.findall(r"^copy \S+ (compose/\S+)$", script, re.M))
    for name in PROCVAULT:
        mounts = _mounted(name)
        for path in re.findall(r"=?(/app/\S+)", " ".join(_command(name))):
            folder = next((m for m in mounts if path.startswith(m + "/")), None)
            if folder is None:
                assert (REPO / path.removeprefix("/app/")).exists(), (name, path)
                continue
            host = mounts[folder] / path.removeprefix(folder + "/")
            assert str(host.relative_to(REPO)) in made, (name, path)
    assert "/app/logs" in _mounted("agent-lab") and "/app/models" in _mounted("vault-0")


@pytest.mark.parametrize("service", PROCVAULT)
def test_every_procvault_command_parses(service: str) -> None:
    """The CLI accepts each service's command as it stands (subcommand and options)."""
    from procvault.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command = [str(x) for x in SERVICES[service]["command"]]
    assert command[0] in sub.choices, f"{service}: no subcommand {command[0]!r}"
    paths = [p for x in command for p in re.findall(r"=?(/app/\S+)", x)]
    for path in paths:
        mounted = path.startswith(("/app/logs/", "/app/models/"))
        assert (REPO / path.removeprefix("/app/")).exists() or mounted, path
    parser.exit = lambda status=0, message=None: pytest.fail(f"{service}: {message}")  # type: ignore[method-assign]
    sub.choices[command[0]].error = lambda message: pytest.fail(f"{service}: {message}")  # type: ignore[method-assign]
    parser.parse_args(command)
