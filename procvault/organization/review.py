"""Review before sharing: the agent's outputs wait in a local, durable queue for a person.

With ``procvault agent ... --review DIR`` every source item the agent reads is first put through
the policy stage and then *admitted* to a :class:`ReviewQueue` (a SQLite file in ``DIR``): one
row per source item, keyed by its position in the shared source (``order``), holding the encoded
output events, a state (``held``, ``released`` or ``dropped``) and who decided what, when. The
agent publishes the rows strictly in source order and stops at the first one still held (head
of line), so the vault's event-time merge and the agent's exactly-once resume work as without
review. ``procvault review list|show|redact|drop|release`` is the person's side:

* **redact** a field of a held item: an attribute keeps its key and gets a placeholder value
  (``pv:redacted;reason=REVIEW_REDACTED;policy_version=3;actor=alice``, never the content), a
  redacted ``resource`` becomes ``None``; the event's ``pv:withheld`` counts the redactions;
* **drop** a held item: each of its events becomes a placeholder like the policy stage's
  (``pv:withheld``, reason ``REVIEW_DROPPED``, the reviewer as ``pv:actor``, the position in
  the case, the consent context; the time as emitted); the content is deleted from the queue;
* **release** held items (by id, by case or all): they go out as they are (redactions applied).

Once the agent has committed an item to Kafka, the queue deletes its content and keeps the
decision record (state, who, when, why, which fields), so it does not grow into a second copy of
everything sent (SQLite's ``secure_delete`` overwrites the freed pages).

Items with nothing to review (end-of-case markers, the policy stage's own placeholders) are
released as they are admitted. With a hold period (``--hold SECONDS``) the agent releases
unreviewed items that long after their admission (actor ``hold-timer``, reason
``HOLD_EXPIRED``). Every decision is appended to the organization's hash-chained audit log
(:class:`~.policy.audit.AuditLog`) when one is configured.

A restarted agent admits the items after its committed position again: rows that exist are kept
as they are (``INSERT OR IGNORE``; decisions survive), so nothing is sent twice or skipped.

>>> import tempfile
>>> from datetime import datetime, UTC
>>> from procvault.monitor.event import Event
>>> q = ReviewQueue.create(tempfile.mkdtemp(), org="shop", producer="agent-1")
>>> ts = datetime(2024, 5, 6, 10, 42, tzinfo=UTC)
>>> q.admit(7, [Event.create("o-1", "Pay", ts, org="shop", attributes={"note": "call Anna"})])
>>> q.ready(7) is None  # held
True
>>> q.redact(7, ["note"], actor="alice").redacted
('note',)
>>> q.release([7], actor="alice")
1
>>> [out] = q.ready(7)
>>> out.attr("note"), out.attr("pv:withheld")
('pv:redacted;reason=REVIEW_REDACTED;policy_version=-;actor=alice', 'REVIEW_REDACTED:1')
>>> q.close()
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec

from procvault.monitor.errors import ConfigError, InputError
from procvault.monitor.event import Event, EventKind
from procvault.streams import codec

from .policy.reserved import (
    ATTR_ACTOR,
    ATTR_POLICY,
    ATTR_POLICY_VERSION,
    ATTR_POSITION,
    ATTR_REASON,
    ATTR_SCOPE,
    ATTR_WITHHELD,
    PLACEHOLDER_ACTIVITY,
    RESERVED_PREFIX,
    Reason,
)

__all__ = [
    "HOLD_EXPIRED",
    "HOLD_TIMER",
    "QUEUE_FILE",
    "REDACTED_PREFIX",
    "REVIEW_DROPPED",
    "REVIEW_REDACTED",
    "STATES",
    "ReviewItem",
    "ReviewQueue",
    "check_actor",
    "redaction_value",
]

#: The queue's file inside the review directory.
QUEUE_FILE: Final = "review.sqlite"
#: Item states.
STATES: Final = ("held", "released", "dropped")
#: Placeholder reason of an item a reviewer dropped (``pv:reason``).
REVIEW_DROPPED: Final = Reason.REVIEW_DROPPED
#: Reason of a field a reviewer redacted (in ``pv:withheld`` and the redaction value).
REVIEW_REDACTED: Final = Reason.REVIEW_REDACTED
#: Reason of a release because the hold period ran out.
HOLD_EXPIRED: Final = "HOLD_EXPIRED"
#: The actor of releases by the hold period.
HOLD_TIMER: Final = "hold-timer"
#: How a redacted attribute value starts.
REDACTED_PREFIX: Final = "pv:redacted;"
#: The field name that stands for an event's resource in :meth:`ReviewQueue.redact`.
RESOURCE_FIELD: Final = "resource"

_ACTOR_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    ord INTEGER PRIMARY KEY,
    case_id TEXT NOT NULL,
    activity TEXT NOT NULL,
    pos INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('held', 'released', 'dropped')),
    held_at REAL NOT NULL,
    decided_at REAL,
    actor TEXT,
    reason TEXT,
    redacted TEXT NOT NULL DEFAULT '',
    published INTEGER NOT NULL DEFAULT 0,
    events BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS items_case ON items (case_id, ord);
CREATE INDEX IF NOT EXISTS items_state ON items (state, held_at);
"""
_COLUMNS: Final = (
    "ord, case_id, activity, pos, state, held_at, decided_at, actor, reason, redacted, "
    "published, events"
)
_list_encoder: Final = msgspec.msgpack.Encoder()
_list_decoder: Final = msgspec.msgpack.Decoder(list[bytes])


def check_actor(actor: str) -> str:
    """``actor`` if it is a usable reviewer name (letters, digits, ``. _ @ -``; at most 64),
    else a one-line :class:`ConfigError`.

    >>> check_actor("alice@ward-3")
    'alice@ward-3'
    >>> check_actor("Alice Smith")
    Traceback (most recent call last):
    ...
    procvault.monitor.errors.ConfigError: --actor must be a name of letters, digits, '.', '_', ...
    """
    if not isinstance(actor, str) or not _ACTOR_RE.fullmatch(actor):
        raise ConfigError(
            "--actor must be a name of letters, digits, '.', '_', '@' and '-' (at most 64), "
            f"got {actor!r}"
        )
    return actor


def redaction_value(policy_version: Any, actor: str) -> str:
    """The placeholder value of a redacted attribute: reason, policy version and actor.

    >>> redaction_value(3, "alice")
    'pv:redacted;reason=REVIEW_REDACTED;policy_version=3;actor=alice'
    """
    version = "-" if policy_version is None else str(policy_version)
    return f"{REDACTED_PREFIX}reason={REVIEW_REDACTED};policy_version={version};actor={actor}"


#: The content of a published item (deleted from the queue once it has left).
_GONE: Final = b""


def _encode(events: Sequence[Event]) -> bytes:
    return _list_encoder.encode([codec.encode(e) for e in events])


def _decode(blob: bytes) -> list[Event]:
    if blob == _GONE:
        return []
    return [codec.decode(b) for b in _list_decoder.decode(blob)]


def _reviewable(ev: Event) -> bool:
    """Whether a person has anything to look at: an activity event that is not a placeholder."""
    return ev.kind == EventKind.ACTIVITY and ev.activity != PLACEHOLDER_ACTIVITY


@dataclass(frozen=True)
class ReviewItem:
    """One source item in the queue (what ``procvault review list|show`` prints)."""

    #: The item's position in the shared source: its id in the queue.
    order: int
    #: The case as it leaves the organization (its pseudonym when the policy makes one).
    case: str
    #: The first event's activity as it leaves (``pv:withheld`` once dropped).
    activity: str
    #: The event's position in its case at this agent (1 = first; 0 for a marker).
    position: int
    #: ``held``, ``released`` or ``dropped``.
    state: str
    #: When it was admitted (Unix time).
    held_at: float
    #: When it was released or dropped (Unix time), if it was.
    decided_at: float | None
    #: Who decided (a reviewer, ``hold-timer``), if anyone did.
    actor: str | None
    #: Why (``REVIEW_DROPPED``, ``HOLD_EXPIRED``, ``NOTHING_TO_REVIEW``), if recorded.
    reason: str | None
    #: Fields redacted so far.
    redacted: tuple[str, ...]
    #: Whether the agent has published it (committed in its Kafka transaction).
    published: bool
    #: The events that leave for it (as they are now: redactions applied, placeholders);
    #: empty once published (the queue deletes the content of what has left).
    events: tuple[Event, ...]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict without the events."""
        return {
            "id": self.order,
            "case": self.case,
            "activity": self.activity,
            "position": self.position,
            "state": self.state,
            "held_at": _iso(self.held_at),
            "decided_at": _iso(self.decided_at),
            "actor": self.actor,
            "reason": self.reason,
            "redacted": list(self.redacted),
            "published": self.published,
        }


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _item(row: tuple[Any, ...]) -> ReviewItem:
    o, case, act, pos, state, held, decided, actor, reason, red, pub, blob = row
    return ReviewItem(
        o,
        case,
        act,
        pos,
        state,
        held,
        decided,
        actor,
        reason,
        tuple(red.split(",")) if red else (),
        bool(pub),
        tuple(_decode(blob)),
    )


class ReviewQueue:
    """The durable review queue of one agent (see the module docstring).

    Open it with :meth:`create` (the agent: makes the directory and records the settings) or
    :meth:`open` (a reviewer: the queue must exist). One SQLite file in WAL mode; the agent and
    any number of reviewers may use it at once (each decision is one short transaction).

    Parameters
    ----------
    directory
        The review directory.
    clock
        Wall-clock time (Unix seconds), injectable for tests.
    """

    def __init__(
        self, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / QUEUE_FILE
        self._clock = clock
        try:
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"{self.path}: cannot open the review queue: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA secure_delete=ON")  # overwrite what drop/redact replace
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigError(f"{self.path}: not a review queue: {exc}") from None
        self._in_tx = False
        self._closed = False
        self._positions: dict[str, int] = {}
        self._published_upto: int | None = None
        self.meta: dict[str, str] = dict(self._db.execute("SELECT key, value FROM meta"))

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        *,
        org: str,
        producer: str,
        hold: float | None = None,
        audit_log: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> ReviewQueue:
        """The agent's queue in ``directory`` (created if needed) for ``org``/``producer``.

        ``hold`` (seconds) releases unreviewed items that long after admission; ``audit_log``
        receives every decision. A queue made for another organization or producer is
        refused.
        """
        if hold is not None and not hold > 0:
            raise ConfigError(f"--hold must be > 0 seconds, got {hold}")
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{directory}: cannot create the review folder: {exc}") from None
        q = cls(directory, clock=clock)
        try:
            for key, want in (("org", org), ("producer", producer)):
                have = q.meta.get(key)
                if have is not None and have != want:
                    raise ConfigError(
                        f"{q.path}: this review queue belongs to {key} {have!r}, not {want!r}"
                    )
            settings = {
                "org": org,
                "producer": producer,
                "hold": "" if hold is None else repr(float(hold)),
                "audit_log": "" if audit_log is None else str(Path(audit_log).resolve()),
            }
            q._db.execute("BEGIN IMMEDIATE")
            q._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", settings.items()
            )
            q._db.execute("COMMIT")
            q.meta.update(settings)
        except BaseException:
            q.close()
            raise
        return q

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> ReviewQueue:
        """An existing queue (a reviewer's side); a one-line error if there is none."""
        path = Path(directory) / QUEUE_FILE
        if not path.is_file():
            raise ConfigError(
                f"{directory}: no review queue here (an agent started with --review "
                f"{directory} makes one)"
            )
        return cls(directory, clock=clock)

    @property
    def hold(self) -> float | None:
        """The hold period in seconds, or ``None`` (items wait for a person)."""
        raw = self.meta.get("hold", "")
        return float(raw) if raw else None

    @property
    def audit_log(self) -> Path | None:
        """The audit log decisions go to, if one is configured."""
        raw = self.meta.get("audit_log", "")
        return Path(raw) if raw else None

    def close(self) -> None:
        """Commit what the agent admitted and close the file (a second call does nothing)."""
        if self._closed:
            return
        with contextlib.suppress(sqlite3.Error):
            self.flush()
        self._closed = True
        self._db.close()

    def __enter__(self) -> ReviewQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the agent's side
    def admit(self, order: int, outs: Sequence[Event]) -> None:
        """Store the policy stage's outputs for source item ``order`` (held, unless there is
        nothing to review). An item already in the queue (a restarted agent) is kept as it is.

        Writes stay in an open transaction until :meth:`flush` (the agent flushes before it
        waits and before it commits a Kafka transaction).
        """
        if not outs:
            raise ValueError(f"item {order}: the policy stage must emit at least one event")
        first = outs[0]
        case = first.case_id
        pos = 0
        if first.kind == EventKind.ACTIVITY:
            known = self._positions.get(case)
            if known is None:
                (known,) = self._db.execute(
                    "SELECT COUNT(*) FROM items WHERE case_id = ? AND pos > 0 AND ord < ?",
                    (case, order),
                ).fetchone()
            pos = self._positions[case] = known + 1
        else:
            self._positions.pop(case, None)
        review = any(_reviewable(e) for e in outs)
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True
        now = self._clock()
        self._db.execute(
            "INSERT OR IGNORE INTO items (ord, case_id, activity, pos, state, held_at, "
            "decided_at, reason, events) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                order,
                case,
                first.activity,
                pos,
                "held" if review else "released",
                now,
                None if review else now,
                None if review else "NOTHING_TO_REVIEW",
                _encode(outs),
            ),
        )

    def flush(self) -> None:
        """Commit the admissions so far (reviewers see them)."""
        if self._in_tx:
            self._in_tx = False
            self._db.execute("COMMIT")

    def ready(self, order: int) -> list[Event] | None:
        """The events to send for item ``order`` now, or ``None`` while it is held.

        With a hold period, an item held that long is released here (with every other item
        whose period ran out: one transaction, one audit session).
        """
        row = self._db.execute("SELECT state, held_at, events FROM items WHERE ord = ?", (order,))
        found = row.fetchone()
        if found is None:
            raise LookupError(f"item {order} was never admitted to the review queue")
        state, held_at, blob = found
        if state == "held":
            hold = self.hold
            now = self._clock()
            if hold is None or now < held_at + hold:
                return None
            self._expire(now - hold)
        return _decode(blob)

    def mark_published(self, up_to: int) -> None:
        """Record that every item up to ``up_to`` (source position) is published, and delete
        their content: the queue keeps the decision record (who released or dropped what,
        when), not a second copy of what left. Only the items since the last call are touched.
        """
        self.flush()
        if self._published_upto is None:
            row = self._db.execute("SELECT MAX(ord) FROM items WHERE published = 1").fetchone()
            self._published_upto = -1 if row[0] is None else int(row[0])
        if up_to <= self._published_upto:
            return
        self._db.execute(
            "UPDATE items SET published = 1, events = ? WHERE ord > ? AND ord <= ?",
            (_GONE, self._published_upto, up_to),
        )
        self._published_upto = up_to

    def _expire(self, admitted_before: float) -> None:
        def decide(rows: list[tuple[Any, ...]], now: float) -> list[dict[str, Any]]:
            self._db.executemany(
                "UPDATE items SET state = 'released', decided_at = ?, actor = ?, reason = ? "
                "WHERE ord = ?",
                [(now, HOLD_TIMER, HOLD_EXPIRED, r[0]) for r in rows],
            )
            return [_audit_entry(r, "released", HOLD_EXPIRED) for r in rows]

        self._decide(
            "state = 'held' AND held_at <= ?", (admitted_before,), HOLD_TIMER, decide, auto=True
        )

    # ------------------------------------------------------------------ the reviewer's side
    def item(self, order: int) -> ReviewItem:
        """One item; a one-line :class:`InputError` if there is none with that id."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM items WHERE ord = ?", (order,)).fetchone()
        if row is None:
            raise InputError(f"no item {order} in the review queue {self.directory}")
        return _item(row)

    def items(
        self, *, state: str | None = "held", case: str | None = None, limit: int | None = None
    ) -> list[ReviewItem]:
        """Items in source order, filtered by state (``None``: all) and case."""
        if state is not None and state not in STATES:
            raise ConfigError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        where, args = _where(state=state, case=case)
        sql = f"SELECT {_COLUMNS} FROM items {where} ORDER BY ord"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_item(r) for r in self._db.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        """Items per state (every state present, 0 if none)."""
        out = dict.fromkeys(STATES, 0)
        out.update(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state"))
        return out

    def release(
        self,
        orders: Iterable[int] = (),
        *,
        case: str | None = None,
        everything: bool = False,
        actor: str,
    ) -> int:
        """Release held items: these ids (each must be held), a case's, or all of them.
        Returns how many were released."""

        def decide(rows: list[tuple[Any, ...]], now: float) -> list[dict[str, Any]]:
            self._db.executemany(
                "UPDATE items SET state = 'released', decided_at = ?, actor = ?, reason = NULL "
                "WHERE ord = ?",
                [(now, actor, r[0]) for r in rows],
            )
            return [_audit_entry(r, "released", None) for r in rows]

        return self._select_and_decide(orders, case, everything, check_actor(actor), decide)

    def drop(self, orders: Iterable[int] = (), *, case: str | None = None, actor: str) -> int:
        """Drop held items (these ids, or a case's): each event becomes a placeholder
        (reason ``REVIEW_DROPPED``, the reviewer as actor) and the content leaves the queue.
        Returns how many were dropped."""
        actor = check_actor(actor)

        def decide(rows: list[tuple[Any, ...]], now: float) -> list[dict[str, Any]]:
            updates = []
            for r in rows:
                events = [_placeholder(e, r[2], REVIEW_DROPPED, actor) for e in _decode(r[3])]
                updates.append(
                    (now, actor, REVIEW_DROPPED, _encode(events), PLACEHOLDER_ACTIVITY, r[0])
                )
            self._db.executemany(
                "UPDATE items SET state = 'dropped', decided_at = ?, actor = ?, reason = ?, "
                "events = ?, activity = ?, redacted = '' WHERE ord = ?",
                updates,
            )
            return [_audit_entry(r, "dropped", REVIEW_DROPPED) for r in rows]

        return self._select_and_decide(orders, case, False, actor, decide)

    def redact(self, order: int, fields: Sequence[str], *, actor: str) -> ReviewItem:
        """Redact ``fields`` (attribute keys, or ``resource``) of held item ``order``; returns
        the item as it is now."""
        actor = check_actor(actor)
        if not fields:
            raise ConfigError("name at least one field to redact (--field KEY)")

        def decide(rows: list[tuple[Any, ...]], now: float) -> list[dict[str, Any]]:
            (r,) = rows
            done = set(r[4].split(",")) if r[4] else set()
            events = _decode(r[3])
            for f in fields:
                if f.startswith(RESERVED_PREFIX):
                    raise InputError(f"item {order}: {f!r} is procvault's and cannot be redacted")
                if f in done:
                    raise InputError(f"item {order}: {f!r} is already redacted")
                present = any(
                    (e.resource is not None) if f == RESOURCE_FIELD else e.attr(f) is not None
                    for e in events
                )
                if not present:
                    raise InputError(f"item {order} has no field {f!r}")
            events = [_redacted(e, fields, actor) for e in events]
            red = ",".join(sorted(done | set(fields)))
            self._db.execute(
                "UPDATE items SET events = ?, redacted = ? WHERE ord = ?",
                (_encode(events), red, order),
            )
            return [
                _audit_entry(r, "redacted", REVIEW_REDACTED, dict.fromkeys(fields, REVIEW_REDACTED))
            ]

        self._select_and_decide([order], None, False, actor, decide)
        return self.item(order)

    # ------------------------------------------------------------------ decisions
    def _select_and_decide(
        self,
        orders: Iterable[int],
        case: str | None,
        everything: bool,
        actor: str,
        decide: Callable[[list[tuple[Any, ...]], float], list[dict[str, Any]]],
    ) -> int:
        ids = sorted(set(orders))
        chosen = sum((bool(ids), case is not None, everything))
        if chosen != 1:
            raise ConfigError("choose the items: ids, --case CASE or --all (one of them)")
        if ids:
            marks = ",".join("?" * len(ids))
            return self._decide(f"ord IN ({marks})", ids, actor, decide, expect=ids)
        if case is not None:
            return self._decide("state = 'held' AND case_id = ?", (case,), actor, decide)
        return self._decide("state = 'held'", (), actor, decide)

    def _decide(
        self,
        where: str,
        args: Sequence[Any],
        actor: str,
        decide: Callable[[list[tuple[Any, ...]], float], list[dict[str, Any]]],
        *,
        expect: Sequence[int] | None = None,
        auto: bool = False,
    ) -> int:
        """One decision: select the rows, check them, change them, audit, commit."""
        self.flush()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                f"SELECT ord, case_id, pos, events, redacted, state, actor FROM items "
                f"WHERE {where} ORDER BY ord",
                tuple(args),
            ).fetchall()
            if expect is not None:
                found = {r[0]: r for r in rows}
                for o in expect:
                    if o not in found:
                        raise InputError(f"no item {o} in the review queue {self.directory}")
                    if found[o][5] != "held":
                        by = f" by {found[o][6]}" if found[o][6] else ""
                        raise InputError(f"item {o} is not held: it was {found[o][5]}{by}")
            if not rows:
                db.execute("ROLLBACK")
                return 0
            entries = decide(rows, self._clock())
            self._audit(actor, entries, auto=auto)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return len(rows)

    def _audit(self, actor: str, entries: list[dict[str, Any]], *, auto: bool) -> None:
        path = self.audit_log
        if path is None or not entries:
            return
        from .policy.audit import AuditLog

        deadline = time.monotonic() + 10.0
        while True:
            try:
                log = AuditLog(path)
                break
            except ConfigError:  # another writer holds the file: wait a little
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with log:
            log.open_session(
                {
                    "stage": "review",
                    "actor": actor,
                    "auto": auto,
                    "org": self.meta.get("org", ""),
                    "producer": self.meta.get("producer", ""),
                    "queue": str(self.directory),
                }
            )
            for entry in entries:
                log.append("decision", entry)


def _where(*, state: str | None, case: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses, args = [], []
    if state is not None:
        clauses.append("state = ?")
        args.append(state)
    if case is not None:
        clauses.append("case_id = ?")
        args.append(case)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _audit_entry(
    row: tuple[Any, ...], outcome: str, reason: str | None, fields: dict[str, str] | None = None
) -> dict[str, Any]:
    """An audit ``decision`` entry: references and codes, never a value."""
    entry: dict[str, Any] = {"case": row[1], "order": row[0], "pos": row[2], "outcome": outcome}
    if reason is not None:
        entry["reason"] = reason
    if fields:
        entry["fields"] = fields
    return entry


def _sorted_attrs(attrs: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(attrs, key=lambda kv: kv[0]))


def _placeholder(ev: Event, position: int, reason: str, actor: str) -> Event:
    """``ev`` withheld: a placeholder like the policy stage's (where and why, never what).

    Its time is the emitted event's, not coarsened further: the agent's heartbeats have
    promised the vault that nothing earlier than the item follows, so an earlier time would
    reach the vault's merge late."""
    if not _reviewable(ev):
        return ev  # a marker or a placeholder already
    attrs = [(ATTR_ACTOR, actor), (ATTR_POSITION, position), (ATTR_REASON, reason)]
    for key in (ATTR_POLICY, ATTR_POLICY_VERSION, ATTR_SCOPE):
        value = ev.attr(key)
        if value is not None:
            attrs.append((key, value))
    return Event(
        ev.case_id,
        PLACEHOLDER_ACTIVITY,
        ev.timestamp,
        ev.org,
        None,
        _sorted_attrs(attrs),
        EventKind.PLACEHOLDER,
    )


def _redacted(ev: Event, fields: Sequence[str], actor: str) -> Event:
    """``ev`` with ``fields`` replaced by placeholder values (``resource``: ``None``) and the
    count in ``pv:withheld``."""
    value = redaction_value(ev.attr(ATTR_POLICY_VERSION), actor)
    attrs = dict(ev.attributes)
    n = 0
    resource = ev.resource
    for f in fields:
        if f == RESOURCE_FIELD:
            if resource is not None:
                resource = None
                n += 1
        elif f in attrs:
            attrs[f] = value
            n += 1
    if not n:
        return ev
    counts: dict[str, int] = {}
    summary = attrs.get(ATTR_WITHHELD)
    if isinstance(summary, str) and summary:
        for part in summary.split(","):
            reason, _, count = part.partition(":")
            counts[reason] = int(count) if count.isdigit() else 0
    counts[REVIEW_REDACTED] = counts.get(REVIEW_REDACTED, 0) + n
    attrs[ATTR_WITHHELD] = ",".join(f"{r}:{c}" for r, c in sorted(counts.items()))
    return Event(
        ev.case_id,
        ev.activity,
        ev.timestamp,
        ev.org,
        resource,
        _sorted_attrs(attrs.items()),
        ev.kind,
    )
