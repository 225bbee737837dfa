"""DP policy files (policies/dp/*.yaml) and signed release records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from procvault.config.dp import load_dp_policy, parse_dp_policy
from procvault.monitor.errors import ConfigError
from procvault.monitor.privacy import (
    DeterministicReleaser,
    KnownKeys,
    OpenDPReleaser,
    PaneAggregate,
    PaneClock,
    PaneReleaser,
    ReleasePlan,
    epsilon_from_advantage,
)
from procvault.streams.envelope import VaultKeys
from procvault.streams.release import ReleaseSignatureError, record_key, sign_record, verify_record

POLICIES = Path(__file__).resolve().parents[2] / "policies" / "dp"


def _doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "version": 1,
        "budget": {"epsilon": 1.0, "window": 24, "delta": 1e-6},
        "panes": {"length": "1h"},
    }
    doc.update(over)
    return doc


@pytest.mark.parametrize("path", sorted(POLICIES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_policies_load_and_prove(path: Path) -> None:
    settings = load_dp_policy(path)
    plan = ReleasePlan.build(settings, KnownKeys.build(["A", "B"], rules=["R1"]))
    OpenDPReleaser(plan)


def test_budget_from_a_guessing_advantage() -> None:
    s = parse_dp_policy(_doc(budget={"advantage": 0.2, "window": 6}))
    assert s.budget.epsilon == pytest.approx(epsilon_from_advantage(0.2))
    assert s.budget.epsilon == pytest.approx(2 * 0.405465, rel=1e-5)
    assert s.budget.advantage == 0.2


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"version": 2}, r"demo\.yaml: version: must be 1, got 2"),
        ({"budgte": {}}, r"budgte: unknown key \(did you mean 'budget'\?\)"),
        (
            {"budget": {"epsilon": 1, "window": 0}},
            r"budget\.window: must be an integer >= 1, got 0",
        ),
        ({"budget": {"window": 3}}, "give epsilon .per case. or advantage"),
        (
            {"budget": {"advantage": 1.5, "window": 3}},
            r"budget: the guessing advantage must be in \(0, 1\)",
        ),
        ({"budget": {"epsilon": -1, "window": 3}}, "budget: epsilon must be positive and finite"),
        ({"panes": {"length": "soon"}}, "panes.length: 'soon' is not a duration"),
        ({"panes": {"length": "0s"}}, "panes: pane length must be positive"),
        ({"panes": {}}, r"panes\.length: is required"),
        (
            {"statistics": {"activities": {}}},
            r"statistics\.activities: unknown key \(did you mean 'activity'\?\)",
        ),
        (
            {"statistics": {"activity": {"max_keys": 0}}},
            r"statistics\.activity\.max_keys: must be an integer >= 1",
        ),
        (
            {"statistics": {"activity": {"clamp": 4}}},
            r"statistics\.activity: a count takes no clamp",
        ),
        (
            {"statistics": {"tokens": {"unit": "1h"}}},
            r"statistics\.tokens: not a duration, it takes no unit",
        ),
        (
            {"running_totals": {"statistics": ["tokens"]}},
            "running_totals: count statistics only, not 'tokens'",
        ),
        ({"running_totals": {"levels": 0}}, r"running_totals\.levels: must be an integer >= 1"),
        ({"windows": ["90m"]}, "window 1:30:00 is not a positive multiple of the pane length"),
        ({"allocation": "greedy"}, "allocation: must be a mapping"),
        ({"allocation": {"pane_epsilon": 3}}, r"pane_epsilon must be in \(0, 1.0\]"),
    ],
)
def test_policy_errors_name_the_file_and_the_key(over: dict[str, Any], match: str) -> None:
    doc = _doc(**over)
    with pytest.raises(ConfigError, match=match):
        parse_dp_policy(doc, source="demo.yaml")


def test_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such DP policy file"):
        load_dp_policy(tmp_path / "missing.yaml")
    dup = tmp_path / "dup.yaml"
    dup.write_text("version: 1\nversion: 1\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml:2: key 'version' appears twice"):
        load_dp_policy(dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: YAML syntax error"):
        load_dp_policy(bad)


def test_durations_and_windows_parse() -> None:
    s = parse_dp_policy(
        _doc(
            panes={"length": "15m", "allowed_lateness": "30s", "max_panes_per_case": 8},
            windows=["1h", "1d"],
            running_totals=None,
            allocation={"pane_epsilon": 0.5},
        )
    )
    assert s.panes.length == timedelta(minutes=15)
    assert s.panes.allowed_lateness == timedelta(seconds=30)
    assert s.window_panes == (4, 96)
    assert s.running_totals is None and s.pane_epsilon == 0.5 and s.max_panes_per_case == 8


# ---------------------------------------------------------------------------- signing
def _records() -> list[Any]:
    settings = parse_dp_policy(_doc(windows=["1h", "2h"]))
    plan = ReleasePlan.build(settings, KnownKeys.build(["A"]))
    rel = PaneReleaser(plan, DeterministicReleaser(plan))
    clock = PaneClock(settings.panes)
    out: list[Any] = []
    for i in range(3):
        out.extend(rel.release(PaneAggregate.empty(clock.pane(1000 + i))))
    return out


def test_signed_records_round_trip_and_tampering_is_caught() -> None:
    keys = VaultKeys.generate(epoch=5)
    announced = {5: keys.public()}
    for record in _records():
        signed = sign_record(record, keys)
        assert verify_record(signed, announced) == record
        tampered = signed.replace(b'"index":1001', b'"index":1002')
        if tampered != signed:
            with pytest.raises(ReleaseSignatureError, match="bad signature"):
                verify_record(tampered, announced)
    other = VaultKeys.generate(epoch=5)
    with pytest.raises(ReleaseSignatureError, match="bad signature"):
        verify_record(sign_record(_records()[0], other), announced)
    with pytest.raises(ReleaseSignatureError, match="no announced keys for epoch 6"):
        verify_record(sign_record(_records()[0], VaultKeys.generate(epoch=6)), announced)
    with pytest.raises(ReleaseSignatureError, match="malformed"):
        verify_record(b"{}", announced)


def test_record_keys_let_a_republished_record_replace_itself() -> None:
    keys = [record_key(r) for r in _records()]
    assert keys == [b"pane/1000", b"pane/1001", b"window/2/1001", b"pane/1002", b"window/2/1002"]
    assert datetime(2024, 1, 1, tzinfo=UTC)  # keys carry no time
