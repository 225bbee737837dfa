"""The release stage catching up on Sepsis's hourly panes: this tree against the faust stage.

Prints one JSON object. Sepsis (shared ``logs/sepsis_cases.xes.gz``, ProMTEE's ``sepsis.pnml``)
is counted once, in this process, by three vault partitions (cases placed by a hash of their
id, as the vault places them; the three organizations of examples/sepsis_orgs.yaml only
decide who sends which event, which does not change a pane's aggregate) under the bundled
policy ``policies/dp/default.yaml`` (1-hour panes, 1-hour and 1-day windows, running totals):
about 13,800 panes. Per tree and run, on a fresh topic prefix, ``bench/_release_feed.py`` (run
under that tree's import folder) makes the tree's keyring and writes every partition's sealed
partials to ``vault.partials`` (one report per pane a partition counted anything in, in pane
order: the backlog a stage finds after an outage or when it starts late); then the tree's own
``python -m procvault release`` starts and the bench follows ``results.aggregates``:

* ``panes_per_second``: panes released / (time of the last pane record - time of the first);
  ``seconds_to_last``: from the process start to the last pane record (start-up included);
* ``peak_rss_mb``: the stage's ``VmHWM`` (read just before it is stopped);
* ``stage_cpu_seconds``: the stage's user + system CPU time over the run (all its threads, from
  start-up to the last pane), and ``panes_per_stage_cpu_second``: what load on a shared
  machine changes far less than wall time;
* ``largest_record_bytes``: the largest value the stage wrote in any topic (every topic of the
  run's prefix but ``vault.partials``, which the feeder writes: ``results.aggregates``, the
  state topic or faust's changelog);
* restart: a second run is stopped with SIGTERM at a third of the panes and SIGKILL at two
  thirds and restarted each time; ``restart_seconds_sigterm`` / ``_sigkill``: from the new
  process's start to its first new pane record. It must then finish, with every key on
  ``results.aggregates`` carrying one value (nothing noised twice).

The base commit (default 3c2a35b, the faust-streaming stage) is checked out once as a git
worktree (``/tmp/release-base``, or ``--base-tree``) and run from an import folder mapping
``procvault`` onto it, as bench/monitor_xes.py does. The faust stage is far slower, so each of
its runs stops after ``--base-timeout`` seconds (its figures are then those of the panes it
managed). Medians over ``--runs``, ratios head / base. The broker is ``KAFKA_BOOTSTRAP`` or a
local one started here (free ports, a temporary folder), stopped at the end.

    .venv/bin/python bench/release.py [--runs 3] [--base 3c2a35b] [--base-timeout 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _biglog import SHARED
from monitor_xes import _import_root

REPO = Path(__file__).resolve().parents[1]
LOG = SHARED / "logs" / "sepsis_cases.xes.gz"
MODEL = SHARED / "models" / "promtee" / "pnml" / "sepsis.pnml"
POLICY = REPO / "policies" / "dp" / "default.yaml"
PARTITIONS = 3
#: The last commit with the faust-streaming release stage.
DEFAULT_BASE = "3c2a35b"
BAR_PANES_PER_SECOND = 1000
BAR_RSS_MB = 500
BAR_RECORD_BYTES = 256 * 1024


def _progress(msg: str) -> None:
    print(f"[bench/release] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the workload
def aggregates(out: Path, max_panes: int | None = None) -> dict[str, Any]:
    """Sepsis's exact pane aggregates per vault partition, written to ``out`` (msgpack);
    with ``max_panes``, only the log's first that many panes."""
    from procvault.config.dp import load_dp_policy
    from procvault.config.engines import load_engines
    from procvault.generators.xes import read_xes
    from procvault.monitor.privacy import PaneAccumulator, PaneAggregate, PaneClock, ReleasePlan
    from procvault.monitor.vault import Vault

    settings = load_dp_policy(POLICY)
    engines = load_engines(MODEL, None)
    known = engines.known()
    events = list(read_xes(LOG).replay(end_markers=True))
    if max_panes is not None:
        clock0 = PaneClock(settings.panes)
        limit = clock0.index(events[0].timestamp) + max_panes
        events = [e for e in events if clock0.index(e.timestamp) < limit]
    vaults = [Vault(engines.net) for _ in range(PARTITIONS)]
    accs = [PaneAccumulator(settings, known) for _ in range(PARTITIONS)]
    panes: list[list[PaneAggregate]] = [[] for _ in range(PARTITIONS)]
    for e in events:
        p = zlib.crc32(e.case_id.encode()) % PARTITIONS
        panes[p].extend(accs[p].observe_replayed(e, vaults[p].update(e)))
    for p in range(PARTITIONS):
        for r in vaults[p].flush():
            accs[p].observe_completed(r, events[-1].timestamp)
        panes[p].extend(accs[p].flush())
    filled = [[a for a in ps if not a.is_empty] for ps in panes]
    first = min(ps[0].index for ps in filled if ps)
    last = max(ps[-1].index for ps in filled if ps)
    clock = PaneClock(settings.panes)
    end = clock.pane(last)
    raw = {
        "partitions": filled,
        "first": first,
        "last": last,
        "last_empty": PaneAggregate(last, end.start, end.end),
    }
    out.write_bytes(msgspec.msgpack.encode(raw))
    plan = ReleasePlan.build(settings, known)
    draws = sum(len(known.keys(m.name)) for m in plan.statistics) + len(plan.totals_keys)
    return {
        "noise_draws_per_pane": draws,
        "events": sum(1 for e in events if not e.is_marker),
        "cases": len({e.case_id for e in events}),
        "panes": last - first + 1,
        "panes_with_events": len({a.index for ps in filled for a in ps}),
    }


def opendp_draws_per_second(seconds: float = 3.0) -> float:
    """OpenDP's discrete Laplace draws per second here and now (vectors of 500, the size of
    a pane's largest statistics), the ceiling of any stage that noises every known key."""
    from procvault.monitor.privacy.mechanisms import vector_measurement

    meas = vector_measurement(100.0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        meas([0] * 500)
        n += 500
    return n / (time.perf_counter() - t0)


# ----------------------------------------------------------------------------- Kafka helpers
class Follower(threading.Thread):
    """Follows ``results.aggregates`` (read committed): each record's key, value and arrival."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[bytes, bytes, float]] = []
        self.panes: dict[int, float] = {}  # pane index -> first arrival
        self._done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by the caller
            self.error = exc

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            max_poll_records=20_000,
        )
        await consumer.start()
        try:
            tp = TopicPartition(self.topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            while not self._done.is_set():
                batch = await consumer.getmany(tp, timeout_ms=100)
                now = time.monotonic()
                for r in batch.get(tp, []):
                    self.records.append((r.key, r.value, now))
                    if r.key.startswith(b"pane/"):
                        self.panes.setdefault(int(r.key[5:]), now)
        finally:
            await consumer.stop()

    def stop(self) -> None:
        self._done.set()
        self.join(10)


async def _largest(bootstrap: str, prefix: str, skip: str) -> dict[str, int]:
    """The largest record value per topic of the prefix (but ``skip``)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=20_000,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
    )
    await consumer.start()
    out: dict[str, int] = {}
    try:
        names = sorted(t for t in await consumer.topics() if prefix in t and t != skip)
        for name in names:
            parts = consumer.partitions_for_topic(name) or {0}
            tps = [TopicPartition(name, p) for p in parts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            biggest = 0
            while True:
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
                batch = await consumer.getmany(*tps, timeout_ms=500)
                for recs in batch.values():
                    for r in recs:
                        biggest = max(biggest, len(r.value or b""))
            out[name] = biggest
    finally:
        await consumer.stop()
    return out


# ----------------------------------------------------------------------------- running a tree
def _hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class Tree:
    """One tree's stage on one topic prefix."""

    def __init__(
        self,
        name: str,
        root: Path,
        bootstrap: str,
        work: Path,
        agg: Path,
        extra: tuple[str, ...] = (),
        policy: Path = POLICY,
    ) -> None:
        self.name, self.root, self.bootstrap, self.agg = name, root, bootstrap, agg
        self.extra = extra
        self.policy = policy
        self.prefix = f"bench-rel-{name}-{uuid.uuid4().hex[:8]}."
        self.dir = work / self.prefix.rstrip(".")
        self.dir.mkdir(parents=True)
        self.keys = self.dir / "keys"
        self.env = {**os.environ, "PYTHONPATH": str(root)}
        self.logs = 0

    def feed(self) -> dict[str, Any]:
        proc = subprocess.run(
            [
                sys.executable,
                str(REPO / "bench" / "_release_feed.py"),
                self.bootstrap,
                self.prefix,
                str(self.keys),
                str(self.agg),
                str(self.policy),
                str(MODEL),
            ],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(
                f"bench/release.py: the {self.name} feeder failed: {proc.stderr[-2000:]}"
            )
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))

    def start(self) -> tuple[subprocess.Popen[bytes], float]:
        cmd = [
            sys.executable,
            "-m",
            "procvault",
            "release",
            "--kafka",
            self.bootstrap,
            "--topic-prefix",
            self.prefix,
            "--keys",
            str(self.keys),
            "--dp-policy",
            str(self.policy),
            "--model",
            str(MODEL),
        ]
        if self.name == "base":
            cmd += ["--data-dir", str(self.dir / "faust-data"), "--instance-id", "bench-1"]
        cmd += list(self.extra)
        self.logs += 1
        log = (self.dir / f"stage-{self.logs}.log").open("wb")
        t = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.root
        )
        log.close()
        return proc, t

    def log_tail(self) -> str:
        return "".join(p.read_text(errors="replace")[-1500:] for p in self.dir.glob("stage-*.log"))


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait(
    follow: Follower,
    proc: subprocess.Popen[bytes],
    tree: Tree,
    *,
    until: int,
    deadline: float,
) -> bool:
    """Until pane ``until`` was published (True) or the deadline (False)."""
    while until not in follow.panes:
        if time.monotonic() > deadline:
            return False
        if proc.poll() is not None:
            raise SystemExit(
                f"bench/release.py: the {tree.name} stage exited with {proc.returncode}:\n"
                + tree.log_tail()
            )
        time.sleep(0.05)
    return True


def _one_value_per_key(records: list[tuple[bytes, bytes, float]]) -> bool:
    seen: dict[bytes, bytes] = {}
    return all(seen.setdefault(k, v) == v for k, v, _ in records)


def catch_up(tree: Tree, workload: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One clean catch-up run."""
    t = time.monotonic()
    fed = tree.feed()
    _progress(f"{tree.name}: {fed['records']} partials written in {time.monotonic() - t:.1f} s")
    first, last = fed["first"], fed["last"]
    follow = Follower(tree.bootstrap, tree.prefix + "results.aggregates")
    follow.start()
    proc, t0 = tree.start()
    try:
        done = _wait(follow, proc, tree, until=last, deadline=t0 + timeout)
        hwm = _hwm_mb(proc.pid)
        cpu = _cpu_seconds(proc.pid)
    finally:
        _stop(proc)
        time.sleep(0.5)
        follow.stop()
    _progress(f"{tree.name}: {len(follow.panes)} panes in {time.monotonic() - t0:.1f} s")
    times = sorted(follow.panes.values())
    released = len(follow.panes)
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    largest = asyncio.run(_largest(tree.bootstrap, tree.prefix, tree.prefix + "vault.partials"))
    return {
        "finished": done,
        "panes_released": released,
        "panes_total": last - first + 1,
        "panes_per_second": round((released - 1) / span, 1) if released > 1 else 0.0,
        "seconds_to_last": round(times[-1] - t0, 2) if done else None,
        "seconds_to_first": round(times[0] - t0, 2) if times else None,
        "peak_rss_mb": round(hwm, 1),
        # on a shared machine wall time depends on the others' load; CPU time much less
        "stage_cpu_seconds": round(cpu, 2),
        "panes_per_stage_cpu_second": round(released / cpu, 1) if cpu > 0 else None,
        "largest_record_bytes": max(largest.values(), default=0),
        "largest_record_by_topic": {k.removeprefix(tree.prefix): v for k, v in largest.items()},
        "partial_records": fed["records"],
        "one_value_per_key": _one_value_per_key(follow.records),
    }


def restarts(tree: Tree, timeout: float) -> dict[str, Any]:
    """SIGTERM at a third of the panes, SIGKILL at two thirds, restarted each time."""
    fed = tree.feed()
    first, last = fed["first"], fed["last"]
    n = last - first + 1
    follow = Follower(tree.bootstrap, tree.prefix + "results.aggregates")
    follow.start()
    out: dict[str, Any] = {}
    proc, t0 = tree.start()
    deadline = t0 + timeout
    try:
        for sig, frac in ((signal.SIGTERM, 1 / 3), (signal.SIGKILL, 2 / 3)):
            name = "sigterm" if sig == signal.SIGTERM else "sigkill"
            target = first + int(n * frac)
            reached = _wait(follow, proc, tree, until=target, deadline=deadline)
            if not reached:  # slow stage: stop it wherever it got to
                deadline = time.monotonic() + timeout
            proc.send_signal(sig)
            proc.wait(30)
            before = max(follow.panes, default=first - 1)
            proc, t1 = tree.start()
            nxt = before + 1
            ok = _wait(follow, proc, tree, until=nxt, deadline=t1 + timeout)
            out[f"restart_seconds_{name}"] = round(follow.panes[nxt] - t1, 2) if ok else None
            out[f"killed_at_pane_{name}"] = before - first + 1
        finished = _wait(follow, proc, tree, until=last, deadline=deadline)
    finally:
        _stop(proc)
        time.sleep(0.5)
        follow.stop()
    keys = {k for k, _, _ in follow.records}
    panes = {int(k[5:]) for k in keys if k.startswith(b"pane/")}
    # every pane from the policy's public start (before the log's first) through the last
    out["finished"] = bool(
        finished and panes and min(panes) <= first and panes == set(range(min(panes), last + 1))
    )
    out["one_value_per_key"] = _one_value_per_key(follow.records)
    out["panes_released"] = len(panes)
    return out


def _base_tree(commit: str, where: Path) -> Path:
    full = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", commit], capture_output=True, text=True, check=True
    ).stdout.strip()
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
        raise SystemExit(f"bench/release.py: {where} is at {head[:10]}, not {commit}")
    return where


def _median(rows: list[dict[str, Any]], key: str) -> Any:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(vals), 2) if vals else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="catch-up runs per tree")
    ap.add_argument("--base", default=DEFAULT_BASE, help="the commit to compare against")
    ap.add_argument("--base-tree", type=Path, default=Path("/tmp/release-base"))
    ap.add_argument("--base-timeout", type=float, default=60.0, help="seconds per base run")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per head run")
    ap.add_argument("--no-base", action="store_true", help="measure this tree only")
    ap.add_argument(
        "--max-panes", type=int, help="only the log's first N panes (default: all ~13,800)"
    )
    ap.add_argument(
        "--stage-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an argument for this tree's `procvault release` (repeat; e.g. "
        "--stage-arg=--draw-threads=1)",
    )
    args = ap.parse_args(argv)

    from procvault.streams import kafka_local

    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    tmp = tempfile.TemporaryDirectory(prefix="procvault-bench-release-")
    work = Path(tmp.name)
    try:
        if not bootstrap:
            broker = kafka_local.LocalKafka(
                data_dir=work / "kafka",
                port=kafka_local.free_port(),
                controller_port=kafka_local.free_port(),
            )
            kafka_local.install_jars()
            _progress("starting a local broker")
            broker.start()
            bootstrap = broker.bootstrap
        _progress("counting Sepsis's panes in three vault partitions")
        workload = aggregates(work / "aggregates.msgpack", args.max_panes)
        _progress(f"{workload['panes']} panes; running the stages")
        roots = {"head": _import_root(REPO, work / "root-head")}
        policies = {"head": POLICY}
        if not args.no_base:
            base_tree = _base_tree(args.base, args.base_tree)
            roots["base"] = _import_root(base_tree, work / "root-base")
            # the base tree's own copy of the bundled policy: the faust stage predates the
            # public `panes.start` (it refuses the key) and releases from the first pane seen
            policies["base"] = base_tree / "policies" / "dp" / "default.yaml"
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in roots}
        restart: dict[str, dict[str, Any]] = {}
        draws: list[float] = []
        for i in range(args.runs):
            draws.append(opendp_draws_per_second())
            for name, root in roots.items():
                limit = args.base_timeout if name == "base" else args.timeout
                extra = tuple(args.stage_arg) if name == "head" else ()
                tree = Tree(
                    name, root, bootstrap, work, work / "aggregates.msgpack", extra, policies[name]
                )
                r = catch_up(tree, workload, limit)
                runs[name].append(r)
                _progress(
                    f"{name} run {i + 1}: {r['panes_released']}/{r['panes_total']} panes, "
                    f"{r['panes_per_second']} panes/s, {r['peak_rss_mb']} MB, "
                    f"largest record {r['largest_record_bytes']} B"
                )
        for name, root in roots.items():
            limit = args.base_timeout if name == "base" else args.timeout
            extra = tuple(args.stage_arg) if name == "head" else ()
            tree = Tree(
                name, root, bootstrap, work, work / "aggregates.msgpack", extra, policies[name]
            )
            restart[name] = restarts(tree, limit)
            _progress(f"{name} restarts: {restart[name]}")
    finally:
        if broker is not None:
            broker.stop()
        tmp.cleanup()

    def summary(name: str) -> dict[str, Any]:
        rs = runs[name]
        return {
            "finished_runs": sum(1 for r in rs if r["finished"]),
            "panes_per_second_median": _median(rs, "panes_per_second"),
            "seconds_to_last_median": _median(rs, "seconds_to_last"),
            "peak_rss_mb_median": _median(rs, "peak_rss_mb"),
            "panes_per_stage_cpu_second_median": _median(rs, "panes_per_stage_cpu_second"),
            "largest_record_bytes_max": max(r["largest_record_bytes"] for r in rs),
            "runs": rs,
            "restart": restart[name],
        }

    out: dict[str, Any] = {
        "benchmark": "release_stage_catch_up",
        "machine": "2 cores shared with other engineers' work (other helpers running)",
        "log": LOG.name,
        "model": str(MODEL.relative_to(SHARED)),
        "policy": str(POLICY.relative_to(REPO)),
        "vault_partitions": PARTITIONS,
        "workload": workload,
        "opendp_draws_per_second_median": round(statistics.median(draws)),
        "opendp_ceiling_panes_per_second": round(
            statistics.median(draws) / workload["noise_draws_per_pane"], 1
        ),
        "head_stage_args": args.stage_arg,
        "cpus": os.cpu_count(),
        "base_commit": None if args.no_base else args.base,
        "base_timeout_seconds": None if args.no_base else args.base_timeout,
        "head": summary("head"),
    }
    if not args.no_base:
        out["base"] = summary("base")
        h, b = out["head"], out["base"]
        out["head_over_base_panes_per_second"] = (
            round(h["panes_per_second_median"] / b["panes_per_second_median"], 1)
            if b["panes_per_second_median"]
            else None
        )
        out["head_over_base_peak_rss"] = round(h["peak_rss_mb_median"] / b["peak_rss_mb_median"], 3)
    h = out["head"]
    out["bars"] = {
        "panes_per_second_ge_1000": (h["panes_per_second_median"] or 0) >= BAR_PANES_PER_SECOND,
        "rss_lt_500_mb": (h["peak_rss_mb_median"] or 1e9) < BAR_RSS_MB,
        "no_record_over_256_kb": h["largest_record_bytes_max"] <= BAR_RECORD_BYTES,
        "restart_resumes_and_finishes": bool(
            h["restart"]["finished"] and h["restart"]["one_value_per_key"]
        ),
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
