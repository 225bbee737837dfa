"""Run procvault's Promela models with spin and say what pan found (docs/formal.md).

Every configuration names a model file of this folder, the preprocessor flags that select a
variant (the protocol, a mutant without one defence, or the specification as written where
the model finds a flaw in it), and what must come out: ``pass`` (pan explored every state and
found no error) or ``fail`` (pan found a counterexample and wrote a trail, replayed here
into readable steps).

``python3 formal/check.py`` runs the small configuration (what ``tests/formal`` checks);
``--large`` the larger one (what ``bench/formal.py`` measures); ``--only NAME`` one
configuration; ``--json`` one JSON object per configuration.

>>> [c.name for c in SMALL if c.kind == "model"][:2]
['session/adversary', 'session/rotation']
>>> parse_pan("State-vector 28 byte, depth reached 3, errors: 0\\n  4 states, stored\\n").states
4
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "LARGE",
    "SMALL",
    "Config",
    "PanResult",
    "SpinMissingError",
    "as_expected",
    "main",
    "parse_pan",
    "run",
]

HERE = Path(__file__).resolve().parent

Kind = Literal["model", "mutant", "finding"]
Expect = Literal["pass", "fail"]


class SpinMissingError(RuntimeError):
    """spin or gcc is not installed (``scripts/setup.sh`` installs both)."""


@dataclass(frozen=True)
class Config:
    """One verification run: a model file, its flags and the expected outcome."""

    name: str
    model: str
    defines: tuple[str, ...]
    expect: Expect
    kind: Kind
    what: str
    violates: str | None = None  # the property its counterexample must violate
    ltl: str | None = None  # a never claim (``ltl`` block) to check instead of safety


@dataclass
class PanResult:
    """What one run of pan reported."""

    errors: int = -1
    complete: bool = False
    states: int = 0
    transitions: int = 0
    depth: int = 0
    vector_bytes: int = 0
    memory_mb: float = 0.0
    pan_seconds: float = 0.0
    seconds: float = 0.0
    violated: str | None = None
    trail: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def ok(self) -> bool:
        """No error, and every state explored."""
        return self.errors == 0 and self.complete


def _int(pattern: str, text: str) -> int:
    m = re.search(pattern, text)
    return int(float(m.group(1))) if m else 0


def parse_pan(text: str) -> PanResult:
    """The figures of a pan run's output (``errors: -1`` if pan printed none)."""
    r = PanResult(output=text)
    m = re.search(r"errors: (\d+)", text)
    r.errors = int(m.group(1)) if m else -1
    truncated = (
        "Search not completed" in text
        or "max search depth too small" in text
        or "out of memory" in text
        or "-DMEMLIM bound" in text
    )
    r.complete = r.errors == 0 and not truncated
    r.states = _int(r"(\d+) states, stored", text)
    r.transitions = _int(r"(\d+) transitions \(= stored\+matched\)", text)
    r.depth = _int(r"depth reached (\d+)", text)
    r.vector_bytes = _int(r"State-vector (\d+) byte", text)
    m = re.search(r"([\d.]+)\s+total actual memory usage", text)
    r.memory_mb = float(m.group(1)) if m else 0.0
    m = re.search(r"pan: elapsed time ([\d.e+]+) seconds", text)
    r.pan_seconds = float(m.group(1)) if m else 0.0
    m = re.search(
        r"pan:\d+: ((?:assertion violated \S+)|(?:[a-z ]*cycle)|(?:invalid end state))", text
    )
    r.violated = m.group(1) if m else None
    return r


_ACTORS = re.compile(r"^\s*(agent|vault|adversary|worker|group|stage|reader)\b")


def _tools() -> tuple[str, str]:
    spin, gcc = shutil.which("spin"), shutil.which("gcc")
    if spin is None or gcc is None:
        raise SpinMissingError(
            "spin and gcc are needed: run scripts/setup.sh (apt-get install spin gcc)"
        )
    return spin, gcc


def run(
    config: Config,
    *,
    max_depth: int = 200_000,
    memory_mb: int = 6144,
    hash_bits: int = 24,
    timeout: float = 1800,
) -> PanResult:
    """Generate, compile and run pan for ``config``; replay the trail if it found an error."""
    spin, gcc = _tools()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="procvault-spin-") as tmp:
        work = Path(tmp)
        model = work / config.model
        shutil.copy(HERE / config.model, model)
        flags = [f"-D{d}" for d in config.defines]
        subprocess.run(
            [spin, "-a", *flags, model.name],
            cwd=work,
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        # a counterexample is found in a few thousand states: compiling fast pays; an
        # exhaustive search runs long enough for an optimised pan to pay
        fast = config.expect == "fail"
        cflags = ["-O0" if fast else "-O2", "-w", "-DCOLLAPSE", "-DVECTORSZ=2048"]
        cflags.append(f"-DMEMLIM={memory_mb}")
        pan_args = [f"-m{max_depth}", "-w20" if fast else f"-w{hash_bits}"]
        if config.ltl is None:
            cflags += ["-DSAFETY", "-DNOCLAIM"]
        else:
            pan_args += ["-a", "-N", config.ltl]
        subprocess.run(
            [gcc, *cflags, "-o", "pan", "pan.c"],
            cwd=work,
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        out = subprocess.run(
            ["./pan", *pan_args],
            check=False,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        result = parse_pan(out.stdout + out.stderr)
        trail = work / f"{model.name}.trail"
        if trail.exists():
            replay = subprocess.run(
                [spin, "-t", "-k", trail.name, *flags, model.name],
                check=False,
                cwd=work,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            result.trail = [
                line.strip()
                for line in replay.stdout.splitlines()
                if _ACTORS.match(line) or "assertion violated" in line or "acceptance cycle" in line
            ]
    result.seconds = time.monotonic() - started
    return result


def _c(
    name: str,
    model: str,
    defines: str,
    expect: Expect,
    kind: Kind,
    what: str,
    *,
    violates: str | None = None,
    ltl: str | None = None,
) -> Config:
    return Config(name, model, tuple(defines.split()), expect, kind, what, violates, ltl)


S, T, A, R = "session.pml", "state.pml", "attest.pml", "release.pml"

SMALL: tuple[Config, ...] = (
    # the protocol (version 2 with the fixes of docs/formal.md): explored exhaustively
    _c(
        "session/adversary",
        S,
        "ADV=1 ROTATE=0",
        "pass",
        "model",
        "sessions, guard, merge, crashes; one interference",
    ),
    _c(
        "session/rotation",
        S,
        "ADV=0 ROTATE=1",
        "pass",
        "model",
        "sessions across a key rotation, crashes",
    ),
    _c(
        "session/live",
        S,
        "ADV=1 ROTATE=0 NO_WATCHDOG",
        "pass",
        "model",
        "LTL <>[] every event applied once",
        ltl="live",
    ),
    _c(
        "state/adversary",
        T,
        "ADV=1",
        "pass",
        "model",
        "two workers, rebalance, crash, changelog restore",
    ),
    _c(
        "state/spec-check-vs-copies",
        T,
        "SPEC_FLOOR ADV_COPY ADV=2",
        "pass",
        "model",
        "the spec's rollback check holds against copies of committed records",
    ),
    _c(
        "attest/adversary",
        A,
        "ADV=2",
        "pass",
        "model",
        "challenge, answer, rotation, readers; an impersonator",
    ),
    _c(
        "attest/compromised-old-key",
        A,
        "ADV=2 ADV_COMPROMISE",
        "pass",
        "model",
        "the retired epoch's key leaked: no agent takes it",
    ),
    _c(
        "release/adversary",
        R,
        "ADV=2",
        "pass",
        "model",
        "partials, panes, noise, crash and restart",
    ),
    _c(
        "release/spec-vs-replays",
        R,
        "SPEC_UNCHAINED ADV_REPLAY ADV=2",
        "pass",
        "model",
        "unchained partials hold against replays (dedup)",
    ),
    # mutants: one defence removed, a counterexample each
    _c(
        "mutant/guard-per-case",
        S,
        "ADV=1 ROTATE=0 ADV_REPLAY M_CASE_GUARD",
        "fail",
        "mutant",
        "replay guard kept in the case, deleted with it",
        violates="applied_at_most_once",
    ),
    _c(
        "mutant/heartbeat-unguarded",
        S,
        "ADV=1 ROTATE=0 M_HB_UNGUARDED",
        "fail",
        "mutant",
        "heartbeats not checked against (generation, sequence)",
        violates="every_event_applied_once_and_case_completed",
    ),
    _c(
        "mutant/no-merge-key-guard",
        S,
        "ADV=1 ROTATE=0 M_NO_MERGE_KEY",
        "fail",
        "mutant",
        "no merge-key guard: a re-sent or re-injected batch applied again",
        violates="applied_at_most_once",
    ),
    _c(
        "mutant/generation-from-progress",
        S,
        "ADV=1 ROTATE=0 M_GEN_PROGRESS",
        "fail",
        "mutant",
        "generation = last committed + 1, no wall clock",
        violates="every_event_applied_once_and_case_completed",
    ),
    _c(
        "mutant/buffer-not-in-snapshot",
        S,
        "ADV=0 ROTATE=0 M_BUFFER_LOST",
        "fail",
        "mutant",
        "the snapshot has the guard of buffered frames but not the buffer",
        violates="every_event_applied_once_and_case_completed",
    ),
    _c(
        "mutant/no-rollback-check",
        T,
        "ADV=1 M_NO_ROLLBACK_CHECK",
        "fail",
        "mutant",
        "restore takes the latest records unchecked",
        violates="restored_state_is_the_last_committed",
    ),
    _c(
        "mutant/partition-not-bound",
        T,
        "ADV=1 M_UNBOUND_EVENT",
        "fail",
        "mutant",
        "the partition is not in the event record's associated data",
        violates="applied_in_its_own_partition",
    ),
    _c(
        "mutant/state-partition-not-bound",
        T,
        "SPEC_FLOOR ADV_COPY ADV=2 M_UNBOUND_STATE",
        "fail",
        "mutant",
        "sealed state not bound to its partition (under the spec's check)",
        violates="restored_state_is_the_last_committed",
    ),
    _c(
        "mutant/unpinned-announcements",
        A,
        "ADV=2 M_UNPINNED",
        "fail",
        "mutant",
        "any identity trusted: an impersonator's key accepted",
        violates="encrypts_only_to_a_vault_key",
    ),
    _c(
        "mutant/no-nonce-check",
        A,
        "ADV=2 M_NO_NONCE",
        "fail",
        "mutant",
        "any valid announcement accepted, whatever its nonce",
        violates="after_an_answer_to_its_nonce_from_the_pinned_identity",
    ),
    _c(
        "mutant/nonce-not-in-evidence",
        A,
        "ADV=2 ADV_COMPROMISE M_NONCE_UNBOUND",
        "fail",
        "mutant",
        "the evidence does not bind the nonce (old key leaked)",
        violates="after_an_answer_to_its_nonce_from_the_pinned_identity",
    ),
    _c(
        "mutant/partial-dedup",
        R,
        "SPEC_UNCHAINED ADV_REPLAY ADV=2 M_NO_DEDUP",
        "fail",
        "mutant",
        "a partial seen twice applied twice",
        violates="pane_has_every_partial",
    ),
    # the specification as written (docs/protocol.md): counterexamples, see docs/formal.md
    _c(
        "finding/F1-guard-admits-gaps",
        S,
        "ADV=1 ROTATE=0 SPEC_GUARD",
        "fail",
        "finding",
        "a frame served ahead of earlier ones is admitted; they become replays",
        violates="every_event_applied_once_and_case_completed",
    ),
    _c(
        "finding/F2-resume-from-aborted-progress",
        S,
        "ADV=1 ROTATE=0 SPEC_RESUME",
        "fail",
        "finding",
        "the agent resumes from an aborted progress record: its batch is never sent",
        violates="every_event_applied_once_and_case_completed",
    ),
    _c(
        "finding/F3-epoch-retired-while-needed",
        S,
        "ADV=0 ROTATE=1 SPEC_RETIRE",
        "fail",
        "finding",
        "a restart re-reads records of an epoch retired meanwhile",
        violates="every_event_applied_once_and_case_completed",
    ),
    _c(
        "finding/F4-fork-of-two-markers",
        T,
        "ADV=2",
        "fail",
        "finding",
        "an aborted transaction shown as committed in the changelog and on the outputs",
        violates="restored_state_is_the_last_committed",
    ),
    _c(
        "finding/F5-zombie-worker",
        T,
        "ADV=1 SPEC_NOFENCE",
        "fail",
        "finding",
        "an expelled worker's transaction commits after the new owner restored",
        violates="committed_at_most_once",
    ),
    _c(
        "finding/F6-aborted-state-resurrected",
        T,
        "ADV=1 SPEC_FLOOR",
        "fail",
        "finding",
        "one abort marker turned into a commit passes the spec's rollback check",
        violates="restored_state_is_the_last_committed",
    ),
    _c(
        "finding/F7-noise-drawn-twice",
        R,
        "ADV=0 SPEC_READBACK",
        "fail",
        "finding",
        "an aborted publish is seen, a restart draws the pane's noise again",
        violates="noise_drawn_once_per_pane",
    ),
    _c(
        "finding/F8-partial-dropped",
        R,
        "ADV=1 SPEC_UNCHAINED",
        "fail",
        "finding",
        "a dropped partial: the pane is released without it",
        violates="pane_has_every_partial",
    ),
)

LARGE: tuple[Config, ...] = (
    _c(
        "session/large-rotation",
        S,
        "ADV=1 ROTATE=1",
        "pass",
        "model",
        "one interference and a key rotation",
    ),
    _c("session/large-adversary", S, "ADV=2 ROTATE=0", "pass", "model", "two interferences"),
    _c(
        "session/large-commit-anywhere",
        S,
        "ADV=1 ROTATE=0 COMMIT_ANY",
        "pass",
        "model",
        "the vault commits after any record",
    ),
    _c("state/large", T, "ADV=1 REBAL=2 CRASH=2", "pass", "model", "two rebalances, two crashes"),
    _c("attest/large", A, "ADV=3", "pass", "model", "three adversary actions"),
    _c("release/large", R, "ADV=3 CRASH=2", "pass", "model", "three interferences, two crashes"),
)


def as_expected(config: Config, result: PanResult) -> bool:
    """``pass``: every state explored, no error; ``fail``: a counterexample (a trail)
    violating the configuration's property."""
    if config.expect == "pass":
        return result.ok
    return (
        result.errors > 0
        and bool(result.trail)
        and (config.violates is None or result.violated == f"assertion violated {config.violates}")
    )


def main(argv: list[str] | None = None) -> int:
    """Run the configurations; exit 1 if any outcome differs from the expected one."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--large", action="store_true", help="the larger configuration (bench)")
    ap.add_argument(
        "--only", action="append", default=[], help="a configuration's name (repeatable)"
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per configuration")
    ap.add_argument("--trail", action="store_true", help="print each counterexample's steps")
    args = ap.parse_args(argv)
    configs = LARGE if args.large else SMALL
    if args.only:
        configs = tuple(c for c in SMALL + LARGE if c.name in args.only)
    bad = 0
    for c in configs:
        try:
            r = run(c)
        except SpinMissingError as exc:
            print(f"check: {exc}", file=sys.stderr)
            return 2
        good = as_expected(c, r)
        bad += not good
        if args.json:
            d = {k: v for k, v in asdict(r).items() if k != "output"}
            print(json.dumps({"name": c.name, "expect": c.expect, "as_expected": good, **d}))
        else:
            verdict = "ok" if good else "UNEXPECTED"
            what = "complete, 0 errors" if r.ok else (r.violated or f"errors {r.errors}")
            print(f"{verdict:10} {c.name:42} {what:55} {r.states:>10} states {r.seconds:6.1f} s")
            if args.trail and r.trail:
                print("\n".join("           " + line for line in r.trail))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
