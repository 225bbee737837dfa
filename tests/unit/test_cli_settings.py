"""Each setting of a long-running command is declared once, on its settings class, and the
command's options are generated from it: flag, default, unit, environment variable, bounds."""

from __future__ import annotations

import argparse
import os
from typing import Any

import pytest

from procvault.cli import build_parser
from procvault.metrics.prometheus import PrometheusSettings
from procvault.organization.agent import AgentSettings
from procvault.organization.trust import TrustSettings
from procvault.streams.release_stage import ReleaseStageSettings
from procvault.streams.settings import declared
from procvault.streams.vault_worker import WorkerSettings

DECLARED = [
    ("vault", WorkerSettings),
    ("release", ReleaseStageSettings),
    ("agent", AgentSettings),
    ("agent", TrustSettings),
    ("observe", PrometheusSettings),
]
BASE = {
    "vault": ["vault", "--kafka", "h:1", "--keys", "k", "--model", "m"],
    "agent": ["agent", "--org", "a"],
}


def _command(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[name]
    assert isinstance(parser, argparse.ArgumentParser)
    return parser


@pytest.mark.parametrize(("command", "cls"), DECLARED, ids=lambda x: getattr(x, "__name__", x))
def test_every_declared_setting_is_an_option_of_its_command(command: str, cls: type) -> None:
    if any(k.startswith("PROCVAULT_") for k in os.environ):
        pytest.skip("PROCVAULT_* variables set: defaults would differ")
    actions = {a.dest: a for a in _command(command)._actions}
    specs = declared(cls)
    assert specs
    for spec in specs:
        action = actions[spec.name]
        assert spec.flag in action.option_strings
        assert action.default == spec.default
        help_text = action.help or ""
        assert spec.option.help in help_text
        if spec.option.unit:
            assert action.metavar == spec.option.unit.upper()
        env = spec.env or f"PROCVAULT_{command.upper()}_{spec.flag[2:].upper().replace('-', '_')}"
        assert help_text.endswith(f"[env: {env}]")


def _parse(argv: list[str]) -> Any:
    return build_parser().parse_args(argv)


def test_values_are_parsed_as_declared() -> None:
    args = _parse(
        [*BASE["vault"], "--source-timeout", "0", "--expect-orgs", "a, b", "--batch-ms", "5"]
    )
    assert args.source_timeout is None  # 0 on the command line: "wait forever"
    assert args.expect_orgs == ("a", "b")
    assert args.batch_ms == 5 and isinstance(args.batch_ms, int)
    settings = WorkerSettings(
        "h:1", 3, **{s.name: getattr(args, s.name) for s in declared(WorkerSettings)}
    )
    assert settings.expect_orgs == ("a", "b") and settings.source_timeout is None
    args = _parse([*BASE["agent"], "--batch-ms", "2.5", "--reattest-interval", "7"])
    assert (args.batch_ms, args.reattest_interval) == (2.5, 7.0)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*BASE["vault"], "--session-timeout", "3"], "--session-timeout: must be >= 6, got 3"),
        ([*BASE["vault"], "--batch-records", "0"], "--batch-records: must be >= 1, got 0"),
        ([*BASE["agent"], "--batch-ms", "0"], "--batch-ms: must be > 0, got 0"),
        ([*BASE["vault"], "--max-skew", "soon"], "--max-skew: invalid float value: 'soon'"),
    ],
)
def test_bounds_come_from_the_declaration(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_a_variable_supplies_a_declared_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCVAULT_VAULT_SOURCE_TIMEOUT", "0")
    monkeypatch.setenv("PROCVAULT_AGENT_BATCH_EVENTS", "7")
    assert _parse(BASE["vault"]).source_timeout is None
    assert _parse(BASE["agent"]).batch_events == 7
