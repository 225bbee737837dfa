"""What a process records during a run, for ``procvault report`` (ProMTEE-style CSVs and plots).

A :class:`RunRecorder` writes, under ``RUN_DIR/<process_name>/``:

``run.json``
    ``{"format": "procvault.run/1", "process": ..., "pid": ..., "started_unix_ms": ...,
    "interval_s": ...}``.
``memory_usage.csv``
    ProMTEE's format: header ``Timestamp,Memory Usage``, then Unix time in **milliseconds** and
    the process's resident set size in **bytes**, one row per sample (every ``interval``
    seconds from a background thread, and whenever :meth:`RunRecorder.sample` is called).
``events.csv``
    Header ``sent_us,applied_us``: per event, the agent's wall-clock send time and the vault's
    wall-clock apply time, Unix **microseconds** (ProMTEE's ``delay_result.csv`` holds the same
    two instants in nanoseconds, without a header; ``procvault report`` writes that file).
``throughput.csv``
    Header ``Timestamp,Events``: Unix milliseconds and the **cumulative** count passed to
    :meth:`RunRecorder.count` so far, one row per sample (rates are differences).

Only timestamps, sizes and counts: no case id, activity or attribute value is ever written.
Files are appended to, so a restarted process continues its own files (the header is written
once). Both clocks are wall clocks: on one host (or containers sharing the host clock) the
difference is a latency; across hosts it includes their clock offset.

``event``/``events``/``count`` are meant for one thread (the process's loop) and only append to
lists (under a lock the writer takes only to swap the buffer); the background thread formats
and writes full buffers and, every ``interval`` seconds, whatever is buffered, so that
``procvault report`` sees a running process's events, not only a stopped one's.

>>> import tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> with RunRecorder(run, "vault-0", background=False) as rec:
...     rec.event(1_700_000_000_000_000, 1_700_000_000_000_850)
...     rec.events([1_700_000_000_001_000, 1_700_000_000_001_200], 1_700_000_000_002_000)
...     rec.count(3)
...     rec.sample()
>>> print((run / "vault-0" / "events.csv").read_text(), end="")
sent_us,applied_us
1700000000000000,1700000000000850
1700000000001000,1700000000002000
1700000000001200,1700000000002000
>>> (run / "vault-0" / "memory_usage.csv").read_text().splitlines()[0]
'Timestamp,Memory Usage'
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import resource
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, TextIO

__all__ = ["EVENTS_FILE", "MEMORY_FILE", "RUN_FILE", "THROUGHPUT_FILE", "RunRecorder", "rss_bytes"]

RUN_FILE: Final = "run.json"
MEMORY_FILE: Final = "memory_usage.csv"
EVENTS_FILE: Final = "events.csv"
THROUGHPUT_FILE: Final = "throughput.csv"
FORMAT: Final = "procvault.run/1"

_MEMORY_HEADER: Final = "Timestamp,Memory Usage\n"
_EVENTS_HEADER: Final = "sent_us,applied_us\n"
_THROUGHPUT_HEADER: Final = "Timestamp,Events\n"
_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The current resident set size (``/proc/self/statm``; elsewhere the peak RSS)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * 1024  # kilobytes on Linux


class RunRecorder:
    """Record memory, per-event timestamps and throughput of one process (see the module doc).

    Parameters
    ----------
    run_dir
        The run's folder (shared by every process of the run).
    process_name
        This process's subfolder, e.g. ``vault-0`` or ``agent-hospital`` (letters, digits,
        ``.``, ``_``, ``-``).
    interval
        Seconds between background samples of RSS and the throughput counter.
    flush_events
        Events buffered before the buffer is handed to the writer.
    background
        Sample and write from a daemon thread; ``False``: only on :meth:`sample`,
        :meth:`flush` and :meth:`close` (and when a buffer fills up), in the caller's thread.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        process_name: str,
        *,
        interval: float = 1.0,
        flush_events: int = 65_536,
        background: bool = True,
    ) -> None:
        if not _NAME_RE.fullmatch(process_name):
            raise ValueError(
                f"process name {process_name!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        if flush_events < 1:
            raise ValueError(f"flush_events must be >= 1, got {flush_events}")
        self.dir = Path(run_dir) / process_name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process_name = process_name
        self.interval = float(interval)
        self._flush_events = flush_events
        self._sent: list[int] = []
        self._applied: list[int] = []
        self._total = 0
        self._handoff: queue.SimpleQueue[tuple[list[int], list[int]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._buffer_lock = threading.Lock()  # the buffer's swap against the recording thread
        self._error: BaseException | None = None
        self._closed = False
        started_ms = time.time_ns() // 1_000_000
        (self.dir / RUN_FILE).write_text(
            json.dumps(
                {
                    "format": FORMAT,
                    "process": process_name,
                    "pid": os.getpid(),
                    "started_unix_ms": started_ms,
                    "interval_s": self.interval,
                }
            )
            + "\n"
        )
        self._memory = self._open(MEMORY_FILE, _MEMORY_HEADER)
        self._events = self._open(EVENTS_FILE, _EVENTS_HEADER)
        self._throughput = self._open(THROUGHPUT_FILE, _THROUGHPUT_HEADER)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._run, name=f"recorder-{process_name}", daemon=True
            )
            self._thread.start()

    def _open(self, name: str, header: str) -> TextIO:
        path = self.dir / name
        f = path.open("a", encoding="ascii", newline="")
        if f.tell() == 0:
            f.write(header)
            f.flush()
        return f

    # -- the hot path (one thread) ---------------------------------------------------------
    def event(self, sent_us: int, applied_us: int) -> None:
        """One event: sent (agent wall clock) and applied (vault wall clock), Unix µs."""
        with self._buffer_lock:
            self._sent.append(sent_us)
            self._applied.append(applied_us)
        if len(self._sent) >= self._flush_events:
            self._hand_off()

    def events(self, sent_us: Sequence[int], applied_us: int | Sequence[int]) -> None:
        """A batch: each event's send time, and one apply time for all or one per event."""
        if isinstance(applied_us, int):
            applied = [applied_us] * len(sent_us)
        else:
            if len(applied_us) != len(sent_us):
                raise ValueError("sent_us and applied_us differ in length")
            applied = list(applied_us)
        with self._buffer_lock:
            self._sent.extend(sent_us)
            self._applied.extend(applied)
        if len(self._sent) >= self._flush_events:
            self._hand_off()

    def count(self, n: int = 1) -> None:
        """``n`` more units of work (events sent, applied...) for the throughput samples."""
        self._total += n

    # -- sampling and writing -------------------------------------------------------------
    def _hand_off(self) -> None:
        with self._buffer_lock:
            sent, applied = self._sent, self._applied
            self._sent, self._applied = [], []
        if sent:
            self._handoff.put((sent, applied))
        if self._thread is None:
            self._write_events()

    def sample(self) -> None:
        """Record RSS and the throughput counter now."""
        now_ms = time.time_ns() // 1_000_000
        rss, total = rss_bytes(), self._total
        with self._lock:
            self._memory.write(f"{now_ms},{rss}\n")
            self._memory.flush()
            self._throughput.write(f"{now_ms},{total}\n")
            self._throughput.flush()

    def _write_events(self) -> None:
        with self._lock:
            while True:
                try:
                    sent, applied = self._handoff.get_nowait()
                except queue.Empty:
                    break
                try:
                    self._events.write(
                        "".join(f"{s:d},{a:d}\n" for s, a in zip(sent, applied, strict=True))
                    )
                except (TypeError, ValueError) as exc:
                    self._error = self._error or ValueError(
                        f"RunRecorder.event takes integer microseconds ({exc})"
                    )
            self._events.flush()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.sample()
                self._hand_off()  # what is buffered, so that a running process's files fill
                self._write_events()
        except BaseException as exc:  # surfaced by flush()/close()
            self._error = exc

    def flush(self) -> None:
        """Write every buffered event now (from the recording thread)."""
        if self._sent:
            self._hand_off()
        self._write_events()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop sampling, take a last sample, write everything and close the files."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.sample()
            self.flush()
        finally:
            for f in (self._memory, self._events, self._throughput):
                with contextlib.suppress(OSError):
                    f.close()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            warnings.warn(
                f"RunRecorder for {self.process_name!r} was never closed",
                ResourceWarning,
                stacklevel=2,
            )
