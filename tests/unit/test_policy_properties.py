"""Properties of the policy stage over random policies and events (Hypothesis).

* Nothing denied is ever emitted: no denied activity, resource, attribute key or attribute
  value (checked against an oracle written from the policy's patterns, independently of the
  engine's compiled matchers and caches).
* Every input event is accounted for as exactly one emitted event or one placeholder, and a
  placeholder carries no content of the event it replaces.
* Pseudonyms are stable under one key and differ across keys.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.event import Event, EventKind
from procvault.organization.policy import (
    PLACEHOLDER_ACTIVITY,
    PolicyEngine,
    Pseudonymizer,
    PseudonymKey,
    consent_of,
    is_placeholder,
    parse_policy,
)
from procvault.organization.policy.patterns import Pattern, value_text
from procvault.organization.policy.schema import Policy

ACTIVITIES = ["A", "B", "Pay", "Release A", "Release B", "Ship"]
RESOURCES = ["r1", "r2", "clerk-1", "clerk-22", "driver-2"]
KEYS = ["k1", "k2", "note", "amount", "gps_x", "gps_y", "flag", "pv:policy", "pv:x"]
ACTIVITY_PATTERNS = ["A", "Pay", "Ship", {"regex": "Release .*"}, {"regex": "A|B"}]
RESOURCE_PATTERNS = ["r1", "driver-2", {"regex": "clerk-[0-9]+"}, {"regex": "r.*"}]
KEY_PATTERNS = ["k1", "note", "amount", "flag", {"regex": "gps_.*"}, {"regex": "k[0-9]"}]
VALUE_PATTERNS = ["x", "true", {"regex": "x.*"}, {"regex": "[0-9]+"}, {"regex": ".*secret.*"}]
KEY = PseudonymKey(b"property key: 32 bytes, not real")
RESERVED_PLACEHOLDER = {
    "pv:actor",
    "pv:policy",
    "pv:policy_version",
    "pv:position",
    "pv:reason",
    "pv:scope",
}

values = st.one_of(
    st.sampled_from(["x", "xy", "secret plan", "top secret", "42", "hello", ""]),
    st.integers(-5, 120),
    st.booleans(),
    st.none(),
    st.floats(-10, 10, allow_nan=False),
)


@st.composite
def attribute_rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {"key": draw(st.sampled_from(KEY_PATTERNS))}
    if draw(st.booleans()):
        rule["values"] = draw(st.sampled_from(VALUE_PATTERNS))
        rule["withhold"] = draw(st.sampled_from(["field", "event"]))
    return rule


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    doc: dict[str, Any] = {
        "policy": "prop",
        "version": draw(st.integers(1, 9)),
        "org": "org",
        "mode": draw(st.sampled_from(["allowlist", "denylist"])),
        "consent": {"scope": "s"},
    }
    if draw(st.booleans()):
        doc["activities"] = draw(st.lists(st.sampled_from(ACTIVITY_PATTERNS), max_size=3))
    if draw(st.booleans()):
        doc["resources"] = draw(st.lists(st.sampled_from(RESOURCE_PATTERNS), max_size=3))
    if draw(st.booleans()):
        doc["attributes"] = draw(st.lists(attribute_rules(), max_size=4))
    if draw(st.booleans()):
        table = draw(
            st.dictionaries(
                st.sampled_from(ACTIVITIES), st.lists(st.sampled_from(KEYS[:7])), max_size=3
            )
        )
        doc["minimise"] = {"activities": table, "default": draw(st.sampled_from(["keep", "drop"]))}
    doc["pseudonymise"] = {
        "case_id": draw(st.booleans()),
        "resource": draw(st.booleans()),
        "attributes": draw(st.lists(st.sampled_from(["k2", "note"]), max_size=2)),
    }
    doc["generalise"] = {
        "timestamps": draw(st.sampled_from(["exact", "second", "minute", "hour", "day"]))
    }
    return parse_policy(doc)


@st.composite
def events(draw: st.DrawFn) -> list[Event]:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    out = []
    for _ in range(draw(st.integers(1, 15))):
        case = draw(st.sampled_from(["c1", "c2", "c3"]))
        ts = t0 + timedelta(seconds=draw(st.integers(0, 3 * 10**7)))
        if draw(st.integers(0, 9)) == 0:
            out.append(Event.case_end(case, ts, org="org"))
            continue
        attrs = draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
        out.append(
            Event.create(
                case,
                draw(st.sampled_from(ACTIVITIES)),
                ts,
                org=draw(st.sampled_from(["org", "org", ""])),
                resource=draw(st.one_of(st.none(), st.sampled_from(RESOURCES))),
                attributes=attrs,
            )
        )
    return out


# ----------------------------------------------------------------------------- the oracle
def _any(patterns: tuple[Pattern, ...], text: str) -> bool:
    return any(p.matches(text) for p in patterns)


def _permitted(patterns: tuple[Pattern, ...] | None, text: str, deny: bool) -> bool:
    if patterns is None:
        return True
    return not _any(patterns, text) if deny else _any(patterns, text)


def _value_permitted(policy: Policy, key: str, value: Any, deny: bool) -> bool:
    """Whether attribute ``key`` with ``value`` may leave, from the rules alone."""
    rules = policy.attributes
    if rules is None:
        return True
    hits = [r for r in rules if r.key.matches(key)]
    text = value_text(value)
    if deny:
        if any(r.values is None for r in hits):
            return False
        return not any(r.values is not None and r.values.matches(text) for r in hits)
    if not hits:
        return False
    if any(r.values is None for r in hits):
        return True
    return any(r.values is not None and r.values.matches(text) for r in hits)


def _check_emitted(policy: Policy, engine: PolicyEngine, ev: Event, out: Event) -> None:
    deny = policy.mode == "denylist"
    assert _permitted(policy.activities, ev.activity, deny), "a denied activity left"
    if ev.resource is not None:
        assert _permitted(policy.resources, ev.resource, deny), "a denied resource left"
        if policy.pseudonymise.resource:
            assert out.resource == engine.pseudonym_resource(ev.resource) != ev.resource
    assert out.activity == ev.activity
    inputs = dict(ev.attributes)
    kept = policy.minimise.kept(ev.activity)
    for key, _ in out.attributes:
        if key.startswith("pv:"):
            assert key in {"pv:policy", "pv:policy_version", "pv:scope", "pv:withheld"}
            continue
        assert key in inputs, "an attribute appeared from nowhere"
        assert _value_permitted(policy, key, inputs[key], deny), f"denied {key!r} left"
        assert kept is None or key in kept, f"minimised {key!r} left"
    assert consent_of(out) is not None


def _check_placeholder(engine: PolicyEngine, ev: Event, out: Event) -> None:
    assert out.activity == PLACEHOLDER_ACTIVITY
    assert out.resource is None
    assert {k for k, _ in out.attributes} == RESERVED_PLACEHOLDER
    assert out.case_id == engine.pseudonym_case(ev.case_id)
    if ev.activity != "A":  # a one-letter name could coincide with a reserved value
        carried = {value_text(v) for _, v in out.attributes}
        assert ev.activity not in carried
        assert ev.resource is None or ev.resource not in carried


@settings(max_examples=250, deadline=None)
@given(policies(), events())
def test_nothing_denied_leaves_and_every_event_is_accounted_for(
    policy: Policy, stream: list[Event]
) -> None:
    engine = PolicyEngine(policy, key=KEY)
    for ev in stream:
        outs = engine.apply(ev)
        assert len(outs) == 1, "every input event gives exactly one output"
        out = outs[0]
        if ev.kind == EventKind.CASE_END:
            assert out.kind == EventKind.CASE_END
            assert out.case_id == engine.pseudonym_case(ev.case_id)
            continue
        if is_placeholder(out):
            _check_placeholder(engine, ev, out)
        else:
            _check_emitted(policy, engine, ev, out)
    stats = engine.stats
    assert stats.events + stats.markers == len(stream)
    assert stats.emitted + stats.placeholders == stats.events
    assert sum(stats.withheld.values()) == stats.placeholders


@settings(max_examples=100, deadline=None)
@given(policies(), events())
def test_decide_agrees_with_apply(policy: Policy, stream: list[Event]) -> None:
    a, b = PolicyEngine(policy, key=KEY), PolicyEngine(policy, key=KEY)
    for ev in stream:
        decision = a.decide(ev)
        assert [decision.event] == b.apply(ev)
        assert (decision.withheld is not None) == is_placeholder(decision.event)
        for key, reason in decision.fields:
            assert key in dict(ev.attributes)
            if not key.startswith("pv:"):  # the stage writes its own pv: keys
                assert key not in {k for k, _ in decision.event.attributes}
            assert reason in {
                "ATTRIBUTE_DENIED",
                "MINIMISED",
                "VALUE_DENIED",
                "RESERVED",
            }


keys = st.binary(min_size=16, max_size=64)
names = st.text(min_size=0, max_size=30)


@settings(max_examples=200, deadline=None)
@given(keys, keys, st.lists(names, min_size=1, max_size=10, unique=True))
def test_pseudonyms_stable_under_one_key_and_different_across_keys(
    k1: bytes, k2: bytes, clear: list[str]
) -> None:
    p1, p1_again, p2 = (
        Pseudonymizer(PseudonymKey(k1)),
        Pseudonymizer(PseudonymKey(k1)),
        Pseudonymizer(PseudonymKey(k2)),
    )
    for value in clear:
        assert p1.case(value) == p1_again.case(value)
        assert p1.actor(value) == p1_again.actor(value)
        if k1 != k2:
            assert p1.case(value) != p2.case(value)
            assert p1.actor(value) != p2.actor(value)
    # Distinct clear values get distinct pseudonyms (96-bit digests: no collisions expected).
    assert len({p1.actor(v) for v in clear}) == len(clear)
    assert len({p1.case(v) for v in clear}) == len(clear)
