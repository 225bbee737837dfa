"""The compliance engine through its public behaviour: deadlines by watermark, correlation,
snapshots, counters, the Vault and CLI wiring, and rule files that fail at load time."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from procvault.cli import main
from procvault.config.rules import load_rules
from procvault.monitor.compliance import (
    AttrTest,
    Compliance,
    Correlation,
    DeclareRule,
    Window,
)
from procvault.monitor.durations import parse_duration
from procvault.monitor.errors import ConfigError
from procvault.monitor.event import Event
from procvault.monitor.vault import Vault

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def ev(case: str, activity: str, minutes: float, **attrs: object) -> Event:
    resource = attrs.pop("resource", None)
    return Event.create(
        case,
        activity,
        T0 + timedelta(minutes=minutes),
        resource=resource,
        attributes=attrs,
    )


WITHIN = DeclareRule("iv_within_1h", "response", "Triage", "IV", window=Window(within=HOUR))


# ----------------------------------------------------------------------------- time
def test_within_turns_violated_at_the_deadline_by_watermark() -> None:
    cc = Compliance([WITHIN])
    assert cc.update(ev("c1", "Triage", 0)) == ()
    assert cc.states("c1") == {"iv_within_1h": "TemporaryViolated"}
    assert cc.advance(T0 + timedelta(minutes=59)) == ()
    assert cc.advance(T0 + HOUR) == ()  # an IV at exactly one hour is still in time
    (alert,) = cc.advance(T0 + HOUR + timedelta(microseconds=1))
    assert (alert.rule, alert.case_id, alert.old, alert.new) == (
        "iv_within_1h",
        "c1",
        "TemporaryViolated",
        "Violated",
    )
    assert alert.timestamp == T0 + HOUR and alert.activity == ""
    # permanent: a late IV does not repair it, and the watermark never moves back
    assert cc.update(ev("c1", "IV", 70)) == ()
    assert cc.advance(T0) == ()
    assert cc.complete("c1") == {"iv_within_1h": "Violated"}


def test_deadline_fires_on_another_cases_event_and_in_time_target_satisfies() -> None:
    cc = Compliance([WITHIN])
    cc.update(ev("slow", "Triage", 0))
    cc.update(ev("fast", "Triage", 10))
    assert cc.update(ev("fast", "IV", 59)) == ()  # 49 minutes after its triage
    (alert,) = cc.update(ev("other", "Registration", 61))  # the watermark passes slow's hour
    assert alert.case_id == "slow" and alert.new == "Violated"
    assert cc.complete("fast") == {"iv_within_1h": "Satisfied"}


def test_vault_tick_reports_deadline_alerts_and_case_results_carry_rules() -> None:
    vault = Vault(compliance=Compliance([WITHIN]))
    assert not vault.update(ev("c1", "Triage", 0))
    up = vault.tick(T0 + 2 * HOUR)
    assert [a.new for a in up.alerts] == ["Violated"] and not up.completed
    up = vault.update(Event.case_end("c1", T0 + 2 * HOUR))
    (result,) = up.completed
    assert result.rules == {"iv_within_1h": "Violated"}
    assert result.to_dict() == {
        "case": "c1",
        "events": 1,
        "completed_by": "end_marker",
        "rules": {"iv_within_1h": "Violated"},
    }
    assert vault.update(ev("c1", "IV", 130)).deviations[0].kind == "after_completion"


def test_after_window_and_snapshot_reregisters_deadlines() -> None:
    rule = DeclareRule(
        "cool_down", "response", "A", "B", window=Window(after=timedelta(minutes=10), within=HOUR)
    )
    cc = Compliance([rule])
    cc.update(ev("c", "A", 0))
    cc.update(ev("c", "B", 5))  # too early: does not count
    assert cc.states("c") == {"cool_down": "TemporaryViolated"}
    snap = cc.snapshot("c")
    fresh = Compliance([rule])
    fresh.restore(snap)
    (alert,) = fresh.advance(T0 + HOUR + timedelta(seconds=1))
    assert alert.new == "Violated"
    cc.update(ev("c", "B", 30))
    assert cc.complete("c") == {"cool_down": "Satisfied"}


# ----------------------------------------------------------------------------- data
def test_correlation_separation_and_binding_of_duties() -> None:
    four_eyes = DeclareRule(
        "four_eyes",
        "not_coexistence",
        "Fill in container",
        "Check container",
        correlation=(Correlation("logistics_operator", same=True),),
    )
    same_clerk = DeclareRule(
        "same_clerk",
        "response",
        "Open",
        "Close",
        correlation=(Correlation("resource", same=True),),
    )
    cc = Compliance([four_eyes, same_clerk])
    cc.update(ev("ok", "Fill in container", 0, logistics_operator="A"))
    cc.update(ev("ok", "Check container", 1, logistics_operator="B"))
    cc.update(ev("ok", "Open", 2, resource="r1"))
    cc.update(ev("ok", "Close", 3, resource="r2"))  # another clerk: Open stays pending
    assert cc.states("ok") == {"four_eyes": "TemporarySatisfied", "same_clerk": "TemporaryViolated"}
    cc.update(ev("ok", "Close", 4, resource="r1"))
    assert cc.complete("ok") == {"four_eyes": "Satisfied", "same_clerk": "Satisfied"}
    cc.update(ev("bad", "Check container", 0, logistics_operator="A"))
    (alert,) = cc.update(ev("bad", "Fill in container", 1, logistics_operator="A"))
    assert (alert.rule, alert.activity) == ("four_eyes", "Fill in container")
    counters = cc.counters()
    assert counters["four_eyes"].violations == 1
    assert counters["four_eyes"].completed == {"Satisfied": 1}


def test_conditions_select_activations_and_targets() -> None:
    rule = DeclareRule(
        "big_orders_approved",
        "precedence",
        "Ship",
        "Approve",
        activation_if=(AttrTest("amount", "gt", 1000),),
        target_if=(AttrTest("level", "in", frozenset({"manager", "director"})),),
    )
    cc = Compliance([rule])
    cc.update(ev("small", "Ship", 0, amount=10))
    cc.update(ev("big", "Approve", 0, level="clerk"))
    (alert,) = cc.update(ev("big", "Ship", 1, amount=5000))
    assert alert.case_id == "big"
    assert cc.complete("small") == {"big_orders_approved": "Satisfied"}


# ----------------------------------------------------------------------------- rule files
def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "rules.yaml"
    p.write_text(textwrap.dedent(body))
    return p


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            """
            rules:
              - name: r1
                template: respons
                activation: A
                target: B
            """,
            r"rules\.yaml:3: rule 'r1': unknown template 'respons' \(did you mean 'response'\?\)",
        ),
        (
            """
            rules:
              - name: r1
                template: response
                activation: Triag
                target: IV
            """,
            r"rules\.yaml:3: rule 'r1': unknown activity 'Triag' \(did you mean 'Triage'\?\)",
        ),
        (
            """
            rules:
              - name: r1
                template: response
                activation: Triage
                target: IV
                activation_if:
                  - {attr: Age, gt: 60, lt: 90}
            """,
            r"rules\.yaml:8: rule 'r1': activation_if: malformed condition on 'Age'",
        ),
        (
            """
            rules:
              - name: r1
                template: response
                activation: Triage
                target: IV
                within: one hour
            """,
            r"rules\.yaml:3: rule 'r1': 'one hour' is not a duration",
        ),
        (
            """
            rules:
              - name: r1
                template: precedence
                activation: Triage
            """,
            r"rules\.yaml:3: rule 'r1': precedence needs a target",
        ),
        (
            """
            rules:
              - name: r1
                machine:
                  - {from: Init, to: Done, on: Triage}
            """,
            r"rules\.yaml:5: rule 'r1': unknown state 'Done'",
        ),
        (
            """
            rules:
              - name: r1
                machine:
                  - {from: Init, to: Violated, on: IV, if: [{elapsed: {since: {first: Triage}}}]}
            """,
            r"rules\.yaml:5: rule 'r1': give exactly one comparison",
        ),
        (
            """
            rules:
              - name: r1
                template: existence
                activation: IV
              - name: r1
                template: absence
                activation: IV
            """,
            r"rules\.yaml:6: rule name 'r1' is already used at .*rules\.yaml:3",
        ),
        ("rules:\n  - name: [unclosed\n", r"rules\.yaml:3: YAML syntax error"),
    ],
)
def test_bad_rules_fail_at_load_with_file_line_and_reason(
    tmp_path: Path, body: str, message: str
) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError, match=message):
        load_rules(path, activities={"Triage", "IV", "Registration"})


def test_shipped_rule_files_load_against_their_models_activities(shared_data: Path) -> None:
    from procvault.config.models import load_model

    repo = Path(__file__).resolve().parents[2]
    for rules, model in (
        ("sepsis.yaml", "models/promtee/pnml/sepsis.pnml"),
        ("traffic.yaml", "models/pm4py/roadtraffic.pnml"),
    ):
        net = load_model(shared_data / model, final_marking=None).net
        labels = {t.label for t in net.transitions if t.label}
        assert load_rules(repo / "policies" / "rules" / rules, activities=labels)
    assert parse_duration("1h30m") == timedelta(minutes=90)


def test_cli_monitor_with_rules_only(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "cases.jsonl"
    code = main(
        [
            "monitor",
            str(shared_data / "logs" / "roadtraffic100traces.xes.gz"),
            "--rules",
            str(repo / "policies" / "rules" / "traffic.yaml"),
            "--case-results",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cases"] == 100 and summary["events"] == 390
    assert summary["rule_states"]["no_insert_no_collect"] == {"Satisfied": 100}
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 100 and "fitness" not in lines[0]
    assert set(lines[0]["rules"]) >= {"appeal_notcollect", "case_start"}
    assert main(["monitor", str(shared_data / "logs" / "roadtraffic100traces.xes.gz")]) == 2
