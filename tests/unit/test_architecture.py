"""The code matches docs/architecture.md: each room imports only the rooms its table row allows,
the table names every room there is, and ``monitor/`` imports no I/O, clock, logging or Kafka.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
FOLDERS = ("monitor", "streams", "generators")  # installed as procvault.<folder>
#: what a pure engine may not import (top-level module names)
IMPURE = {
    "aiokafka",
    "asyncio",
    "faust",
    "glob",
    "io",
    "kafka",
    "logging",
    "multiprocessing",
    "os",
    "pathlib",
    "prometheus_client",
    "requests",
    "shutil",
    "signal",
    "socket",
    "subprocess",
    "sys",
    "tempfile",
    "threading",
    "time",
    "urllib",
}


def allowed_imports(text: str) -> dict[str, set[str]]:
    """Room -> the rooms it may import, from the doc's table (``| `room` | ... | `a`, `b` |``)."""
    rows: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\| `([\w.]+)` \|.*\| ([^|]*) \|", line.strip())
        if m:
            rows[m.group(1)] = set(re.findall(r"`([\w.]+)`", m.group(2)))
    return rows


def room_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "procvault":
        return None
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return "procvault"
    return parts[1] if parts[1] in FOLDERS else f"procvault.{parts[1]}"


def room_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    if rel[0] != "procvault":
        return rel[0]
    return "procvault" if len(rel) == 2 else f"procvault.{rel[1]}"


def shipped_files() -> Iterator[Path]:
    for top in (*FOLDERS, "procvault"):
        yield from (ROOT / top).rglob("*.py")


def imports_of(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, absolute module)`` of every import (relative ones resolved in their package)."""
    rel = path.relative_to(ROOT).with_suffix("").parts
    package = ["procvault", *rel[1:-1]] if rel[0] == "procvault" else ["procvault", *rel[:-1]]
    if rel[-1] == "__init__" and rel[0] != "procvault":
        package = ["procvault", *rel[:-1]]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            elif node.module:
                yield node.lineno, node.module


def test_the_table_names_every_room() -> None:
    rooms = allowed_imports(DOC.read_text())
    on_disk = {"procvault", *FOLDERS}
    on_disk |= {f"procvault.{p.name}" for p in (ROOT / "procvault").iterdir() if p.is_dir()}
    on_disk -= {"procvault.__pycache__"}
    assert set(rooms) == on_disk
    assert all(r in rooms for allowed in rooms.values() for r in allowed), "unknown room"


def violations(rooms: dict[str, set[str]]) -> list[str]:
    bad = []
    for path in shipped_files():
        room = room_of_file(path)
        for line, module in imports_of(path):
            target = room_of_module(module)
            if target is not None and target != room and target not in rooms[room]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {room} imports {target}")
    return bad


def test_each_room_imports_only_what_the_doc_allows() -> None:
    bad = violations(allowed_imports(DOC.read_text()))
    assert not bad, "imports docs/architecture.md does not allow:\n" + "\n".join(bad)


def test_the_check_fails_on_an_edge_the_doc_does_not_allow() -> None:
    rooms = allowed_imports(DOC.read_text())
    rooms["streams"] = set()  # streams/ imports monitor/ everywhere
    assert any("streams imports monitor" in b for b in violations(rooms))


def test_monitor_imports_no_io_clock_logging_or_kafka() -> None:
    bad = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in (ROOT / "monitor").rglob("*.py")
        for line, module in imports_of(path)
        if module.split(".")[0] in IMPURE or (room_of_module(module) not in (None, "monitor"))
    ]
    assert not bad, bad
