"""``procvault demo`` end to end on the session's broker (a shorter stream): the self-check
passes, every check is printed, and nothing it started is left running."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes naming ``text`` (the run folder is in every child's
    arguments: keys, logs, the stream, Prometheus' data)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace")
        if text in cmd:
            found.append(f"{pid}: {cmd[:200]}")
    return found


def test_demo_self_check_passes_and_leaves_nothing_running(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = tmp_path / "demo-run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "procvault",
            "demo",
            "--cases",
            "150",
            "--kafka",
            kafka_bootstrap,
            "--run-dir",
            str(run),
        ],
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, (out[-4000:], proc.stderr[-2000:])
    assert "self-check passed" in out, out[-3000:]
    checks = [line.strip() for line in out.splitlines() if line.startswith("  PASS ")]
    names = {line.split()[1].rstrip(":") for line in checks}
    assert names == {"cases", "counters", "dp", "in-clear", "processes"}, out[-3000:]
    assert "FAIL" not in out
    assert re.search(r"PASS cases: all 1[45]\d per-case results equal procvault monitor's", out)
    # not a TTY: plain progress lines and the map once, no cursor movements
    assert "\x1b[" not in out
    assert "DP process map" in out and "noise (95%" in out
    assert not _processes_mentioning(str(run)), _processes_mentioning(str(run))
    # the run folder holds what the demo says it keeps
    assert (run / "stream.xes").is_file() and (run / "keys" / "registry.json").is_file()
    assert (run / "logs" / "vault.log").is_file()
