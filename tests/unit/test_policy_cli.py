"""``procvault policy check|apply`` and ``procvault audit verify``, through
``procvault.cli.main``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from procvault.cli import main

REPO = Path(__file__).resolve().parents[2]
SECRET = "cli-test-key-never-printed-0123456789"

POLICY = """\
policy: running-example
version: 3
org: insurer
mode: denylist
consent:
  scope: claims-monitoring
activities:
  - reject request
attributes:
  - key: case:creator
  - key: Costs
    values: {regex: "[0-9]{4,}"}
windows:
  - resources: [Sara]
    zone: Europe/Amsterdam
    days: [mon-fri]
    hours: "09:00-17:00"
generalise:
  timestamps: hour
pseudonymise:
  case_id: true
  resource: true
  attributes: [Resource]
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``procvault.cli.main``: one-line errors, exit 2 for bad input."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "insurer.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "insurer.key"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "PROCVAULT_POLICY_KEY",
        "PROCVAULT_POLICY_CASE_KEY",
        "PROCVAULT_POLICY_APPLY_POLICY",
    ):
        monkeypatch.delenv(var, raising=False)


# ----------------------------------------------------------------------------- policy check
@pytest.mark.parametrize(
    "name", ["hospital", "emergency", "lab", "ward", "customer", "supplier", "carrier"]
)
def test_check_example_policies(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "policies" / "orgs" / f"{name}.yaml"
    code, out, _ = run(["policy", "check", str(path)], capsys)
    assert code == 0
    assert out.splitlines()[0] == f"{path}: OK"
    assert "clauses" in out and "digest: sha256:" in out


def test_check_json_and_manifest(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = shared_data / "manifests" / "extraction_manifest_bpic2012.json"
    code, out, _ = run(["policy", "check", "--json", str(manifest)], capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["ok"] is True
    assert summary["minimise"] == {"activities": 12, "default": "drop", "source": str(manifest)}


def test_check_bad_policy_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(POLICY.replace("Europe/Amsterdam", "Europe/Amsterdamm"))
    code, out, err = run(["policy", "check", str(path)], capsys)
    assert code == 2 and out == ""
    assert err == (
        f"procvault: error: {path}:15: windows[0].zone: unknown IANA time zone "
        "'Europe/Amsterdamm'\n"
    )


# ----------------------------------------------------------------------------- policy apply
def test_apply_with_audit_then_verify(
    tmp_path: Path,
    policy_file: Path,
    key_file: Path,
    running_example_log: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out_path, audit = tmp_path / "out.jsonl", tmp_path / "audit.jsonl"
    code, _, err = run(
        [
            "policy",
            "apply",
            str(running_example_log),
            "--policy",
            str(policy_file),
            "--key-file",
            str(key_file),
            "--audit-log",
            str(audit),
            "--end-markers",
            "--to",
            str(out_path),
        ],
        capsys,
    )
    assert code == 0, err
    events = [json.loads(line) for line in out_path.read_text().splitlines()]
    assert len(events) == 42 + 6  # every input accounted for, markers included
    names = {"Pete", "Mike", "Ellen", "Sara", "Sue", "Sean"}
    for ev in events:
        assert ev["attributes"]["pv:scope"] == "claims-monitoring"
        assert "case:creator" not in ev["attributes"]
        assert not names & {str(v) for v in ev["attributes"].values()}
        assert ev["resource"] is None or ev["resource"].startswith("r_")
        assert ev["case_id"].startswith("c_")
    placeholders = [e for e in events if e["activity"] == "pv:withheld"]
    assert {e["attributes"]["pv:reason"] for e in placeholders} >= {"ACTIVITY_DENIED"}
    assert "placeholders" in err and "audit log" in err
    assert SECRET not in err and SECRET not in out_path.read_text()
    assert SECRET not in audit.read_text()

    code, out, _ = run(["audit", "verify", str(audit)], capsys)
    assert code == 0
    assert out.startswith(f"{audit}: intact: 50 entries, 1 sessions, 48 decisions")
    head = out.rsplit("head ", 1)[1].strip()
    code, out, _ = run(["audit", "verify", "--json", "--head", head, str(audit)], capsys)
    assert code == 0 and json.loads(out)["head"] == head

    lines = audit.read_text().splitlines()
    lines[7] = lines[7].replace('"pos":', '"pos":1')
    audit.write_text("\n".join(lines) + "\n")
    code, out, err = run(["audit", "verify", str(audit)], capsys)
    assert code == 1 and out == ""
    assert err == (
        f"procvault: error: {audit}: entry 7 (line 8): its content does not match its hash: "
        "the entry was changed\n"
    )


def test_apply_key_from_environment_and_jsonl_input(
    tmp_path: Path,
    policy_file: Path,
    running_example_log: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PROCVAULT_POLICY_KEY", SECRET)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    argv = ["policy", "apply", str(running_example_log), "--policy", str(policy_file)]
    assert run([*argv, "--to", str(first)], capsys)[0] == 0
    # The output of one stage can be read back as input (JSON lines of events).
    plain = tmp_path / "plain.jsonl"
    code, _, _ = run(
        [
            "policy",
            "apply",
            str(running_example_log),
            "--policy",
            str(_open_policy(tmp_path)),
            "--to",
            str(plain),
        ],
        capsys,
    )
    assert code == 0
    assert (
        run(
            ["policy", "apply", str(plain), "--policy", str(policy_file), "--to", str(second)],
            capsys,
        )[0]
        == 0
    )
    a = [json.loads(x) for x in first.read_text().splitlines()]
    b = [json.loads(x) for x in second.read_text().splitlines()]
    assert [e["case_id"] for e in a] == [e["case_id"] for e in b]


def _open_policy(tmp_path: Path) -> Path:
    path = tmp_path / "open.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            policy: open
            version: 1
            mode: denylist
            consent: {scope: test}
            """
        )
    )
    return path


def test_apply_without_a_key_is_one_line(
    policy_file: Path, running_example_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["policy", "apply", str(running_example_log), "--policy", str(policy_file), "--to", "null"],
        capsys,
    )
    assert code == 2
    assert err == (
        "procvault: error: policy 'running-example' pseudonymises case ids and resources and "
        "attributes: it needs the organization's key (--key-file FILE or $PROCVAULT_POLICY_KEY)\n"
    )


def test_apply_scrub_flag_and_limit(
    tmp_path: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "in.jsonl"
    log.write_text(
        json.dumps(
            {
                "case_id": "t-1",
                "activity": "Call",
                "timestamp": "2024-05-06T10:00:00Z",
                "attributes": {"note": "ring me on +31 20 794 0911 or mail a@b.org"},
            }
        )
        + "\n"
        + json.dumps({"case_id": "t-2", "activity": "Call", "timestamp": "2024-05-06T11:00:00Z"})
        + "\n"
    )
    out = tmp_path / "out.jsonl"
    base = ["policy", "apply", str(log), "--policy", str(_open_policy(tmp_path)), "--to", str(out)]
    assert run(base, capsys)[0] == 0
    assert "a@b.org" in out.read_text()
    code, _, err = run([*base, "--scrub", "--limit", "1"], capsys)
    assert code == 0
    [ev] = [json.loads(x) for x in out.read_text().splitlines()]
    assert ev["attributes"]["note"] == "ring me on [PHONE] or mail [EMAIL]"
    assert "PII scrubbed: email 1, phone 1" in err


def test_apply_bad_inputs(
    tmp_path: Path, policy_file: Path, key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"case_id": "x"}\n')
    argv = ["--policy", str(policy_file), "--key-file", str(key_file), "--to", "null"]
    code, _, err = run(["policy", "apply", str(bad), *argv], capsys)
    assert code == 2 and err.startswith(f"procvault: error: {bad}:1: ")
    code, _, err = run(["policy", "apply", str(tmp_path / "log.csv"), *argv], capsys)
    assert code == 2 and "expected a .xes, .xes.gz or .jsonl file" in err
    code, _, err = run(["policy", "apply", str(tmp_path / "none.jsonl"), *argv], capsys)
    assert code == 2 and "no such file" in err


def test_policy_option_from_environment(
    policy_file: Path,
    key_file: Path,
    running_example_log: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PROCVAULT_POLICY_APPLY_POLICY", str(policy_file))
    code, _, err = run(
        ["policy", "apply", str(running_example_log), "--key-file", str(key_file), "--to", "null"],
        capsys,
    )
    assert code == 0, err
    assert "policy running-example v3" in err
