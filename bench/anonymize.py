"""DP event-log release (Amun): utility and runtime on the shared logs. Prints one JSON object.

* ``sepsis``: for delta in {0.2, 0.3, 0.4} (``--seeds`` seeds each, strategy sampling) and
  three runs: ``amun`` (the published method as the paper describes it: Algorithm 1's
  frequency-weighted transition picks and the whole net per variant), ``amun_prototype_net``
  (``--amun-net prototype``: the prototype's transition weights and pandas net, the code that
  produced the paper's figures) and ``strict``: the median over seeds of EMD DFG frequency
  and EMD DFG time (as Amun computes them; time in months), the time EMD in summed and mean
  hours, per-edge MAE, cases and variants released, and seconds for :func:`anonymize` (the
  log is parsed once, outside the timing) and for writing the ``.xes.gz``; with the paper's
  Table 6 figures for Amun_s on Sepsis beside them.
* ``logs``: every shared log once per mode at delta 0.2 (does it run, how long, what is left).
* ``large``: the largest shared log, and a synthetic log of ``--large-events`` events (Sepsis
  cases repeated under fresh ids, timestamps shifted per round), one run per mode.
* ``presence``: the presence attack of issue 21 on strict mode (the same log as
  ``tests/unit/test_amun_strict_privacy.py``): in how many of ``--presence-runs`` releases a
  trace of the target's variant starts within 15 days of a target case far in time from the
  rest of its variant, with the target in the log and without it.

    .venv/bin/python bench/anonymize.py [--seeds 10] [--large-events 250000] [--presence-runs 200]
    .venv/bin/python bench/anonymize.py --probes [--seeds 30]

Strict mode is not seeded at all (OpenDP noise, OS CSPRNG choices): its "seeds" are just repeats.

``--probes`` prints only the checks behind the "Paper, prototype and amun mode" section of
``docs/anonymize.md`` (Sepsis, amun mode, prototype net unless said otherwise; median, min and max
of EMD freq over the seeds):

* ``spread``: the standard input, to place the paper's Table 6 figures within our seed range.
* ``sepsis_t``: the input preprocessed as the authors' ``lifecycle_transition.py`` builds their
  ``*_t.xes`` logs: one event per (case, activity), the last one, in timestamp order.
* ``prefilter_pk1``: every case with an event of prior ``p_k = 1`` dropped before sampling, in
  every strategy, as an earlier state of ``guessing_advantage_partitioned.py`` does; with the
  paper's precisions (10 s, 1 day) and with the prototype's "10 units" read as 10 minutes and
  10 weeks (an approximation: the prototype truncates to whole minutes and days).
* ``postfilter_duration``: after the release, every case whose duration lies beyond the mean
  plus or minus two standard deviations of the released durations dropped, as
  ``postprocessing.filtering_postprocessing`` does in one stored state of
  ``event_log_anonymization.py`` (durations from amun mode's noisy timestamps, an approximation
  of the prototype's summed anonymized relative times).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PM4PY_SHOW_PROGRESS_BAR", "false")

import numpy as np

from procvault.generators.xes import read_xes
from procvault.generators.xes_write import write_xes
from procvault.monitor.amun import (
    AnonymizeSettings,
    Case,
    CaseLog,
    Dafsa,
    anonymize,
    compare_logs,
    epsilon_worst_case,
)
from procvault.monitor.amun.priors import case_priors
from procvault.monitor.amun.sampling import amun_plan

SHARED = Path(
    os.environ.get("PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
LOGS = ("sepsis_cases", "helpdesk", "receipt", "roadtraffic100traces", "running-example")
#: Elkoumy et al. 2023, Table 6, Sepsis, Amun_s (sampling): EMD freq, EMD time; 0.87-1.0 min.
PAPER = {
    0.2: {"emd_freq": 56.84, "emd_time": 8.97},
    0.3: {"emd_freq": 28.46, "emd_time": 6.35},
    0.4: {"emd_freq": 43.38, "emd_time": 4.26},
}


def _load(name: str) -> CaseLog:
    return CaseLog.from_events(read_xes(SHARED / "logs" / f"{name}.xes.gz").events)


#: bench run name -> (mode, amun_net)
RUNS = {
    "amun": ("amun", "paper"),
    "amun_prototype_net": ("amun", "prototype"),
    "strict": ("strict", "paper"),
}


def _one(log: CaseLog, delta: float, run: str, seed: int, out: Path) -> dict[str, Any]:
    mode, net = RUNS[run]
    settings = AnonymizeSettings(delta=delta, mode=mode, seed=seed, amun_net=net)
    t0 = time.perf_counter()
    release = anonymize(log, settings)
    t1 = time.perf_counter()
    write_xes(release.log.to_events(), out)
    t2 = time.perf_counter()
    u = compare_logs(log, release.log)
    return {
        "seconds": t1 - t0,
        "write_seconds": t2 - t1,
        "emd_freq": u.emd_freq,
        "emd_time": u.emd_time,
        "emd_time_sum_hours": u.emd_time_sum_hours,
        "emd_time_mean_hours": u.emd_time_mean_hours,
        "mae_freq": u.mae_freq,
        "mae_time_hours": u.mae_time_hours,
        "cases_out": u.cases_anonymized,
        "variants_out": u.variants_anonymized,
        "new_variants": u.new_variants,
    }


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["new_variants_max"] = max(r["new_variants"] for r in runs)
    del out["new_variants"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def _synthetic(base: CaseLog, events: int) -> CaseLog:
    cases: list[Case] = []
    span = max(c.times[-1] for c in base.cases) - min(c.times[0] for c in base.cases) + 1
    n = 0
    rnd = 0
    while n < events:
        for c in base.cases:
            shift = rnd * span
            cases.append(
                Case(f"{c.case_id}#{rnd}", c.activities, tuple(t + shift for t in c.times))
            )
            n += len(c.activities)
            if n >= events:
                break
        rnd += 1
    return CaseLog.from_cases(cases)


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def _last_per_activity(log: CaseLog) -> CaseLog:
    """One event per (case, activity), the last one, in timestamp order (ties: activity name)."""
    cases: list[Case] = []
    for c in log.cases:
        last: dict[str, int] = {}
        for a, t in zip(c.activities, c.times, strict=True):
            last[a] = max(t, last.get(a, t))
        items = sorted(last.items(), key=lambda kv: (kv[1], kv[0]))
        cases.append(Case(c.case_id, tuple(a for a, _ in items), tuple(t for _, t in items)))
    return CaseLog.from_cases(cases)


def _freq_runs(log: CaseLog, delta: float, net: str, seeds: int) -> dict[str, Any]:
    freq: list[float] = []
    cases: list[int] = []
    for seed in range(seeds):
        settings = AnonymizeSettings(delta=delta, mode="amun", seed=seed, amun_net=net)
        u = compare_logs(log, anonymize(log, settings).log)
        freq.append(u.emd_freq)
        cases.append(u.cases_anonymized)
    return {"emd_freq": _spread(freq), "cases_out_median": statistics.median(cases)}


def _postfiltered_runs(log: CaseLog, delta: float, seeds: int) -> dict[str, Any]:
    freq: list[float] = []
    cases: list[int] = []
    for seed in range(seeds):
        settings = AnonymizeSettings(delta=delta, mode="amun", seed=seed, amun_net="prototype")
        released = anonymize(log, settings).log.cases
        duration = np.array([c.times[-1] - c.times[0] for c in released], dtype=np.float64)
        mean, sd = float(duration.mean()), float(duration.std(ddof=1))
        kept = [
            c
            for c, d in zip(released, duration.tolist(), strict=True)
            if mean - 2 * sd <= d <= mean + 2 * sd
        ]
        freq.append(compare_logs(log, CaseLog.from_cases(kept)).emd_freq)
        cases.append(len(kept))
    return {"emd_freq": _spread(freq), "cases_out_median": statistics.median(cases)}


def _prefiltered_runs(
    log: CaseLog, delta: float, precisions: tuple[float, float], seeds: int
) -> dict[str, Any]:
    dafsa = Dafsa.build(log.variants)
    paths = [dafsa.path(v) for v in log.variants]
    table = case_priors(
        [c.times for c in log.cases],
        [paths[v] for v in log.variant_of],
        delta=delta,
        start_precision=precisions[0],
        relative_precision=precisions[1],
    )
    keep = [i for i, p in enumerate(table.prior) if not np.any(p >= 1.0)]
    variant_of = [log.variant_of[i] for i in keep]
    freq: list[float] = []
    cases: list[int] = []
    for seed in range(seeds):
        copies = amun_plan(
            variant_of,
            paths,
            len(dafsa.transitions),
            epsilon=epsilon_worst_case(delta),
            rng=np.random.default_rng(seed),
            prototype=True,
        ).copies
        out = [log.cases[i] for i, k in zip(keep, copies, strict=True) for _ in range(max(k, 0))]
        freq.append(compare_logs(log, CaseLog.from_cases(out)).emd_freq)
        cases.append(len(out))
    return {
        "cases_kept": len(keep),
        "emd_freq": _spread(freq),
        "cases_out_median": statistics.median(cases),
    }


def presence(runs: int) -> dict[str, Any]:
    """The presence attack on strict mode (see the module docstring), delta 0.2."""
    import random
    from datetime import UTC, datetime

    us, day = 1_000_000, 86_400
    t0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    rnd = random.Random(7)
    cases = []
    for i in range(60):
        s = t0 + rnd.randrange(30 * day)
        cases.append(Case(f"x{i}", ("A", "B", "C"), (s * us, (s + 3_600) * us, (s + 9_000) * us)))
    for i in range(60):
        s = t0 + (i * 365 * day) // 59
        cases.append(Case(f"y{i}", ("A", "C"), (s * us, (s + 1_800) * us)))
    target = int(datetime(2024, 11, 15, tzinfo=UTC).timestamp())
    tcase = Case("t", ("A", "B", "C"), (target * us, (target + 3_600) * us, (target + 9_000) * us))
    logs = {
        "with_target": CaseLog.from_cases([*cases, tcase]),
        "without": CaseLog.from_cases(cases),
    }
    settings = AnonymizeSettings(delta=0.2)
    out: dict[str, Any] = {"runs": runs, "epsilon": round(settings.epsilon, 4)}
    for name, log in logs.items():
        seen = 0
        for _ in range(runs):
            released = anonymize(log, settings).log
            seen += any(
                c.activities == ("A", "B", "C") and abs(c.times[0] / us - target) <= 15 * day
                for c in released.cases
            )
        out[f"seen_{name}"] = seen
    return out


def probes(seeds: int) -> dict[str, Any]:
    """The checks listed under ``--probes`` in the module docstring."""
    sepsis = _load("sepsis_cases")
    collapsed = _last_per_activity(sepsis)
    out: dict[str, Any] = {
        "seeds": seeds,
        "paper_amun_s_emd_freq": {str(d): PAPER[d]["emd_freq"] for d in PAPER},
        "sepsis_t_input": {
            "events": collapsed.n_events,
            "cases": len(collapsed.cases),
            "variants": len(collapsed.variants),
        },
    }
    paper_prec = (86_400.0, 10.0)
    proto_prec = (10 * 7 * 86_400.0, 600.0)
    for delta in PAPER:
        out[str(delta)] = {
            "spread": _freq_runs(sepsis, delta, "prototype", seeds),
            "sepsis_t": {net: _freq_runs(collapsed, delta, net, seeds) for net in RUNS_NET},
            "prefilter_pk1": {
                "paper_precision": _prefiltered_runs(sepsis, delta, paper_prec, seeds),
                "prototype_precision": _prefiltered_runs(sepsis, delta, proto_prec, seeds),
            },
            "postfilter_duration": _postfiltered_runs(sepsis, delta, seeds),
        }
        print(f"probes delta={delta} done", file=sys.stderr)
    return out


RUNS_NET = ("prototype", "paper")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--large-events", type=int, default=250_000)
    ap.add_argument("--probes", action="store_true", help="only the checks (see the docstring)")
    ap.add_argument("--presence-runs", type=int, default=200)
    args = ap.parse_args()
    if args.probes:
        print(json.dumps(probes(args.seeds), indent=1))
        return 0
    result: dict[str, Any] = {"seeds": args.seeds}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.xes.gz"
        sepsis = _load("sepsis_cases")
        result["sepsis"] = {}
        for delta in (0.2, 0.3, 0.4):
            row: dict[str, Any] = {"paper_amun_s": PAPER[delta]}
            for run in RUNS:
                runs = [_one(sepsis, delta, run, seed, out) for seed in range(args.seeds)]
                row[run] = _median(runs)
            result["sepsis"][str(delta)] = row
            print(f"sepsis delta={delta} done", file=sys.stderr)
        result["logs"] = {}
        sizes = {}
        for name in LOGS:
            log = _load(name)
            sizes[name] = log.n_events
            result["logs"][name] = {
                "events": log.n_events,
                "cases": len(log.cases),
                "variants": len(log.variants),
                **{run: _median([_one(log, 0.2, run, 0, out)]) for run in RUNS},
            }
        largest = max(sizes, key=lambda k: sizes[k])
        result["large"] = {
            "largest_shared_log": largest,
            "largest_shared_log_events": sizes[largest],
        }
        for mode in ("amun", "strict"):
            result["large"][f"{largest}_{mode}_seconds"] = round(
                _one(_load(largest), 0.2, mode, 0, out)["seconds"], 3
            )
        synth = _synthetic(sepsis, args.large_events)
        result["large"]["synthetic_events"] = synth.n_events
        result["large"]["synthetic_cases"] = len(synth.cases)
        for mode in ("amun", "strict"):
            r = _one(synth, 0.2, mode, 0, out)
            result["large"][f"synthetic_{mode}_seconds"] = round(r["seconds"], 3)
            result["large"][f"synthetic_{mode}_write_seconds"] = round(r["write_seconds"], 3)
    result["presence"] = presence(args.presence_runs)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
