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
        assert (REPO / path.removeprefix("/app/")).exists() or path.startswith("/app/logs/"), path
    parser.exit = lambda status=0, message=None: pytest.fail(f"{service}: {message}")  # type: ignore[method-assign]
    sub.choices[command[0]].error = lambda message: pytest.fail(f"{service}: {message}")  # type: ignore[method-assign]
    parser.parse_args(command)
