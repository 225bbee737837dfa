"""The release stage's per-pane work in one process, without Kafka: where a pane's time goes.

Sepsis's first ``--panes`` hourly panes (bench/release.py's workload: three vault partitions,
``policies/dp/default.yaml``, ProMTEE's ``sepsis.pnml``) are sealed as the vault seals them,
then opened, combined, noised by OpenDP, sealed as state and signed as ``procvault release``
does per step of ``--step`` panes, with no broker. Prints one JSON object: the stage's CPU
seconds (all threads) and wall seconds, panes per CPU second, the seconds spent opening
partials, releasing (noise, ledger, records), sealing the state and recomputing, signing and
encoding the records, and OpenDP's draws per CPU second measured alone just before. With
``--profile`` it prints cProfile's top functions (by cumulative time) to stderr.

    .venv/bin/python bench/release_profile.py [--panes 1500] [--step 64] [--draw-threads 1]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _release_feed
from release import MODEL, PARTITIONS, POLICY, aggregates


def opendp_draws_per_cpu_second(seconds: float = 2.0) -> float:
    """OpenDP's discrete Laplace draws per CPU second (vectors of 20,000, scale 100)."""
    import numpy as np

    from procvault.monitor.privacy.mechanisms import vector_measurement

    meas = vector_measurement(100.0)
    x = np.zeros(20_000, dtype=np.int64)
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        meas(x)
        n += len(x)
    return n / (time.process_time() - c0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--panes", type=int, default=1500, help="the log's first N panes")
    ap.add_argument("--step", type=int, default=64, help="panes per step (--panes-per-step)")
    ap.add_argument("--draw-threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true", help="cProfile to stderr")
    args = ap.parse_args(argv)

    from procvault.config.dp import load_dp_policy
    from procvault.config.engines import load_engines
    from procvault.monitor.privacy.combiner import PanePartials
    from procvault.monitor.privacy.mechanisms import OpenDPReleaser
    from procvault.monitor.privacy.panes import PaneAggregate
    from procvault.monitor.privacy.plan import ReleasePlan
    from procvault.monitor.privacy.records import PaneRecord, WithheldRecord
    from procvault.monitor.privacy.stage import ReleaseEngine
    from procvault.streams import frames
    from procvault.streams.changelog import StateKeys
    from procvault.streams.release import sign_record
    from procvault.streams.release_stage import StateStore
    from procvault.streams.secrets import VaultSecrets, init_keyring

    work = tempfile.TemporaryDirectory(prefix="procvault-release-profile-")
    tmp = Path(work.name)
    workload = aggregates(tmp / "agg.msgpack", args.panes)
    raw = msgspec.msgpack.decode((tmp / "agg.msgpack").read_bytes())
    parts = [msgspec.convert(p, list[PaneAggregate]) for p in raw["partitions"]]
    first, last = raw["first"], raw["last"]
    plan = ReleasePlan.build(load_dp_policy(POLICY), load_engines(MODEL, None).known())
    fp = plan.fingerprint()
    init_keyring(tmp / "keys", _release_feed.ORGS)
    secrets = VaultSecrets.load(tmp / "keys" / "vault.json")
    sk = StateKeys(secrets)
    store = StateStore(sk)
    sealed = [
        frames.seal_partials(sk, PanePartials(p, PARTITIONS, fp, s, t, a, opens=s == first))
        for t, p, s, a in _release_feed._reports(parts, first, last)
    ]
    releaser = OpenDPReleaser(plan, workers=args.draw_threads)
    draws_per_cpu_second = opendp_draws_per_cpu_second()
    spent = {"open": 0.0, "release": 0.0, "seal_state": 0.0, "sign_records": 0.0}
    counts = {"panes": 0, "records": 0}

    def run() -> None:
        eng = ReleaseEngine(plan, releaser)
        for i, (k, v) in enumerate(sealed):
            t = time.perf_counter()
            eng.receive(frames.open_partials(sk, k, v, plan=fp), i)
            spent["open"] += time.perf_counter() - t
            while eng.ready() >= args.step or (i == len(sealed) - 1 and eng.ready()):
                t0 = time.perf_counter()
                counts["panes"] += eng.release(args.step)
                t1 = time.perf_counter()
                head, new, _gone = eng.changes()
                for r in new:
                    store.pane(r)
                store.head(head)
                t2 = time.perf_counter()
                records = eng.to_publish()
                for r in records:
                    sign_record(r, secrets.current)
                counts["records"] += len(records)
                through = max(
                    r.pane.index for r in records if isinstance(r, PaneRecord | WithheldRecord)
                )
                eng.published(through)
                t3 = time.perf_counter()
                spent["release"] += t1 - t0
                spent["seal_state"] += t2 - t1
                spent["sign_records"] += t3 - t2

    wall0, cpu0 = time.perf_counter(), time.process_time()
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run()
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
    else:
        run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    releaser.close()
    out: dict[str, Any] = {
        "benchmark": "release_stage_in_process",
        "workload": workload,
        "panes_released": counts["panes"],
        "records_signed": counts["records"],
        "step": args.step,
        "draw_threads": args.draw_threads,
        "cpu_seconds": round(cpu, 2),
        "wall_seconds": round(wall, 2),
        "panes_per_cpu_second": round(counts["panes"] / cpu, 1),
        "panes_per_second": round(counts["panes"] / wall, 1),
        "seconds": {k: round(v, 2) for k, v in spent.items()},
        "opendp_draws_per_cpu_second": round(draws_per_cpu_second),
        "opendp_cpu_ms_per_pane": round(
            1000 * workload["noise_draws_per_pane"] / draws_per_cpu_second, 2
        ),
        "profiled": args.profile,
    }
    work.cleanup()
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
