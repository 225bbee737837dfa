"""The hash-chained audit log: intact logs verify; changing, removing, inserting or reordering
any entry, or cutting the tail, fails verification naming the first broken entry."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procvault.monitor.errors import ConfigError, SecurityError, TamperError
from procvault.monitor.event import Event
from procvault.organization.policy import (
    AuditLog,
    PolicyEngine,
    PseudonymKey,
    parse_policy,
    verify_audit_log,
)
from procvault.organization.policy.audit import GENESIS, entry_hash

T0 = datetime(2024, 5, 6, 9, tzinfo=UTC)
KEY = PseudonymKey(b"audit test key of thirty-two b's")


def _clock() -> datetime:
    return datetime(2024, 6, 1, 12, tzinfo=UTC)


def _engine() -> PolicyEngine:
    policy = parse_policy(
        {
            "policy": "audit-test",
            "version": 2,
            "org": "shop",
            "mode": "denylist",
            "consent": {"scope": "s"},
            "activities": ["Refund"],
            "attributes": ["iban"],
            "pseudonymise": {"case_id": True},
        }
    )
    return PolicyEngine(policy, key=KEY)


def _events(n: int = 8) -> list[Event]:
    out = []
    for i in range(n):
        activity = "Refund" if i % 3 == 2 else "Pay"
        out.append(
            Event.create(
                f"order-{i % 2}",
                activity,
                T0 + timedelta(minutes=i),
                org="shop",
                attributes={"iban": "NL91ABNA0417164300", "amount": i},
            )
        )
    out.append(Event.case_end("order-0", T0 + timedelta(hours=1), org="shop"))
    return out


def _write_log(path: Path, sessions: int = 1, n: int = 8) -> None:
    engine = _engine()
    for _ in range(sessions):
        with AuditLog(path, clock=_clock) as log:
            log.open_session({"policy": "audit-test", "policy_version": 2, "actor": "test"})
            for ev in _events(n):
                log.record(engine.decide(ev))


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _save(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "audit.jsonl"
    _write_log(path)
    return path


# ----------------------------------------------------------------------------- intact logs
def test_an_intact_log_verifies(log_path: Path) -> None:
    report = verify_audit_log(log_path)
    assert report.entries == 11  # open, 9 decisions, close
    assert report.sessions == 1
    assert report.decisions == 9
    assert report.outcomes == {"emitted": 6, "withheld": 2, "marker": 1}
    assert report.reasons == {"ACTIVITY_DENIED": 2}
    assert report.head == json.loads(_lines(log_path)[-1])["hash"]


def test_entries_hold_codes_and_references_never_values(log_path: Path) -> None:
    text = log_path.read_text()
    assert "NL91ABNA0417164300" not in text
    assert "order-0" not in text  # the case is referred to by its pseudonym
    decision = json.loads(_lines(log_path)[1])
    assert decision["fields"] == {"iban": "ATTRIBUTE_DENIED"}
    assert decision["case"].startswith("c_")
    assert set(decision) == {"case", "fields", "hash", "outcome", "pos", "prev", "seq", "type"}
    withheld = json.loads(_lines(log_path)[3])
    assert (withheld["outcome"], withheld["reason"], withheld["pos"]) == (
        "withheld",
        "ACTIVITY_DENIED",
        2,
    )


def test_sessions_continue_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, sessions=3)
    report = verify_audit_log(path)
    assert (report.sessions, report.decisions, report.entries) == (3, 27, 33)
    first_of_second = json.loads(_lines(path)[11])
    assert first_of_second["type"] == "open"
    assert first_of_second["prev"] == json.loads(_lines(path)[10])["hash"]


def test_the_head_is_what_the_writer_reports(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, clock=_clock) as log:
        log.open_session({"policy": "p"})
        log.record(_engine().decide(_events(1)[0]))
    entries, head = log.head
    assert entries == 3
    assert verify_audit_log(path, expect_head=head).head == head


def test_an_empty_log_is_empty_not_intact(tmp_path: Path) -> None:
    """An empty file proves nothing (a log whose entries were all removed looks the same): it
    verifies as ``empty``, which callers and ``procvault audit verify`` tell apart."""
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    report = verify_audit_log(path)
    assert (report.entries, report.status, report.intact) == (0, "empty", False)
    _write_log(path)
    assert (verify_audit_log(path).status, verify_audit_log(path).intact) == ("intact", True)


def test_audit_verify_cli_tells_an_empty_log_from_an_intact_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from procvault.cli import main

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["audit", "verify", str(empty)]) == 3
    assert "empty: no entries" in capsys.readouterr().out
    assert main(["audit", "verify", str(empty), "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert (out["ok"], out["status"], out["entries"]) == (False, "empty", 0)
    full = tmp_path / "full.jsonl"
    _write_log(full)
    assert main(["audit", "verify", str(full), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["ok"], out["status"]) == (True, "intact")


def test_the_log_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0)
    try:
        _write_log(tmp_path / "audit.jsonl")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o600


def test_the_log_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("")
    (tmp_path / "audit.jsonl").symlink_to(victim)
    with pytest.raises(ConfigError, match="cannot write the audit log"):
        AuditLog(tmp_path / "audit.jsonl")
    assert victim.read_text() == ""


# ----------------------------------------------------------------------------- tampering
def _broken(path: Path, **kw: str) -> str:
    with pytest.raises(TamperError) as info:
        verify_audit_log(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    assert isinstance(info.value, SecurityError)
    return msg.removeprefix(str(path) + ": ")


@pytest.mark.parametrize("index", [0, 1, 5, 10])
def test_changing_an_entry_names_it(log_path: Path, index: int) -> None:
    lines = _lines(log_path)
    entry = json.loads(lines[index])
    entry["tampered"] = True
    lines[index] = json.dumps(entry)
    _save(log_path, lines)
    assert _broken(log_path).startswith(f"entry {index} (line {index + 1}): its content does not")


def test_changing_a_value_or_an_outcome(log_path: Path) -> None:
    lines = _lines(log_path)
    lines[3] = lines[3].replace('"withheld"', '"emitted"')
    _save(log_path, lines)
    assert _broken(log_path).startswith("entry 3 (line 4):")


def test_changing_a_hash_breaks_the_next_link(log_path: Path) -> None:
    lines = _lines(log_path)
    entry = json.loads(lines[4])
    entry["hash"] = "0" * 64
    lines[4] = json.dumps(entry)
    _save(log_path, lines)
    assert _broken(log_path).startswith("entry 4 (line 5): its content does not match its hash")


@pytest.mark.parametrize("index", [0, 2, 9])
def test_removing_an_entry_names_where_it_was(log_path: Path, index: int) -> None:
    lines = _lines(log_path)
    del lines[index]
    _save(log_path, lines)
    msg = _broken(log_path)
    assert msg.startswith(f"entry {index} (line {index + 1}): has seq {index + 1}")
    assert "removed, inserted or reordered" in msg


def test_reordering_two_entries(log_path: Path) -> None:
    lines = _lines(log_path)
    lines[4], lines[5] = lines[5], lines[4]
    _save(log_path, lines)
    assert _broken(log_path).startswith("entry 4 (line 5): has seq 5")


def test_reordering_with_renumbered_seq_still_breaks_the_chain(log_path: Path) -> None:
    lines = _lines(log_path)
    a, b = json.loads(lines[4]), json.loads(lines[5])
    a["seq"], b["seq"] = 5, 4
    lines[4], lines[5] = json.dumps(b), json.dumps(a)
    _save(log_path, lines)
    assert _broken(log_path).startswith("entry 4 (line 5): does not chain")


def test_inserting_a_copy(log_path: Path) -> None:
    lines = _lines(log_path)
    lines.insert(3, lines[2])
    _save(log_path, lines)
    assert _broken(log_path).startswith("entry 3 (line 4): has seq 2")


def test_cutting_the_tail(log_path: Path) -> None:
    lines = _lines(log_path)
    _save(log_path, lines[:-1])
    msg = _broken(log_path)
    assert msg.startswith("entry 10 (line 11) is missing: the log ends inside a session")
    log_path.write_text("\n".join(lines)[:-20], encoding="utf-8")
    assert _broken(log_path).startswith("entry 10 (line 11): incomplete line")


def test_removing_a_whole_trailing_session_needs_the_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _write_log(path, sessions=2)
    head = verify_audit_log(path).head
    _save(path, _lines(path)[:11])
    assert verify_audit_log(path).sessions == 1  # the chain alone cannot tell
    assert "the head is" in _broken(path, expect_head=head)


def test_a_decision_count_that_disagrees(log_path: Path) -> None:
    lines = _lines(log_path)
    del lines[1:3]
    # Renumber and rehash everything after the cut, as a careful forger would...
    prev = GENESIS
    for i, line in enumerate(lines):
        entry = json.loads(line)
        entry.pop("hash")
        entry["seq"], entry["prev"] = i, prev
        entry["hash"] = prev = entry_hash(entry)
        lines[i] = json.dumps(entry)
    _save(log_path, lines)
    # ...and the session's closing count still gives it away.
    assert "the session closes with 9 decisions but 7 are recorded" in _broken(log_path)


def test_garbage_lines(log_path: Path) -> None:
    lines = _lines(log_path)
    lines[6] = "not json"
    _save(log_path, lines)
    assert _broken(log_path) == (
        "entry 6 (line 7): not a JSON object: the entry was changed or damaged"
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["change", "remove", "swap", "duplicate"]),
    st.integers(0, 32),
    st.data(),
)
def test_any_tampering_is_detected_at_the_right_entry(
    tmp_path_factory: pytest.TempPathFactory, how: str, index: int, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    _write_log(path, sessions=3)
    lines = _lines(path)
    n = len(lines)
    if how == "change":
        entry = json.loads(lines[index])
        field = data.draw(st.sampled_from(sorted(k for k in entry if k != "hash")))
        entry[field] = data.draw(
            st.one_of(st.integers(), st.text(max_size=5)).filter(lambda v: v != entry[field])
        )
        lines[index] = json.dumps(entry)
        expected = index
    elif how == "remove":
        del lines[index]
        expected = index
    elif how == "swap":
        other = data.draw(st.integers(0, n - 1).filter(lambda j: j != index))
        lines[index], lines[other] = lines[other], lines[index]
        expected = min(index, other)
    else:
        lines.insert(index, lines[index])
        expected = index + 1
    _save(path, lines)
    with pytest.raises(TamperError, match=rf": entry {expected} \(line {expected + 1}\)"):
        verify_audit_log(path)


# ----------------------------------------------------------------------------- the writer
def test_appending_refuses_a_damaged_or_open_log(log_path: Path) -> None:
    lines = _lines(log_path)
    _save(log_path, lines[:-1])
    with pytest.raises(TamperError, match="ends inside a session"):
        AuditLog(log_path)
    _save(log_path, [*lines[:-1], lines[-1].replace('"close"', '"closed"')])
    with pytest.raises(TamperError, match="does not match its hash"):
        AuditLog(log_path)


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path), pytest.raises(ConfigError, match="in use by another process"):
        AuditLog(path)


def test_writer_misuse() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d, AuditLog(Path(d) / "a.jsonl") as log:
        with pytest.raises(ValueError, match="open_session"):
            log.append("decision", {"outcome": "emitted"})
        log.open_session({})
        with pytest.raises(ValueError, match="may not set 'seq'"):
            log.append("decision", {"seq": 3})
        with pytest.raises(ValueError, match="unknown audit entry type"):
            log.append("note", {})
    log.close()  # a second close does nothing


def test_missing_log_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the audit log"):
        verify_audit_log(tmp_path / "nope.jsonl")
