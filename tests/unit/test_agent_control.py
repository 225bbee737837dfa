"""The agent's control directory (generators/control.py) and ``procvault agent
status|pause|resume``: no Kafka."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from procvault.cli import main
from procvault.metrics.exporters import AgentMetrics, exposition
from procvault.monitor.errors import ConfigError
from procvault.organization.control import (
    AgentControl,
    AgentStatus,
    CommandWatcher,
    ControlDir,
    decide_state,
    default_control_dir,
)
from procvault.organization.policy import parse_policy

OFFICE = parse_policy(
    {
        "policy": "p",
        "version": 1,
        "org": "shop",
        "mode": "allowlist",
        "consent": {"scope": "s"},
        "windows": [
            {"zone": "Europe/Amsterdam", "days": ["mon-fri"], "hours": "09:00-17:00"},
            {"zone": "America/New_York", "days": ["sat"], "hours": "10:00-12:00", "groups": ["x"]},
        ],
        "groups": {"x": ["clerk"]},
    }
)


@pytest.mark.parametrize(
    ("when", "paused", "restricted", "state"),
    [
        (datetime(2024, 3, 29, 8, 30, tzinfo=UTC), False, True, "restricted"),  # Fri 09:30 CET
        (datetime(2024, 3, 29, 8, 30, tzinfo=UTC), False, False, "observing"),
        (datetime(2024, 3, 29, 7, 30, tzinfo=UTC), False, True, "outside_hours"),  # 08:30 CET
        (datetime(2024, 4, 2, 7, 30, tzinfo=UTC), False, True, "restricted"),  # 09:30 CEST
        (datetime(2024, 3, 30, 15, 0, tzinfo=UTC), False, False, "observing"),  # Sat 11:00 NY
        (datetime(2024, 3, 30, 18, 0, tzinfo=UTC), False, False, "outside_hours"),
        (datetime(2024, 3, 30, 18, 0, tzinfo=UTC), True, True, "paused"),
        (None, False, False, "observing"),  # no event read yet: no window check
    ],
)
def test_state_decisions(when: datetime | None, paused: bool, restricted: bool, state: str) -> None:
    got = decide_state(paused=paused, restricted=restricted, windows=OFFICE.windows, now=when)
    assert got == state


def test_no_windows_is_never_outside_hours() -> None:
    sunday_night = datetime(2024, 3, 31, 23, 0, tzinfo=UTC)
    assert decide_state(paused=False, restricted=False, now=sunday_night) == "observing"


def test_commands_are_seen_once_per_change(tmp_path: Path) -> None:
    d = ControlDir(tmp_path / "c")
    watcher = CommandWatcher(d)
    assert watcher.poll() is None and d.read_command() is None
    assert d.request(paused=True) == 1
    cmd = watcher.poll()
    assert cmd is not None and cmd["paused"] is True and cmd["seq"] == 1
    assert watcher.poll() is None
    assert d.request(paused=True) == 2  # the same wish again is still a new command
    assert watcher.poll()["seq"] == 2  # type: ignore[index]
    assert d.request(paused=False) == 3
    assert watcher.poll()["paused"] is False  # type: ignore[index]
    assert sorted(p.name for p in d.path.iterdir()) == ["command.json"]  # no temporary files


def test_damaged_files_are_one_line_errors(tmp_path: Path) -> None:
    d = ControlDir(tmp_path)
    d.state_file.write_text("{half")
    with pytest.raises(ConfigError, match=r"state.json: damaged \(not JSON\)"):
        d.read_state()
    d.state_file.write_text(json.dumps({"org": "a", "producer": "b", "colour": 1}))
    with pytest.raises(ConfigError, match="not an agent state file"):
        d.read_state()
    d.state_file.write_text(json.dumps({"org": "a", "producer": "b", "state": "dancing"}))
    with pytest.raises(ConfigError, match="unknown state 'dancing'"):
        d.read_state()
    d.command_file.write_text(json.dumps({"paused": "yes"}))
    with pytest.raises(ConfigError, match="not a command file"):
        d.read_command()


def test_default_control_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROCVAULT_HOME", str(tmp_path))
    assert default_control_dir("lab", "agent-2") == tmp_path / "agents" / "lab" / "agent-2"
    with pytest.raises(ConfigError, match="cannot name a control directory"):
        default_control_dir("../x", "agent-1")


def test_agent_control_reports_state_metrics_and_acknowledges(tmp_path: Path) -> None:
    metrics = AgentMetrics()
    changes: list[str] = []
    control = AgentControl(
        tmp_path,
        org="shop",
        producer="agent-1",
        restricted=True,
        windows=OFFICE.windows,
        metrics=metrics,
        on_change=changes.append,
        refresh=3600,
    )
    friday = int(datetime(2024, 3, 29, 8, 30, tzinfo=UTC).timestamp() * 1e6)
    night = int(datetime(2024, 3, 29, 22, 0, tzinfo=UTC).timestamp() * 1e6)
    counters = {"read": 3, "sent": 2, "withheld": 1}
    assert control.report(paused=False, stream_us=friday, counters=counters) == "restricted"
    st = ControlDir(tmp_path).read_state()
    assert st is not None and st.state == "restricted" and st.pid == os.getpid()
    assert st.stream_time == "2024-03-29T08:30:00+00:00" and st.counters == counters
    assert control.report(paused=False, stream_us=night, counters={"read": 9}) == "outside_hours"
    text = exposition(metrics.registry)
    assert 'procvault_agent_state{state="outside_hours"} 1.0' in text
    assert 'procvault_agent_state{state="restricted"} 0.0' in text
    # unchanged state within the refresh period: the file is not rewritten
    control.report(paused=False, stream_us=night, counters={"read": 10})
    assert ControlDir(tmp_path).read_state().counters == {"read": 9}  # type: ignore[union-attr]
    ControlDir(tmp_path).request(paused=True)
    assert control.poll() is True and control.poll() is None
    control.report(paused=True, stream_us=night, counters={"read": 10})
    st = ControlDir(tmp_path).read_state()
    assert st is not None and (st.state, st.command_seq, st.pause_requested) == ("paused", 1, True)
    assert "procvault_agent_paused 1.0" in exposition(metrics.registry)
    control.report(paused=True, stream_us=night, counters={}, running=False)
    assert ControlDir(tmp_path).read_state().running is False  # type: ignore[union-attr]
    assert changes == ["restricted", "outside_hours", "paused"]


# ----------------------------------------------------------------------------- the CLI
def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_status_without_an_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "c")
    rc, out, err = _run(capsys, "agent", "status", "--org", "lab", "--control-dir", d)
    assert rc == 3 and out == ""
    assert err.strip() == (
        f"procvault agent: no agent state in {d} (is an agent running with --org lab "
        "--producer agent-1?)"
    )
    ControlDir(d).write_state(AgentStatus(org="lab", producer="agent-1", pid=_dead_pid()))
    rc, out, _ = _run(capsys, "agent", "status", "--org", "lab", "--control-dir", d)
    assert rc == 3 and "lab/agent-1: not running" in out
    rc, out, _ = _run(capsys, "agent", "status", "--org", "lab", "--control-dir", d, "--json")
    assert rc == 3 and json.loads(out)["alive"] is False
    # a pause for an agent that is not running is recorded: an agent started there obeys it
    rc, _, err = _run(capsys, "agent", "pause", "--org", "lab", "--control-dir", d)
    assert rc == 3 and "starts paused" in err
    assert AgentControl(d, org="lab", producer="agent-1").poll() is True


def test_pause_and_resume_wait_for_the_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stand-in agent (a thread doing what Agent's control task does) answers the CLI."""
    d = tmp_path / "c"
    control = AgentControl(d, org="lab", producer="agent-1", interval=0.05)
    stop = threading.Event()
    paused = [False]

    def agent() -> None:
        while not stop.is_set():
            want = control.poll()
            if want is not None:
                paused[0] = want
            control.report(paused=paused[0], stream_us=-1, counters={"read": 1, "sent": 1})
            time.sleep(control.interval)

    thread = threading.Thread(target=agent)
    thread.start()
    try:
        time.sleep(0.2)
        rc, out, _ = _run(capsys, "agent", "status", "--org", "lab", "--control-dir", str(d))
        assert rc == 0 and out.startswith("lab/agent-1: observing for ")
        rc, out, _ = _run(capsys, "agent", "pause", "--org", "lab", "--control-dir", str(d))
        assert rc == 0 and out.startswith("lab/agent-1: paused for ")
        rc, out, _ = _run(
            capsys, "agent", "status", "--org", "lab", "--control-dir", str(d), "--json"
        )
        state = json.loads(out)
        assert rc == 0 and state["state"] == "paused" and state["command_seq"] == 1
        rc, out, _ = _run(capsys, "agent", "resume", "--org", "lab", "--control-dir", str(d))
        assert rc == 0 and out.startswith("lab/agent-1: observing for ")
        stop.set()
        thread.join()
        # an agent that does not answer: a clear error after --wait
        rc, _, err = _run(
            capsys, "agent", "pause", "--org", "lab", "--control-dir", str(d), "--wait", "0.3"
        )
        assert rc == 1 and "did not pause within 0.3 s" in err and err.count("\n") == 1
    finally:
        stop.set()
        thread.join()


def test_agent_run_needs_its_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["agent", "--org", "lab"])
    assert exc.value.code == 2
    assert "agent run needs --kafka, --keys, --from" in capsys.readouterr().err


def test_hold_needs_review(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(
        capsys,
        "agent",
        "--org",
        "lab",
        "--kafka",
        "127.0.0.1:1",
        "--keys",
        str(tmp_path),
        "--from",
        "x.xes",
        "--hold",
        "5",
    )
    assert rc == 2 and "give --review DIR too" in err


def test_the_state_metric_takes_only_the_four_states() -> None:
    m = AgentMetrics()
    assert 'procvault_agent_state{state="observing"} 1.0' in exposition(m.registry)
    with pytest.raises(ValueError, match="state must be one of observing, outside_hours"):
        m.set_state("sleeping")
