"""Utility and cost of the differentially private release on real logs.

Prints one JSON object. For each log (Sepsis with ProMTEE's ``sepsis.pnml``; helpdesk with a
model pm4py's inductive miner discovers from the log, standing in for a published model) the
stream (with end-of-case markers) goes through the real pipeline: :class:`Vault` →
:class:`PaneAccumulator` → :class:`PaneReleaser` with OpenDP noise, under the policy
``--policy`` (default ``policies/dp/process_map.yaml``: activities, directly-follows pairs,
case counts, 1-hour panes, w = 24) at each budget: ε per case in ``--epsilons`` and, as
guessing advantages, ``--advantages`` (ε = 2 ln((1 + a) / (1 - a))).

Per budget, against the exact directly-follows graph (DFG) of each pane (every pair occurrence,
no caps, attributed to the pane of the later event) and of each sliding 1-day window:

* ``mae``: mean absolute error per DFG edge, over every known edge (the model's activity pairs,
  zeros included) and every pane or window;
* ``emd``: the aligned earth mover's distance between the two DFGs as frequency distributions
  over their edges, with ground distance 0 for the same edge and 1 between different edges
  (noisy counts clipped at 0, then normalised), i.e. the total variation distance, in [0, 1];
  averaged over the panes/windows whose exact DFG is not empty (1.0 when the noisy DFG is);
* ``overhead`` (measured once per log, in one process, at the policy's own budget, before the
  budgets run in ``--jobs`` processes): the accumulator per event (vault+accumulator minus the
  vault alone), also with every event in one pane (the per-event cost without a pane closing
  per event); the release per pane (noise, ledger, windows, running totals); and their sum per
  event on this log (about one event per pane, so the per-pane cost dominates) and for a stream
  with 60,000 events per pane (1k events/s, 1-minute panes).

``capping`` separates the bias of the contribution caps from the noise: the MAE between the
capped exact DFG (what is noised) and the uncapped one. ``exact`` gives the scale: mean DFG
edge count per pane and per window. With 1-hour panes, a 1-hour window is the pane itself.

    .venv/bin/python bench/dp_utility.py [--logs sepsis,helpdesk] [--jobs 2] [--max-panes N]

OpenDP cannot be seeded (by design), so figures vary slightly from run to run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from procvault.config.dp import load_dp_policy
from procvault.config.models import load_model
from procvault.generators._pm4py import import_pm4py
from procvault.generators.xes import read_xes
from procvault.monitor.event import Event
from procvault.monitor.petri import CompiledNet, compile_net
from procvault.monitor.privacy import (
    Budget,
    KnownKeys,
    OpenDPReleaser,
    PaneAccumulator,
    PaneAggregate,
    PaneClock,
    PaneRecord,
    PaneReleaser,
    PrivacySettings,
    ReleasePlan,
)
from procvault.monitor.vault import Vault

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PROCVAULT_SHARED_DATA", ROOT.parent / "shared" / "data"))
LOGS = {
    "sepsis": ("logs/sepsis_cases.xes.gz", "models/promtee/pnml/sepsis.pnml"),
    "helpdesk": ("logs/helpdesk.xes.gz", None),
}
DAY_PANES = 24


def _net(name: str, log_path: Path, model: str | None) -> CompiledNet:
    if model is not None:
        m = load_model(DATA / model)
        return compile_net(m.net, m.initial_marking, m.final_marking)
    pm4py = import_pm4py()
    with contextlib.redirect_stdout(io.StringIO()):
        df = pm4py.read_xes(str(log_path))
        net, im, fm = pm4py.discover_petri_net_inductive(df, noise_threshold=0.2)
    return compile_net(net, im, fm)


def _exact_dfg(events: list[Event], clock: PaneClock, first: int) -> dict[int, dict[Any, int]]:
    """Uncapped DFG per pane: every pair occurrence, in the pane of the later event."""
    last: dict[str, str] = {}
    out: dict[int, dict[Any, int]] = {}
    for e in events:
        if e.is_marker:
            last.pop(e.case_id, None)
            continue
        prev = last.get(e.case_id)
        last[e.case_id] = e.activity
        if prev is not None:
            d = out.setdefault(clock.index(e.timestamp) - first, {})
            key = (prev, e.activity)
            d[key] = d.get(key, 0) + 1
    return out


def _prepare(name: str, max_panes: int | None, settings: PrivacySettings) -> dict[str, Any]:
    log_rel, model = LOGS[name]
    log_path = DATA / log_rel
    events = list(read_xes(log_path).replay(end_markers=True))
    net = _net(name, log_path, model)
    known = KnownKeys.build(net.labels)
    clock = PaneClock(settings.panes)
    if max_panes is not None:
        limit = clock.index(events[0].timestamp) + max_panes
        events = [e for e in events if clock.index(e.timestamp) < limit]
    n_events = sum(1 for e in events if not e.is_marker)

    def vault_only() -> float:
        v = Vault(net)
        t = time.perf_counter()
        for e in events:
            v.update(e)
        v.flush()
        return time.perf_counter() - t

    def with_acc() -> tuple[float, list[PaneAggregate], Any]:
        v = Vault(net)
        acc = PaneAccumulator(settings, known)
        out: list[PaneAggregate] = []
        t = time.perf_counter()
        for e in events:
            out.extend(acc.observe_replayed(e, v.update(e)))
        for r in v.flush():
            acc.observe_completed(r, events[-1].timestamp)
        out.extend(acc.flush())
        return time.perf_counter() - t, out, acc.counters()

    base = min(vault_only() for _ in range(3))
    runs = [with_acc() for _ in range(3)]
    acc_time = min(r[0] for r in runs) - base
    aggregates, counters = runs[0][1], runs[0][2]
    # the same events in one pane: the per-event cost without closing a pane per event
    one_pane = dataclasses.replace(
        settings,
        panes=dataclasses.replace(settings.panes, length=timedelta(days=36525)),
        windows=(),
    )

    def dense() -> float:
        v = Vault(net)
        acc = PaneAccumulator(one_pane, known)
        t = time.perf_counter()
        for e in events:
            acc.observe_replayed(e, v.update(e))
        return time.perf_counter() - t

    dense_time = min(dense() for _ in range(3)) - base
    first = aggregates[0].index
    exact = _exact_dfg(events, clock, first)
    return {
        "name": name,
        "events": n_events,
        "cases": len({e.case_id for e in events}),
        "known": known,
        "aggregates": aggregates,
        "exact": exact,
        "acc_us_per_event": acc_time / n_events * 1e6,
        "acc_dense_us_per_event": dense_time / n_events * 1e6,
        "vault_us_per_event": base / n_events * 1e6,
        "late_events": counters.late_events,
        "capped_observations": counters.capped,
    }


def _matrix(rows: list[dict[Any, int]], keys: list[Any]) -> np.ndarray:
    index = {k: i for i, k in enumerate(keys)}
    m = np.zeros((len(rows), len(keys)), dtype=np.float64)
    for r, row in enumerate(rows):
        for k, v in row.items():
            m[r, index[k]] = v
    return m


def _window(m: np.ndarray, n: int) -> np.ndarray:
    c = np.cumsum(np.vstack([np.zeros((1, m.shape[1])), m]), axis=0)
    return c[n:] - c[:-n]


def _metrics(noisy: np.ndarray, exact: np.ndarray) -> dict[str, float]:
    mae = float(np.mean(np.abs(noisy - exact)))
    mass = exact.sum(axis=1)
    rows = mass > 0
    p = exact[rows] / mass[rows, None]
    q = np.clip(noisy[rows], 0, None)
    qs = q.sum(axis=1)
    tvd = np.ones(len(p))
    ok = qs > 0
    tvd[ok] = 0.5 * np.abs(q[ok] / qs[ok, None] - p[ok]).sum(axis=1)
    return {"mae": mae, "emd": float(tvd.mean()) if len(tvd) else 0.0, "nonempty": int(rows.sum())}


def _run(prep: dict[str, Any], settings: PrivacySettings, budget: Budget) -> dict[str, Any]:
    s = dataclasses.replace(settings, budget=budget)
    plan = ReleasePlan.build(s, prep["known"])
    rel = PaneReleaser(plan, OpenDPReleaser(plan))
    aggregates: list[PaneAggregate] = prep["aggregates"]
    records = [rel.release(a) for a in aggregates]
    keys = list(prep["known"].keys("directly_follows"))
    noisy_rows: list[dict[Any, int]] = []
    withheld = 0
    for recs in records:
        pane = recs[0]
        row: dict[Any, int] = {}
        if isinstance(pane, PaneRecord):
            df = next(x for x in pane.statistics if x.name == "directly_follows")
            row = {e.key: e.value for e in df.known + df.other}
        else:
            withheld += 1
        noisy_rows.append(row)
    extra = sorted({k for r in noisy_rows for k in r} - set(keys))
    exact_rows = [prep["exact"].get(i, {}) for i in range(len(aggregates))]
    extra += sorted({k for r in exact_rows for k in r} - set(keys) - set(extra))
    all_keys = keys + extra
    noisy = _matrix(noisy_rows, all_keys)
    exact = _matrix(exact_rows, all_keys)
    spec = plan.spec("directly_follows")
    out: dict[str, Any] = {
        "epsilon": budget.epsilon,
        "advantage": budget.advantage,
        "pane_epsilon": plan.pane_epsilon,
        "df_epsilon": spec.epsilon,
        "df_scale": spec.scale,
        "df_noise_sd": spec.variance**0.5,
        "withheld_panes": withheld,
        "pane": _metrics(noisy, exact),
        "window_1d": _metrics(_window(noisy, DAY_PANES), _window(exact, DAY_PANES))
        if len(aggregates) >= DAY_PANES
        else None,
    }
    return out


def _overhead(prep: dict[str, Any], settings: PrivacySettings) -> dict[str, float]:
    """The release's cost, measured alone (one process, nothing else running), at the
    policy's own budget: the accumulator per event, the release per pane."""
    plan = ReleasePlan.build(settings, prep["known"])
    rel = PaneReleaser(plan, OpenDPReleaser(plan))
    aggregates: list[PaneAggregate] = prep["aggregates"]
    t = time.perf_counter()
    for a in aggregates:
        rel.release(a)
    per_pane = (time.perf_counter() - t) / len(aggregates)
    events = prep["events"]
    return {
        "vault_us_per_event": prep["vault_us_per_event"],
        "accumulator_us_per_event": prep["acc_us_per_event"],
        "accumulator_us_per_event_one_pane": prep["acc_dense_us_per_event"],
        "release_ms_per_pane": per_pane * 1e3,
        "release_us_per_event": prep["acc_us_per_event"]
        + per_pane * len(aggregates) / events * 1e6,
        "release_us_per_event_at_60k_events_per_pane": prep["acc_dense_us_per_event"]
        + per_pane / 60_000 * 1e6,
    }


def _capping(prep: dict[str, Any]) -> dict[str, float]:
    keys = list(prep["known"].keys("directly_follows"))
    aggs: list[PaneAggregate] = prep["aggregates"]
    capped = _matrix([a.statistic("directly_follows") for a in aggs], keys)
    exact_rows = [prep["exact"].get(i, {}) for i in range(len(aggs))]
    exact = _matrix([{k: v for k, v in r.items() if k in set(keys)} for r in exact_rows], keys)
    return {
        "mae_pane": float(np.mean(np.abs(capped - exact))),
        "mae_window_1d": float(
            np.mean(np.abs(_window(capped, DAY_PANES) - _window(exact, DAY_PANES)))
        )
        if len(aggs) >= DAY_PANES
        else 0.0,
        "mean_df_per_pane": float(exact.sum() / len(aggs)),
        "mean_edge_count_per_pane": float(exact.mean()),
        "mean_edge_count_per_window_1d": float(_window(exact, DAY_PANES).mean())
        if len(aggs) >= DAY_PANES
        else 0.0,
    }


def _job(args: tuple[dict[str, Any], PrivacySettings, Budget]) -> dict[str, Any]:
    return _run(*args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--logs", default="sepsis,helpdesk")
    ap.add_argument("--policy", default=str(ROOT / "policies" / "dp" / "process_map.yaml"))
    ap.add_argument("--epsilons", default="0.5,1,2")
    ap.add_argument("--advantages", default="0.2,0.3,0.4")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes for the budgets")
    ap.add_argument("--max-panes", type=int, default=None, help="only the first N panes")
    args = ap.parse_args(argv)
    settings = load_dp_policy(args.policy)
    # offline, each log from its own first pane (the policy's public start is the demo's)
    settings = dataclasses.replace(settings, panes=dataclasses.replace(settings.panes, start=None))
    w, delta = settings.budget.window, settings.budget.delta
    budgets = [Budget(float(e), window=w, delta=delta) for e in args.epsilons.split(",") if e]
    budgets += [
        Budget.from_advantage(float(a), window=w, delta=delta)
        for a in args.advantages.split(",")
        if a
    ]
    report: dict[str, Any] = {
        "policy": os.path.relpath(args.policy, ROOT),
        "pane": str(settings.panes.length),
        "budget_window_panes": w,
        "max_panes_per_case": settings.max_panes_per_case,
        "caps": {s.name: s.m for s in settings.statistics},
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "logs": {},
    }
    for name in args.logs.split(","):
        prep = _prepare(name, args.max_panes, settings)
        overhead = _overhead(prep, settings)
        jobs = [(prep, settings, b) for b in budgets]
        if args.jobs > 1:
            with ProcessPoolExecutor(args.jobs) as pool:
                runs = list(pool.map(_job, jobs))
        else:
            runs = [_job(j) for j in jobs]
        report["logs"][name] = {
            "events": prep["events"],
            "cases": prep["cases"],
            "panes": len(prep["aggregates"]),
            "known_activities": len(prep["known"].activities),
            "known_df_edges": len(prep["known"].pairs),
            "capped_observations": prep["capped_observations"],
            "overhead": overhead,
            "exact_and_capping": _capping(prep),
            "runs": runs,
        }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
