"""The DP process map of what a :class:`~procvault.results.reader.ResultsReader` verified
(``procvault results --map/--graph``)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from procvault.monitor.privacy.records import PaneRecord, Record, WindowRecord
    from procvault.processmap.draw import ProcessMap

__all__ = ["MapView"]


class MapView:
    """The process map of what a :class:`ResultsReader` verified: keeps the latest pane
    record (highest index), the latest window record of ``window`` panes and the latest
    withheld pane, shows the map in the terminal (``show``; live with :meth:`live`) and
    writes it as an image (``graph``). Only released (noisy) values are used.

    Parameters
    ----------
    show
        Show the map (and not the records) on ``console``.
    graph
        Write the map to this ``.png``/``.svg`` file: at :meth:`finish`, and while following
        at most every :attr:`graph_interval` seconds when it changed (:meth:`tick`).
    window
        Map the latest window record of this many panes instead of the latest pane (until
        one is read, the latest pane, with a note).
    min_count
        The display threshold (``None``: from the noise, see
        :func:`~procvault.processmap.draw.build_map`).
    top
        Strongest next activities listed per activity.
    at
        Map the pane holding this time (its ``[start, end)``), or the window of ``window``
        panes whose last pane holds it, instead of the latest.
    console
        A ``rich`` console (default: stdout).
    """

    graph_interval = 2.0

    def __init__(
        self,
        *,
        show: bool = True,
        graph: Path | None = None,
        window: int | None = None,
        min_count: int | None = None,
        top: int = 3,
        at: datetime | None = None,
        console: Any = None,
    ) -> None:
        self.at = at
        self.mechanisms: Any = None
        self.show = show
        self.graph = graph
        self.window = window
        self.min_count = min_count
        self.top = top
        self._console = console
        self.pane: PaneRecord | None = None
        self.window_record: WindowRecord | None = None
        self.withheld: int | None = None
        self.version = 0
        self._built: tuple[int, ProcessMap | None] = (-1, None)
        self._graph_version = 0
        self._graph_at = float("-inf")
        self._live: Any = None
        self.graphs_written = 0

    @property
    def console(self) -> Any:
        """Where the map is shown."""
        if self._console is None:
            from rich.console import Console

            self._console = Console()
        return self._console

    def add(self, record: Record) -> None:
        """Take a verified record (older ones than those kept are ignored)."""
        from procvault.monitor.privacy.records import PaneRecord, WindowRecord

        at = self.at
        if isinstance(record, PaneRecord):
            self.mechanisms = record.mechanisms  # data-independent: the same for every pane
            if at is not None:
                if record.pane.start <= at < record.pane.end:
                    self.pane = record
                    self.version += 1
            elif self.pane is None or record.pane.index >= self.pane.pane.index:
                self.pane = record
                self.version += 1
        elif isinstance(record, WindowRecord):
            if record.panes != self.window:
                return
            if at is not None:
                pane_length = (record.end - record.start) / record.panes
                if record.end - pane_length <= at < record.end:
                    self.window_record = record
                    self.version += 1
            elif self.window_record is None or record.last_pane >= self.window_record.last_pane:
                self.window_record = record
                self.version += 1
        elif at is not None:
            if record.pane.start <= at < record.pane.end:
                self.withheld = record.pane.index
                self.version += 1
        elif self.withheld is None or record.pane.index > self.withheld:
            self.withheld = record.pane.index
            self.version += 1

    def current(self) -> ProcessMap | None:
        """The map of the latest record asked for (``None`` before any pane or window)."""
        version, built = self._built
        if version == self.version:
            return built
        from procvault.processmap.draw import build_map

        notes: list[str] = []
        record: PaneRecord | WindowRecord | None = self.pane
        last = None if self.pane is None else self.pane.pane.index
        if self.window is not None:
            if self.window_record is not None:
                record, last = self.window_record, self.window_record.last_pane
            elif self.pane is not None:
                notes.append(
                    f"no window record of {self.window} panes read yet: showing the latest pane"
                )
        if self.withheld is not None and (last is None or self.withheld > last):
            notes.append(f"pane {self.withheld} was withheld (privacy budget)")
        pm = None
        if record is not None:
            mechanisms = self.pane.mechanisms if self.pane is not None else self.mechanisms
            pm = build_map(record, min_count=self.min_count, mechanisms=mechanisms, notes=notes)
        self._built = (self.version, pm)
        return pm

    def _empty(self) -> str:
        if self.at is not None:
            when = self.at.strftime("%Y-%m-%d %H:%M:%S %Z")
            if self.withheld is not None:
                return f"the pane holding {when} (pane {self.withheld}) was withheld"
            return f"no pane record holds {when} (yet)"
        if self.withheld is not None:
            return f"no pane record yet (pane {self.withheld} was withheld: privacy budget)"
        return "no pane record yet"

    def __rich__(self) -> Any:
        from procvault.processmap.draw import render_map

        return render_map(self.current(), top=self.top, empty=self._empty())

    @contextlib.contextmanager
    def live(self, follow: bool) -> Iterator[None]:
        """While reading: with ``follow`` and ``show``, a live display refreshed twice a
        second (records are only stored as they arrive; the map is rebuilt when shown)."""
        if not (follow and self.show):
            yield
            return
        from rich.live import Live

        with Live(self, console=self.console, refresh_per_second=2) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None

    def note(self, text: str) -> None:
        """A line printed above the map (an alert)."""
        from rich.text import Text

        self.console.print(Text(text))

    def tick(self, now: float | None = None) -> None:
        """While following: rewrite the graph if the map changed and it is time."""
        if self.graph is None or self.version == self._graph_version:
            return
        now = time.monotonic() if now is None else now
        if now - self._graph_at >= self.graph_interval and self.current() is not None:
            self._write_graph()
            self._graph_at = now

    def _write_graph(self) -> None:
        from procvault.monitor.errors import ProcvaultError
        from procvault.processmap.draw import write_graph

        pm = self.current()
        assert pm is not None and self.graph is not None
        try:
            write_graph(pm, self.graph)
        except OSError as exc:
            raise ProcvaultError(f"--graph: cannot write {self.graph}: {exc}") from None
        self._graph_version = self.version
        self.graphs_written += 1

    def finish(self) -> str | None:
        """After reading: show the map (if not shown live) and write the graph. Returns
        why no graph could be written (no pane or window record was read), else ``None``."""
        if self.show and self._live is None:
            self.console.print(self)
        if self.graph is None:
            return None
        if self.current() is None:
            what = (
                "no pane record"
                + (f" holding {self.at}" if self.at else "")
                + (f" (and no window record of {self.window} panes)" if self.window else "")
            )
            return f"--graph: {what} was read from results.aggregates; {self.graph} not written"
        if self.version != self._graph_version:
            self._write_graph()
        print(f"process map written to {self.graph}", file=sys.stderr)
        return None
