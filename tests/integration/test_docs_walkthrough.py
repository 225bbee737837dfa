"""docs/pipeline.md's "A local run" cannot drift (issue 22 item 12): its fenced block is run
as it stands (only the variables it documents are set: the session's broker in ``KAFKA``, a
folder in ``RUN``, ``METRICS_PORT=0``, ``PROCVAULT_TOPIC_PREFIX`` and ``PROCVAULT_HOME``), on
Sepsis split three ways, and the results it produced equal ``procvault monitor``'s; its DP
policy's one pane is published with a 95% noise interval within 20% of each of the log's ten
most frequent activities and pairs (the interval is the plan's, not a draw: no flakiness)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import pytest
from pipeline_harness import (
    REPO,
    SEPSIS_MODEL,
    SEPSIS_RULES,
    SHARED,
    Deployment,
    in_process_results,
)

pytestmark = pytest.mark.timeout(900)

DOC = REPO / "docs" / "pipeline.md"


def walkthrough() -> str:
    """The first ``sh`` block after the "## A local run" heading, verbatim."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## A local run\n", 1)[1].split("\n## ", 1)[0]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found, "no ```sh block in docs/pipeline.md's 'A local run'"
    return found.group(1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_block_names_only_documented_variables() -> None:
    block = walkthrough()
    used = set(re.findall(r"\$\{?([A-Z_]+)", block))
    section = DOC.read_text().split("\n## A local run\n", 1)[1].split("\n## ", 1)[0]
    prose = section.split("```", 2)[2]
    for name in used - {"SHARED"}:  # SHARED is set in the block itself
        assert f"`{name}`" in prose or f"`{name}=" in prose or name == "agents", name
    assert "19092" not in block.replace("KAFKA=127.0.0.1:19092", "")  # only the default


def test_the_local_run_of_the_docs_equals_monitor(
    kafka_bootstrap: str, tmp_path: Path, sepsis_log: Path
) -> None:
    from procvault.generators.xes import read_xes

    script = tmp_path / "walkthrough.sh"
    script.write_text("set -euo pipefail\n" + walkthrough())
    prefix = f"docs{uuid4().hex[:8]}."
    run = tmp_path / "run"
    env = {
        **os.environ,
        "KAFKA": kafka_bootstrap,
        "RUN": str(run),
        "METRICS_PORT": "0",
        "PROCVAULT_SHARED_DATA": str(SHARED),
        "PROCVAULT_TOPIC_PREFIX": prefix,
        "PROCVAULT_HOME": str(tmp_path / "home"),
    }
    out = tmp_path / "walkthrough.out"
    reference = in_process_results(
        read_xes(sepsis_log).replay(end_markers=True), SHARED / SEPSIS_MODEL, SEPSIS_RULES
    )
    with out.open("wb") as fh:
        proc = subprocess.Popen(
            ["bash", str(script)],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the vault and release stage it leaves running: one group
        )
    try:
        rc = proc.wait(600)
        log = out.read_text(errors="replace")
        assert rc == 0, log[-4000:]
        assert "results:" in log, log[-3000:]  # procvault results' summary line
        dep = Deployment(kafka_bootstrap, run, prefix=prefix, init_keys=False)
        got = dep.case_results(wait_for=len(reference), timeout=300)
        pane = _published_pane(env, run)
    finally:
        # the group's leader (bash) is gone: the vault and the release stage are still in it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _group_alive(proc.pid):
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert got.keys() == reference.keys(), (len(got), len(reference))
    # the block runs the default results policy: each organization gets the verdict's
    # default fields (policies/consortium/default.yaml), compared field by field
    fields = set().union(*(item.keys() for item in got.values()))
    assert {"case", "is_fit", "fitness", "missing", "remaining", "rules"} <= fields, fields
    diff = [c for c in reference if got[c] != {k: reference[c][k] for k in got[c]}]
    assert not diff, (len(diff), diff[:3], got[diff[0]] if diff else None)
    assert "Traceback" not in log, log[-3000:]
    _check_readable(pane, sepsis_log)


def _published_pane(env: dict[str, str], run: Path) -> dict[str, object]:
    """The pane record ``procvault results --json`` shows (waits for the release stage)."""
    cmd = [
        str(REPO / ".venv" / "bin" / "procvault"),
        "results",
        "--kafka",
        env["KAFKA"],
        "--keys",
        str(run / "keys"),
        "--json",
        "--allow-insecure-attestation",
    ]
    deadline = time.monotonic() + 180
    while True:
        out = subprocess.run(
            cmd, check=False, env=env, capture_output=True, text=True, timeout=120
        ).stdout
        records = [json.loads(line)["record"] for line in out.splitlines()]
        panes = [r for r in records if r.get("kind") == "pane"]
        if panes:
            assert len(panes) == 1, [p["pane"] for p in panes]
            return panes[0]
        assert time.monotonic() < deadline, "no pane record on results.aggregates"
        time.sleep(2)


def _check_readable(pane: dict[str, object], log: Path) -> None:
    from procvault.generators.xes import read_xes
    from procvault.monitor.privacy.intervals import half_width

    by_case: dict[str, list[str]] = {}
    first = last = None
    for e in read_xes(log).replay():
        by_case.setdefault(e.case_id, []).append(e.activity)
        first = first or e.timestamp
        last = e.timestamp
    info = pane["pane"]
    assert isinstance(info, dict) and first is not None and last is not None
    start, end = (datetime.fromisoformat(str(info[k])) for k in ("start", "end"))
    assert start <= first and last < end, info  # the one pane holds the whole log
    counts: dict[str, dict[tuple[str, ...], int]] = {"activity": {}, "directly_follows": {}}
    for trace in by_case.values():
        for key in {(a,) for a in trace} | set(itertools.pairwise(trace)):
            c = counts["activity" if len(key) == 1 else "directly_follows"]
            c[key] = c.get(key, 0) + 1
    mechanisms = {m["name"]: m for m in pane["mechanisms"]}  # type: ignore[attr-defined]
    for name, c in counts.items():
        h = half_width(mechanisms[name]["scale"])
        tenth = sorted(c.values(), reverse=True)[9]
        assert h <= 0.2 * tenth, (name, h, tenth)
