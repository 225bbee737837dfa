"""XES replay: order, counts, markers, and clear errors on bad input."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from procvault.cli import main
from procvault.generators.xes import read_xes
from procvault.monitor.errors import InputError


def _xes(traces: list[tuple[str | None, list[dict[str, str]]]]) -> str:
    """A small XES document: traces of events given as {key: value} (dates marked by 'time:')."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<log xes.version="1.0">']
    for case, events in traces:
        out.append("<trace>")
        if case is not None:
            out.append(f'<string key="concept:name" value="{case}"/>')
        for ev in events:
            out.append("<event>")
            for k, v in ev.items():
                tag = "date" if k.startswith("time:") else "string"
                out.append(f'<{tag} key="{k}" value="{v}"/>')
            out.append("</event>")
        out.append("</trace>")
    out.append("</log>")
    return "\n".join(out)


def _ev(act: str | None, ts: str | None, **extra: str) -> dict[str, str]:
    d = dict(extra)
    if act is not None:
        d["concept:name"] = act
    if ts is not None:
        d["time:timestamp"] = ts
    return d


def test_sepsis_counts_and_order(sepsis_log: Path) -> None:
    log = read_xes(sepsis_log)
    assert log.n_events == 15_214
    assert log.n_cases == 1_050
    assert len({e.case_id for e in log.events}) == 1_050
    assert len({e.activity for e in log.events}) == 16
    ts = [e.timestamp for e in log.events]
    assert ts == sorted(ts)
    assert log.dropped_attributes == {}


def test_ties_follow_case_file_order_then_event_file_order(tmp_path: Path) -> None:
    t = "2024-01-01T10:00:00+00:00"
    path = tmp_path / "ties.xes"
    path.write_text(
        _xes(
            [
                ("z", [_ev("A", t), _ev("B", t), _ev("C", "2024-01-01T09:00:00+00:00")]),
                ("a", [_ev("D", t), _ev("E", t)]),
            ]
        )
    )
    log = read_xes(path)
    assert [(e.case_id, e.activity) for e in log.events] == [
        ("z", "C"),  # earliest timestamp first, even though it is last in its trace
        ("z", "A"),
        ("z", "B"),
        ("a", "D"),
        ("a", "E"),
    ]


def test_replay_with_end_markers(running_example_log: Path) -> None:
    log = read_xes(running_example_log)
    stream = list(log.replay(end_markers=True))
    markers = [e for e in stream if e.is_marker]
    assert len(markers) == log.n_cases == 6
    assert len(stream) == log.n_events + 6
    seen_end: set[str] = set()
    for e in stream:
        assert e.case_id not in seen_end, "an event after its case's end marker"
        if e.is_marker:
            seen_end.add(e.case_id)
    per_case: dict[str, list[str]] = defaultdict(list)
    for e in stream:
        per_case[e.case_id].append(e.activity)
    assert all(acts[-1] == "" for acts in per_case.values())


def test_case_and_event_attributes_kept(running_example_log: Path) -> None:
    first = read_xes(running_example_log).events[0]
    assert first.resource == "Pete"
    assert first.attr("Costs") == "50"
    assert first.attr("case:creator") == "Fluxicon Nitro"
    assert first.attr("concept:name") is None  # mapped to the activity, not duplicated


# ------------------------------------------------------------------------------- bad input
def _bad_inputs(tmp_path: Path, sepsis_log: Path) -> dict[str, tuple[Path, str]]:
    trunc = tmp_path / "truncated.xes.gz"
    trunc.write_bytes(sepsis_log.read_bytes()[:50_000])
    no_ts = tmp_path / "no_timestamp.xes"
    no_ts.write_text(_xes([("c1", [_ev("A", "2024-01-01T00:00:00+00:00"), _ev("B", None)])]))
    no_act = tmp_path / "no_activity.xes.gz"
    no_act.write_bytes(
        gzip.compress(_xes([("c1", [_ev(None, "2024-01-01T00:00:00+00:00")])]).encode())
    )
    no_case = tmp_path / "no_case.xes"
    no_case.write_text(_xes([(None, [_ev("A", "2024-01-01T00:00:00+00:00")])]))
    not_xml = tmp_path / "not_xml.xes"
    not_xml.write_text("this is not XML")
    empty = tmp_path / "empty.xes"
    empty.write_text(_xes([]))
    return {
        "missing": (tmp_path / "missing.xes.gz", "file not found"),
        "truncated": (trunc, "truncated"),
        "no timestamp": (no_ts, "event #2 of case 'c1' has no timestamp"),
        "no activity": (no_act, "event #1 of case 'c1' has no activity name"),
        "no case id": (no_case, "trace #1 has no case id"),
        "not xml": (not_xml, "not a valid XES log"),
        "empty": (empty, "no traces"),
    }


@pytest.mark.parametrize(
    "kind",
    ["missing", "truncated", "no timestamp", "no activity", "no case id", "not xml", "empty"],
)
def test_bad_input_raises_input_error(kind: str, tmp_path: Path, sepsis_log: Path) -> None:
    path, match = _bad_inputs(tmp_path, sepsis_log)[kind]
    with pytest.raises(InputError, match=match) as info:
        read_xes(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "kind", ["missing", "truncated", "no timestamp", "no activity", "no case id", "not xml"]
)
def test_cli_bad_input_is_one_line_without_traceback(
    kind: str, tmp_path: Path, sepsis_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, match = _bad_inputs(tmp_path, sepsis_log)[kind]
    code = main(["replay", str(path), "--to", "null"])
    err = capsys.readouterr().err
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("procvault: error: ")
    assert str(path) in lines[0] and match in lines[0]


def test_cli_process_prints_no_traceback(tmp_path: Path, sepsis_log: Path) -> None:
    path, _ = _bad_inputs(tmp_path, sepsis_log)["truncated"]
    proc = subprocess.run(
        [sys.executable, "-m", "procvault", "replay", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == f"procvault: error: {path}: truncated file (compressed data ends early)"
    )
    assert proc.stdout == ""
