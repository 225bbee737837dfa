"""Nets that are not workflow nets are refused by load_model, monitor and simulate (issue 22).

Refused: an initial or final marking that is not one token in one place, and a sink place taken
as the final marking that the initial place cannot reach. Accepted: every shared model and the
examples, including BPMN conversions whose file-given end lies in a fragment the start does not
reach.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from procvault.cli import main
from procvault.config.models import load_model
from procvault.monitor.errors import InputError

SHARED_DATA = Path(
    os.environ.get(
        "PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _net(tmp_path: Path, body: str, final: str | None = None) -> Path:
    final_xml = (
        "" if final is None else f"<finalmarkings><marking>{final}</marking></finalmarkings>"
    )
    path = tmp_path / "net.pnml"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><pnml><net id="n" '
        'type="http://www.pnml.org/version-2009/grammar/pnmlcoremodel"><page id="p">'
        f"{body}</page>{final_xml}</net></pnml>",
        encoding="utf-8",
    )
    return path


def _place(pid: str, tokens: int = 0) -> str:
    mark = f"<initialMarking><text>{tokens}</text></initialMarking>" if tokens else ""
    return f'<place id="{pid}">{mark}</place>'


def _transition(tid: str, label: str) -> str:
    return f'<transition id="{tid}"><name><text>{label}</text></name></transition>'


def _arc(src: str, dst: str) -> str:
    return f'<arc id="{src}-{dst}" source="{src}" target="{dst}"/>'


# Two marked sources, joined into one sink: a token from each arrives at the end (issue 22).
TWO_SOURCES = (
    _place("a", 1)
    + _place("b", 1)
    + _place("end")
    + _transition("t1", "A")
    + _transition("t2", "B")
    + _arc("a", "t1")
    + _arc("t1", "end")
    + _arc("b", "t2")
    + _arc("t2", "end")
)
# One start, and the only sink hangs off a transition the start never enables.
NO_PROPER_END = (
    _place("start", 1)
    + _place("mid")
    + _place("island")
    + _place("sink")
    + _transition("t1", "A")
    + _transition("t2", "B")
    + _arc("start", "t1")
    + _arc("t1", "mid")
    + _arc("mid", "t1")
    + _arc("island", "t2")
    + _arc("t2", "sink")
)
SEQUENCE = (
    _place("start", 1)
    + _place("end")
    + _transition("t", "A")
    + _arc("start", "t")
    + _arc("t", "end")
)


def test_two_marked_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"net\.pnml: not a workflow net: the initial marking has 2 tokens "
        r"\(1 on [ab], 1 on [ab]\); a case must start with one token in one place",
    ):
        load_model(_net(tmp_path, TWO_SOURCES))


def test_a_final_marking_of_two_tokens_is_refused(tmp_path: Path) -> None:
    path = _net(tmp_path, SEQUENCE, final='<place idref="end"><text>2</text></place>')
    with pytest.raises(InputError, match=r"the final marking \(file\) has 2 tokens \(2 on end\)"):
        load_model(path)


def test_an_unreachable_sink_place_is_refused_and_the_option_overrides(tmp_path: Path) -> None:
    path = _net(tmp_path, NO_PROPER_END)
    with pytest.raises(
        InputError,
        match=r"not a workflow net: the sink place sink \(the final marking\) cannot be "
        r"reached from the initial place start, so no case can end; pass final_marking=",
    ):
        load_model(path)
    assert load_model(path, final_marking="mid").final_marking_source == "option"


def test_a_workflow_net_loads(tmp_path: Path) -> None:
    assert load_model(_net(tmp_path, SEQUENCE)).final_marking_source == "sink place"


def _models() -> list[Path]:
    found = sorted((SHARED_DATA / "models").rglob("*.pnml"))
    found += sorted((SHARED_DATA / "models").rglob("*.bpmn"))
    return found + sorted(EXAMPLES.glob("*.pnml"))


@pytest.mark.parametrize("path", _models(), ids=lambda p: p.name)
def test_every_shared_and_example_model_is_accepted(path: Path) -> None:
    model = load_model(path)
    assert sum(model.initial_marking.values()) == sum(model.final_marking.values()) == 1


@pytest.mark.parametrize("command", ["monitor", "simulate"])
def test_monitor_and_simulate_refuse_with_one_line(
    command: str, tmp_path: Path, running_example_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _net(tmp_path, TWO_SOURCES)
    argv = (
        ["monitor", str(running_example_log), "--model", str(path)]
        if command == "monitor"
        else ["simulate", str(path), "--cases", "3", "--to", "null"]
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"procvault: error: {path}: not a workflow net: ")
