"""spin on the protocol's models, larger configuration. Prints one JSON object.

For each configuration of ``formal.check.LARGE`` (more adversary actions, crashes,
rebalances, a key rotation together with interference, commits after any record): states
stored, transitions, search depth, pan's memory, and the wall time of generating, compiling
and running pan (median of ``--runs``); every search must be complete with no error. Baseline
in the same run: the small configuration of the same model (what ``tests/formal`` checks),
and the ratio of states and of time against it.

    .venv/bin/python bench/formal.py [--runs 3] [--only NAME]

The figures are from a shared machine: times move with the load, states do not.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# the small configuration each large one is compared with
BASELINE = {
    "session/large-rotation": "session/rotation",
    "session/large-adversary": "session/adversary",
    "session/large-commit-anywhere": "session/adversary",
    "state/large": "state/adversary",
    "attest/large": "attest/adversary",
    "release/large": "release/adversary",
}


def _check() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "procvault_formal_check", ROOT / "formal" / "check.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _measure(check: ModuleType, config: Any, runs: int) -> dict[str, Any]:
    times, mem, last = [], [], None
    for _ in range(runs):
        r = check.run(config, hash_bits=26)
        if not r.ok:
            raise SystemExit(
                f"bench/formal.py: {config.name} did not verify: {r.violated or r.output[-400:]}"
            )
        times.append(r.seconds)
        mem.append(r.memory_mb)
        last = r
    assert last is not None
    return {
        "flags": " ".join(config.defines),
        "what": config.what,
        "complete": last.complete,
        "errors": last.errors,
        "states": last.states,
        "transitions": last.transitions,
        "depth": last.depth,
        "state_vector_bytes": last.vector_bytes,
        "memory_mb": round(statistics.median(mem), 1),
        "seconds_median": round(statistics.median(times), 2),
        "seconds_runs": [round(t, 2) for t in times],
        "pan_seconds": last.pan_seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per configuration (median)")
    ap.add_argument("--only", action="append", default=[], help="a large configuration's name")
    args = ap.parse_args()
    check = _check()
    large = [c for c in check.LARGE if not args.only or c.name in args.only]
    small = {c.name: c for c in check.SMALL}
    started = time.monotonic()
    base: dict[str, dict[str, Any]] = {}
    out: dict[str, dict[str, Any]] = {}
    for c in large:
        b = BASELINE[c.name]
        if b not in base:
            base[b] = _measure(check, small[b], args.runs)
        m = out[c.name] = _measure(check, c, args.runs)
        m["baseline"] = b
        m["states_ratio"] = round(m["states"] / base[b]["states"], 1)
        m["time_ratio"] = round(m["seconds_median"] / base[b]["seconds_median"], 1)
    spin = subprocess.run(
        ["spin", "-V"], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        json.dumps(
            {
                "bench": "formal",
                "spin": spin,
                "machine": f"{platform.machine()}, {platform.system()}, shared with other work",
                "runs": args.runs,
                "large": out,
                "small_baselines": base,
                "total_seconds": round(time.monotonic() - started, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
