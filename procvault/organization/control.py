"""The agent's visible state and its pause switch: two small files in a control directory.

A running agent keeps ``state.json`` in its control directory (by default
``$PROCVAULT_HOME/agents/<topic prefix><org>/<producer>``, ``$PROCVAULT_HOME`` defaulting to
``~/.cache/procvault``) up to date, always replaced atomically (written beside it, then
renamed): its state and since when, its pid, the event time of its stream, its counters and,
with review, its queue. ``procvault agent pause|resume`` writes ``command.json``, also
atomically: the *desired* state (``{"paused": true, "seq": 3, ...}``), so a command is never
lost between two polls and an agent started later obeys it too. The agent notices a new command
by the file's identity (inode, size, mtime: one ``stat`` call), at most every 0.2 s, and
acknowledges it in ``state.json`` (``command_seq``).

States (:data:`STATES`, decided by :func:`decide_state` in this order):

``paused``
    a person paused the agent: it finished its open Kafka transaction and sends nothing (no
    events, no heartbeats) until resumed;
``outside_hours``
    the policy has collection windows and none is open at the stream's current time: the event
    time of the last event the agent read (for a replay the event-time clock is the one that
    matters: it is what the windows are checked against). Events no window applies to are
    still collected, as the policy says;
``restricted``
    the policy is an allowlist: only what it names leaves;
``observing``
    none of the above.

>>> import tempfile
>>> d = ControlDir(tempfile.mkdtemp())
>>> d.request(paused=True)
1
>>> watcher = CommandWatcher(d)
>>> watcher.poll()["paused"], watcher.poll()
(True, None)
>>> decide_state(paused=False, restricted=True)
'restricted'
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from procvault.monitor.errors import ConfigError
from procvault.streams.kafka_local import pid_alive

from .policy.windows import CollectionWindow

__all__ = [
    "STATES",
    "AgentControl",
    "AgentStatus",
    "CommandWatcher",
    "ControlDir",
    "decide_state",
    "default_control_dir",
    "pid_alive",
]

#: The agent's states, in the order they take precedence.
STATES: Final = ("paused", "outside_hours", "restricted", "observing")
STATE_FILE: Final = "state.json"
COMMAND_FILE: Final = "command.json"


def decide_state(
    *,
    paused: bool,
    restricted: bool,
    windows: Sequence[CollectionWindow] = (),
    now: datetime | None = None,
) -> str:
    """The agent's state (see the module docstring); ``now`` is the stream's event time
    (``None`` before the first event: no window check).

    >>> from procvault.organization.policy.windows import parse_days
    >>> office = CollectionWindow(zone="Europe/Amsterdam", days=parse_days(["mon-fri"]),
    ...                           start=9 * 60, end=17 * 60)
    >>> sunday = datetime(2024, 3, 31, 12, 0, tzinfo=UTC)
    >>> decide_state(paused=False, restricted=True, windows=[office], now=sunday)
    'outside_hours'
    >>> decide_state(paused=True, restricted=True, windows=[office], now=sunday)
    'paused'
    """
    if paused:
        return "paused"
    if windows and now is not None and not any(w.contains(now) for w in windows):
        return "outside_hours"
    if restricted:
        return "restricted"
    return "observing"


def default_control_dir(org: str, producer: str, topic_prefix: str = "") -> Path:
    """``$PROCVAULT_HOME/agents/<topic prefix><org>/<producer>`` (home: ``~/.cache/procvault``).

    >>> default_control_dir("lab", "agent-1", "demo.").parts[-3:]
    ('agents', 'demo.lab', 'agent-1')
    """
    for name, value in (("org", org), ("producer", producer), ("topic prefix", topic_prefix)):
        if "/" in value or value in (".", ".."):
            raise ConfigError(f"the {name} {value!r} cannot name a control directory")
    env = os.environ.get("PROCVAULT_HOME")
    home = Path(env).expanduser() if env else Path.home() / ".cache" / "procvault"
    return home / "agents" / f"{topic_prefix}{org}" / producer


@dataclass
class AgentStatus:
    """What ``state.json`` holds."""

    org: str
    producer: str
    #: One of :data:`STATES`.
    state: str = "observing"
    #: When the agent entered ``state`` (Unix time).
    since: float = 0.0
    #: The agent's process id.
    pid: int = 0
    #: ``False`` once the agent has finished (or stopped) cleanly.
    running: bool = True
    #: Whether the last command asked for a pause (the state says whether it is in effect).
    pause_requested: bool = False
    #: The last command the agent applied (``command.json``'s ``seq``).
    command_seq: int = 0
    #: The event time of the last event read (ISO 8601), the clock of ``outside_hours``.
    stream_time: str | None = None
    #: Counters of the run (read, sent, withheld, batches, heartbeats, ...).
    counters: dict[str, Any] = field(default_factory=dict)
    #: With ``--review``: items per state and the item the agent waits for, if any.
    review: dict[str, Any] | None = None
    #: When this was written (Unix time).
    updated: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "state") -> AgentStatus:
        """Read back :meth:`to_dict`; a one-line :class:`ConfigError` if it is not one."""
        try:
            status = cls(**data)
        except TypeError:
            raise ConfigError(f"{where}: not an agent state file") from None
        if status.state not in STATES:
            raise ConfigError(f"{where}: unknown state {status.state!r}")
        return status

    def describe(self, *, alive: bool, now: float | None = None) -> str:
        """One human line."""
        now = time.time() if now is None else now
        who = f"{self.org}/{self.producer}"
        c = self.counters
        counts = ", ".join(f"{k} {c[k]:,}" for k in ("read", "sent", "withheld") if k in c)
        if not alive:
            return (
                f"{who}: not running (pid {self.pid}; last state {self.state}, "
                f"written {_ago(now - self.updated)} ago; {counts})"
            )
        line = f"{who}: {self.state} for {_ago(now - self.since)} (pid {self.pid}"
        if self.stream_time:
            line += f", stream time {self.stream_time}"
        line += f"); {counts}"
        if self.pause_requested and self.state != "paused":
            line += "; pause requested, taking effect at the end of the current batch"
        if self.review is not None:
            r = self.review
            line += f"; review: {r.get('held', 0):,} held"
            if r.get("waiting_for") is not None:
                line += f", waiting for item {r['waiting_for']}"
        return line


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError:
        raise ConfigError(f"{path}: damaged (not JSON)") from None


class ControlDir:
    """The control directory of one agent: ``state.json`` and ``command.json``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.state_file = self.path / STATE_FILE
        self.command_file = self.path / COMMAND_FILE

    def _ensure(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{self.path}: cannot create the control directory: {exc.strerror or exc}"
            ) from None

    def write_state(self, status: AgentStatus) -> None:
        """Replace ``state.json`` atomically."""
        self._ensure()
        _write_atomically(self.state_file, status.to_dict())

    def read_state(self) -> AgentStatus | None:
        """The last state an agent wrote, or ``None`` if none ever did."""
        data = _read_json(self.state_file)
        return None if data is None else AgentStatus.from_dict(data, str(self.state_file))

    def read_command(self) -> dict[str, Any] | None:
        """The desired state last requested, or ``None``."""
        data = _read_json(self.command_file)
        if data is None:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("paused"), bool):
            raise ConfigError(f"{self.command_file}: not a command file")
        return data

    def request(self, *, paused: bool, by: str | None = None) -> int:
        """Ask the agent to pause (``True``) or resume; returns the command's ``seq``."""
        self._ensure()
        last = self.read_command()
        seq = int(last.get("seq", 0)) + 1 if last else 1
        _write_atomically(
            self.command_file,
            {
                "paused": paused,
                "seq": seq,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "by": by,
            },
        )
        return seq


class CommandWatcher:
    """Reads ``command.json`` again only when the file changed (one ``stat`` per poll)."""

    def __init__(self, control: ControlDir) -> None:
        self.control = control
        self._seen: tuple[int, int, int] | None = None

    def poll(self) -> dict[str, Any] | None:
        """The command if the file is new or changed since the last poll, else ``None``."""
        try:
            st = os.stat(self.control.command_file)
        except FileNotFoundError:
            self._seen = None
            return None
        ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        if ident == self._seen:
            return None
        self._seen = ident
        return self.control.read_command()


class AgentControl:
    """The running agent's side: applies commands and keeps ``state.json`` and the
    ``procvault_agent_state`` metric current.

    Parameters
    ----------
    directory
        The control directory.
    org, producer
        Whose state it is.
    restricted
        The policy is an allowlist.
    windows
        The policy's collection windows (``outside_hours`` when none is open).
    metrics
        An :class:`~procvault.metrics.exporters.AgentMetrics` (or ``None``).
    interval
        Seconds between polls of the command file while the agent runs.
    on_change
        Called with the new state whenever it changes (the CLI prints it).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        org: str,
        producer: str,
        restricted: bool = False,
        windows: Sequence[CollectionWindow] = (),
        metrics: Any = None,
        interval: float = 0.2,
        on_change: Callable[[str], None] | None = None,
        refresh: float = 1.0,
    ) -> None:
        if not interval > 0:
            raise ConfigError("the control poll interval must be > 0")
        self.dir = ControlDir(directory)
        self.restricted = restricted
        self.windows = tuple(windows)
        self.metrics = metrics
        self.interval = interval
        self.refresh = refresh
        self.on_change = on_change
        self.watcher = CommandWatcher(self.dir)
        self.status = AgentStatus(org=org, producer=producer, pid=os.getpid())
        self._written = 0.0
        self._state: str | None = None

    def poll(self) -> bool | None:
        """``True`` (pause) or ``False`` (resume) when a new command arrived, else ``None``."""
        cmd = self.watcher.poll()
        if cmd is None:
            return None
        self.status.pause_requested = bool(cmd["paused"])
        self.status.command_seq = int(cmd.get("seq", 0))
        self._written = 0.0  # acknowledge at once
        return self.status.pause_requested

    def report(
        self,
        *,
        paused: bool,
        stream_us: int | None,
        counters: dict[str, Any],
        review: Callable[[], dict[str, Any]] | None = None,
        running: bool = True,
        force: bool = False,
    ) -> str:
        """Decide the state; write ``state.json`` when it changed, when forced, or every
        ``refresh`` seconds (counters); returns the state."""
        now_ts = (
            None
            if stream_us is None or stream_us < 0
            else datetime.fromtimestamp(stream_us / 1e6, UTC)
        )
        state = decide_state(
            paused=paused, restricted=self.restricted, windows=self.windows, now=now_ts
        )
        st = self.status
        now = time.time()
        changed = state != self._state
        if changed:
            self._state = st.state = state
            st.since = now
            if self.metrics is not None:
                self.metrics.set_state(state)
            if self.on_change is not None:
                self.on_change(state)
        if changed or force or not running or now - self._written >= self.refresh:
            st.stream_time = None if now_ts is None else now_ts.isoformat()
            st.counters = dict(counters)
            st.review = review() if review is not None else None
            st.running = running
            st.updated = now
            self.dir.write_state(st)
            self._written = now
        return state
