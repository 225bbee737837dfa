"""A harness for pipeline tests: real processes (``python -m procvault``) on the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

from conftest import SHARED_DATA

from procvault.monitor.event import Event
from procvault.monitor.findings import decode_batch, finding_to_dict
from procvault.organization.progress import best_progress
from procvault.streams.frames import Topics, open_result
from procvault.streams.secrets import OrgKeys, VaultSecrets

SHARED = SHARED_DATA
SEPSIS_MODEL = "models/promtee/pnml/sepsis.pnml"
REPO = Path(__file__).resolve().parents[2]
SEPSIS_ORGS = REPO / "examples" / "sepsis_orgs.yaml"
SEPSIS_RULES = REPO / "policies" / "rules" / "sepsis.yaml"
ORGS = ("emergency", "lab", "ward")

#: A DP release policy with weekly panes: Sepsis's 18 months give a few hundred panes.
WEEKLY_DP = """
version: 1
budget: {epsilon: 1.0, window: 4, delta: 1.0e-6}
panes: {length: 7d, allowed_lateness: 1h, max_panes_per_case: 4, start: 2013-10-31T00:00:00Z}
allocation: uniform
statistics:
  activity:         {weight: 2, max_keys: 3}
  directly_follows: {weight: 3, max_keys: 3}
  cases:            {weight: 1}
  deviation:        {weight: 1, max_keys: 2}
  violation:        {weight: 1, max_keys: 2}
running_totals: {statistics: [cases], levels: 16, share: 0.2}
windows: [7d, 28d]
"""


def procvault(*args: str) -> list[str]:
    """The command line of ``procvault ARGS`` with this interpreter."""
    return [sys.executable, "-m", "procvault", *args]


@dataclass
class Proc:
    """A running process with its stderr in a file."""

    name: str
    popen: subprocess.Popen[bytes]
    err: Path

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.stderr()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(
            f"{self.name}: no {text!r} within {timeout} s:\n{self.stderr()[-3000:]}"
        )

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 20.0) -> dict[str, Any] | None:
        """SIGTERM, then SIGKILL after ``timeout``; the JSON counters it printed last, if any."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return last_json(self.stderr())

    def wait(self, timeout: float = 300.0) -> dict[str, Any]:
        rc = self.popen.wait(timeout)
        assert rc == 0, f"{self.name} exited {rc}:\n{self.stderr()[-3000:]}"
        out = last_json(self.stderr())
        assert out is not None, self.stderr()[-2000:]
        return out


def last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)  # type: ignore[no-any-return]
            except ValueError:
                continue
    return None


@dataclass
class Deployment:
    """One pipeline under its own topic prefix, keyring and folder."""

    bootstrap: str
    root: Path
    orgs: Sequence[str] = ORGS
    partitions: int = 3
    prefix: str = field(default_factory=lambda: f"p{uuid4().hex[:10]}.")
    procs: list[Proc] = field(default_factory=list)
    #: False: the keyring in ``root/keys`` exists already (made by what the test runs)
    init_keys: bool = True

    def __post_init__(self) -> None:
        self.keys = self.root / "keys"
        if self.init_keys:
            subprocess.run(
                procvault("keys", "init", str(self.keys), "--orgs", ",".join(self.orgs)),
                check=True,
                capture_output=True,
            )
        self.topics = Topics(self.prefix)

    def _common(self) -> list[str]:
        return [
            "--kafka",
            self.bootstrap,
            "--keys",
            str(self.keys),
            "--topic-prefix",
            self.prefix,
            "--partitions",
            str(self.partitions),
        ]

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        err = self.root / f"{name}-{len(self.procs)}.err"
        with err.open("wb") as fh:
            popen = subprocess.Popen(
                procvault(*args),
                stdout=subprocess.DEVNULL,
                stderr=fh,
                cwd=self.root,
                env={**os.environ, **(env or {})},
            )
        proc = Proc(name, popen, err)
        self.procs.append(proc)
        return proc

    def vault(self, *extra: str, worker: str = "vault-1", results: str = "full") -> Proc:
        """A vault worker; ``results``: the consortium's results policy (``full`` lets the
        tests compare every verdict field with the in-process monitor)."""
        p = self.start(
            worker,
            "vault",
            *self._common(),
            "--model",
            str(SHARED / SEPSIS_MODEL),
            "--rules",
            str(SEPSIS_RULES),
            "--worker-id",
            worker,
            "--results-policy",
            str(REPO / "policies" / "consortium" / f"{results}.yaml"),
            *extra,
        )
        p.wait_for("ready", 60)
        return p

    def release(self, dp_policy: Path, *extra: str) -> Proc:
        """The release stage (Sepsis model and rules: the keys known in advance)."""
        return self.start(
            "release",
            "release",
            "--kafka",
            self.bootstrap,
            "--keys",
            str(self.keys),
            "--topic-prefix",
            self.prefix,
            "--dp-policy",
            str(dp_policy),
            "--model",
            str(SHARED / SEPSIS_MODEL),
            "--rules",
            str(SEPSIS_RULES),
            *extra,
        )

    def agent(self, org: str, log: Path, *extra: str) -> Proc:
        # the agent's state file stays in the test's folder, not in ~/.cache/procvault
        control = (
            () if "--control-dir" in extra else ("--control-dir", str(self.root / "agents" / org))
        )
        return self.start(
            f"agent-{org}",
            "agent",
            *self._common(),
            "--org",
            org,
            "--from",
            str(log),
            "--split-map",
            str(SEPSIS_ORGS),
            "--end-markers",
            "--allow-insecure-attestation",
            *control,
            *extra,
        )

    def progress(self, org: str, producer: str = "agent-1") -> int:
        """The source position an agent has committed (0: none yet)."""
        from procvault.streams.kafka_io import read_topic

        try:
            records = asyncio.run(read_topic(self.bootstrap, self.topics.progress, committed=True))
        except Exception:  # the topic does not exist yet
            return 0
        key = f"{org}/{producer}".encode()
        mac = OrgKeys.load(self.keys / f"org-{org}.json").progress_key
        best, _bad = best_progress([r.value for r in records if r.key == key], mac, org, producer)
        return best.position if best is not None else 0

    def wait_progress(self, org: str, at_least: int, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while (pos := self.progress(org)) < at_least:
            assert time.monotonic() < deadline, f"{org} committed only {pos}"
            time.sleep(0.2)
        return pos

    def stop_all(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait(10)

    def results(self, org: str) -> list[dict[str, Any]]:
        """Every result item in ``results.alerts.<org>`` (committed), opened with the org key."""
        from procvault.streams.kafka_io import read_topic

        keys = OrgKeys.load(self.keys / f"org-{org}.json")
        vault = VaultSecrets.load(self.keys / "vault.json")
        announced = {e: k.public() for e, k in vault.epochs.items()}
        topic = self.topics.alerts(org)
        records = asyncio.run(read_topic(self.bootstrap, topic, committed=True))
        items: list[dict[str, Any]] = []
        seen: set[tuple[int, int, int]] = set()
        for r in records:
            batch = decode_batch(open_result(keys.alerts, r.value, topic=topic, keys=announced))
            ident = (batch.partition, batch.commit, batch.chunk)
            if ident in seen:
                continue  # a replayed record
            seen.add(ident)
            items.extend(finding_to_dict(f) for f in batch.items)
        return items

    def case_results(self, wait_for: int, timeout: float = 120.0) -> dict[str, dict[str, Any]]:
        """Per case, its result (the same from every organization that saw it), once
        ``wait_for`` cases have results (without ``sent_us``, the send time of the event that
        completed the case)."""
        deadline = time.monotonic() + timeout
        while True:
            cases: dict[str, dict[str, Any]] = {}
            for org in self.orgs:
                for item in self.results(org):
                    if item["type"] == "case":
                        for field_name in ("sent_us", "own_events", "silent_sources"):
                            item.pop(field_name, None)
                        prev = cases.setdefault(item["case"], item)
                        assert prev == item, (prev, item)
            if len(cases) >= wait_for or time.monotonic() > deadline:
                return cases
            time.sleep(1.0)


def in_process_results(
    events: Iterable[Event], model: Path, rules: Path | None
) -> dict[str, dict[str, Any]]:
    """What ``procvault monitor`` computes in-process, per case."""
    from procvault.config.engines import load_engines
    from procvault.monitor.compliance import Compliance
    from procvault.monitor.vault import Vault

    engines = load_engines(str(model), str(rules) if rules else None)
    net, rule_list = engines.net, engines.rules
    vault = Vault(net, compliance=Compliance(rule_list) if rule_list is not None else None)
    out: dict[str, dict[str, Any]] = {}
    for ev in events:
        for r in vault.update(ev).completed:
            out[r.case_id] = {"type": "case", **r.to_dict()}
    for r in vault.flush():
        out[r.case_id] = {"type": "case", **r.to_dict()}
    return out
