"""One environment variable per option meaning, and docs/cli.md lists them all.

Walks every (sub)command of ``procvault.cli.build_parser()``: a variable that two options share
must mean the same for both (same help, type, default, choices, action), and the variables the
parser has are exactly those docs/cli.md lists.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from procvault.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("procvault", "monitor", "streams", "generators")
_DIRECT_ROW = re.compile(r"^\| `(PROCVAULT_\w+)` \| [^|]+ \| [^|]+ \|$", re.M)


def _cli_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_docs", ROOT / "scripts" / "cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cli_docs"] = module
    spec.loader.exec_module(module)
    return module


def _meaning(action: Any) -> tuple[Any, ...]:
    kind = action.type
    return (
        re.sub(r"\s*\[env: \w+\]$", "", action.help or ""),
        getattr(kind, "__name__", kind),
        repr(action.default),
        tuple(action.choices) if action.choices is not None else None,
        type(action).__name__,
        action.nargs,
        action.const,
    )


def test_every_variable_has_one_meaning() -> None:
    meanings: dict[str, dict[tuple[Any, ...], list[str]]] = {}
    options = _cli_docs().options()
    assert len(options) > 150  # the walk reached the subcommands
    for env, command, flags, action in options:
        meanings.setdefault(env, {}).setdefault(_meaning(action), []).append(
            f"procvault {command} {flags}"
        )
    shared = {env: m for env, m in meanings.items() if len(m) > 1}
    assert not shared, "variables with several meanings:\n" + "\n".join(
        f"{env}: " + " / ".join(", ".join(uses) for uses in m.values())
        for env, m in sorted(shared.items())
    )


def test_options_shared_across_commands_keep_one_variable() -> None:
    envs: dict[str, set[str]] = {}
    for env, command, _, _ in _cli_docs().options():
        envs.setdefault(env, set()).add(command)
    assert {"vault", "agent", "release", "results", "revoke"} <= envs["PROCVAULT_KAFKA"]
    assert {"vault", "release"} <= envs["PROCVAULT_DP_POLICY"]
    assert envs["PROCVAULT_VAULT_BATCH_MS"] == {"vault"}
    assert envs["PROCVAULT_AGENT_BATCH_MS"] == {"agent"}
    assert envs["PROCVAULT_KAFKA_PORT"] == {"kafka"}
    assert envs["PROCVAULT_OBSERVE_PORT"] == {"observe"}


def test_docs_cli_lists_every_option_variable() -> None:
    docs = _cli_docs()
    text = docs.DOC.read_text()
    table = text[text.index(docs.BEGIN) : text.index(docs.END) + len(docs.END)]
    assert table == docs.render(), "docs/cli.md is out of date: run scripts/cli_docs.py"


def _direct_variables() -> set[str]:
    """``PROCVAULT_*`` names the shipped code spells out in full (read from the environment)."""
    found: set[str] = set()
    for top in SHIPPED:
        for path in (ROOT / top).rglob("*.py"):
            found |= set(re.findall(r"[\"'](PROCVAULT_[A-Z][A-Z_]*[A-Z])[\"']", path.read_text()))
    return found


def test_docs_cli_lists_every_variable_read_directly() -> None:
    documented = set(_DIRECT_ROW.findall((ROOT / "docs" / "cli.md").read_text()))
    options = {env for env, _, _, _ in _cli_docs().options()}
    direct = _direct_variables() - options
    assert direct, "the scan found no variable read directly"
    assert direct <= documented, f"undocumented in docs/cli.md: {sorted(direct - documented)}"
    assert not (documented & options), "a variable read directly is also an option's"


def test_a_variable_sets_the_default_and_a_bad_one_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROCVAULT_MONITOR_MODE", "bogus")
    with pytest.raises(SystemExit) as exc:
        main(["monitor", "--help"])
    assert exc.value.code == (
        "procvault: error: PROCVAULT_MONITOR_MODE='bogus': choose from tbr, alignments"
    )
    monkeypatch.setenv("PROCVAULT_MONITOR_MODE", "alignments")
    monkeypatch.setenv("PROCVAULT_ANONYMIZE_MODE", "amun")  # no longer the same variable
    with pytest.raises(SystemExit):
        main(["monitor", "--help"])
    out = capsys.readouterr().out
    assert "(default: alignments) [env: PROCVAULT_MONITOR_MODE]" in " ".join(out.split())


def _choices(parser: Any) -> set[str]:
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_main_builds_only_the_named_commands_module() -> None:
    from procvault.cli import build_parser

    every = _choices(build_parser())
    assert len(every) >= 19
    for command in every:
        only = _choices(build_parser(command))
        assert command in only and len(only) < len(every), command
    assert _choices(build_parser("no-such-command")) == every  # argparse lists them all
