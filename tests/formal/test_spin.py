"""The protocol's Promela models (``formal/``, docs/formal.md) under spin.

The small configuration: every model of the protocol explored exhaustively (no error, the
search complete: not cut by depth or memory); every mutant without one defence, and every
variant that follows docs/protocol.md where the model found a flaw, fails with a counterexample
trail that violates the property the defence exists for.
"""

from __future__ import annotations

import doctest
import functools
import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORMAL = ROOT / "formal"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("procvault_formal_check", FORMAL / "check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


check = _load()
SMALL = {c.name: c for c in check.SMALL}
LARGE = {c.name: c for c in check.LARGE}


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    if shutil.which("spin") is None or shutil.which("gcc") is None:
        pytest.fail("spin and gcc are needed: run scripts/setup.sh (apt-get install spin gcc)")


@functools.cache
def _result(name: str) -> object:
    return check.run(SMALL[name])


def _flags(model: str) -> set[str]:
    text = (FORMAL / model).read_text()
    return set(re.findall(r"#\s*(?:ifn?def|if)\s+!?\s*(?:defined\()?(\w+)", text)) | set(
        re.findall(r"defined\((\w+)\)", text)
    )


@pytest.mark.parametrize("name", [n for n, c in SMALL.items() if c.expect == "pass"])
def test_the_protocol_is_verified_exhaustively(name: str) -> None:
    r = _result(name)
    assert "errors: 0" in r.output, r.output
    assert r.complete, f"search not complete:\n{r.output}"
    assert "Search not completed" not in r.output
    assert "max search depth too small" not in r.output
    assert r.depth < 200_000
    assert r.states > 1_000, "a model that explores this little checks nothing"


@pytest.mark.parametrize("name", [n for n, c in SMALL.items() if c.expect == "fail"])
def test_each_mutant_and_flaw_has_a_counterexample(name: str) -> None:
    c, r = SMALL[name], _result(name)
    assert r.errors >= 1, r.output
    assert r.trail, "pan found an error but wrote no trail"
    assert r.violated == f"assertion violated {c.violates}", (r.violated, r.trail)
    assert any(line.startswith(("agent", "vault", "worker", "stage")) for line in r.trail)


@pytest.mark.parametrize("config", [*check.SMALL, *check.LARGE], ids=lambda c: c.name)
def test_every_flag_is_one_the_model_reads(config: object) -> None:
    """A misspelt flag would leave the real model under a mutant's name."""
    known = _flags(config.model)
    for define in config.defines:
        assert define.split("=")[0] in known, f"{define} is not used in {config.model}"


def test_every_mutant_has_its_own_flag_and_every_flag_its_configuration() -> None:
    used = {d for c in SMALL.values() for d in c.defines}
    for model in {c.model for c in SMALL.values()}:
        for flag in _flags(model):
            if flag.startswith(("M_", "SPEC_")):
                assert flag in used, f"{model}: {flag} is never checked"


def test_the_docs_name_every_configuration() -> None:
    text = (ROOT / "docs" / "formal.md").read_text()
    for name in [*SMALL, *LARGE]:
        assert f"`{name}`" in text, f"docs/formal.md does not mention {name}"


def test_pan_output_is_read() -> None:
    out = (
        "pan:1: assertion violated applied_at_most_once (at depth 5)\n"
        "Warning: Search not completed\n"
        "State-vector 260 byte, depth reached 9, errors: 1\n"
        "       40 states, stored\n       41 transitions (= stored+matched)\n"
        "  128.730\ttotal actual memory usage\npan: elapsed time 0.01 seconds\n"
    )
    r = check.parse_pan(out)
    assert (r.errors, r.complete, r.states, r.transitions, r.depth) == (1, False, 40, 41, 9)
    assert r.violated == "assertion violated applied_at_most_once"
    assert r.memory_mb == 128.73
    truncated = check.parse_pan("error: max search depth too small\nerrors: 0\n")
    assert truncated.errors == 0 and not truncated.complete


def test_check_docstring_examples() -> None:
    result = doctest.testmod(check, verbose=False, report=True)
    assert result.failed == 0 and result.attempted > 0
