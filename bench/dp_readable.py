"""Is the DP process map of a log readable? The ten most frequent activities and pairs, measured.

Prints one JSON object. The log (default Sepsis with ProMTEE's ``sepsis.pnml``) goes through
the real path, as ``bench/dp_utility.py`` sends it: :class:`Vault` -> :class:`PaneAccumulator`
(the policy's caps) -> :class:`PaneReleaser` with OpenDP's discrete Laplace, under ``--policy``
(default ``policies/dp/whole_log.yaml``: the whole log in one pane). The policy's pane must
hold the whole log (``panes.start`` before its first event, ``length`` past its last): the
figures are about one release of the log, not about a pane of it.

The exact pane aggregate is computed once; then ``--draws`` fresh releasers each release it
(fresh OpenDP noise; the ledger of each is a new deployment's). For each of the ``--top`` most
frequent activities (cases executing it) and directly-follows pairs (cases with the pair) of the
log itself, uncapped:

* ``exact``: that count; ``capped``: what the accumulator counted under the policy's caps (the
  bias of ``max_keys``: a case's keys after its ``m``-th are not counted);
* ``half_width``: the 95% noise half-width the released record states
  (:func:`procvault.monitor.privacy.intervals.half_width` of the record's mechanism), and
  ``stated_relative``: that over ``exact``;
* ``within``: the share of draws whose released value is within ``--target`` (default 20%) of
  ``exact``; ``p95_relative``: the 95th percentile over the draws of |released - exact| / exact.

``meets`` is true when every key's ``p95_relative`` is at most the target (noise and cap bias
together, against the uncapped log). OpenDP cannot be seeded, so the last digit moves.

    .venv/bin/python bench/dp_readable.py [--policy P] [--log L --model M] [--draws 400]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from procvault.config.dp import load_dp_policy
from procvault.config.models import load_model
from procvault.generators.xes import read_xes
from procvault.monitor.petri import compile_net
from procvault.monitor.privacy import (
    KnownKeys,
    OpenDPReleaser,
    PaneAccumulator,
    PaneClock,
    PaneRecord,
    PaneReleaser,
    ReleasePlan,
)
from procvault.monitor.privacy.intervals import half_width
from procvault.monitor.vault import Vault

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PROCVAULT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def _progress(msg: str) -> None:
    print(f"[bench/dp_readable] {msg}", file=sys.stderr, flush=True)


def _top(events: list[Any], top: int) -> dict[str, list[tuple[tuple[str, ...], int]]]:
    """The log's ``top`` most frequent activities and pairs, counted per case (uncapped)."""
    acts: Counter[tuple[str, ...]] = Counter()
    pairs: Counter[tuple[str, ...]] = Counter()
    by_case: dict[str, list[str]] = {}
    for e in events:
        if not e.is_marker:
            by_case.setdefault(e.case_id, []).append(e.activity)
    for trace in by_case.values():
        acts.update({(a,) for a in trace})
        pairs.update(set(itertools.pairwise(trace)))
    return {"activity": acts.most_common(top), "directly_follows": pairs.most_common(top)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default=str(ROOT / "policies" / "dp" / "whole_log.yaml"))
    ap.add_argument("--log", default=str(DATA / "logs" / "sepsis_cases.xes.gz"))
    ap.add_argument("--model", default=str(DATA / "models" / "promtee" / "pnml" / "sepsis.pnml"))
    ap.add_argument("--draws", type=int, default=400, help="fresh releases of the pane")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.2)
    args = ap.parse_args()
    if args.draws < 1 or args.top < 1 or not 0 < args.target < 1:
        ap.error("--draws and --top must be >= 1 and --target in (0, 1)")

    settings = load_dp_policy(args.policy, require_start=True)
    model = load_model(args.model)
    net = compile_net(model.net, model.initial_marking, model.final_marking)
    known = KnownKeys.build(net.labels)
    events = list(read_xes(args.log).replay(end_markers=True))
    clock = PaneClock(settings.panes)
    panes = {clock.index(e.timestamp) for e in events}
    if len(panes) != 1:
        sys.exit(
            f"bench/dp_readable: {args.policy}'s panes split the log into {len(panes)} panes; "
            "give a policy whose one pane holds it"
        )
    _progress(f"{len(events):,} records of {args.log}; counting the pane")
    vault = Vault(net)
    acc = PaneAccumulator(settings, known)
    aggregates = []
    for e in events:
        aggregates.extend(acc.observe_replayed(e, vault.update(e)))
    for r in vault.flush():
        acc.observe_completed(r, events[-1].timestamp)
    aggregates.extend(acc.flush())
    filled = [a for a in aggregates if not a.is_empty]
    assert len(filled) == 1, len(filled)
    aggregate = filled[0]
    plan = ReleasePlan.build(settings, known)
    top = _top(events, args.top)

    drawn: dict[str, list[list[int]]] = {name: [] for name in top}
    stated: dict[str, int] = {}
    t = time.perf_counter()
    for _ in range(args.draws):
        records = PaneReleaser(plan, OpenDPReleaser(plan)).release(aggregate)
        record = next(r for r in records if isinstance(r, PaneRecord))
        mech = {m.name: m for m in record.mechanisms}
        for st in record.statistics:
            if st.name not in top:
                continue
            values = {e.key: e.value for e in (*st.known, *st.other)}
            drawn[st.name].append([values.get(k, 0) for k, _n in top[st.name]])
            stated[st.name] = half_width(mech[st.name].scale)
    seconds = time.perf_counter() - t

    out: dict[str, Any] = {
        "policy": str(args.policy),
        "log": str(args.log),
        "epsilon_per_case": settings.budget.epsilon,
        "pane": str(settings.panes.length),
        "draws": args.draws,
        "target": args.target,
        "seconds": round(seconds, 1),
        "statistics": {},
    }
    meets = True
    for name, keys in top.items():
        if not drawn[name]:
            out["statistics"][name] = "not released by this policy"
            meets = False
            continue
        noisy = np.array(drawn[name], dtype=np.float64)
        exact = np.array([n for _k, n in keys], dtype=np.float64)
        capped = aggregate.statistic(name)
        rel = np.abs(noisy - exact) / exact
        rows = []
        for i, (key, n) in enumerate(keys):
            p95 = float(np.percentile(rel[:, i], 95))
            meets = meets and p95 <= args.target
            rows.append(
                {
                    "key": list(key),
                    "exact": n,
                    "capped": capped.get(key, 0),
                    "half_width": stated[name],
                    "stated_relative": round(stated[name] / n, 4),
                    "within": round(float(np.mean(rel[:, i] <= args.target)), 4),
                    "p95_relative": round(p95, 4),
                }
            )
        out["statistics"][name] = rows
    out["meets"] = meets
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
