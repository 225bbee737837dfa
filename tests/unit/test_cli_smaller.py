"""Small CLI behaviours of issue 22: ``kafka status`` finds its broker's port, ``compare``
takes an empty strict release."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from procvault.cli import main
from procvault.streams.kafka_local import LocalKafka


def test_kafka_status_reports_the_port_the_data_folder_was_started_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "kafka"
    data.mkdir()
    # what `kafka up --port 31001 --controller-port 31002` leaves in its data folder
    LocalKafka(data_dir=data, port=31001, controller_port=31002)._write_config()
    assert main(["kafka", "status", "--data-dir", str(data)]) == 3  # not running
    status = json.loads(capsys.readouterr().out)
    assert status["bootstrap"] == "127.0.0.1:31001" and status["running"] is False
    # an explicit --port still wins; a fresh folder falls back to the default
    assert main(["kafka", "status", "--data-dir", str(data), "--port", "31005"]) == 3
    assert json.loads(capsys.readouterr().out)["bootstrap"] == "127.0.0.1:31005"
    assert main(["kafka", "status", "--data-dir", str(tmp_path / "fresh")]) == 3
    assert json.loads(capsys.readouterr().out)["bootstrap"] == "127.0.0.1:19092"


def test_compare_takes_an_empty_strict_release(
    running_example_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "anon.xes.gz"
    # six cases, six variants: at delta 0.05 strict mode suppresses every variant
    assert main(["anonymize", str(running_example_log), "-o", str(out), "--delta", "0.05"]) == 0
    assert "every variant was suppressed" in capsys.readouterr().err
    assert main(["compare", str(running_example_log), str(out), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert (report["cases_original"], report["cases_anonymized"]) == (6, 0)
    assert report["variants_lost"] == 6 and report["new_variants"] == 0
    assert "holds no traces (every variant was suppressed)" in captured.err


def test_compare_still_refuses_a_file_that_is_not_a_log(
    running_example_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.xes"
    bad.write_text('<?xml version="1.0"?>\n<root/>\n')
    assert main(["compare", str(running_example_log), str(bad)]) == 2
    assert "not an XES log" in capsys.readouterr().err
