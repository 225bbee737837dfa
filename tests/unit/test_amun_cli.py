"""``procvault anonymize`` / ``compare`` end to end, wired through ``register`` on a parser."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from test_amun_support import RUNNING_EXAMPLE, running_example

from procvault.cli import main
from procvault.generators.xes import read_xes
from procvault.generators.xes_write import write_xes
from procvault.monitor.amun import CaseLog


def _run(*argv: str) -> int:
    return main(list(argv))


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line ``procvault`` prints for a bad input or configuration (exit 2)."""
    capsys.readouterr()
    assert main(list(argv)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("procvault: error: ")
    return line


def _cases(path: Path) -> CaseLog:
    return CaseLog.from_events(read_xes(path).events)


def test_xes_round_trip_is_exact_and_gzip_is_deterministic(tmp_path: Path) -> None:
    log = running_example()
    a, b = tmp_path / "a.xes.gz", tmp_path / "b.xes.gz"
    assert write_xes(log.to_events(), a) == 6
    write_xes(log.to_events(), b)
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes()).startswith(b"<?xml")
    assert _cases(a) == log


@pytest.mark.parametrize("mode", ["amun", "strict"])
def test_anonymize_and_compare_sepsis(
    mode: str, sepsis_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sepsis.xes.gz"
    assert _run("anonymize", str(sepsis_log), "--mode", mode, "--delta", "0.4", "-o", str(out)) == 0
    err = capsys.readouterr().err
    assert "anonymized 1,050 cases" in err
    if mode == "strict":
        assert "per-case epsilon 1.6946" in err
    assert out.exists()
    if "every variant was suppressed" in err:
        return
    assert _run("compare", str(sepsis_log), str(out), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["r1_holds"] is True
    assert report["new_variants"] == 0
    assert report["cases_anonymized"] > 0


def test_anonymize_running_example_all_amun_strategies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = running_example()
    for strategy in ("sampling", "oversampling", "filtering"):
        out = tmp_path / f"{strategy}.xes"
        argv = ["anonymize", str(RUNNING_EXAMPLE), "--mode", "amun", "--strategy", strategy]
        assert _run(*argv, "--delta", "0.5", "--seed", "4", "-o", str(out)) == 0
        released = _cases(out)
        assert set(released.variants) <= set(original.variants)
        assert not {c.case_id for c in released.cases} & {c.case_id for c in original.cases}
    assert _run("compare", str(RUNNING_EXAMPLE), str(tmp_path / "sampling.xes")) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("new variants (R1 holds if 0)")
    assert last.split()[-1] == "0"


def test_same_seed_same_file_in_amun_mode(tmp_path: Path) -> None:
    a, b = tmp_path / "a.xes.gz", tmp_path / "b.xes.gz"
    for path in (a, b):
        _run("anonymize", str(RUNNING_EXAMPLE), "--mode", "amun", "--seed", "9", "-o", str(path))
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("delta", ["0", "1", "1.5", "-0.2"])
def test_bad_delta_is_a_config_error(
    delta: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("anonymize", str(RUNNING_EXAMPLE), "--delta", delta, "-o", str(tmp_path / "o.xes"))
    assert re.search(r"must be in \(0, 1\)", _error(capsys, *argv))


def test_strict_filtering_and_missing_output_are_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = str(RUNNING_EXAMPLE)
    out = str(tmp_path / "o.xes")
    line = _error(capsys, "anonymize", example, "--strategy", "filtering", "-o", out)
    assert "strict mode supports strategy 'sampling' only" in line
    assert "needs -o/--output" in _error(capsys, "anonymize", example)
    line = _error(capsys, "anonymize", example, "-o", str(tmp_path / "o.csv"))
    assert re.search(r"must end in \.xes\.gz or \.xes", line)


def test_single_case_log_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one.xes"
    write_xes(CaseLog.from_cases(running_example().cases[:1]).to_events(), one)
    line = _error(capsys, "anonymize", str(one), "-o", str(tmp_path / "o.xes"))
    assert re.search(r"1 case.*needs at least 2", line)


def test_log_without_timestamps_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notime.xes"
    bad.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><log xes.version="1.0">'
        '<trace><string key="concept:name" value="1"/>'
        '<event><string key="concept:name" value="A"/></event></trace>'
        '<trace><string key="concept:name" value="2"/>'
        '<event><string key="concept:name" value="A"/></event></trace></log>'
    )
    assert "has no timestamp" in _error(
        capsys, "anonymize", str(bad), "-o", str(tmp_path / "o.xes")
    )


def test_progress_bar_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.xes"
    argv = ["anonymize", str(RUNNING_EXAMPLE), "--mode", "amun", "-o", str(out)]
    assert _run(*argv, "--progress", "on") == 0
    err = capsys.readouterr().err
    assert "anonymize amun_table1.xes" in err
    assert "done" in err
    assert _run(*argv, "--progress", "off") == 0
    assert "anonymize amun_table1.xes" not in capsys.readouterr().err


def test_strict_window_is_reported_given_or_read_from_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o.xes")
    assert _run("anonymize", str(RUNNING_EXAMPLE), "-o", out) == 0
    err = capsys.readouterr().err
    assert "start window 2020-08-08T00:00:00+00:00 .. 2020-08-12T00:00:00+00:00" in err
    assert "read from the log: assumed public, not protected (pass --window)" in err
    argv = ["anonymize", str(RUNNING_EXAMPLE), "-o", out, "--window", "2020-08-01,2020-09-01"]
    assert _run(*argv) == 0
    err = capsys.readouterr().err
    assert "start window 2020-08-01T00:00:00+00:00 .. 2020-09-01T00:00:00+00:00 (given)" in err
    for bad in ("2020-08-01", "2020-09-01,2020-08-01", "yesterday,today"):
        with pytest.raises(SystemExit):
            _run("anonymize", str(RUNNING_EXAMPLE), "-o", out, "--window", bad)
        assert "--window" in capsys.readouterr().err


def test_help_says_the_seed_is_for_amun_mode_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _run("anonymize", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "amun mode only (comparison runs): seeds its noise, sampling, case ids and order" in text
    assert "strict mode ignores it" in text
