"""The state-machine guards added for ProMTEE's BPIC 2012 and motivating rules: correlation with
earlier events (``earlier``), negation (``not``) and conditions on remembered times
(``{first: A, where: [...]}``), their YAML form and their load-time errors."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from procvault.config.rules import load_rules
from procvault.monitor.compliance import Compliance
from procvault.monitor.errors import ConfigError
from procvault.monitor.event import Event

T0 = datetime(2024, 1, 1, 9, tzinfo=UTC)


def ev(case: str, activity: str, minute: float, resource: str | None = None, **attrs: Any) -> Event:
    return Event.create(
        case, activity, T0 + timedelta(minutes=minute), resource=resource, attributes=attrs
    )


def _rules(tmp_path: Path, body: str) -> Compliance:
    p = tmp_path / "rules.yaml"
    p.write_text(textwrap.dedent(body))
    return Compliance(load_rules(p))


EARLIER = """
rules:
  - name: same_clerk
    machine:
      - from: Init
        to: Violated
        on: [Open, Close]
        if: [{earlier: {different: org:resource, of: [Open, Close]}}]
  - name: four_eyes
    machine:
      - from: Init
        to: Violated
        on: [Open, Close]
        if: [{earlier: {same: resource, of: [Open, Close], other_activity: true}}]
  - name: repaired
    machine:
      - {from: Init, to: TemporaryViolated, on: Open}
      - from: TemporaryViolated
        to: TemporarySatisfied
        on: Close
        if: [{not: {earlier: {different: resource, of: [Open], where: [{attr: kind, eq: x}]}}}]
"""


def _run(cc: Compliance, *events: Event) -> dict[str, str]:
    cc.update_many(events)
    return cc.states(events[0].case_id)


def test_earlier_compares_with_earlier_events_only(tmp_path: Path) -> None:
    cc = _rules(tmp_path, EARLIER)
    # one event: nothing earlier, nothing to correlate
    assert _run(cc, ev("a", "Open", 0, "u1"))["same_clerk"] == "Init"
    assert _run(cc, ev("a", "Close", 1, "u1")) == {
        "same_clerk": "Init",
        "four_eyes": "Violated",  # Close by the Open's resource
        "repaired": "TemporarySatisfied",
    }
    assert _run(cc, ev("b", "Open", 0, "u1"), ev("b", "Close", 1, "u2")) == {
        "same_clerk": "Violated",
        "four_eyes": "Init",
        "repaired": "TemporarySatisfied",  # the Open lacks kind=x: not counted
    }
    # other_activity: an earlier event of the *same* activity does not count
    assert _run(cc, ev("c", "Close", 0, "u1"), ev("c", "Close", 1, "u1"))["four_eyes"] == "Init"
    # same_clerk: a second Open by someone else violates too (any earlier event of the set)
    assert _run(cc, ev("d", "Open", 0, "u1"), ev("d", "Open", 1, "u3"))["same_clerk"] == "Violated"


def test_earlier_where_and_missing_values(tmp_path: Path) -> None:
    cc = _rules(tmp_path, EARLIER)
    states = _run(cc, ev("a", "Open", 0, "u1", kind="x"), ev("a", "Close", 1, "u2"))
    assert states["repaired"] == "TemporaryViolated"  # an earlier x-Open by someone else
    # a missing value never correlates, on either side
    states = _run(cc, ev("b", "Open", 0, None), ev("b", "Close", 1, "u2"))
    assert states["same_clerk"] == states["four_eyes"] == "Init"
    states = _run(cc, ev("c", "Open", 0, "u1"), ev("c", "Close", 1, None))
    assert states["same_clerk"] == states["four_eyes"] == "Init"


def test_earlier_values_survive_a_snapshot(tmp_path: Path) -> None:
    cc = _rules(tmp_path, EARLIER)
    cc.update(ev("a", "Open", 0, "u1"))
    fresh = _rules(tmp_path, EARLIER)
    fresh.restore(cc.snapshot("a"))
    assert fresh.snapshot("a") == cc.snapshot("a")
    fresh.update(ev("a", "Close", 1, "u2"))
    assert fresh.states("a")["same_clerk"] == "Violated"


def test_first_time_with_conditions(tmp_path: Path) -> None:
    cc = _rules(
        tmp_path,
        """
        rules:
          - name: done_in_time
            machine:
              - {from: Init, to: TemporaryViolated, on: Task, if: [{attr: lc, eq: schedule}]}
              - from: TemporaryViolated
                to: TemporarySatisfied
                on: Task
                if:
                  - {attr: lc, eq: complete}
                  - elapsed:
                      since: {first: Task, where: [{attr: lc, eq: schedule}]}
                      le: 10m
        """,
    )
    ok = _run(cc, ev("a", "Task", 0, lc="start"), ev("a", "Task", 5, lc="schedule"))
    assert ok["done_in_time"] == "TemporaryViolated"
    # 14 min after the first Task, but 9 after its schedule: in time
    assert _run(cc, ev("a", "Task", 14, lc="complete"))["done_in_time"] == "TemporarySatisfied"


@pytest.mark.parametrize(
    ("guard", "message"),
    [
        ("{earlier: {same: resource}}", r"rules\.yaml:7: rule 'r': earlier needs .*'of: \["),
        (
            "{earlier: {same: resource, different: org, of: [A]}}",
            r"rule 'r': earlier needs \{same: ATTR\} or \{different: ATTR\}",
        ),
        ("{earlier: {same: resource, of: [A], also: 1}}", r"unknown key 'also'"),
        ("{earlier: {same: resource, of: [Zzz]}}", r"unknown activity 'Zzz'"),
        ("{earlier: {same: resource, of: [A], other_activity: 2}}", r"other_activity is true"),
        ("{not: {seen: A}, attr: x}", r"'not' takes one guard"),
        ("{not: {nonsense: 1}}", r"malformed guard \(nonsense\)"),
    ],
)
def test_bad_guards_fail_at_load(tmp_path: Path, guard: str, message: str) -> None:
    p = tmp_path / "rules.yaml"
    p.write_text(
        "rules:\n  - name: r\n    machine:\n      - from: Init\n        to: Violated\n"
        f"        on: A\n        if: [{guard}]\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_rules(p, activities={"A", "B"})
