"""Online compliance throughput and latency, native rules against the Rego reference path.

Prints one JSON object with, for 10, 50 and 200 rules (``--rules``):

* ``native``: Declare rules drawn from all 19 templates over Sepsis' 16 activities (seeded:
  ``--seed``), a third with an activation or target condition, a fifth of the timed templates
  with a ``within`` window, evaluated by :class:`Compliance` on Sepsis replayed ``--repeat``
  times under fresh case ids (with end-of-case markers, which complete the cases). events/s is
  the median of 3 runs, each on a fresh evaluator; p50/p99 µs per event come from a separate
  run that times every call of ``update``, end-of-case markers included: such a call completes
  the case (closing every rule, its final states and the closing alerts), so ``latency_us``
  covers case completion; ``latency_us_activity`` and ``latency_us_case_end`` split it.
* ``rego``: the Rego reference path (:class:`RegoEvaluator`, ProMTEE's driving of its FSMs,
  through regopy) with the same number of rules on a *prefix* of the same stream
  (``--rego-events``, the first events in replay order, end markers included), in a child
  process (rego-cpp's memory is not given back). Its rules are ProMTEE's two Sepsis rules
  copied under renamed packages up to the rule count, as ProMTEE's own x2/x5 scalability
  folders do: ProMTEE has no Rego form of the seeded Declare rules, and these two are rules of
  the same shape (history scan + time arithmetic).
* ``ratio``: native events/s over Rego events/s.

    .venv/bin/python bench/compliance.py [--rules 10,50,200] [--repeat 5] [--rego-events 400]

Workloads (streams, rules, rule folders) are built before any timing starts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
from _timing import latency_summary, rate_summary  # bench/_timing.py

from procvault.generators.xes import read_xes
from procvault.monitor.compliance import (
    BINARY_TEMPLATES,
    TEMPLATES,
    AttrTest,
    Compliance,
    DeclareRule,
    Window,
)
from procvault.monitor.event import Event

DATA = Path(
    os.environ.get("PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
SEPSIS = DATA / "logs" / "sepsis_cases.xes.gz"
# the templates that relate an activation to targets before or after it take a time window
_TIMED = BINARY_TEMPLATES - {"responded_existence", "co_existence", "not_coexistence"}


def _stream(repeat: int) -> list[Event]:
    base = list(read_xes(SEPSIS).replay(end_markers=True))
    return [
        e if k == 0 else msgspec.structs.replace(e, case_id=f"{e.case_id}#{k}")
        for k in range(repeat)
        for e in base
    ]


def seeded_rules(n: int, activities: list[str], seed: int) -> list[DeclareRule]:
    """``n`` Declare rules over ``activities``, reproducible from ``seed``."""
    rng = random.Random(seed)
    templates = sorted(TEMPLATES)
    groups = ["A", "B", "C", "D", "E", "?"]
    out = []
    for i in range(n):
        t = templates[i % len(templates)] if i < len(templates) else rng.choice(templates)
        a, b = rng.sample(activities, 2)
        binary = t in BINARY_TEMPLATES
        acond: tuple[AttrTest, ...] = ()
        tcond: tuple[AttrTest, ...] = ()
        if rng.random() < 1 / 3:
            test = AttrTest("org:group", "in", frozenset(rng.sample(groups, 3)))
            if binary and rng.random() < 0.5:
                tcond = (test,)
            else:
                acond = (test,)
        window = None
        if t in _TIMED and rng.random() < 0.2:
            window = Window(within=timedelta(hours=rng.choice([1, 6, 24, 72])))
        out.append(
            DeclareRule(
                f"r{i:03d}_{t}",
                t,
                a,
                b if binary else None,
                activation_if=acond,
                target_if=tcond,
                window=window,
                count=rng.choice([1, 2]) if t in ("existence", "absence", "exactly") else 1,
            )
        )
    return out


def native(rules: list[DeclareRule], events: list[Event], runs: int = 3) -> dict[str, Any]:
    rates = []
    alerts = 0
    for _ in range(runs):
        update = Compliance(rules).update
        t = time.perf_counter()
        for e in events:
            update(e)
        rates.append(len(events) / (time.perf_counter() - t))
    cc = Compliance(rules)
    update = cc.update
    clock = time.perf_counter_ns
    lat = [0] * len(events)
    for i, e in enumerate(events):
        t0 = clock()
        a = update(e)
        lat[i] = clock() - t0
        if a:
            alerts += len(a)
    ends = [t for t, e in zip(lat, events, strict=True) if e.kind]
    return {
        **rate_summary(rates),
        "latency_us": latency_summary(lat),
        "latency_us_activity": latency_summary(
            [t for t, e in zip(lat, events, strict=True) if not e.kind]
        ),
        "latency_us_case_end": latency_summary(ends),
        "case_ends_timed": len(ends),
        "violation_alerts": alerts,
        "violations_per_rule_median": statistics.median(
            c.violations for c in cc.counters().values()
        ),
    }


def _rego_folder(n: int, root: Path) -> Path:
    src = DATA / "rules" / "promtee" / "sepsisConstraints"
    folder = root / f"sepsis_x{n}"
    folder.mkdir()
    names = ["iv_antibiotics_within_onehour", "lactic_acid_within_onehour"]
    for i in range(n):
        base = names[i % 2]
        new = f"{base}_{i:03d}"
        text = (src / f"{base}.rego").read_text()
        (folder / f"{new}.rego").write_text(text.replace(f"package {base}", f"package {new}", 1))
        (folder / f"{new}.yaml").write_text((src / f"{base}.yaml").read_text())
    return folder


def _rego_child(folder: str, n_events: int) -> None:
    """Child process: time the Rego path on the first ``n_events`` of the stream; print JSON."""
    from procvault.reference.promtee import RegoEvaluator, load_manifest, load_promtee_rules

    rules = load_promtee_rules(folder)
    ev = RegoEvaluator(rules, load_manifest(DATA / "manifests" / "extraction_manifest_sepsis.json"))
    events = list(read_xes(SEPSIS).replay(end_markers=True))[:n_events]
    clock = time.perf_counter_ns
    lat = []
    t = time.perf_counter()
    for e in events:
        t0 = clock()
        ev.update(e)
        lat.append(clock() - t0)
        if e.kind:
            ev.forget(e.case_id)
    seconds = time.perf_counter() - t
    print(
        json.dumps(
            {
                "rules": len(rules.rules),
                "events": len(events),
                "events_per_s": round(len(events) / seconds, 1),
                "latency_us": latency_summary(lat, digits=1),
                "failed_evaluations": sum(ev.errors.values()),
            }
        )
    )


def rego(n: int, n_events: int, root: Path) -> dict[str, Any]:
    folder = _rego_folder(n, root)
    proc = subprocess.run(
        [sys.executable, __file__, "--rego-child", str(folder), "--rego-events", str(n_events)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", default="10,50,200", help="rule counts, comma-separated")
    ap.add_argument("--repeat", type=int, default=5, help="Sepsis passes under fresh case ids")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--rego-events", type=int, default=400, help="stream prefix for Rego")
    ap.add_argument("--rego-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rego_child:
        _rego_child(args.rego_child, args.rego_events)
        return
    counts = [int(x) for x in args.rules.split(",") if x.strip()]
    events = _stream(args.repeat)
    activities = sorted({e.activity for e in events if not e.kind})
    rule_sets = {n: seeded_rules(n, activities, args.seed) for n in counts}
    out: dict[str, Any] = {
        "benchmark": "online_compliance",
        "python": sys.version.split()[0],
        "log": "logs/sepsis_cases.xes.gz",
        "stream_items": len(events),
        "repeat": args.repeat,
        "seed": args.seed,
        "rego_prefix_items": args.rego_events,
        "rego_rules": "ProMTEE's 2 Sepsis rules copied under renamed packages up to the count",
        "results": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            nat = native(rule_sets[n], events)
            ref = rego(n, args.rego_events, Path(tmp))
            out["results"][str(n)] = {
                "native": nat,
                "rego": ref,
                "ratio_native_vs_rego": round(nat["events_per_s_median"] / ref["events_per_s"], 1),
            }
            print(f"{n} rules done", file=sys.stderr)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
