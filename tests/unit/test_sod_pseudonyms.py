"""Separation of duty on pseudonymised resources: a four-eyes rule (a Declare rule with a
``different: resource`` correlation) gives the same verdicts on events that left the policy
stage with keyed resource and case pseudonyms as on the clear names (issue 10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.compliance import Compliance, DeclareRule
from procvault.monitor.compliance.model import Correlation
from procvault.monitor.event import Event
from procvault.organization.policy import PolicyEngine, PseudonymKey, parse_policy

T0 = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
RULES = (
    # four eyes: whoever approves must not be who requested
    DeclareRule(
        "four_eyes",
        "response",
        "Request",
        "Approve",
        correlation=(Correlation("resource", same=False),),
    ),
    DeclareRule(
        "approved_by_other",
        "precedence",
        "Pay",
        "Approve",
        correlation=(Correlation("resource", same=False),),
    ),
    # binding of duties: the requester closes
    DeclareRule(
        "requester_closes",
        "responded_existence",
        "Request",
        "Close",
        correlation=(Correlation("resource", same=True),),
    ),
)
POLICY = parse_policy(
    {
        "policy": "bank",
        "version": 1,
        "org": "bank",
        "mode": "denylist",
        "consent": {"scope": "payment-monitoring"},
        "pseudonymise": {"case_id": True, "resource": True},
    }
)
PEOPLE = ["Anna Meier", "Bob", "Chen Li", "Dana"]
steps = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.sampled_from(["Request", "Approve", "Pay", "Close"]),
        st.sampled_from([*PEOPLE, None]),
    ),
    max_size=40,
)


def _verdicts(events: list[Event]) -> tuple[list[tuple[str, str, str, str]], dict[str, object]]:
    cc = Compliance(list(RULES))
    alerts = [(a.rule, a.case_id, a.old, a.new) for ev in events for a in cc.update(ev)]
    return alerts, cc.flush()


@settings(max_examples=60, deadline=None)
@given(steps, st.binary(min_size=32, max_size=32))
def test_four_eyes_gives_the_same_verdicts_on_pseudonyms_as_on_names(
    trace: list[tuple[int, str, str | None]], key: bytes
) -> None:
    engine = PolicyEngine(POLICY, key=PseudonymKey(key))
    clear = [
        Event.create(f"case-{c}", act, T0 + timedelta(minutes=i), org="bank", resource=res)
        for i, (c, act, res) in enumerate(trace)
    ]
    sent = [out for ev in clear for out in engine.apply(ev)]
    assert len(sent) == len(clear)
    # no name leaves the organization
    assert not {ev.resource for ev in sent} & set(PEOPLE)
    assert not {ev.case_id for ev in sent} & {ev.case_id for ev in clear}

    alerts, final = _verdicts(clear)
    p_alerts, p_final = _verdicts(sent)
    case = engine.pseudonym_case
    assert p_alerts == [(rule, case(c), old, new) for rule, c, old, new in alerts]
    assert p_final == {case(c): states for c, states in final.items()}


def test_a_four_eyes_violation_is_found_on_pseudonyms() -> None:
    engine = PolicyEngine(POLICY, key=PseudonymKey(b"k" * 32))
    same = [
        Event.create("x", "Request", T0, org="bank", resource="Bob"),
        Event.create("x", "Approve", T0 + timedelta(minutes=1), org="bank", resource="Bob"),
    ]
    other = [
        Event.create("y", "Request", T0, org="bank", resource="Bob"),
        Event.create("y", "Approve", T0 + timedelta(minutes=1), org="bank", resource="Dana"),
    ]
    sent = [out for ev in same + other for out in engine.apply(ev)]
    _, final = _verdicts(sent)
    assert final[engine.pseudonym_case("x")]["four_eyes"] == "Violated"
    assert final[engine.pseudonym_case("y")]["four_eyes"] == "Satisfied"
