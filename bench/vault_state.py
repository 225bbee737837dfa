"""What the vault worker writes to its changelog per batch with a DP policy. Prints one JSON object.

The worker runs in process (no broker: the records it would read are sealed here as the agents
seal them, and its state records are collected instead of produced) on Sepsis with the model,
the rules and ``policies/dp/default.yaml``, with the log repeated ``k`` times under fresh case
ids at the same times, so that ``k`` times as many cases are active at once. Per batch of
``--batch`` records (default 50: a live worker's batches close after 20 ms, so at a few
thousand events/s they hold tens of records) it reports the bytes of the state records (the
sealed case records and the shard's metadata) and the milliseconds
:meth:`VaultWorker.state_records` took.

Baseline, in the same run: the shard's metadata as it was before the accumulator's per-case
state moved into the case records (the whole :meth:`PaneAccumulator.snapshot` in every batch's
metadata), sealed the same way, against today's metadata (:meth:`shared_snapshot`) plus the
case shares the batch adds to its case records; bytes and the time to build and seal them.

    .venv/bin/python bench/vault_state.py [--repeat 1 4 16] [--batch 50]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from procvault.config.dp import load_dp_policy
from procvault.config.engines import load_engines
from procvault.generators.xes import read_xes
from procvault.monitor.compliance import Compliance
from procvault.monitor.event import Event
from procvault.monitor.privacy import PaneAccumulator
from procvault.monitor.vault import Vault
from procvault.streams import codec
from procvault.streams.envelope import ProducerSession
from procvault.streams.frames import EVENT, Topics, encode_frame, encode_heartbeat
from procvault.streams.secrets import Registry, VaultSecrets, init_keyring
from procvault.streams.vault_worker import VaultWorker, WorkerSettings

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PROCVAULT_SHARED_DATA", REPO.parent / "shared" / "data"))
LOG = SHARED / "logs" / "sepsis_cases.xes.gz"
MODEL = SHARED / "models" / "promtee" / "pnml" / "sepsis.pnml"
RULES = REPO / "policies" / "rules" / "sepsis.yaml"
DP = REPO / "policies" / "dp" / "default.yaml"
TOPICS = Topics("bench.")


class Rec(NamedTuple):
    offset: int
    value: bytes
    key: bytes | None = None


def _events(repeat: int) -> list[Event]:
    base = list(read_xes(LOG).replay(end_markers=True))
    out = [
        Event(f"{e.case_id}~{r}", e.activity, e.timestamp, e.org, e.resource, e.attributes, e.kind)
        for r in range(repeat)
        for e in base
    ]
    out.sort(key=lambda e: e.timestamp)  # stable: each copy keeps its order
    return out


def _pickled(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)  # as the worker seals state


def run(repeat: int, batch: int) -> dict[str, Any]:
    from aiokafka import TopicPartition

    engines = load_engines(str(MODEL), str(RULES))
    net, rules = engines.net, engines.rules
    dp, known = load_dp_policy(DP), engines.known()
    events = _events(repeat)
    with tempfile.TemporaryDirectory() as keys_dir:
        keys = Path(keys_dir)
        init_keyring(keys, ["lab"])
        worker = VaultWorker(
            WorkerSettings("localhost:1", 1, TOPICS, source_timeout=None),
            VaultSecrets.load(keys / "vault.json"),
            Registry.load(keys / "registry.json"),
            lambda: Vault(net, compliance=Compliance(rules)),
            make_accumulator=lambda state: PaneAccumulator(dp, known, state),
        )
    worker.shards[0] = worker._new_shard(0)
    shard = worker.shards[0]
    acc = shard.acc
    assert acc is not None
    session = ProducerSession(worker.secrets.current.public(), org="lab", producer="a")
    topic = TOPICS.events("lab")
    sealed = [
        session.seal(encode_frame(EVENT, i, 0, codec.encode(e)), topic=topic)
        for i, e in enumerate(events)
    ]
    sealed.append(session.seal(encode_heartbeat(len(sealed), 0, 1 << 60, closed=True), topic=topic))
    tp = TopicPartition(topic, 0)
    meta_key = worker._meta_key(0)
    written, meta_now, shares, meta_before, seconds, active = [], [], [], [], [], []
    acc_now: list[float] = []
    acc_before: list[float] = []
    for start in range(0, len(sealed), batch):
        chunk = sealed[start : start + batch]
        worker.process({tp: [Rec(start + i, v) for i, v in enumerate(chunk)]})
        changed = list(shard.changed)
        t0 = time.perf_counter()
        share = sum(len(_pickled(acc.case_state(c))) for c in changed)
        shared = len(worker._seal(meta_key, acc.shared_snapshot()))
        t1 = time.perf_counter()
        whole = len(worker._seal(meta_key, acc.snapshot()))  # the old layout's
        t2 = time.perf_counter()
        acc_now.append(t1 - t0)
        acc_before.append(t2 - t1)
        swap = whole - shared  # the old metadata: the whole accumulator, not its shared part
        t0 = time.perf_counter()
        recs = worker.state_records()
        seconds.append(time.perf_counter() - t0)
        meta = next((len(v) for _, k, v in recs if k == meta_key and v), 0)
        written.append(sum(len(v) for _, _, v in recs if v))
        meta_now.append(meta)
        shares.append(share)
        meta_before.append(meta + swap)
        active.append(acc.counters().active_cases)

    def med(xs: list[float]) -> float:
        return round(statistics.median(xs), 1)

    return {
        "events": len(events),
        "batches": len(written),
        "active_cases_median": med(active),
        "active_cases_max": max(active),
        "bytes_per_batch_median": med(written),
        "meta_bytes_median": med(meta_now),
        "case_share_bytes_median": med(shares),
        "baseline_meta_bytes_median": med(meta_before),
        "baseline_bytes_per_batch_median": med(
            [
                w - s - m + b
                for w, s, m, b in zip(written, shares, meta_now, meta_before, strict=True)
            ]
        ),
        "state_records_ms_median": round(statistics.median(seconds) * 1000, 3),
        "acc_state_ms_median": round(statistics.median(acc_now) * 1000, 3),
        "baseline_acc_state_ms_median": round(statistics.median(acc_before) * 1000, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    out: dict[str, Any] = {"log": LOG.name, "batch_records": args.batch, "runs": {}}
    for k in args.repeat:
        r = run(k, args.batch)
        r["baseline_over_now"] = round(
            r["baseline_bytes_per_batch_median"] / max(r["bytes_per_batch_median"], 1), 2
        )
        out["runs"][str(k)] = r
        print(f"repeat {k} done", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
