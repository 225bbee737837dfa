"""The confidential pipeline through a real Kafka broker: vault throughput and alert latency.

Prints one JSON object with, all measured in this one run on this machine:

* ``vault_alone``: a vault worker process (``procvault vault``, Sepsis model and rules) reading
  Sepsis x ``--repeat`` pre-produced by three organizations' agents (encrypted, transactional,
  heartbeats included) on 4 partitions: events/s from its first to its last applied event,
  median of ``--runs``; one worker and two workers sharing the partitions;
* ``faust_baseline``: a faust-streaming worker doing the vault's per-event work before the
  engine (open, decode, a per-case table write with changelog) on the same pre-produced
  topics; ``vault_vs_faust`` is the ratio of the medians;
* ``live``: three agent processes publishing as fast as they can while one vault worker runs:
  events / (first agent start to last event applied);
* ``latency``: three agents paced to ``--rate`` events/s in all; per result item, the time
  from the agent sending the event that caused it to a ``read_committed`` reader (this
  process) decrypting it; p50/p99/max in ms. The agents send the whole log at that rate on
  one schedule (``--rate``, ``--start-at``), as live sources would.

Kafka: ``$KAFKA_BOOTSTRAP`` if set, otherwise a broker started here (cached jars) on free ports.

    .venv/bin/python bench/pipeline.py [--repeat 7] [--runs 3] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, ClassVar

os.environ.setdefault("PM4PY_SHOW_PROGRESS_BAR", "false")

from procvault.generators.split import ActivityMapping, assign
from procvault.generators.xes import read_xes
from procvault.monitor.findings import decode_batch
from procvault.organization.agent import Agent, AgentSettings, ordered_share
from procvault.streams import kafka_local
from procvault.streams.frames import Topics, open_result
from procvault.streams.secrets import OrgKeys, VaultSecrets, init_keyring

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROCVAULT_SHARED_DATA", REPO.parent / "shared" / "data"))
LOG = SHARED / "logs" / "sepsis_cases.xes.gz"
MODEL = SHARED / "models" / "promtee" / "pnml" / "sepsis.pnml"
RULES = REPO / "policies" / "rules" / "sepsis.yaml"
SPLIT = REPO / "examples" / "sepsis_orgs.yaml"
ORGS = ("emergency", "lab", "ward")
PARTITIONS = 4


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "procvault", *args]


class Proc:
    """A child process with its stderr in a file (every one is killed when the bench ends)."""

    running: ClassVar[list[Proc]] = []

    def __init__(self, name: str, cmd: list[str], root: Path) -> None:
        self.err = root / f"{name}-{uuid.uuid4().hex[:6]}.err"
        with self.err.open("wb") as fh:
            self.popen = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh)
        Proc.running.append(self)

    @classmethod
    def kill_all(cls) -> None:
        for p in cls.running:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait(10)

    def text(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.text())
            if m:
                return m
            if self.popen.poll() is not None:
                raise RuntimeError(self.text()[-2000:])
            time.sleep(0.05)
        raise RuntimeError(f"timeout waiting for {pattern!r}: {self.text()[-2000:]}")

    def stop(self) -> dict[str, Any]:
        self.popen.send_signal(signal.SIGTERM)
        self.popen.wait(60)
        for line in reversed(self.text().splitlines()):
            if line.startswith("{"):
                return json.loads(line)  # type: ignore[no-any-return]
        raise RuntimeError(self.text()[-2000:])


def _common(bootstrap: str, keys: Path, prefix: str) -> list[str]:
    return [
        "--kafka",
        bootstrap,
        "--keys",
        str(keys),
        "--topic-prefix",
        prefix,
        "--partitions",
        str(PARTITIONS),
    ]


def _vault(bootstrap: str, keys: Path, prefix: str, root: Path, worker: str) -> Proc:
    p = Proc(
        worker,
        _cli(
            "vault",
            *_common(bootstrap, keys, prefix),
            "--model",
            str(MODEL),
            "--rules",
            str(RULES),
            "--worker-id",
            worker,
            "--metrics-port",
            "0",
            "--metrics-detail",  # procvault_events_applied_total, which the bench waits on
            "--session-timeout",
            "6",
        ),
        root,
    )
    p.wait_for("ready")
    return p


_LAST: dict[str, int] = {}


def _applied(procs: list[Proc]) -> int:
    """Events applied, summed over the workers' metrics endpoints (a scrape that fails while
    a busy worker's endpoint does not answer keeps that worker's last figure)."""
    total = 0
    for p in procs:
        url = p.wait_for(r"metrics at (http://\S+)").group(1)
        try:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            total += _LAST.get(url, 0)
            continue
        m = re.search(r"^procvault_events_applied_total (\S+)$", text, re.M)
        _LAST[url] = int(float(m.group(1))) if m else 0
        total += _LAST[url]
    return total


def _wait_applied(procs: list[Proc], total: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while _applied(procs) < total:
        if time.monotonic() > deadline:
            raise RuntimeError("the vault did not apply every event in time")
        time.sleep(0.2)


def _shares(repeat: int) -> dict[str, list[Any]]:
    log = read_xes(LOG)
    events = list(
        assign(log.replay(end_markers=True, repeat=repeat), ActivityMapping.from_file(SPLIT))
    )
    return {org: list(ordered_share(events, org)) for org in ORGS}


async def _preproduce(bootstrap: str, keys: Path, prefix: str, shares: dict[str, list]) -> None:
    """Agents publish every share (the keys come from the keyring: no attestation round)."""
    vault_pub = VaultSecrets.load(keys / "vault.json").current.public()
    for org in ORGS:
        agent = Agent(
            AgentSettings(bootstrap, PARTITIONS, Topics(prefix)),
            OrgKeys.load(keys / f"org-{org}.json"),
            vault_pub,
        )
        await agent.run(shares[org])


def vault_alone(bootstrap: str, keys: Path, root: Path, shares: dict, workers: int) -> float:
    total = sum(len(s) for s in shares.values())
    prefix = f"b{uuid.uuid4().hex[:8]}."
    asyncio.run(_preproduce(bootstrap, keys, prefix, shares))
    procs = [_vault(bootstrap, keys, prefix, root, f"vault-{i}") for i in range(workers)]
    _wait_applied(procs, total)
    stats = [p.stop() for p in procs]
    first = min(s["first_applied"] for s in stats if s["first_applied"])
    last = max(s["last_applied"] for s in stats if s["last_applied"])
    assert sum(s["applied"] for s in stats) >= total, stats
    return total / (last - first)


def faust_baseline(bootstrap: str, keys: Path, root: Path, shares: dict) -> float:
    total = sum(len(s) for s in shares.values())
    prefix = f"f{uuid.uuid4().hex[:8]}."
    asyncio.run(_preproduce(bootstrap, keys, prefix, shares))
    out = root / f"{prefix}faust.json"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "faust_baseline.py"),
        bootstrap,
        prefix,
        str(keys),
        ",".join(ORGS),
        str(PARTITIONS),
        str(total),
        str(out),
        str(root / f"{prefix}faust-data"),
    ]
    with (root / f"{prefix}faust.err").open("wb") as fh:
        rc = subprocess.run(
            cmd, check=False, stdout=subprocess.DEVNULL, stderr=fh, timeout=900
        ).returncode
    if not out.exists():
        tail = (root / f"{prefix}faust.err").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"faust baseline failed ({rc}):\n{tail}")
    result = json.loads(out.read_text())
    return float(result["events"]) / float(result["seconds"])


def _agents(
    bootstrap: str,
    keys: Path,
    prefix: str,
    root: Path,
    repeat: int,
    rate: float | None = None,
    start_at: float | None = None,
) -> list[Proc]:
    procs = []
    for org in ORGS:
        pace = ["--rate", str(rate)] if rate else []
        if start_at is not None:
            pace += ["--start-at", str(start_at)]
        procs.append(
            Proc(
                f"agent-{org}",
                _cli(
                    "agent",
                    *_common(bootstrap, keys, prefix),
                    "--org",
                    org,
                    "--from",
                    str(LOG),
                    "--split-map",
                    str(SPLIT),
                    "--end-markers",
                    "--allow-insecure-attestation",
                    "--repeat",
                    str(repeat),
                    *pace,
                ),
                root,
            )
        )
    return procs


def live(bootstrap: str, keys: Path, root: Path, shares: dict, repeat: int) -> dict[str, Any]:
    total = sum(len(s) for s in shares.values())
    prefix = f"l{uuid.uuid4().hex[:8]}."
    vault = _vault(bootstrap, keys, prefix, root, "vault-live")
    started = time.time()
    agents = _agents(bootstrap, keys, prefix, root, repeat)
    for a in agents:
        a.popen.wait(600)
    _wait_applied([vault], total)
    stats = vault.stop()
    sent = []
    for a in agents:
        for line in reversed(a.text().splitlines()):
            if line.startswith("{"):
                sent.append(json.loads(line))
                break
    return {
        "events": total,
        "events_per_s": round(total / (stats["last_applied"] - started)),
        "agents_events_per_s": [round(s["sent"] / s["seconds"]) for s in sent],
    }


async def _read_latencies(
    bootstrap: str, keys: Path, prefix: str, stop: asyncio.Event
) -> list[float]:
    from aiokafka import AIOKafkaConsumer

    topics = Topics(prefix)
    secrets = VaultSecrets.load(keys / "vault.json")
    announced = {e: k.public() for e, k in secrets.epochs.items()}
    org_keys = {topics.alerts(o): OrgKeys.load(keys / f"org-{o}.json") for o in ORGS}
    consumer = AIOKafkaConsumer(
        *org_keys,
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        group_id=None,
        fetch_max_wait_ms=5,  # a live reader: the broker answers at once
    )
    await consumer.start()
    out: list[float] = []
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now_us = time.time_ns() // 1000
            for tp, recs in batch.items():
                for r in recs:
                    body = open_result(
                        org_keys[tp.topic].alerts, r.value, topic=tp.topic, keys=announced
                    )
                    sent = (getattr(i, "sent_us", 0) for i in decode_batch(body).items)
                    out.extend((now_us - t) / 1000 for t in sent if t)
    finally:
        await consumer.stop()
    return out


def latency(bootstrap: str, keys: Path, root: Path, rate: float) -> dict[str, Any]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    vault = _vault(bootstrap, keys, prefix, root, "vault-latency")

    async def run() -> list[float]:
        from procvault.streams.kafka_io import ensure_topics

        await ensure_topics(bootstrap, [Topics(prefix).alerts(o) for o in ORGS])
        stop = asyncio.Event()
        reader = asyncio.create_task(_read_latencies(bootstrap, keys, prefix, stop))
        # the whole log at ``rate``, every agent on one schedule starting in a few seconds
        agents = _agents(bootstrap, keys, prefix, root, 1, rate, time.time() + 8.0)
        while any(a.popen.poll() is None for a in agents):
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # the last results
        stop.set()
        return await reader

    lat = sorted(asyncio.run(run()))
    vault.stop()
    return {
        "rate_events_per_s": rate,
        "items": len(lat),
        "p50_ms": round(lat[len(lat) // 2], 1),
        "p99_ms": round(lat[int(len(lat) * 0.99)], 1),
        "max_ms": round(lat[-1], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="Sepsis rounds for throughput")
    ap.add_argument("--runs", type=int, default=3, help="runs per throughput figure")
    ap.add_argument("--rate", type=float, default=1000.0, help="events/s for the latency run")
    ap.add_argument(
        "--only",
        choices=("latency", "live"),
        help="run only this part (for tuning; the full run gives the figures)",
    )
    args = ap.parse_args()
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    with tempfile.TemporaryDirectory(prefix="pv-bench-") as tmp:
        root = Path(tmp)
        if not bootstrap:
            kafka_local.install_jars()
            broker = kafka_local.LocalKafka(
                data_dir=root / "kafka",
                port=kafka_local.free_port(),
                controller_port=kafka_local.free_port(),
            )
            broker.start(timeout=120)
            bootstrap = broker.bootstrap
        try:
            keys = root / "keys"
            init_keyring(keys, ORGS)
            if args.only == "latency":
                print(json.dumps({"latency": latency(bootstrap, keys, root, args.rate)}))
                return
            shares = _shares(args.repeat)
            total = sum(len(s) for s in shares.values())
            if args.only == "live":
                print(json.dumps({"live": live(bootstrap, keys, root, shares, args.repeat)}))
                return
            one = [vault_alone(bootstrap, keys, root, shares, 1) for _ in range(args.runs)]
            two = [vault_alone(bootstrap, keys, root, shares, 2) for _ in range(args.runs)]
            faust = [faust_baseline(bootstrap, keys, root, shares) for _ in range(args.runs)]
            live_run = live(bootstrap, keys, root, shares, args.repeat)
            lat = latency(bootstrap, keys, root, args.rate)
        finally:
            Proc.kill_all()
            if broker is not None:
                broker.stop()
    med = statistics.median
    print(
        json.dumps(
            {
                "log": f"sepsis x{args.repeat}, 3 organizations, {PARTITIONS} partitions",
                "events": total,
                "vault_alone": {
                    "one_worker": {
                        "events_per_s_median": round(med(one)),
                        "runs": [round(x) for x in one],
                    },
                    "two_workers": {
                        "events_per_s_median": round(med(two)),
                        "runs": [round(x) for x in two],
                    },
                },
                "faust_baseline": {
                    "events_per_s_median": round(med(faust)),
                    "runs": [round(x) for x in faust],
                },
                "vault_vs_faust": round(med(one) / med(faust), 2),
                "live": live_run,
                "latency": lat,
                "promtee_reference_ms": "0.4-1.3 per update on direct RPC, no durability",
            }
        )
    )


if __name__ == "__main__":
    main()
