"""The CLI only parses and wires: nothing outside it imports its modules, and no command imports
another command's.

* ``bench/`` and ``tests/`` reach the CLI through ``procvault.cli.main(argv)`` (and
  ``build_parser()``, to walk its options) only; library code lives in the rooms
  (``procvault/results/``, ``procvault/config/``, ...).
* A command module (``procvault/cli/<command>.py``) imports from the CLI only
  ``procvault.cli.options`` (the option machinery) and ``procvault.cli.shared`` (options with
  one meaning in several commands), and never a private name.
* No fault injection ships: no ``PROCVAULT_TEST_*`` hook in the shipped packages.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {"main", "build_parser"}
CLI_LIBRARY = {"procvault.cli.options", "procvault.cli.shared"}
SHIPPED = ("procvault", "monitor", "streams", "generators")


def _imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import in ``path`` (names empty for ``import m``)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [a.name for a in node.names]


def _outside_uses(path: Path) -> list[str]:
    bad = []
    for line, module, names in _imports(path):
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
        if module == "procvault" and "cli" in names:
            bad.append(f"{where}: from procvault import cli")
        elif module == "procvault.cli" and (not names or set(names) - PUBLIC):
            bad.append(f"{where}: procvault.cli {sorted(set(names) - PUBLIC) or ''}")
        elif module.startswith("procvault.cli."):
            bad.append(f"{where}: {module}")
    return bad


def test_bench_and_tests_use_only_main_and_build_parser() -> None:
    files = [*(ROOT / "bench").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]
    assert len(files) > 100
    bad = [b for f in files for b in _outside_uses(f)]
    assert not bad, "CLI internals imported:\n" + "\n".join(bad)


def test_the_check_sees_each_kind_of_cli_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from procvault.cli import main, build_parser\n"
        "from procvault.cli import results\n"
        "from procvault.cli.results import MapView\n"
        "import procvault.cli.pipeline\n"
        "from procvault import cli\n"
    )
    assert [b.split(": ", 1)[1] for b in _outside_uses(probe)] == [
        "procvault.cli ['results']",
        "procvault.cli.results",
        "procvault.cli.pipeline",
        "from procvault import cli",
    ]


COMMANDS = sorted(
    p for p in (ROOT / "procvault" / "cli").glob("*.py") if p.stem not in ("options", "shared")
)


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: p.stem)
def test_a_command_imports_no_other_command(path: Path) -> None:
    bad = []
    command = path.stem != "__init__"  # the package itself registers every command
    for line, module, names in _imports(path):
        if command and module == "procvault.cli":
            bad.append(f"{line}: from procvault.cli import {', '.join(names)}")
        elif command and module.startswith("procvault.cli.") and module not in CLI_LIBRARY:
            bad.append(f"{line}: {module}")
        if module.startswith("procvault.") and any(n.startswith("_") for n in names):
            bad.append(f"{line}: private {module} {names}")
    assert not bad, f"{path.name}: " + "; ".join(bad)


def test_no_fault_injection_ships() -> None:
    hooks = [
        f"{p.relative_to(ROOT)}"
        for top in SHIPPED
        for p in (ROOT / top).rglob("*.py")
        if "PROCVAULT_TEST_" in p.read_text()
    ]
    assert not hooks, hooks
