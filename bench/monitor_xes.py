"""``procvault monitor --model`` on the million-event log: this tree against a base commit.

Prints one JSON object. The log is ``bench/_biglog.py``'s (Sepsis x ``--rounds``, cached under
``bench/results/``), the model ProMTEE's Sepsis net. The base commit (default: the one the
columnar XES reader started from) is checked out once as a git worktree under the temporary
folder; both trees run with this interpreter and its packages, each through a ``PYTHONPATH``
folder that maps ``procvault``, ``procvault.monitor``, ``procvault.streams`` and
``procvault.generators`` onto that tree (as the editable install maps them). Runs alternate
base / head; per tree the median over ``--runs`` of the command's wall time (process start to
exit) and peak RSS (its ``VmHWM`` as it exits), the ratios base / head, and a check
that both wrote byte-identical ``--case-results`` and the same summary counts.

    .venv/bin/python bench/monitor_xes.py [--rounds 66] [--runs 3] [--base COMMIT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _biglog import SHARED, million_log

REPO = Path(__file__).resolve().parents[1]
MODEL = SHARED / "models" / "promtee" / "pnml" / "sepsis.pnml"
#: The commit the columnar XES reader branched from.
DEFAULT_BASE = "6424efd"


def _import_root(tree: Path, root: Path) -> Path:
    """A folder that makes ``import procvault`` resolve to ``tree`` (symlinks, once)."""
    pkg = root / "procvault"
    if not pkg.exists():
        pkg.mkdir(parents=True)
        for item in (tree / "procvault").iterdir():
            (pkg / item.name).symlink_to(item)
        for sub in ("monitor", "streams", "generators"):
            (pkg / sub).symlink_to(tree / sub)
    return root


def _base_tree(commit: str) -> Path:
    full = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", commit], capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"procvault-base-{full[:10]}"
    if not tree.exists():
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), full],
            check=True,
            capture_output=True,
        )
    return tree


#: ``python -m procvault ARGS`` that writes its peak RSS (``VmHWM``: since its ``exec``, so not
#: this process's memory) to the file named first, as it exits.
_WRAP = """
import atexit, runpy, sys
def _hwm(path=sys.argv[1]):
    with open("/proc/self/status") as fh, open(path, "w") as out:
        out.write(next(line.split()[1] for line in fh if line.startswith("VmHWM:")))
atexit.register(_hwm)
sys.argv = ["procvault", *sys.argv[2:]]
runpy.run_module("procvault", run_name="__main__", alter_sys=True)
"""


def _run(root: Path, log: Path, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root), "PM4PY_SHOW_PROGRESS_BAR": "false"}
    env.pop("PROCVAULT_XES_READER", None)
    hwm = out.with_suffix(".hwm")
    cmd = [sys.executable, "-c", _WRAP, str(hwm), "monitor", str(log), "--model", str(MODEL)]
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--json", "--case-results", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=root,  # not the repository: python -c puts the working folder first on sys.path
        check=False,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bench/monitor_xes.py: monitor failed under {root}")
    summary = json.loads(proc.stdout)
    return {
        "seconds": wall,
        "peak_rss_mb": int(hwm.read_text()) / 1024,
        "counts": {k: summary[k] for k in ("events", "cases", "fitting_cases", "deviations")},
        "case_results_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "engine_events_per_second": summary["events_per_second"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=66, help="Sepsis rounds in the log")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--base", default=DEFAULT_BASE, help="the commit to compare against")
    args = ap.parse_args()

    log = million_log(args.rounds)
    with tempfile.TemporaryDirectory(prefix="procvault-bench-monitor-") as tmp:
        roots = {
            "base": _import_root(_base_tree(args.base), Path(tmp, "base")),
            "head": _import_root(REPO, Path(tmp, "head")),
        }
        samples: dict[str, list[dict[str, Any]]] = {"base": [], "head": []}
        for i in range(args.runs):
            for name, taken in samples.items():
                taken.append(_run(roots[name], log, Path(tmp, f"{name}-{i}.jsonl")))
    digests = {s["case_results_sha256"] for rs in samples.values() for s in rs}
    counts = {json.dumps(s["counts"], sort_keys=True) for rs in samples.values() for s in rs}
    med: dict[str, dict[str, Any]] = {
        name: {
            "seconds_median": round(statistics.median(float(s["seconds"]) for s in rs), 2),
            "seconds_runs": [round(float(s["seconds"]), 2) for s in rs],
            "peak_rss_mb_median": round(statistics.median(float(s["peak_rss_mb"]) for s in rs), 1),
            "peak_rss_mb_runs": [round(float(s["peak_rss_mb"]), 1) for s in rs],
            "engine_events_per_second": [s["engine_events_per_second"] for s in rs],
        }
        for name, rs in samples.items()
    }
    out = {
        "benchmark": "monitor_million_event_log",
        "machine": "2 cores shared with other engineers' work: ratios are from this one run",
        "log": log.name,
        "model": str(MODEL.relative_to(SHARED)),
        "base_commit": args.base,
        "runs": args.runs,
        **med,
        "base_over_head_seconds": round(
            med["base"]["seconds_median"] / med["head"]["seconds_median"], 2
        ),
        "head_over_base_peak_rss": round(
            med["head"]["peak_rss_mb_median"] / med["base"]["peak_rss_mb_median"], 3
        ),
        "identical_case_results": len(digests) == 1,
        "identical_counts": len(counts) == 1,
        "counts": json.loads(next(iter(counts))),
    }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
