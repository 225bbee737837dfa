"""The confidential pipeline through a real Kafka broker: vault throughput and alert latency.

Prints one JSON object with, all measured in this one run on this machine:

* ``vault_alone``: a vault worker process (``procvault vault``, Sepsis model and rules) reading
  Sepsis x ``--repeat`` pre-produced by three organizations' agents (encrypted, transactional,
  heartbeats included) on 4 partitions: events/s from its first to its last applied event
  (the ``first_applied``/``last_applied`` wall clocks it prints when stopped), and the
  workers' CPU time (user + system, from "ready" to the last event applied) per event,
  medians of ``--runs``; one worker and two workers sharing the partitions;
* ``vault_alone.base``: the same one-worker figures for the base commit (``--base``, default
  6424efd, the commit before the partition engine), ``head_over_base``, the ratio of the
  events/s medians (``head_over_base_runs``: per pair of runs), and
  ``base_over_head_cpu_per_event``, that of the CPU times (above 1: this tree is cheaper).
  The base is checked out once as a git worktree (``/tmp/pipeline-base``, or
  ``--base-tree``) and run, as this tree is, from an import folder mapping ``procvault`` onto
  its tree (bench/monitor_xes.py's ``_import_root``):
  each tree's ``bench/_pipeline_feed.py`` process makes that tree's keyring and pre-produces
  with that tree's agents (the wire format changed between the two: envelope v2, chained
  frames), same log, split (examples/sepsis_orgs.yaml) and partitions, on a fresh topic
  prefix per run; then that tree's own ``procvault vault`` (same model, rules and flags;
  metrics on in both: the base always exports ``procvault_events_applied_total``, this tree
  with ``--metrics-detail``) reads it. Runs alternate between the trees (head first in even
  runs, base first in odd ones). ``--no-base`` measures this tree only;
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

Measured 2026-12-08 00:15-00:20 UTC with ``bench/pipeline.py --runs 3`` (the machine shared
with other sessions' tests, load average 1-3): one worker 33,269 events/s and 31.6 CPU
µs/event, 6424efd's 29,520 events/s and 29.4 CPU µs/event, ``head_over_base`` 1.127,
``base_over_head_cpu_per_event`` 0.931 (docs/pipeline.md has every figure of the run, and
those measured before ``procvault vault`` tuned its garbage collector and before the engine
stopped scanning its merge buffer per alert).

    .venv/bin/python bench/pipeline.py [--repeat 7] [--runs 3] [--rate 1000] [--base 6424efd]
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

from procvault.monitor.findings import decode_batch
from procvault.streams import kafka_local
from procvault.streams.frames import Topics, open_result
from procvault.streams.secrets import OrgKeys, VaultSecrets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from monitor_xes import _import_root

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROCVAULT_SHARED_DATA", REPO.parent / "shared" / "data"))
LOG = SHARED / "logs" / "sepsis_cases.xes.gz"
MODEL = SHARED / "models" / "promtee" / "pnml" / "sepsis.pnml"
RULES = REPO / "policies" / "rules" / "sepsis.yaml"
SPLIT = REPO / "examples" / "sepsis_orgs.yaml"
ORGS = ("emergency", "lab", "ward")
PARTITIONS = 4
#: The commit before the partition engine (d8bd3cc), which issue 19 compares against.
DEFAULT_BASE = "6424efd"


def _progress(msg: str) -> None:
    print(f"[bench/pipeline] {msg}", file=sys.stderr, flush=True)


class Proc:
    """A child process with its stderr in a file (every one is killed when the bench ends)."""

    running: ClassVar[list[Proc]] = []

    def __init__(self, name: str, cmd: list[str], root: Path, tree: Tree) -> None:
        self.err = root / f"{name}-{uuid.uuid4().hex[:6]}.err"
        self.cpu_at_ready = 0.0
        with self.err.open("wb") as fh:
            self.popen = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=fh, env=tree.env, cwd=tree.root
            )
        Proc.running.append(self)

    @classmethod
    def kill_all(cls) -> None:
        for p in cls.running:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait(10)

    def text(self) -> str:
        return self.err.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process used so far (``/proc/PID/stat``)."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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


class Tree:
    """One tree's code (this one or the base commit's): the import folder that maps
    ``procvault`` onto it, its keyring and its feeder process (bench/_pipeline_feed.py, which
    pre-produces with that tree's agents)."""

    def __init__(self, name: str, source: Path, work: Path, bootstrap: str, repeat: int) -> None:
        self.name = name
        self.root = _import_root(source, work / f"root-{name}")
        self.keys = work / f"keys-{name}"
        # python -m puts the working folder first on sys.path: run in the import folder
        self.env = {**os.environ, "PYTHONPATH": str(self.root)}
        usage = subprocess.run(
            self.cli("vault", "--help"),
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            check=True,
        ).stdout
        # metrics on in both trees: the base exports procvault_events_applied_total always,
        # a tree with --metrics-detail only in that mode
        self.vault_flags = ["--metrics-detail"] if "--metrics-detail" in usage else []
        self.feed_err = work / f"feed-{name}.err"
        with self.feed_err.open("wb") as fh:
            self.feeder = subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "bench" / "_pipeline_feed.py"),
                    bootstrap,
                    str(self.keys),
                    str(LOG),
                    str(SPLIT),
                    str(repeat),
                    str(PARTITIONS),
                    ",".join(ORGS),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=fh,
                text=True,
                env=self.env,
                cwd=self.root,
            )
        self.events = int(self._reply()["events"])

    @staticmethod
    def cli(*args: str) -> list[str]:
        return [sys.executable, "-m", "procvault", *args]

    def _reply(self) -> dict[str, Any]:
        assert self.feeder.stdout is not None
        line = self.feeder.stdout.readline()
        if not line:
            tail = self.feed_err.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the {self.name} feeder failed:\n{tail}")
        return dict(json.loads(line))

    def produce(self, prefix: str) -> dict[str, Any]:
        """This tree's agents publish the whole log under ``prefix``."""
        assert self.feeder.stdin is not None
        self.feeder.stdin.write(prefix + "\n")
        self.feeder.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.feeder.stdin is not None:
            self.feeder.stdin.close()
        try:
            self.feeder.wait(30)
        except subprocess.TimeoutExpired:
            self.feeder.kill()
            self.feeder.wait(10)


def _base_tree(commit: str, where: Path) -> Path:
    """A git worktree of ``commit`` at ``where`` (made once; refused if it is at another)."""
    found = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        raise SystemExit(
            f"bench/pipeline.py: commit {commit} is not in this repository's history "
            "(a shallow clone?); --no-base measures this tree only"
        )
    full = found.stdout.strip()
    if not where.exists():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), full],
            check=True,
            capture_output=True,
        )
    head = subprocess.run(
        ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if head != full:
        raise SystemExit(f"bench/pipeline.py: {where} is at {head[:10]}, not {commit}")
    return where


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


def _vault(tree: Tree, bootstrap: str, prefix: str, root: Path, worker: str) -> Proc:
    p = Proc(
        worker,
        tree.cli(
            "vault",
            *_common(bootstrap, tree.keys, prefix),
            "--model",
            str(MODEL),
            "--rules",
            str(RULES),
            "--worker-id",
            worker,
            "--metrics-port",
            "0",
            *tree.vault_flags,  # procvault_events_applied_total, which the bench waits on
            "--session-timeout",
            "6",
        ),
        root,
        tree,
    )
    p.wait_for("ready")
    p.cpu_at_ready = p.cpu_seconds()
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


def vault_alone(tree: Tree, bootstrap: str, root: Path, workers: int) -> dict[str, float]:
    """``workers`` vault workers of ``tree`` on topics its agents pre-produced: events/s from
    the first to the last applied event, and the workers' CPU time (user + system, from
    "ready" to the last event applied) per event, which the other work on the machine moves
    less than the wall clock."""
    total = tree.events
    prefix = f"b{tree.name[0]}{uuid.uuid4().hex[:8]}."
    fed = tree.produce(prefix)
    procs = [_vault(tree, bootstrap, prefix, root, f"vault-{i}") for i in range(workers)]
    _wait_applied(procs, total)
    cpu = sum(p.cpu_seconds() - p.cpu_at_ready for p in procs)
    stats = [p.stop() for p in procs]
    first = min(s["first_applied"] for s in stats if s["first_applied"])
    last = max(s["last_applied"] for s in stats if s["last_applied"])
    assert sum(s["applied"] for s in stats) >= total, stats
    rate = total / (last - first)
    _progress(
        f"{tree.name}, {workers} worker(s): {rate:,.0f} events/s, {cpu / total * 1e6:.1f} CPU "
        f"µs/event ({total} events, pre-produced in {fed['seconds']} s)"
    )
    return {"events_per_s": rate, "cpu_us_per_event": cpu / total * 1e6}


def faust_baseline(tree: Tree, bootstrap: str, root: Path) -> float:
    total = tree.events
    prefix = f"f{uuid.uuid4().hex[:8]}."
    tree.produce(prefix)
    out = root / f"{prefix}faust.json"
    cmd = [
        sys.executable,
        str(REPO / "bench" / "faust_baseline.py"),
        bootstrap,
        prefix,
        str(tree.keys),
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
    tree: Tree,
    bootstrap: str,
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
                tree.cli(
                    "agent",
                    *_common(bootstrap, tree.keys, prefix),
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
                tree,
            )
        )
    return procs


def live(tree: Tree, bootstrap: str, root: Path, repeat: int) -> dict[str, Any]:
    total = tree.events
    prefix = f"l{uuid.uuid4().hex[:8]}."
    vault = _vault(tree, bootstrap, prefix, root, "vault-live")
    started = time.time()
    agents = _agents(tree, bootstrap, prefix, root, repeat)
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


def latency(tree: Tree, bootstrap: str, root: Path, rate: float) -> dict[str, Any]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    keys = tree.keys
    vault = _vault(tree, bootstrap, prefix, root, "vault-latency")

    async def run() -> list[float]:
        from procvault.streams.kafka_io import ensure_topics

        await ensure_topics(bootstrap, [Topics(prefix).alerts(o) for o in ORGS])
        stop = asyncio.Event()
        reader = asyncio.create_task(_read_latencies(bootstrap, keys, prefix, stop))
        # the whole log at ``rate``, every agent on one schedule starting in a few seconds
        agents = _agents(tree, bootstrap, prefix, root, 1, rate, time.time() + 8.0)
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
        choices=("latency", "live", "vault"),
        help="run only this part (vault: one worker, this tree and the base; for tuning: the "
        "full run gives the figures)",
    )
    ap.add_argument(
        "--base", default=DEFAULT_BASE, help="the commit whose vault this one is compared with"
    )
    ap.add_argument(
        "--base-tree",
        type=Path,
        default=Path("/tmp/pipeline-base"),
        help="its git worktree (made there if missing)",
    )
    ap.add_argument("--no-base", action="store_true", help="measure this tree only")
    args = ap.parse_args()
    with_base = not args.no_base and args.only in (None, "vault")
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    trees: list[Tree] = []
    with tempfile.TemporaryDirectory(prefix="pv-bench-") as tmp:
        root = Path(tmp)
        try:
            if not bootstrap:
                kafka_local.install_jars()
                broker = kafka_local.LocalKafka(
                    data_dir=root / "kafka",
                    port=kafka_local.free_port(),
                    controller_port=kafka_local.free_port(),
                )
                broker.start(timeout=120)
                bootstrap = broker.bootstrap
            repeat = 1 if args.only == "latency" else args.repeat
            head = Tree("head", REPO, root, bootstrap, repeat)
            trees.append(head)
            if args.only == "latency":
                print(json.dumps({"latency": latency(head, bootstrap, root, args.rate)}))
                return
            if args.only == "live":
                print(json.dumps({"live": live(head, bootstrap, root, args.repeat)}))
                return
            base = None
            if with_base:
                source = _base_tree(args.base, args.base_tree)
                base = Tree("base", source, root, bootstrap, args.repeat)
                trees.append(base)
                if base.events != head.events:
                    raise SystemExit(
                        f"bench/pipeline.py: the trees split the log differently "
                        f"({head.events} events here, {base.events} in {args.base})"
                    )
            one: list[dict[str, float]] = []
            base_one: list[dict[str, float]] = []
            for i in range(args.runs):
                order = [head, base] if i % 2 == 0 else [base, head]
                for tree in order:
                    if tree is not None:
                        taken = one if tree is head else base_one
                        taken.append(vault_alone(tree, bootstrap, root, 1))
            if args.only != "vault":
                two = [vault_alone(head, bootstrap, root, 2) for _ in range(args.runs)]
                faust = [faust_baseline(head, bootstrap, root) for _ in range(args.runs)]
                live_run = live(head, bootstrap, root, args.repeat)
                lat = latency(head, bootstrap, root, args.rate)
        finally:
            Proc.kill_all()
            for t in trees:
                t.close()
            if broker is not None:
                broker.stop()
    med = statistics.median
    total = head.events

    def figures(rs: list[dict[str, float]]) -> dict[str, Any]:
        rates = [r["events_per_s"] for r in rs]
        cpu = [r["cpu_us_per_event"] for r in rs]
        return {
            "events_per_s_median": round(med(rates)),
            "runs": [round(x) for x in rates],
            "cpu_us_per_event_median": round(med(cpu), 1),
            "cpu_us_per_event_runs": [round(x, 1) for x in cpu],
        }

    def rate(rs: list[dict[str, float]]) -> float:
        return float(med(r["events_per_s"] for r in rs))

    def cpu(rs: list[dict[str, float]]) -> float:
        return float(med(r["cpu_us_per_event"] for r in rs))

    alone: dict[str, Any] = {"one_worker": figures(one)}
    if base_one:
        alone["base"] = {"commit": args.base, "one_worker": figures(base_one)}
        alone["head_over_base"] = round(rate(one) / rate(base_one), 3)
        alone["head_over_base_runs"] = [
            round(h["events_per_s"] / b["events_per_s"], 3)
            for h, b in zip(one, base_one, strict=True)
        ]
        # the same comparison in CPU time per event (base / head: above 1, this tree is cheaper)
        alone["base_over_head_cpu_per_event"] = round(cpu(base_one) / cpu(one), 3)
    out: dict[str, Any] = {
        "log": f"sepsis x{args.repeat}, 3 organizations, {PARTITIONS} partitions",
        "events": total,
        "machine": "2 cores shared with other work: compare figures of this one run only",
        "vault_alone": alone,
    }
    if args.only != "vault":
        alone["two_workers"] = figures(two)
        out |= {
            "faust_baseline": {
                "events_per_s_median": round(med(faust)),
                "runs": [round(x) for x in faust],
            },
            "vault_vs_faust": round(rate(one) / med(faust), 2),
            "live": live_run,
            "latency": lat,
            "promtee_reference_ms": "0.4-1.3 per update on direct RPC, no durability",
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
