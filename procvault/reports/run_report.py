"""``procvault report``: ProMTEE-compatible CSVs and PNG plots from what :class:`RunRecorder` wrote.

Reads every process folder of a run (``RUN_DIR/<process>/`` with the files described in
:mod:`procvault.reports.recorder`) and writes into the output folder:

``delay_result.csv``
    ProMTEE's per-event file: no header, ``event_number,generation_ns,processing_ns`` (Unix
    nanoseconds: the agent's send and the vault's apply), sorted by generation time, numbered
    from 1. Every process's events of the run, merged.
``latency.csv``
    ProMTEE's summary: ``DurationFromStart,Mean,MinDuration,MaxDuration,StdDev``, seconds
    (``%f``): the run's span (first send to last apply) and the per-event latency's mean, min,
    max and standard deviation.
``latency_summary.csv``
    Ours, one row: ``events,duration_s,throughput_eps,mean_ms,stddev_ms,min_ms,p1_ms,p5_ms,
    p10_ms,p50_ms,p90_ms,p95_ms,p99_ms,p999_ms,max_ms,negative`` (``negative``: events whose
    apply time precedes their send time, i.e. clock offset between hosts).
``<process>/memory_usage.csv``
    ProMTEE's memory file per process: ``Timestamp,Memory Usage`` (Unix ms, RSS bytes).
``throughput.csv``
    ``process,Timestamp,Events,Rate``: each process's cumulative counter samples and the rate
    (per second) since the previous sample.
``report.json``
    What was written (also marks the folder as a report, never read as a process).
``latency_distribution.png``, ``latency_trend.png``, ``memory_usage.png``, ``throughput.png``
    The latency histogram (log-spaced bins, p50/p99 marked), latency against time since the
    run started (each event and a rolling median), RSS per process over time, and throughput
    per process over time (from the counters, and events applied per second from the events).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from procvault.monitor.errors import InputError
from procvault.reports.recorder import EVENTS_FILE, MEMORY_FILE, RUN_FILE, THROUGHPUT_FILE

__all__ = ["ProcessRecord", "ReportSummary", "load_run", "write_report"]

_RECORDER_FILES: Final = (RUN_FILE, MEMORY_FILE, EVENTS_FILE, THROUGHPUT_FILE)
#: Written into every report folder, so a report inside the run folder is not read as a process.
REPORT_MARKER: Final = "report.json"
LATENCY_HEADER: Final = ("DurationFromStart", "Mean", "MinDuration", "MaxDuration", "StdDev")
SUMMARY_HEADER: Final = (
    "events",
    "duration_s",
    "throughput_eps",
    "mean_ms",
    "stddev_ms",
    "min_ms",
    "p1_ms",
    "p5_ms",
    "p10_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "negative",
)
_PERCENTILES: Final = (1, 5, 10, 50, 90, 95, 99, 99.9)
#: At most this many points in a scatter plot.
_MAX_POINTS: Final = 50_000


@dataclass
class ProcessRecord:
    """One process's recorded series (numpy int64 arrays)."""

    name: str
    memory: np.ndarray[Any, Any]  # (n, 2): unix ms, rss bytes
    throughput: np.ndarray[Any, Any]  # (n, 2): unix ms, cumulative count
    events: np.ndarray[Any, Any]  # (n, 2): sent µs, applied µs


@dataclass
class ReportSummary:
    """What :func:`write_report` wrote."""

    out_dir: Path
    processes: list[str]
    events: int
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_ints(path: Path, columns: int) -> np.ndarray[Any, Any]:
    """A headered CSV of integers as an ``(n, columns)`` int64 array (a cut last line is
    dropped: the process may have been killed mid-write)."""
    if not path.exists():
        return np.zeros((0, columns), dtype=np.int64)
    raw = path.read_bytes()
    lines = raw.split(b"\n", 1)
    body = lines[1] if len(lines) > 1 else b""
    if body and not body.endswith(b"\n"):
        body = body[: body.rfind(b"\n") + 1]
    if not body.strip():
        return np.zeros((0, columns), dtype=np.int64)
    tokens = body.replace(b",", b" ").split()
    if len(tokens) % columns:
        raise InputError(f"{path}: expected {columns} integers per row")
    try:
        values = np.array(tokens, dtype=np.int64)
    except ValueError:
        raise InputError(f"{path}: not a file of integers written by RunRecorder") from None
    return values.reshape(-1, columns)


def load_run(run_dir: Path) -> list[ProcessRecord]:
    """Every recorded process of ``run_dir`` (sorted by name); clear errors when there is none."""
    if not run_dir.exists():
        raise InputError(f"run directory {run_dir} does not exist")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is not a directory")
    found = sorted(
        d
        for d in run_dir.iterdir()
        if d.is_dir()
        and not (d / REPORT_MARKER).exists()  # an earlier report written inside the run
        and any((d / f).exists() for f in _RECORDER_FILES)
    )
    if not found:
        raise InputError(
            f"{run_dir} holds no recorded process: expected subfolders with {MEMORY_FILE}, "
            f"{EVENTS_FILE} or {THROUGHPUT_FILE} (written by processes run with a run folder)"
        )
    records = []
    for d in found:
        name = d.name
        with_run = d / RUN_FILE
        if with_run.exists():
            try:
                name = str(json.loads(with_run.read_text()).get("process", name))
            except (ValueError, AttributeError):
                raise InputError(f"{with_run}: not valid JSON") from None
        records.append(
            ProcessRecord(
                name=name,
                memory=_read_ints(d / MEMORY_FILE, 2),
                throughput=_read_ints(d / THROUGHPUT_FILE, 2),
                events=_read_ints(d / EVENTS_FILE, 2),
            )
        )
    return records


def write_report(run_dir: Path, out_dir: Path | None = None) -> ReportSummary:
    """Write the CSVs and PNGs for ``run_dir`` into ``out_dir`` (default ``RUN_DIR/report``)."""
    processes = load_run(run_dir)
    out = out_dir if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_MARKER).write_text(json.dumps({"run_dir": str(run_dir), "complete": False}))
    summary = ReportSummary(out_dir=out, processes=[p.name for p in processes], events=0)
    starts = [int(a[0, 0]) for p in processes for a in (p.memory, p.throughput) if len(a)] + [
        int(p.events[:, 0].min()) // 1000 for p in processes if len(p.events)
    ]
    if not starts:
        raise InputError(f"{run_dir}: the recorded files hold no samples and no events")
    t0_ms = min(starts)

    for p in processes:
        summary.files.append(_write_memory(out / p.name / MEMORY_FILE, p.memory))
    summary.files.append(_write_throughput(out / "throughput.csv", processes))

    events = [p.events for p in processes if len(p.events)]
    if events:
        ev = np.concatenate(events)
        ev = ev[np.argsort(ev[:, 0], kind="stable")]
        summary.events = len(ev)
        summary.files += _write_latency(out, ev)
    else:
        summary.notes.append("no per-event timestamps recorded: latency outputs skipped")

    summary.files += _plots(out, processes, t0_ms, summary)
    marker = out / REPORT_MARKER
    marker.write_text(
        json.dumps(
            {
                "run_dir": str(run_dir),
                "complete": True,
                "processes": summary.processes,
                "events": summary.events,
                "files": [str(f.relative_to(out)) for f in summary.files],
                "notes": summary.notes,
            },
            indent=1,
        )
        + "\n"
    )
    return summary


# ----------------------------------------------------------------------------- CSVs
def _write_memory(path: Path, memory: np.ndarray[Any, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = memory[np.argsort(memory[:, 0], kind="stable")] if len(memory) else memory
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("Timestamp", "Memory Usage"))
        w.writerows(rows.tolist())
    return path


def _rates(throughput: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Per-sample rate (per second) since the previous sample; the first is 0."""
    if len(throughput) < 2:
        return np.zeros(len(throughput))
    dt = np.diff(throughput[:, 0]) / 1000.0
    dn = np.diff(throughput[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(dt > 0, dn / np.where(dt > 0, dt, 1), 0.0)
    return np.concatenate(([0.0], np.maximum(rate, 0.0)))


def _write_throughput(path: Path, processes: list[ProcessRecord]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(("process", "Timestamp", "Events", "Rate"))
        for p in processes:
            tp = p.throughput[np.argsort(p.throughput[:, 0], kind="stable")]
            for (ts, n), r in zip(tp.tolist(), _rates(tp).tolist(), strict=True):
                w.writerow((p.name, ts, n, f"{r:.3f}"))
    return path


def _write_latency(out: Path, ev: np.ndarray[Any, Any]) -> list[Path]:
    lat_us = (ev[:, 1] - ev[:, 0]).astype(np.float64)
    lat_s = lat_us / 1e6
    delay = out / "delay_result.csv"
    with delay.open("w", newline="") as f:
        f.write(
            "".join(f"{i},{s * 1000},{a * 1000}\n" for i, (s, a) in enumerate(ev.tolist(), start=1))
        )
    span_s = (int(ev[:, 1].max()) - int(ev[:, 0].min())) / 1e6
    latency = out / "latency.csv"
    with latency.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(LATENCY_HEADER)
        w.writerow(
            [
                f"{span_s:f}",
                f"{lat_s.mean():f}",
                f"{lat_s.min():f}",
                f"{lat_s.max():f}",
                f"{lat_s.std():f}",
            ]
        )
    ms = lat_us / 1000.0
    pct = np.percentile(ms, _PERCENTILES)
    row: list[Any] = [
        len(ev),
        round(span_s, 6),
        round(len(ev) / span_s, 3) if span_s > 0 else 0.0,
        round(float(ms.mean()), 6),
        round(float(ms.std()), 6),
        round(float(ms.min()), 6),
        *(round(float(x), 6) for x in pct),
        round(float(ms.max()), 6),
        int((lat_us < 0).sum()),
    ]
    summary = out / "latency_summary.csv"
    with summary.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(SUMMARY_HEADER)
        w.writerow(row)
    return [delay, latency, summary]


# ----------------------------------------------------------------------------- plots
def _figure(title: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _plots(
    out: Path, processes: list[ProcessRecord], t0_ms: int, summary: ReportSummary
) -> list[Path]:
    files = []
    events = [p.events for p in processes if len(p.events)]
    if events:
        ev = np.concatenate(events)
        ev = ev[np.argsort(ev[:, 0], kind="stable")]
        lat_ms = (ev[:, 1] - ev[:, 0]) / 1000.0
        files.append(_plot_latency_distribution(out / "latency_distribution.png", lat_ms))
        files.append(_plot_latency_trend(out / "latency_trend.png", ev, lat_ms, t0_ms))
    if any(len(p.memory) for p in processes):
        files.append(_plot_memory(out / "memory_usage.png", processes, t0_ms))
    else:
        summary.notes.append("no memory samples recorded: memory plot skipped")
    if any(len(p.throughput) > 1 or len(p.events) for p in processes):
        files.append(_plot_throughput(out / "throughput.png", processes, t0_ms))
    else:
        summary.notes.append("fewer than two throughput samples: throughput plot skipped")
    return files


def _plot_latency_distribution(path: Path, lat_ms: np.ndarray[Any, Any]) -> Path:
    fig, ax = _figure(f"End-to-end latency, send → applied ({len(lat_ms):,} events)")
    positive = np.clip(lat_ms, 1e-3, None)  # log scale: clock-offset negatives sit at 1 µs
    lo, hi = float(positive.min()), float(positive.max())
    if hi <= lo:
        hi = lo * 10
    bins = np.logspace(math.log10(lo), math.log10(hi), 60)
    ax.hist(positive, bins=bins, color="tab:blue", alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("events")
    for q, color in ((50, "tab:green"), (99, "tab:red")):
        v = float(np.percentile(lat_ms, q))
        ax.axvline(max(v, 1e-3), color=color, linestyle="--", label=f"p{q} = {v:.3f} ms")
    ax.legend()
    fig.savefig(path)
    return path


def _plot_latency_trend(
    path: Path, ev: np.ndarray[Any, Any], lat_ms: np.ndarray[Any, Any], t0_ms: int
) -> Path:
    fig, ax = _figure("Latency over the run")
    t = ev[:, 0] / 1e6 - t0_ms / 1e3
    step = max(1, len(lat_ms) // _MAX_POINTS)  # a uniform subsample keeps big runs plottable
    label = "event" if step == 1 else f"every {step}th event"
    ax.plot(t[::step], lat_ms[::step], ".", markersize=2, alpha=0.3, color="tab:blue", label=label)
    window = max(1, min(len(lat_ms) // 50, 1001))
    if window > 1 and len(lat_ms) >= window:
        # Rolling median over `window` events (strided view, no copy).
        view = np.lib.stride_tricks.sliding_window_view(lat_ms, window)
        med = np.median(view, axis=1)
        ax.plot(t[window - 1 :], med, color="tab:red", label=f"rolling median ({window} events)")
    ax.set_xlabel("seconds since the run started (send time)")
    ax.set_ylabel("latency (ms)")
    if float(lat_ms.min()) > 0 and float(lat_ms.max()) / float(lat_ms.min()) > 100:
        ax.set_yscale("log")
    ax.legend()
    fig.savefig(path)
    return path


def _plot_memory(path: Path, processes: list[ProcessRecord], t0_ms: int) -> Path:
    fig, ax = _figure("Resident memory (RSS) per process")
    for p in processes:
        if len(p.memory):
            m = p.memory[np.argsort(p.memory[:, 0], kind="stable")]
            ax.plot((m[:, 0] - t0_ms) / 1e3, m[:, 1] / 2**20, label=p.name)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.savefig(path)
    return path


def _plot_throughput(path: Path, processes: list[ProcessRecord], t0_ms: int) -> Path:
    fig, ax = _figure("Throughput per process")
    for p in processes:
        if len(p.throughput) > 1:
            tp = p.throughput[np.argsort(p.throughput[:, 0], kind="stable")]
            ax.plot((tp[1:, 0] - t0_ms) / 1e3, _rates(tp)[1:], label=f"{p.name} (counted)")
        if len(p.events):
            applied_ms = p.events[:, 1] // 1000 - t0_ms
            span_ms = max(int(applied_ms.max() - applied_ms.min()), 1)
            # Bins of 10^k ms giving at least ~20 bins, between 10 ms and 60 s.
            width = int(min(max(10 ** math.floor(math.log10(span_ms / 20)), 10), 60_000))
            slot = applied_ms // width
            counts = np.bincount(slot - slot.min())
            xs = (np.arange(len(counts)) + slot.min() + 0.5) * width / 1e3
            ax.step(xs, counts * 1000.0 / width, where="mid", label=f"{p.name} (events applied)")
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("events per second")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.savefig(path)
    return path
