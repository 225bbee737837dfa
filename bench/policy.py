"""Throughput of the policy stage with a 20-clause policy, PII scrubbing off and on.

Prints one JSON object. Workload: the Sepsis log replayed ``--repeat`` times (case ids suffixed
per round, an end-of-case marker per case) through ``policies/orgs/hospital.yaml`` (20 clauses:
2 denied activities, 4 attribute rules, 2 collection windows on the lab's group, 4 minimised
activities, minute timestamps and 4 number buckets, pseudonyms for case ids, resources and the
group attribute), with a fixed pseudonym key. The events are built before timing; each run
times ``engine.apply`` over the whole stream with a fresh engine (cold caches), median of
``--runs``: wall-clock events/s, and events per second of this process's CPU time (steadier
when other processes share the machine). ``load_average`` is the 1-minute load at the start.

* ``scrub_off``: the policy as written (scrubbing is off by default).
* ``scrub_on``: the same with ``--scrub``: every text value is scanned (Sepsis text values are
  short codes, so the scrubber's cache answers most of them).
* ``scrub_on_free_text``: as ``scrub_on``, but every event of a non-minimised activity also
  carries a distinct free-text ``note`` (from the PII fixture, about a third with planted PII),
  so each note is really scanned.

    .venv/bin/python bench/policy.py [--runs 3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

os.environ.setdefault("PM4PY_SHOW_PROGRESS_BAR", "false")

from procvault.generators.xes import read_xes
from procvault.monitor.event import Event
from procvault.organization.policy import PolicyEngine, PseudonymKey, load_policy

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "policies" / "orgs" / "hospital.yaml"
FIXTURE = ROOT / "tests" / "fixtures" / "pii_freetext.jsonl"
SHARED = Path(os.environ.get("PROCVAULT_SHARED_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_LOG = SHARED / "logs" / "sepsis_cases.xes.gz"
KEY = PseudonymKey(b"bench key: 32 bytes of not-secret")


def _stream(log_path: Path, repeat: int) -> list[Event]:
    base = list(read_xes(log_path).replay(end_markers=True))
    out = []
    for k in range(repeat):
        for ev in base:
            out.append(ev if k == 0 else msgspec.structs.replace(ev, case_id=f"{ev.case_id}#{k}"))
    return out


def _with_notes(events: list[Event], minimised: set[str]) -> list[Event]:
    texts = [json.loads(line)["text"] for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    out = []
    for i, ev in enumerate(events):
        if ev.is_marker or ev.activity in minimised:
            out.append(ev)
            continue
        note = f"{texts[i % len(texts)]} (#{i})"
        attrs = tuple(sorted((*ev.attributes, ("note", note))))
        out.append(msgspec.structs.replace(ev, attributes=attrs))
    return out


def _measure(make: Callable[[], PolicyEngine], events: list[Event], runs: int) -> dict[str, Any]:
    rates, cpu_rates = [], []
    stats: dict[str, Any] = {}
    for _ in range(runs):
        engine = make()
        apply = engine.apply
        start, cpu_start = time.perf_counter(), time.process_time()
        for ev in events:
            apply(ev)
        cpu = time.process_time() - cpu_start
        rates.append(len(events) / (time.perf_counter() - start))
        cpu_rates.append(len(events) / cpu if cpu > 0 else float("inf"))
        stats = engine.stats.as_dict()
    median = statistics.median(rates)
    return {
        "events": len(events),
        "events_per_s_median": round(median),
        "events_per_s_runs": [round(r) for r in rates],
        "us_per_event_median": round(1e6 / median, 3),
        "events_per_cpu_s_median": round(statistics.median(cpu_rates)),
        "decisions": stats,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--log", type=Path, default=DEFAULT_LOG)
    ap.add_argument("--policy", type=Path, default=POLICY)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="replay the log this many times per run")
    args = ap.parse_args()

    policy = load_policy(args.policy)
    events = _stream(args.log, args.repeat)
    noted = _with_notes(events, set(policy.minimise.activities))
    result = {
        "policy": str(args.policy.relative_to(ROOT))
        if args.policy.is_relative_to(ROOT)
        else str(args.policy),
        "policy_clauses": policy.clauses,
        "log": args.log.name,
        "repeat": args.repeat,
        "runs": args.runs,
        "load_average": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "scrub_off": _measure(
            lambda: PolicyEngine(policy, key=KEY, scrub=False), events, args.runs
        ),
        "scrub_on": _measure(lambda: PolicyEngine(policy, key=KEY, scrub=True), events, args.runs),
        "scrub_on_free_text": _measure(
            lambda: PolicyEngine(policy, key=KEY, scrub=True), noted, args.runs
        ),
    }
    result["target_scrub_off_events_per_s"] = 200_000
    result["meets_target"] = result["scrub_off"]["events_per_s_median"] >= 200_000
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
