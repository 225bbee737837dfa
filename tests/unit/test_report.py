"""``procvault report``: a recorded run becomes ProMTEE-compatible CSVs and PNG plots."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from procvault.cli import main
from procvault.monitor.errors import InputError
from procvault.reports.recorder import RunRecorder
from procvault.reports.run_report import LATENCY_HEADER, SUMMARY_HEADER, write_report

T0_US = 1_700_000_000_000_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _synthetic_run(run: Path, events: int = 600) -> None:
    """A vault that applied ``events`` events over ~6 s and an agent that sent them."""
    with RunRecorder(run, "vault-0", background=False) as vault:
        for i in range(events):
            sent = T0_US + i * 10_000
            vault.event(sent, sent + 2_000 + (i % 7) * 500)
        vault.count(events)
        vault.sample()
    with RunRecorder(run, "agent-hospital", background=False) as agent:
        agent.count(events)
        agent.sample()
    # Background samples are one a second: write a few with known times, as the thread would.
    for name in ("vault-0", "agent-hospital"):
        with (run / name / "memory_usage.csv").open("a") as f:
            f.writelines(f"{T0_US // 1000 + k * 1000},{50_000_000 + k * 4096}\n" for k in range(6))
        with (run / name / "throughput.csv").open("a") as f:
            f.writelines(f"{T0_US // 1000 + k * 1000},{k * 100}\n" for k in range(6))


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _run_cli(argv: list[str]) -> int:
    return main(argv)


def test_report_writes_promtee_csvs_and_plots(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _synthetic_run(run)
    assert _run_cli(["report", str(run), "--json"]) == 0
    out = run / "report"

    delay = _rows(out / "delay_result.csv")  # ProMTEE: no header, n, generation ns, processing ns
    assert len(delay) == 600
    assert [int(x) for x in delay[0]] == [1, T0_US * 1000, (T0_US + 2_000) * 1000]
    assert all(len(r) == 3 and int(r[2]) > int(r[1]) for r in delay)
    assert [int(r[0]) for r in delay] == list(range(1, 601))

    header, row = _rows(out / "latency.csv")
    assert tuple(header) == LATENCY_HEADER
    duration, mean, lo, hi, _std = (float(x) for x in row)
    assert (lo, hi) == (0.002, 0.005)
    assert lo < mean < hi
    assert duration == pytest.approx(5.99 + 0.004, abs=1e-6)  # last apply: 599 % 7 = 4

    header, row = _rows(out / "latency_summary.csv")
    assert tuple(header) == SUMMARY_HEADER
    summary = dict(zip(header, row, strict=True))
    assert int(summary["events"]) == 600
    assert float(summary["min_ms"]) == 2.0
    assert float(summary["max_ms"]) == 5.0
    assert int(summary["negative"]) == 0

    for name in ("vault-0", "agent-hospital"):
        rows = _rows(out / name / "memory_usage.csv")
        assert rows[0] == ["Timestamp", "Memory Usage"]
        assert len(rows) == 1 + 2 + 6  # header, sample() and close(), then six more
        assert all(int(ts) > 0 and int(rss) > 0 for ts, rss in rows[1:])

    rows = _rows(out / "throughput.csv")
    assert rows[0] == ["process", "Timestamp", "Events", "Rate"]
    assert {r[0] for r in rows[1:]} == {"vault-0", "agent-hospital"}

    for png in ("latency_distribution", "latency_trend", "memory_usage", "throughput"):
        data = (out / f"{png}.png").read_bytes()
        assert data[:8] == PNG_MAGIC, png
        assert data[12:16] == b"IHDR"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (1000, 500), png

    marker = json.loads((out / "report.json").read_text())
    assert marker["complete"] and marker["events"] == 600
    # A second report next to the first does not mistake the first for a process.
    assert write_report(run).processes == ["agent-hospital", "vault-0"]


def test_recorded_files_hold_no_identifiers(tmp_path: Path) -> None:
    _synthetic_run(tmp_path)
    for path in tmp_path.rglob("*.csv"):
        for row in _rows(path)[1:]:
            assert all(cell.isdigit() for cell in row), (path, row)


def test_missing_and_empty_run_dirs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        write_report(tmp_path / "nope")
    with pytest.raises(InputError, match="holds no recorded process"):
        write_report(tmp_path)
    (tmp_path / "vault-0").mkdir()
    (tmp_path / "vault-0" / "events.csv").write_text("sent_us,applied_us\n")
    with pytest.raises(InputError, match="hold no samples and no events"):
        write_report(tmp_path)


def test_a_run_without_events_still_reports_memory(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, "agent-lab", background=False) as rec:
        rec.count(5)
        rec.sample()
        rec.sample()
    summary = write_report(tmp_path, tmp_path / "out")
    assert summary.events == 0
    assert any("latency outputs skipped" in n for n in summary.notes)
    assert (tmp_path / "out" / "memory_usage.png").exists()
    assert not (tmp_path / "out" / "delay_result.csv").exists()


def test_recorder_background_thread_samples_and_flushes(tmp_path: Path) -> None:
    rec = RunRecorder(tmp_path, "vault-1", interval=0.05, flush_events=10)
    for i in range(25):
        rec.event(T0_US + i, T0_US + i + 100)
    rec.count(25)
    rec.close()
    rec.close()  # harmless
    events = _rows(tmp_path / "vault-1" / "events.csv")
    assert events[0] == ["sent_us", "applied_us"]
    assert len(events) == 26
    memory = _rows(tmp_path / "vault-1" / "memory_usage.csv")
    assert len(memory) >= 2
    assert _rows(tmp_path / "vault-1" / "throughput.csv")[-1][1] == "25"


def test_recorder_rejects_unsafe_process_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="process name"):
        RunRecorder(tmp_path, "../escape")


def test_a_running_recorder_writes_its_events_without_being_closed(tmp_path: Path) -> None:
    """``procvault report`` on a live run: buffered events reach the file every interval."""
    import time

    rec = RunRecorder(tmp_path, "vault-1", interval=0.05)  # background thread, large buffer
    try:
        rec.events([1_700_000_000_000_000 + i for i in range(10)], 1_700_000_000_500_000)
        path = tmp_path / "vault-1" / "events.csv"
        deadline = time.monotonic() + 5
        while path.read_text().count("\n") < 11 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.read_text().count("\n") == 11  # header + 10 events, before close()
    finally:
        rec.close()
    assert (tmp_path / "vault-1" / "events.csv").read_text().count("\n") == 11
