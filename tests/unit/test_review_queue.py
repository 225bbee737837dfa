"""The review queue (generators/review.py) and ``procvault review``: no Kafka."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from procvault.cli import main
from procvault.monitor.errors import ConfigError, InputError
from procvault.monitor.event import Event
from procvault.organization.policy import PolicyEngine, parse_policy, verify_audit_log
from procvault.organization.review import (
    HOLD_TIMER,
    QUEUE_FILE,
    REVIEW_DROPPED,
    ReviewQueue,
)

T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _ev(case: str, activity: str, minute: int, **attrs: object) -> Event:
    return Event.create(
        case,
        activity,
        T0 + timedelta(minutes=minute),
        org="shop",
        resource="Anna",
        attributes=attrs,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queue(tmp_path: Path, clock: Clock) -> Iterator[ReviewQueue]:
    q = ReviewQueue.create(
        tmp_path / "review",
        org="shop",
        producer="agent-1",
        audit_log=tmp_path / "audit.jsonl",
        clock=clock,
    )
    yield q
    q.close()


def _fill(q: ReviewQueue) -> None:
    q.admit(0, [_ev("o-1", "Pay", 0, note="call Anna", amount=12)])
    q.admit(2, [_ev("o-2", "Pay", 1, note="secret")])
    q.admit(3, [_ev("o-1", "Ship", 2, note="x")])
    q.admit(5, [Event.case_end("o-1", T0 + timedelta(minutes=3), org="shop")])
    q.admit(6, [_ev("o-2", "Ship", 4)])
    q.flush()


def test_items_are_held_until_released_and_markers_pass(queue: ReviewQueue) -> None:
    _fill(queue)
    assert [queue.ready(o) is None for o in (0, 2, 3, 5, 6)] == [True, True, True, False, True]
    assert queue.counts() == {"held": 4, "released": 1, "dropped": 0}
    assert [it.position for it in queue.items(state=None)] == [1, 1, 2, 0, 2]
    assert queue.release([0], actor="alice") == 1
    [out] = queue.ready(0)  # type: ignore[misc]
    assert out == _ev("o-1", "Pay", 0, note="call Anna", amount=12)
    assert queue.ready(2) is None
    assert queue.release(case="o-2", actor="bob") == 2
    assert queue.ready(2) is not None and queue.ready(6) is not None and queue.ready(3) is None
    assert queue.release(everything=True, actor="bob") == 1
    assert queue.counts() == {"held": 0, "released": 5, "dropped": 0}
    with pytest.raises(LookupError):
        queue.ready(4)


def test_drop_leaves_a_placeholder_and_deletes_the_content(queue: ReviewQueue) -> None:
    engine = PolicyEngine(
        parse_policy(
            {
                "policy": "shop-p",
                "version": 4,
                "org": "shop",
                "mode": "denylist",
                "consent": {"scope": "monitoring"},
            }
        )
    )
    [emitted] = engine.apply(_ev("o-1", "Pay", 0, note="call Anna"))
    queue.admit(0, [emitted])
    queue.admit(1, engine.apply(_ev("o-1", "Ship", 1, note="leave at door")))
    assert queue.drop([1], actor="carol") == 1
    item = queue.item(1)
    assert item.state == "dropped" and item.actor == "carol" and item.reason == REVIEW_DROPPED
    assert item.activity == "pv:withheld"
    [ph] = queue.ready(1)  # type: ignore[misc]
    assert ph.activity == "pv:withheld" and ph.resource is None and ph.case_id == "o-1"
    assert ph.timestamp == T0 + timedelta(minutes=1)
    assert dict(ph.attributes) == {
        "pv:actor": "carol",
        "pv:policy": "shop-p",
        "pv:policy_version": 4,
        "pv:position": 2,
        "pv:reason": "REVIEW_DROPPED",
        "pv:scope": "monitoring",
    }
    queue.close()  # the last connection: the write-ahead log is folded in and removed
    raw = (queue.directory / "review.sqlite").read_bytes()
    assert b"call Anna" in raw and b"leave at door" not in raw


def test_redact_replaces_values_and_counts_them(queue: ReviewQueue) -> None:
    _fill(queue)
    item = queue.redact(0, ["note", "resource"], actor="alice")
    assert item.redacted == ("note", "resource") and item.state == "held"
    [ev] = item.events
    assert ev.attr("note") == "pv:redacted;reason=REVIEW_REDACTED;policy_version=-;actor=alice"
    assert ev.attr("amount") == 12 and ev.resource is None
    assert ev.attr("pv:withheld") == "REVIEW_REDACTED:2"
    assert "call Anna" not in json.dumps(str(ev))
    with pytest.raises(InputError, match="already redacted"):
        queue.redact(0, ["note"], actor="alice")
    with pytest.raises(InputError, match="has no field 'colour'"):
        queue.redact(0, ["colour"], actor="alice")
    with pytest.raises(InputError, match="procvault's"):
        queue.redact(0, ["pv:withheld"], actor="alice")
    queue.redact(0, ["amount"], actor="bob")
    [ev] = queue.item(0).events
    assert ev.attr("pv:withheld") == "REVIEW_REDACTED:3"
    assert ev.attr("amount") == "pv:redacted;reason=REVIEW_REDACTED;policy_version=-;actor=bob"


def test_redaction_merges_with_the_policy_stage_withheld_count(queue: ReviewQueue) -> None:
    engine = PolicyEngine(
        parse_policy(
            {
                "policy": "p",
                "version": 2,
                "org": "shop",
                "mode": "denylist",
                "consent": {"scope": "s"},
                "attributes": [{"key": "amount"}],
            }
        )
    )
    queue.admit(0, engine.apply(_ev("o-1", "Pay", 0, note="n", amount=3)))
    [ev] = queue.redact(0, ["note"], actor="alice").events
    assert ev.attr("pv:withheld") == "ATTRIBUTE_DENIED:1,REVIEW_REDACTED:1"
    assert ev.attr("note") == "pv:redacted;reason=REVIEW_REDACTED;policy_version=2;actor=alice"


def test_decisions_need_a_held_item_and_a_valid_actor(queue: ReviewQueue) -> None:
    _fill(queue)
    queue.release([0], actor="alice")
    with pytest.raises(InputError, match="item 0 is not held: it was released by alice"):
        queue.drop([0], actor="bob")
    with pytest.raises(InputError, match="item 5 is not held"):
        queue.release([5], actor="bob")
    with pytest.raises(InputError, match="no item 99"):
        queue.release([2, 99], actor="bob")
    assert queue.ready(2) is None  # nothing of a refused batch was applied
    with pytest.raises(ConfigError, match="--actor must be"):
        queue.release([2], actor="Bob Smith")
    with pytest.raises(ConfigError, match="one of them"):
        queue.release([2], everything=True, actor="bob")
    assert queue.release(case="nobody", actor="bob") == 0


def test_hold_period_releases_unreviewed_items_once(tmp_path: Path, clock: Clock) -> None:
    audit = tmp_path / "audit.jsonl"
    with ReviewQueue.create(
        tmp_path / "r", org="shop", producer="a", hold=30, audit_log=audit, clock=clock
    ) as q:
        _fill(q)
        q.drop([3], actor="alice")
        clock.now += 29.9
        assert q.ready(0) is None
        clock.now += 0.2
        assert q.ready(0) is not None
        items = {it.order: it for it in q.items(state=None)}
    assert {o: (it.state, it.actor) for o, it in items.items()} == {
        0: ("released", HOLD_TIMER),
        2: ("released", HOLD_TIMER),
        3: ("dropped", "alice"),
        5: ("released", None),
        6: ("released", HOLD_TIMER),
    }
    report = verify_audit_log(audit)
    assert report.sessions == 2 and report.outcomes == {"dropped": 1, "released": 3}
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [e["actor"] for e in entries if e["type"] == "open"] == ["alice", HOLD_TIMER]
    released = [e for e in entries if e.get("outcome") == "released"]
    assert {e["reason"] for e in released} == {"HOLD_EXPIRED"}
    assert not any("call Anna" in line for line in audit.read_text().splitlines())


def test_a_restarted_agent_keeps_rows_and_decisions(tmp_path: Path, clock: Clock) -> None:
    with ReviewQueue.create(tmp_path / "r", org="shop", producer="a", clock=clock) as q:
        _fill(q)
        q.redact(0, ["note"], actor="alice")
        q.drop([2], actor="alice")
        q.mark_published(0)
    clock.now += 100
    with ReviewQueue.create(tmp_path / "r", org="shop", producer="a", hold=5, clock=clock) as q:
        # re-admitted with different content (a policy run again): the stored rows stand
        q.admit(2, [_ev("o-2", "Pay", 1, note="secret")])
        q.admit(3, [_ev("o-1", "Ship", 2, note="changed")])
        q.admit(7, [_ev("o-3", "Pay", 9)])
        q.flush()
        assert q.item(2).state == "dropped" and q.item(0).redacted == ("note",)
        assert q.item(3).events[0].attr("note") == "x" and q.item(3).held_at == 1_700_000_000
        assert q.item(0).published and not q.item(2).published
        assert q.ready(3) is not None  # held 100 s > 5 s
        assert q.ready(7) is None  # admitted just now
        assert q.item(7).position == 1
    with pytest.raises(ConfigError, match="belongs to org 'shop', not 'bank'"):
        ReviewQueue.create(tmp_path / "r", org="bank", producer="a")
    with pytest.raises(ConfigError, match="no review queue here"):
        ReviewQueue.open(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="--hold must be > 0"):
        ReviewQueue.create(tmp_path / "r", org="shop", producer="a", hold=0)


# ----------------------------------------------------------------------------- the CLI
def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_review_cli_lists_shows_and_decides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = tmp_path / "audit.jsonl"
    with ReviewQueue.create(tmp_path / "r", org="shop", producer="a", audit_log=audit) as q:
        _fill(q)
    d = str(tmp_path / "r")
    rc, out, err = _run(capsys, "review", "list", "--review", d)
    assert rc == 0 and [line.split()[0] for line in out.splitlines()[1:]] == ["0", "2", "3", "6"]
    assert "4 held, 1 released, 0 dropped" in err
    rc, out, _ = _run(capsys, "review", "show", "2", "--review", d, "--json")
    shown = json.loads(out)
    assert shown["state"] == "held" and shown["events"][0]["attributes"]["note"] == "secret"
    rc, out, _ = _run(
        capsys, "review", "redact", "2", "--field", "note", "--review", d, "--actor", "al"
    )
    assert rc == 0 and "redacted note" in out
    rc, out, _ = _run(capsys, "review", "drop", "3", "--review", d, "--actor", "al")
    assert rc == 0 and "dropped 1 item" in out
    rc, out, _ = _run(capsys, "review", "release", "--case", "o-2", "--review", d, "--actor", "al")
    assert rc == 0 and "released 2 item" in out
    rc, out, _ = _run(capsys, "review", "list", "--review", d, "--state", "all", "--json")
    states = {json.loads(line)["id"]: json.loads(line)["state"] for line in out.splitlines()}
    assert states == {0: "held", 2: "released", 3: "dropped", 5: "released", 6: "released"}
    rc, out, _ = _run(capsys, "review", "release", "--all", "--review", d, "--actor", "al")
    assert rc == 0 and "released 1 item" in out
    rc, _, err = _run(capsys, "review", "release", "3", "--review", d, "--actor", "al")
    assert rc == 2 and err.strip() == "procvault: error: item 3 is not held: it was dropped by al"
    rc, _, err = _run(capsys, "review", "list", "--review", str(tmp_path / "none"))
    assert rc == 2 and "no review queue here" in err and err.count("\n") == 1
    rc, _, err = _run(capsys, "review", "drop", "0", "--review", d, "--actor", "a b")
    assert rc == 2 and "--actor must be" in err
    report = verify_audit_log(audit)
    assert report.outcomes == {"redacted": 1, "dropped": 1, "released": 3}
    assert "secret" not in audit.read_text()


def test_published_items_lose_their_content_and_keep_the_decision(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "r" / QUEUE_FILE
    with ReviewQueue.create(tmp_path / "r", org="shop", producer="a", clock=clock) as q:
        _fill(q)
        q.redact(0, ["note"], actor="alice")
        q.release([0, 2], actor="alice")
    assert b"secret" in path.read_bytes()  # held content is on disk until it has left
    with ReviewQueue.create(tmp_path / "r", org="shop", producer="a", clock=clock) as q:
        q.mark_published(0)
        gone = q.item(0)
        assert gone.published and gone.events == () and gone.redacted == ("note",)
        assert gone.state == "released" and gone.actor == "alice"
        assert q.item(2).events and not q.item(2).published
        q.mark_published(0)  # nothing new
        assert not q.item(2).published
    with ReviewQueue.open(tmp_path / "r") as q:  # a new handle finds where marking stopped
        q.mark_published(2)
        assert [it.published for it in q.items(state=None)] == [True, True, False, False, False]
        assert q.item(3).events[0].attr("note") == "x"
    assert b"secret" not in path.read_bytes()  # overwritten, not just unlinked (secure_delete)
