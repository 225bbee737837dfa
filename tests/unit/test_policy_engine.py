"""The policy stage, clause by clause: what leaves, what becomes a placeholder, and why."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from procvault.generators.xes import read_xes
from procvault.monitor.errors import ConfigError
from procvault.monitor.event import Event, EventKind
from procvault.organization.policy import (
    PLACEHOLDER_ACTIVITY,
    ConsentContext,
    PolicyEngine,
    PseudonymKey,
    Reason,
    consent_of,
    is_placeholder,
    load_policy,
    parse_policy,
)

REPO = Path(__file__).resolve().parents[2]
KEY = PseudonymKey(b"test key: thirty-two bytes long!")
OTHER_KEY = PseudonymKey(b"another test key, also 32 bytes!")
T0 = datetime(2024, 5, 6, 10, 42, 17, 123456, tzinfo=UTC)  # a Monday
RESERVED = {"pv:policy", "pv:policy_version", "pv:scope", "pv:withheld", "pv:scrubbed"}


def _policy(**extra: Any) -> Any:
    doc = {
        "policy": "t",
        "version": 4,
        "org": "shop",
        "mode": "denylist",
        "consent": {"scope": "monitoring"},
        **extra,
    }
    return parse_policy(doc, source="t.yaml")


def _ev(activity: str = "Pay", case: str = "o-1", **kw: Any) -> Event:
    return Event.create(case, activity, kw.pop("ts", T0), org=kw.pop("org", "shop"), **kw)


def _one(engine: PolicyEngine, ev: Event) -> Event:
    out = engine.apply(ev)
    assert len(out) == 1
    return out[0]


def _user_attrs(ev: Event) -> dict[str, Any]:
    return {k: v for k, v in ev.attributes if not k.startswith("pv:")}


# ----------------------------------------------------------------------------- activities
def test_denied_activity_becomes_a_placeholder_without_content() -> None:
    engine = PolicyEngine(
        _policy(activities=["Refund"], pseudonymise={"case_id": True, "resource": True}),
        key=KEY,
        actor="agent-7",
    )
    _one(engine, _ev("Pay", resource="Anna", attributes={"amount": 5}))
    ph = _one(engine, _ev("Refund", resource="Anna", attributes={"amount": 5, "why": "x"}))
    assert is_placeholder(ph)
    assert ph.activity == PLACEHOLDER_ACTIVITY
    assert ph.kind == EventKind.PLACEHOLDER
    assert ph.resource is None
    assert ph.case_id == engine.pseudonym_case("o-1") != "o-1"
    assert ph.org == "shop"
    assert ph.timestamp == datetime(2024, 5, 6, 10, tzinfo=UTC)  # placeholders: hour
    assert ph.attributes_dict() == {
        "pv:actor": "agent-7",
        "pv:policy": "t",
        "pv:policy_version": 4,
        "pv:position": 2,
        "pv:reason": "ACTIVITY_DENIED",
        "pv:scope": "monitoring",
    }
    assert [k for k, _ in ph.attributes] == sorted(k for k, _ in ph.attributes)


def test_allowlist_activities_and_empty_section() -> None:
    engine = PolicyEngine(_policy(mode="allowlist", activities=["Pay", {"regex": "Ship.*"}]))
    assert _one(engine, _ev("Pay")).activity == "Pay"
    assert _one(engine, _ev("Ship by air")).activity == "Ship by air"
    assert _one(engine, _ev("Refund")).attr("pv:reason") == "ACTIVITY_DENIED"
    nothing = PolicyEngine(_policy(mode="allowlist", activities=[]))
    assert is_placeholder(_one(nothing, _ev("Pay")))
    absent = PolicyEngine(_policy(mode="allowlist"))
    assert not is_placeholder(_one(absent, _ev("Pay")))


# ----------------------------------------------------------------------------- resources
def test_resources_deny_and_allow() -> None:
    deny = PolicyEngine(_policy(resources=[{"regex": "driver-.*"}]))
    assert _one(deny, _ev(resource="driver-1")).attr("pv:reason") == "RESOURCE_DENIED"
    assert _one(deny, _ev(resource="clerk-1")).resource == "clerk-1"
    allow = PolicyEngine(_policy(mode="allowlist", resources=["clerk-1"]))
    assert _one(allow, _ev(resource="clerk-2")).attr("pv:reason") == "RESOURCE_DENIED"
    assert _one(allow, _ev(resource="clerk-1")).resource == "clerk-1"
    # An event without a resource reveals no one: resource clauses do not apply to it.
    assert not is_placeholder(_one(allow, _ev(resource=None)))


# ----------------------------------------------------------------------------- attributes
def test_denied_keys_and_values() -> None:
    engine = PolicyEngine(
        _policy(
            attributes=[
                "secret",
                {"key": {"regex": "gps_.*"}},
                {"key": "Age", "values": {"regex": "9[0-9]|1[0-9][0-9]"}},
                {"key": "note", "values": {"regex": "(?i).*accident.*"}, "withhold": "event"},
            ]
        )
    )
    out = _one(
        engine,
        _ev(attributes={"secret": 1, "gps_lat": 52.1, "gps_lon": 4.3, "Age": 93, "ok": True}),
    )
    assert _user_attrs(out) == {"ok": True}
    assert out.attr("pv:withheld") == "ATTRIBUTE_DENIED:3,VALUE_DENIED:1"
    assert _user_attrs(_one(engine, _ev(attributes={"Age": 45}))) == {"Age": 45}
    ph = _one(engine, _ev(attributes={"note": "Minor ACCIDENT at dock 3"}))
    assert ph.attr("pv:reason") == "VALUE_DENIED"
    assert _user_attrs(_one(engine, _ev(attributes={"note": "all fine"}))) == {"note": "all fine"}


def test_allowlisted_keys_and_values() -> None:
    engine = PolicyEngine(
        _policy(
            mode="allowlist",
            attributes=[
                "amount",
                {"key": "currency", "values": {"regex": "EUR|USD"}},
                {"key": "status", "values": "open", "withhold": "event"},
            ],
        )
    )
    out = _one(engine, _ev(attributes={"amount": 3, "currency": "JPY", "iban": "NL..."}))
    assert _user_attrs(out) == {"amount": 3}
    assert out.attr("pv:withheld") == "ATTRIBUTE_DENIED:1,VALUE_DENIED:1"
    assert _user_attrs(_one(engine, _ev(attributes={"currency": "EUR"}))) == {"currency": "EUR"}
    assert _one(engine, _ev(attributes={"status": "closed"})).attr("pv:reason") == "VALUE_DENIED"


def test_value_patterns_see_text_forms() -> None:
    engine = PolicyEngine(
        _policy(attributes=[{"key": "flag", "values": "true"}, {"key": "n", "values": "7"}])
    )
    out = _one(engine, _ev(attributes={"flag": True, "n": 7, "m": 7}))
    assert _user_attrs(out) == {"m": 7}


def test_reserved_keys_in_input_are_dropped() -> None:
    engine = PolicyEngine(_policy())
    forged = _ev(attributes={"pv:policy": "forged", "pv:scope": "anything", "x": 1})
    out = _one(engine, forged)
    assert consent_of(out) == ConsentContext("t", 4, "monitoring")
    assert out.attr("pv:withheld") == "RESERVED:2"
    assert _user_attrs(out) == {"x": 1}


# ----------------------------------------------------------------------------- minimisation
def test_minimisation_per_activity_and_default() -> None:
    keep = PolicyEngine(_policy(minimise={"activities": {"Pay": ["amount"]}}))
    assert _user_attrs(_one(keep, _ev("Pay", attributes={"amount": 1, "who": "x"}))) == {
        "amount": 1
    }
    assert _user_attrs(_one(keep, _ev("Ship", attributes={"who": "x"}))) == {"who": "x"}
    drop = PolicyEngine(_policy(minimise={"activities": {"Pay": ["amount"]}, "default": "drop"}))
    out = _one(drop, _ev("Ship", attributes={"who": "x", "w": 2}))
    assert _user_attrs(out) == {}
    assert out.attr("pv:withheld") == "MINIMISED:2"


def test_promtee_manifest_as_policy_on_sepsis(
    shared_data: Path, sepsis_events: list[Event]
) -> None:
    engine = PolicyEngine.from_file(shared_data / "manifests" / "extraction_manifest_sepsis.json")
    outs = [o for ev in sepsis_events[:3000] for o in engine.apply(ev)]
    assert len(outs) == 3000
    assert all(_user_attrs(o) == {} for o in outs)
    assert all(consent_of(o) is not None for o in outs)


# ----------------------------------------------------------------------------- generalisation
def test_timestamps_and_numbers_are_generalised() -> None:
    engine = PolicyEngine(
        _policy(
            generalise={
                "timestamps": "minute",
                "numbers": {
                    "Age": {"width": 10},
                    "CRP": {"edges": [0, 10, 50]},
                    "w": {"width": 0.5},
                },
            }
        )
    )
    seen = datetime(2024, 5, 6, 9, 30, 59, 999, tzinfo=UTC)
    out = _one(
        engine,
        _ev(attributes={"Age": 47, "CRP": 51.5, "w": 1.7, "b": True, "seen": seen, "Age2": 47}),
    )
    assert out.timestamp == datetime(2024, 5, 6, 10, 42, tzinfo=UTC)
    assert _user_attrs(out) == {
        "Age": 40,
        "Age2": 47,
        "CRP": ">=50",
        "b": True,
        "seen": datetime(2024, 5, 6, 9, 30, tzinfo=UTC),
        "w": 1.5,
    }


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("exact", T0),
        ("second", datetime(2024, 5, 6, 10, 42, 17, tzinfo=UTC)),
        ("minute", datetime(2024, 5, 6, 10, 42, tzinfo=UTC)),
        ("hour", datetime(2024, 5, 6, 10, tzinfo=UTC)),
        ("day", datetime(2024, 5, 6, tzinfo=UTC)),
    ],
)
def test_timestamp_levels(level: str, expected: datetime) -> None:
    engine = PolicyEngine(_policy(generalise={"timestamps": level}))
    assert _one(engine, _ev()).timestamp == expected
    coarse = datetime(2024, 5, 6, tzinfo=UTC)
    assert _one(engine, _ev(ts=coarse)).timestamp == coarse


# ----------------------------------------------------------------------------- pseudonyms
def test_pseudonyms_for_cases_resources_and_attributes() -> None:
    policy = _policy(
        pseudonymise={"case_id": True, "resource": True, "attributes": ["approver", "org:group"]}
    )
    engine = PolicyEngine(policy, key=KEY)
    out = _one(engine, _ev(resource="Anna", attributes={"approver": "Anna", "org:group": "B"}))
    assert out.case_id.startswith("c_") and len(out.case_id) == 26
    assert out.resource is not None and out.resource.startswith("r_")
    # The same person as resource and as approver gets the same pseudonym (SoD still works).
    assert out.attr("approver") == out.resource == engine.pseudonym_resource("Anna")
    assert out.attr("org:group") == engine.pseudonym_resource("B")
    again = PolicyEngine(policy, key=KEY)
    assert _one(again, _ev(resource="Anna")).resource == out.resource
    other = PolicyEngine(policy, key=OTHER_KEY)
    assert _one(other, _ev(resource="Anna")).resource != out.resource
    assert _one(other, _ev()).case_id != out.case_id


def test_shared_case_key_links_a_case_across_organizations() -> None:
    pseudo = {"case_id": True, "resource": True}
    case_key = PseudonymKey(b"consortium case key, 32 bytes!!!")
    supplier = PolicyEngine(
        _policy(org="supplier", pseudonymise=pseudo), key=KEY, case_key=case_key
    )
    carrier = PolicyEngine(
        _policy(org="carrier", pseudonymise=pseudo), key=OTHER_KEY, case_key=case_key
    )
    a = _one(supplier, _ev(org="supplier", resource="Kim"))
    b = _one(carrier, _ev(org="carrier", resource="Kim"))
    assert a.case_id == b.case_id
    assert a.resource != b.resource
    assert supplier.case_key_id == carrier.case_key_id != supplier.key_id


def test_pseudonymising_without_a_key_is_a_clear_error() -> None:
    policy = _policy(pseudonymise={"case_id": True, "resource": True})
    with pytest.raises(ConfigError, match="pseudonymises case ids and resources: it needs"):
        PolicyEngine(policy)
    only_cases = _policy(pseudonymise={"case_id": True})
    engine = PolicyEngine(only_cases, case_key=KEY)
    assert engine.key_id is None and engine.case_key_id == KEY.key_id


def test_the_key_never_shows() -> None:
    secret = b"do-not-print-this-key-0123456789"
    key = PseudonymKey(secret)
    assert secret.decode() not in repr(key)
    assert key.key_id == PseudonymKey(secret).key_id and len(key.key_id) == 16
    with pytest.raises(ValueError) as info:
        PseudonymKey(b"tiny!")
    assert "tiny" not in str(info.value)


def test_key_files_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "org.key"
    path.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    assert PseudonymKey.from_file(path) == PseudonymKey(b"0123456789abcdef0123456789abcdef")
    path.write_bytes(b"tiny\n")
    with pytest.raises(ConfigError, match=r"org\.key: the pseudonym key is too short"):
        PseudonymKey.from_file(path)
    with pytest.raises(ConfigError, match="cannot read the key file"):
        PseudonymKey.from_file(tmp_path / "missing.key")
    monkeypatch.delenv("PROCVAULT_POLICY_KEY", raising=False)
    assert PseudonymKey.from_env() is None
    monkeypatch.setenv("PROCVAULT_POLICY_KEY", "x" * 40)
    assert PseudonymKey.from_env() == PseudonymKey(b"x" * 40)


# ----------------------------------------------------------------------------- consent, org
def test_consent_on_every_event_markers_included() -> None:
    engine = PolicyEngine(_policy(activities=["Refund"]))
    outs = [
        _one(engine, e) for e in (_ev("Pay"), _ev("Refund"), Event.case_end("o-1", T0, org="shop"))
    ]
    assert {consent_of(o) for o in outs} == {ConsentContext("t", 4, "monitoring")}
    assert outs[2].kind == EventKind.CASE_END


def test_other_organizations_events_are_withheld() -> None:
    engine = PolicyEngine(_policy())
    ph = _one(engine, _ev(org="carrier"))
    assert ph.attr("pv:reason") == "OTHER_ORG"
    assert ph.org == "shop"  # the placeholder is the shop's statement, on the shop's topic
    assert _one(engine, _ev(org="")).org == "shop"  # unassigned events take the policy's org


def test_positions_count_per_case_and_reset_at_case_end() -> None:
    engine = PolicyEngine(_policy(activities=["X"]))
    for _ in range(3):
        engine.apply(_ev("Pay", case="a"))
    engine.apply(_ev("Pay", case="b"))
    assert _one(engine, _ev("X", case="a")).attr("pv:position") == 4
    assert _one(engine, _ev("X", case="b")).attr("pv:position") == 2
    engine.apply(Event.case_end("a", T0))
    assert _one(engine, _ev("X", case="a")).attr("pv:position") == 1


# ----------------------------------------------------------------------------- scrubbing
def test_scrubbing_is_off_by_default_and_one_flag_turns_it_on() -> None:
    policy = _policy(scrub={"phone_regions": ["NL"], "names": ["Jan de Vries"]})
    text = "Jan de Vries belt 06-12345678 terug"
    off = PolicyEngine(policy)
    assert off.scrub_enabled is False
    assert _one(off, _ev(attributes={"note": text})).attr("note") == text
    on = PolicyEngine(policy, scrub=True)
    out = _one(on, _ev(attributes={"note": text, "code": "A"}))
    assert out.attr("note") == "[NAME] belt [PHONE] terug"
    assert out.attr("pv:scrubbed") == "name:1,phone:1"
    decision = on.decide(_ev(attributes={"note": "mail a@b.org"}))
    assert decision.scrubbed == (("email", 1),)
    assert on.stats.scrubbed == {"name": 1, "phone": 1, "email": 1}
    enabled = _policy(scrub={"enabled": True, "skip_attributes": ["code"]})
    kept = _one(PolicyEngine(enabled), _ev(attributes={"code": "a@b.org", "n": "a@b.org"}))
    assert kept.attr("code") == "a@b.org" and kept.attr("n") == "[EMAIL]"


# ----------------------------------------------------------------------------- decisions
def test_decide_reports_fields_and_stats() -> None:
    engine = PolicyEngine(_policy(activities=["X"], attributes=["secret"]))
    d = engine.decide(_ev(attributes={"secret": 1, "ok": 2}))
    assert d.withheld is None and d.fields == (("secret", "ATTRIBUTE_DENIED"),)
    assert d.position == 1
    d = engine.decide(_ev("X"))
    assert d.withheld is Reason.ACTIVITY_DENIED
    stats = engine.stats
    assert (stats.events, stats.emitted, stats.placeholders) == (2, 1, 1)
    assert stats.withheld == {"ACTIVITY_DENIED": 1}
    assert stats.fields == {"ATTRIBUTE_DENIED": 1}


def test_hospital_policy_on_sepsis(sepsis_events: list[Event]) -> None:
    engine = PolicyEngine.from_file(REPO / "policies" / "orgs" / "hospital.yaml", key=KEY)
    forbidden = {"Diagnose"} | {
        k for e in sepsis_events for k, _ in e.attributes if k.startswith("Diagnostic")
    }
    n = 0
    for ev in sepsis_events:
        [out] = engine.apply(ev)
        n += 1
        assert consent_of(out) == ConsentContext("hospital-sepsis", 1, "sepsis-pathway-monitoring")
        assert not forbidden & {k for k, _ in out.attributes}
        if ev.kind == EventKind.ACTIVITY and not is_placeholder(out):
            assert out.activity not in {"Release D", "Release E"}
            age = out.attr("Age")
            assert age is None or (isinstance(age, int) and age % 10 == 0 and age < 90)
            assert out.timestamp.second == 0 and out.timestamp.microsecond == 0
        assert out.case_id.startswith("c_")
    stats = engine.stats
    assert n == len(sepsis_events) == stats.events + stats.markers
    assert stats.emitted + stats.placeholders == stats.events
    assert stats.withheld["ACTIVITY_DENIED"] == 30  # Release D (24) and Release E (6)
    assert stats.withheld["OUTSIDE_WINDOW"] > 0


@pytest.fixture(scope="module")
def sepsis_events(sepsis_log: Path) -> list[Event]:
    return list(read_xes(sepsis_log).replay(end_markers=True))


def test_load_policy_is_what_from_file_compiles() -> None:
    path = REPO / "policies" / "orgs" / "supplier.yaml"
    assert PolicyEngine.from_file(path, key=KEY).policy == load_policy(path)
