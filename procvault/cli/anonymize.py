"""``procvault anonymize`` and ``procvault compare``: the DP event-log release on the command line.

Wire it into the CLI with ``anonymize_cmd.register(sub)`` inside ``build_parser``. The commands
only parse, read, call :func:`procvault.monitor.amun.anonymize` and write; the method lives in
``monitor/amun``. Bad settings raise :class:`ConfigError`, bad input :class:`InputError`, and
both print as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from procvault.cli.options import add_option as _add
from procvault.cli.options import add_progress_option
from procvault.cli.options import positive as _positive
from procvault.monitor.errors import ConfigError, InputError

__all__ = ["cmd_anonymize", "cmd_compare", "register"]

_MICRO = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_STAGES = {
    "read": "reading the log",
    "dafsa": "building the DAFSA",
    "priors": "estimating priors (raw data, amun mode)",
    "calibration": "calibrating with OpenDP",
    "sampling": "sampling cases",
    "timestamps": "noising timestamps",
    "ids": "issuing case ids",
    "write": "writing",
}


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _instant(text: str) -> int:
    ts = datetime.fromisoformat(text.strip())
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // _MICRO


def _window(text: str) -> tuple[int, int]:
    """``FROM,TO`` (ISO 8601 dates or times, UTC unless an offset is given) as µs."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = _instant(parts[0]), _instant(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected FROM,TO as ISO 8601 dates or times, got {text!r}"
        ) from None
    if hi < lo:
        raise argparse.ArgumentTypeError(f"the window ends before it starts: {text!r}")
    return lo, hi


def register(sub: Any) -> None:
    """Add the ``anonymize`` and ``compare`` subcommands to an argparse subparsers object."""
    p = sub.add_parser(
        "anonymize",
        help="release an event log with differential privacy (Amun)",
        description="Release an XES log so that an attacker's guessing advantage about any "
        "case (its prefixes/suffixes, its activity durations) stays below DELTA. Only case "
        "ids (fresh), activities and timestamps are written. See docs/anonymize.md.",
    )
    p.add_argument("log", help="the .xes or .xes.gz file")
    _add(p, "--output", "-o", metavar="OUT", help="the anonymized log (.xes.gz or .xes)")
    _add(
        p,
        "--delta",
        type=float,
        default=0.2,
        help="bound on the attacker's guessing advantage, in (0, 1)",
    )
    _add(
        p,
        "--mode",
        choices=("strict", "amun"),
        default="strict",
        help="'strict': DP for adding or removing any one case (thresholded variant counts, "
        "timestamps synthesized from noisy histograms); 'amun': the published method, for "
        "comparison",
    )
    _add(
        p,
        "--strategy",
        choices=("sampling", "filtering", "oversampling"),
        default="sampling",
        help="how case counts are perturbed (strict mode: sampling only)",
    )
    _add(
        p,
        "--seed",
        type=int,
        default=0,
        help="amun mode only (comparison runs): seeds its noise, sampling, case ids and order; "
        "strict mode ignores it: its noise comes from OpenDP and its other random choices from "
        "the OS CSPRNG, so no two strict runs are alike",
    )
    _add(
        p,
        "--start-precision",
        type=_positive(float),
        default=86_400.0,
        help="seconds: amun: precision of an attacker guessing a case start; strict: the "
        "narrowest bin of the released start histogram",
    )
    _add(
        p,
        "--relative-precision",
        type=_positive(float),
        default=10.0,
        help="seconds: amun: precision of an attacker guessing the time between two events; "
        "strict: the first bin of the released gap histograms (bins double from there)",
    )
    _add(
        p,
        "--amun-net",
        choices=("paper", "prototype"),
        default="paper",
        help="amun: sample as Algorithm 1 of the paper says ('paper': transitions picked by "
        "frequency, the whole net per variant applied) or as the prototype's code does "
        "('prototype': the least-served transition first; variants only replicated or only "
        "deleted are left alone, a negative net deletes one case); the paper's Table 6 figures "
        "come from the prototype",
    )
    _add(
        p,
        "--time-share",
        type=_fraction,
        default=0.5,
        help="strict: share of the per-case epsilon spent on timestamps",
    )
    _add(
        p,
        "--window",
        type=_window,
        metavar="FROM,TO",
        help="strict: the public range of case starts (ISO 8601, UTC unless an offset is "
        "given); default: the log's first and last case start, which are then assumed public "
        "(as the paper does) and are not protected",
    )
    _add(
        p,
        "--suppression-delta",
        type=_fraction,
        default=1e-6,
        help="strict: probability bound for a variant of a single case to be released",
    )
    add_progress_option(p)
    p.set_defaults(func=cmd_anonymize)

    p = sub.add_parser(
        "compare",
        help="utility of an anonymized log against its original",
        description="DFG frequency and time EMD (as Amun computes them), per-edge MAE, "
        "variants lost and the no-new-variant check (R1).",
    )
    p.add_argument("original", help="the original .xes or .xes.gz")
    p.add_argument("anonymized", help="the anonymized .xes or .xes.gz")
    _add(p, "--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_compare)


class _Stages:
    """A rich progress bar that advances one step per pipeline stage (or nothing)."""

    def __init__(self, mode: str, label: str) -> None:
        self._bar: Any = None
        self._task: Any = None
        if mode == "on" or (mode == "auto" and sys.stderr.isatty()):
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[stage]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task(label, total=len(_STAGES) - 1, stage="")

    def __enter__(self) -> Callable[[str], None]:
        if self._bar is not None:
            self._bar.start()
        return self.stage

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=len(_STAGES) - 1, stage="done")
            self._bar.stop()

    def stage(self, name: str) -> None:
        if self._bar is None:
            return
        done = self._bar.tasks[0].completed
        self._bar.update(
            self._task,
            completed=min(done + (1 if name != "read" else 0), len(_STAGES) - 1),
            stage=_STAGES.get(name, name),
        )


def _read_cases(path: str) -> Any:
    from procvault.generators.xes import read_xes
    from procvault.monitor.amun import CaseLog

    return CaseLog.from_events(read_xes(path).events)


def cmd_anonymize(args: argparse.Namespace) -> int:
    """``procvault anonymize``."""
    from procvault.generators.xes_write import write_xes
    from procvault.monitor.amun import AnonymizeSettings, anonymize

    if not args.output:
        raise ConfigError("anonymize needs -o/--output OUT.xes.gz")
    out = Path(args.output)
    if not out.name.endswith((".xes", ".xes.gz")):
        raise ConfigError(f"{out}: the output must end in .xes.gz or .xes")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent}: no such folder for the output")
    try:
        settings = AnonymizeSettings(
            delta=args.delta,
            mode=args.mode,
            strategy=args.strategy,
            seed=args.seed,
            start_precision=args.start_precision,
            relative_precision=args.relative_precision,
            time_share=args.time_share,
            suppression_delta=args.suppression_delta,
            window=args.window,
            amun_net=args.amun_net,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    started = time.perf_counter()
    with _Stages(args.progress, f"anonymize {Path(args.log).name}") as stage:
        stage("read")
        log = _read_cases(args.log)
        try:
            release = anonymize(log, settings, progress=stage)
        except ValueError as exc:
            raise InputError(f"{args.log}: {exc}") from None
        stage("write")
        write_xes(release.log.to_events(), out)
    r = release.report
    seconds = time.perf_counter() - started
    print(
        f"anonymized {r.cases_in:,} cases ({r.events_in:,} events, {r.variants_in:,} variants) "
        f"into {r.cases_out:,} cases ({r.events_out:,} events, {r.variants_out:,} variants) "
        f"in {out} [{r.mode}/{r.strategy}, delta={settings.delta}] in {seconds:.2f} s",
        file=sys.stderr,
    )
    if r.mode == "strict":
        print(
            f"  per-case epsilon {settings.epsilon:.4f} = {r.epsilon_control_flow:.4f} "
            f"(variants, threshold {r.threshold}, delta {r.suppression_delta:g}) + "
            f"{r.epsilon_time:.4f} (timestamps, synthesized from noisy histograms)",
            file=sys.stderr,
        )
        if r.window is not None:
            lo, hi = (_EPOCH + w * _MICRO for w in r.window)
            source = (
                "read from the log: assumed public, not protected (pass --window)"
                if r.window_from_log
                else "given"
            )
            print(
                f"  start window {lo.isoformat()} .. {hi.isoformat()} ({source})",
                file=sys.stderr,
            )
    else:
        print(
            f"  amun: epsilon_d {r.epsilon_control_flow:.4f} per DAFSA transition, median "
            f"epsilon_t {r.epsilon_time:.4f} per event, {r.cases_filtered:,} cases filtered; "
            "not a per-case guarantee (see docs/anonymize.md)",
            file=sys.stderr,
        )
    if r.cases_out == 0:
        print(
            "warning: every variant was suppressed: no variant is frequent enough to be "
            "released under this delta (the log written holds no traces)",
            file=sys.stderr,
        )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``procvault compare``."""
    from procvault.monitor.amun import CaseLog, compare_logs

    original = _read_cases(args.original)
    try:
        anonymized = _read_cases(args.anonymized)
    except InputError as exc:
        # A strict release in which every variant was suppressed is a valid, empty log.
        if not str(exc).endswith("the log holds no traces"):
            raise
        anonymized = CaseLog.from_events(())
        print(
            f"note: {args.anonymized} holds no traces (every variant was suppressed)",
            file=sys.stderr,
        )
    report = compare_logs(original, anonymized)
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    rows = [
        ("EMD DFG frequency (Amun)", f"{report.emd_freq:.2f}"),
        ("EMD DFG time, months (Amun, as Table 6)", f"{report.emd_time:.2f}"),
        ("EMD DFG time, summed hours (before /720)", f"{report.emd_time_sum_hours:.2f}"),
        ("EMD DFG time, mean hours per edge", f"{report.emd_time_mean_hours:.2f}"),
        ("MAE per edge, frequency", f"{report.mae_freq:.2f}"),
        ("MAE per edge, mean gap (hours)", f"{report.mae_time_hours:.2f}"),
        ("cases", f"{report.cases_original:,} -> {report.cases_anonymized:,}"),
        ("events", f"{report.events_original:,} -> {report.events_anonymized:,}"),
        ("variants", f"{report.variants_original:,} -> {report.variants_anonymized:,}"),
        ("variants lost", f"{report.variants_lost:,}"),
        ("new variants (R1 holds if 0)", f"{report.new_variants:,}"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
