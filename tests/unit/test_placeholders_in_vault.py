"""How the vault and the DP release treat placeholders (events withheld at their source).

The documented rule (docs/privacy-policy.md, "How the vault treats placeholders"): a
placeholder fires no transition, is no deviation, is not seen by compliance rules and touches
no case state; the DP release counts it per pane under activity ``pv:withheld`` and draws no
directly-follows pair through it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from seqnet import sequence_net

from procvault.monitor.compliance import Compliance, DeclareRule
from procvault.monitor.event import PLACEHOLDER_ACTIVITY, Event, EventKind
from procvault.monitor.privacy import (
    Budget,
    KnownKeys,
    PaneAccumulator,
    PaneSettings,
    PrivacySettings,
)
from procvault.monitor.vault import Vault
from procvault.organization.policy import PolicyEngine, PseudonymKey, is_placeholder, parse_policy
from procvault.streams import codec

T0 = datetime(2024, 1, 1, tzinfo=UTC)
PANE = timedelta(hours=1)
SETTINGS = PrivacySettings(
    budget=Budget(1.0, window=4, delta=1e-6), panes=PaneSettings(PANE), windows=(2 * PANE,)
)
# B must follow A and be done by another resource than A's
RULES = [DeclareRule("a_then_b", "response", "A", "B")]


NET = sequence_net("AB")


def _placeholder(case: str, ts: datetime) -> Event:
    return Event.create(
        case,
        PLACEHOLDER_ACTIVITY,
        ts,
        attributes={"pv:reason": "ACTIVITY_DENIED", "pv:position": 2},
        kind=EventKind.PLACEHOLDER,
    )


def _case(case: str, start: datetime, *, withheld: bool) -> list[Event]:
    out = [Event.create(case, "A", start, resource="r1")]
    if withheld:
        out.append(_placeholder(case, start + timedelta(minutes=1)))
    out.append(Event.create(case, "B", start + timedelta(minutes=2), resource="r2"))
    out.append(Event.case_end(case, start + timedelta(minutes=3)))
    return out


def _results(events: list[Event]) -> list[tuple[object, ...]]:
    vault = Vault(NET, compliance=Compliance(RULES))
    found: list[tuple[object, ...]] = []
    for ev in events:
        up = vault.update(ev)
        found += [("dev", d.case_id, d.activity, d.kind) for d in up.deviations]
        found += [("alert", a.case_id, a.rule) for a in up.alerts]
        found += [
            ("done", r.case_id, r.is_fit, r.missing, r.remaining, r.rules) for r in up.completed
        ]
    up = vault.flush_update()
    found += [("done", r.case_id, r.is_fit, r.missing, r.remaining, r.rules) for r in up.completed]
    return found


def test_a_placeholder_changes_no_verdict() -> None:
    plain = [ev for c in range(5) for ev in _case(f"c{c}", T0, withheld=False)]
    withheld = [ev for c in range(5) for ev in _case(f"c{c}", T0, withheld=c % 2 == 0)]
    assert _results(withheld) == _results(plain)
    assert not any(f[0] == "dev" for f in _results(withheld))


def test_a_case_of_placeholders_only_has_no_state_in_the_vault_and_ends_at_its_marker() -> None:
    for vault in (Vault(NET, compliance=Compliance(RULES)), Vault(NET)):
        assert not vault.update(_placeholder("ghost", T0))
        assert not vault.is_active("ghost")
        assert vault.state().active_cases == 0
        # its marker ends it without a result; what comes later is after its completion
        assert not vault.update(Event.case_end("ghost", T0 + timedelta(minutes=1)))
        assert vault.state().remembered_completed == 1
        late = vault.update(Event.create("ghost", "A", T0 + timedelta(minutes=2)))
        assert [d.kind for d in late.deviations] == ["after_completion"]
        assert not vault.is_active("ghost")


def test_the_accumulator_forgets_a_placeholder_only_case_at_its_marker() -> None:
    acc = PaneAccumulator(SETTINGS, KnownKeys.build(NET.labels))
    vault = Vault(NET)
    for ev in (_placeholder("ghost", T0), Event.case_end("ghost", T0 + timedelta(minutes=1))):
        acc.observe_replayed(ev, vault.update(ev))
        if ev.kind == EventKind.PLACEHOLDER:
            assert acc.counters().active_cases == 1
    assert acc.counters().active_cases == 0


def test_panes_count_placeholders_and_draw_no_pair_through_them() -> None:
    acc = PaneAccumulator(SETTINGS, KnownKeys.build(NET.labels))
    vault = Vault(NET)
    closer = Event.create("c2", "A", T0 + timedelta(minutes=70))  # closes the first pane
    events = [*_case("c1", T0, withheld=True), closer]
    panes = []
    for ev in events:
        panes += acc.observe_replayed(ev, vault.update(ev))
    [pane] = panes
    assert pane.statistic("activity") == {("A",): 1, ("B",): 1, (PLACEHOLDER_ACTIVITY,): 1}
    assert pane.statistic("directly_follows") == {("A", "B"): 1}
    assert (PLACEHOLDER_ACTIVITY,) in KnownKeys.build(NET.labels).keys("activity")


def test_the_policy_engine_emits_placeholders_of_their_own_kind_and_they_survive_the_wire() -> None:
    doc = {"policy": "p", "version": 1, "org": "o", "mode": "denylist"}
    doc |= {"activities": ["B"], "consent": {"scope": "monitoring"}}
    engine = PolicyEngine(
        parse_policy(doc, source="p.yaml"), key=PseudonymKey(b"test key: thirty-two bytes long!")
    )
    [ph] = engine.apply(Event.create("c1", "B", T0, org="o", resource="r"))
    assert is_placeholder(ph) and ph.kind == EventKind.PLACEHOLDER and not ph.is_marker
    back = codec.decode(codec.encode(ph))
    assert back == ph
    assert codec.to_dict(ph)["kind"] == "placeholder"
