"""A local, append-only, hash-chained audit log of every decision of the policy stage.

One JSON object per line. Every entry carries its position (``seq``, from 0), the hash of the
entry before it (``prev``; 64 zeros for the first) and its own hash::

    hash = SHA-256("procvault-audit-v1\\n" + canonical JSON of the entry without "hash")

(canonical: keys sorted, no spaces, UTF-8). Entries come in *sessions*: an ``open`` entry (time,
policy id, version and digest, actor, key fingerprint, scrubbing on/off), one ``decision`` entry
per input event (case reference as emitted, position, outcome, reason code, withheld attribute
*keys* with their reasons, PII *kinds* scrubbed: never a value), and a ``close`` entry with the
session's counts. Changing an entry breaks its hash; removing, inserting or reordering entries
breaks ``seq`` and the chain of ``prev``; cutting the tail leaves a session without its
``close``. :func:`verify_audit_log` checks all of it and names the first broken entry.

What a chain cannot show by itself: that a whole trailing session was removed, or that the
whole log was rewritten with fresh hashes. Keep the head hash elsewhere (``procvault policy
apply`` prints it; ``procvault audit verify --head HASH`` checks it).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl"
>>> with AuditLog(path) as log:
...     _ = log.open_session({"policy": "demo", "policy_version": 1})
...     _ = log.append("decision", {"case": "c1", "pos": 1, "outcome": "emitted"})
>>> report = verify_audit_log(path)
>>> report.entries, report.decisions, report.sessions
(3, 1, 1)
>>> lines = path.read_text().splitlines()
>>> _ = path.write_text("\\n".join([lines[0], lines[1].replace('"c1"', '"c2"'), lines[2]]) + "\\n")
>>> verify_audit_log(path)
Traceback (most recent call last):
...
procvault.monitor.errors.TamperError: ...audit.jsonl: entry 1 (line 2): its content does not ...
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self

import msgspec

from procvault.monitor.errors import ConfigError, TamperError

from .engine import Decision
from .reserved import Reason

__all__ = [
    "GENESIS",
    "AuditLog",
    "AuditReport",
    "decision_payload",
    "entry_hash",
    "verify_audit_log",
]

#: ``prev`` of the first entry.
GENESIS: Final = "0" * 64
_DOMAIN: Final = b"procvault-audit-v1\n"
_ENTRY_TYPES: Final = ("open", "decision", "close")
_encoder: Final = msgspec.json.Encoder(order="sorted")
_decoder: Final = msgspec.json.Decoder()


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The hash of an entry (given without its ``hash`` field): SHA-256 over the domain line and
    the canonical JSON."""
    return hashlib.sha256(_DOMAIN + _encoder.encode(entry)).hexdigest()


def decision_payload(decision: Decision) -> dict[str, Any]:
    """The audit entry for a :class:`~.engine.Decision`: references and codes, never values."""
    ev = decision.event
    payload: dict[str, Any] = {"case": ev.case_id, "pos": decision.position}
    if decision.withheld is not None:
        payload["outcome"] = "withheld"
        payload["reason"] = str(decision.withheld)
    elif ev.kind:
        payload["outcome"] = "marker"
    else:
        payload["outcome"] = "emitted"
    if decision.fields:
        payload["fields"] = dict(decision.fields)
    if decision.scrubbed:
        payload["scrubbed"] = dict(decision.scrubbed)
    return payload


def _open_private(path: Path) -> IO[bytes]:
    """Open ``path`` for appending; a new file is created with mode 0600 (``fchmod``, whatever
    the umask), never through a symbolic link."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fd = os.open(path, flags)
    else:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


class AuditLog:
    """Appends hash-chained entries to a JSON-lines file (created if missing, continued if not).

    Parameters
    ----------
    path
        The log file. An existing log is continued: its last entry is checked and chained to.
    clock
        Wall-clock time for ``open``/``close`` entries (injectable for tests).

    The file is locked (``flock``) while open, so two writers cannot interleave.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._seq, self._prev = self._tail()
        try:
            self._fh: IO[bytes] | None = _open_private(self.path)
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot write the audit log: {exc.strerror}") from None
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            self._fh = None
            raise ConfigError(f"{self.path}: the audit log is in use by another process") from None
        self._in_session = False
        self._counts: dict[str, int] = {}

    def _tail(self) -> tuple[int, str]:
        """Next ``seq`` and the last hash of an existing log (its last entry checked)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0, GENESIS
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read the audit log: {exc.strerror}") from None
        if size == 0:
            return 0, GENESIS
        with self.path.open("rb") as fh:
            fh.seek(max(0, size - (1 << 16)))
            chunk = fh.read()
        if not chunk.endswith(b"\n"):
            raise TamperError(
                f"{self.path}: the last entry is incomplete; run 'procvault audit verify' "
                "before appending"
            )
        last = chunk.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            entry = _decoder.decode(last)
            stored = entry.pop("hash")
            seq = entry["seq"]
        except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
            raise TamperError(
                f"{self.path}: the last entry is damaged; run 'procvault audit verify'"
            ) from None
        if not isinstance(seq, int) or entry_hash(entry) != stored:
            raise TamperError(
                f"{self.path}: the last entry does not match its hash; run 'procvault audit verify'"
            )
        if entry.get("type") != "close":
            raise TamperError(
                f"{self.path}: the log ends inside a session (no closing entry); "
                "run 'procvault audit verify'"
            )
        return seq + 1, str(stored)

    @property
    def head(self) -> tuple[int, str]:
        """``(entries written so far, hash of the last one)``; keep the hash somewhere else."""
        return self._seq, self._prev

    def append(self, entry_type: str, payload: Mapping[str, Any]) -> str:
        """Write one entry of ``entry_type`` with ``payload``; return its hash."""
        fh = self._fh
        if fh is None:
            raise ValueError("the audit log is closed")
        if entry_type not in _ENTRY_TYPES:
            raise ValueError(f"unknown audit entry type {entry_type!r}")
        if entry_type == "decision":
            if not self._in_session:
                raise ValueError("open_session() before recording decisions")
            outcome = payload.get("outcome", "")
            self._counts[outcome] = self._counts.get(outcome, 0) + 1
        entry = dict(payload)
        for reserved in ("seq", "prev", "type", "hash"):
            if reserved in entry:
                raise ValueError(f"payload may not set {reserved!r}")
        entry["seq"] = self._seq
        entry["prev"] = self._prev
        entry["type"] = entry_type
        digest = entry_hash(entry)
        entry["hash"] = digest
        fh.write(_encoder.encode(entry) + b"\n")
        self._seq += 1
        self._prev = digest
        return digest

    def open_session(self, info: Mapping[str, Any]) -> str:
        """Start a session: an ``open`` entry with the time and ``info`` (policy, actor, ...)."""
        if self._in_session:
            raise ValueError("a session is already open")
        payload = {"time": self._clock().isoformat(), **info}
        self._in_session = True
        self._counts = {}
        return self.append("open", payload)

    def record(self, decision: Decision) -> str:
        """Write the ``decision`` entry for one input event."""
        return self.append("decision", decision_payload(decision))

    def close(self) -> None:
        """End the open session (a ``close`` entry with its counts), flush and close; a second
        call does nothing."""
        fh = self._fh
        if fh is None:
            return
        try:
            if self._in_session:
                counts = {
                    "time": self._clock().isoformat(),
                    "decisions": sum(self._counts.values()),
                    **{k: self._counts.get(k, 0) for k in ("emitted", "withheld", "marker")},
                }
                self.append("close", counts)
                self._in_session = False
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            self._fh = None
            fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class AuditReport:
    """What :func:`verify_audit_log` found in a log that is not broken: ``intact`` (entries
    that all verify) or ``empty`` (no entry at all: nothing is proven, and a log whose content
    was removed looks exactly like this; :attr:`intact` is False)."""

    #: The file.
    path: Path
    #: Entries (lines).
    entries: int
    #: Complete sessions (``open`` ... ``close``).
    sessions: int
    #: ``decision`` entries.
    decisions: int
    #: Decisions by outcome (``emitted``, ``withheld``, ``marker``).
    outcomes: Mapping[str, int]
    #: Placeholders by reason code.
    reasons: Mapping[str, int]
    #: Hash of the last entry (``GENESIS`` for an empty log).
    head: str

    @property
    def status(self) -> str:
        """``intact`` or ``empty``."""
        return "intact" if self.entries else "empty"

    @property
    def intact(self) -> bool:
        """True only for a log with entries that all verify (an empty file is not intact)."""
        return self.entries > 0


def verify_audit_log(
    path: str | os.PathLike[str],
    *,
    expect_head: str | None = None,
) -> AuditReport:
    """Check every entry of an audit log; raise :class:`TamperError` naming the first broken one.

    Parameters
    ----------
    path
        The log.
    expect_head
        The head hash recorded elsewhere; a different head means entries were removed from the
        end, appended, or the log was rewritten.
    """
    p = Path(path)
    try:
        fh = p.open("rb")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the audit log: {exc.strerror or exc}") from None
    prev = GENESIS
    sessions = decisions = 0
    in_session = False
    session_decisions = 0
    outcomes: dict[str, int] = {}
    reasons: dict[str, int] = {}
    index = -1
    valid_reasons = {r.value for r in Reason}

    def broken(i: int, problem: str) -> TamperError:
        return TamperError(f"{p}: entry {i} (line {i + 1}): {problem}")

    with fh:
        for index, raw in enumerate(fh):
            if not raw.endswith(b"\n"):
                raise broken(index, "incomplete line: the log was cut in the middle of an entry")
            try:
                entry = _decoder.decode(raw)
            except msgspec.DecodeError:
                raise broken(index, "not a JSON object: the entry was changed or damaged") from None
            if not isinstance(entry, dict):
                raise broken(index, "not a JSON object: the entry was changed or damaged")
            stored = entry.pop("hash", None)
            seq, entry_prev, kind = entry.get("seq"), entry.get("prev"), entry.get("type")
            if not isinstance(stored, str) or not isinstance(entry_prev, str):
                raise broken(index, "hash or prev missing: the entry was changed")
            if seq != index:
                raise broken(
                    index,
                    f"has seq {seq!r} where entry {index} belongs: entries were removed, "
                    "inserted or reordered",
                )
            if entry_prev != prev:
                raise broken(
                    index,
                    "does not chain to the entry before it: entries were removed, inserted or "
                    "reordered",
                )
            if entry_hash(entry) != stored:
                raise broken(index, "its content does not match its hash: the entry was changed")
            if kind == "open":
                if in_session:
                    raise broken(index, "a session opens before the previous one closed")
                in_session, session_decisions = True, 0
            elif kind == "decision":
                if not in_session:
                    raise broken(index, "a decision outside any session")
                session_decisions += 1
                decisions += 1
                outcome = str(entry.get("outcome"))
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if outcome == "withheld":
                    reason = str(entry.get("reason"))
                    if reason not in valid_reasons:
                        raise broken(index, f"unknown reason code {reason!r}")
                    reasons[reason] = reasons.get(reason, 0) + 1
            elif kind == "close":
                if not in_session:
                    raise broken(index, "a session closes that was never opened")
                if entry.get("decisions") != session_decisions:
                    raise broken(
                        index,
                        f"the session closes with {entry.get('decisions')!r} decisions but "
                        f"{session_decisions} are recorded: decisions were removed or inserted",
                    )
                in_session = False
                sessions += 1
            else:
                raise broken(index, f"unknown entry type {kind!r}")
            prev = stored
    entries = index + 1
    if in_session:
        raise TamperError(
            f"{p}: entry {entries} (line {entries + 1}) is missing: the log ends inside a "
            "session without its closing entry (the tail was cut, or the writer did not finish)"
        )
    if expect_head is not None and expect_head != prev:
        raise TamperError(
            f"{p}: the head is {prev[:16]}…, expected {expect_head[:16]}…: entries were "
            "removed from or added to the end, or the log was rewritten"
        )
    return AuditReport(p, entries, sessions, decisions, outcomes, reasons, prev)
