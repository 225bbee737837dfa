"""procvault's Prometheus metrics: enumerated labels only, histogram arithmetic, the endpoint."""

from __future__ import annotations

import math
import re
from urllib.request import urlopen

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client import Histogram as ClientHistogram
from prometheus_client.parser import text_string_to_metric_families

from procvault.metrics.exporters import (
    AGENT_STATES,
    AGENT_WITHHELD_REASONS,
    ANNOUNCEMENT_REFUSALS,
    ATTESTATION_REQUEST_OUTCOMES,
    LATENCY_BUCKETS,
    LATENCY_STAGES,
    PANE_OUTCOMES,
    REJECT_REASONS,
    RELEASE_KINDS,
    SOURCE_NOTICES,
    TRUST_STATES,
    UNREGISTERED_ORG,
    AgentMetrics,
    Histogram,
    ReleaseMetrics,
    VaultMetrics,
    exposition,
    label_values,
    serve,
)

ORGS = ("hospital", "lab", "ward")
RULES = ("R1", "R2")
#: Values a careless caller might pass where an enumerated label is expected.
DATA_LIKE = ("case-0042", "ER Registration", "Dr. Smith", "")


def _drive_all() -> tuple[VaultMetrics, AgentMetrics, ReleaseMetrics]:
    vault = VaultMetrics(orgs=ORGS, detailed=True)
    agent, release = AgentMetrics(), ReleaseMetrics(rules=RULES, detailed=True)
    for org in (*ORGS, *DATA_LIKE):
        vault.records_in(org, 2)
    vault.events_applied(5)
    for reason in REJECT_REASONS:
        vault.records_rejected(reason)
    vault.rollback_detected()
    vault.source_notice("source_silent")
    vault.observe_engine([3e-6, 8e-6, 2e-5])
    vault.observe_engine(np.array([3_000, 80_000]), unit=1e-9)
    vault.observe_latency("applied", [0.004, 0.2], unit=1.0)
    vault.set_consumer_lag(0, 12)
    vault.set_consumer_lag(7, 3)
    vault.set_active_cases(40)
    vault.batch_done(0.02)
    vault.set_attestation_insecure(True)
    vault.alerts_sent(2)
    vault.cases_completed(3)
    for outcome in ATTESTATION_REQUEST_OUTCOMES:
        vault.attestation_requests(outcome)
    agent.events_read(10)
    agent.events_sent(9)
    for reason in AGENT_WITHHELD_REASONS:
        agent.events_withheld(reason.upper())
    agent.heartbeats(4)
    agent.set_paused(False)
    agent.observe_send(0.001)
    agent.observe_sends([1_000, 2_000], unit=1e-6)
    agent.set_attestation_insecure(True)
    agent.set_vault_trust("trusted")
    for reason in ANNOUNCEMENT_REFUSALS:
        agent.announcements_refused(reason)
    for kind in RELEASE_KINDS:
        release.released(kind)
    release.set_budget(spent=0.4, remaining=0.6)
    release.observe_release_latency(1.5)
    release.observe_released(2.5)
    release.set_pane_values(cases={k: 3 for k in PANE_OUTCOMES}, violations={"R1": 2})
    release.partial_rejected()
    return vault, agent, release


def test_every_label_value_comes_from_an_enumeration_or_the_configuration() -> None:
    buckets = {f"{b:g}" for b in LATENCY_BUCKETS} | {"+Inf"}
    allowed = {
        "org": set(ORGS) | {UNREGISTERED_ORG},
        "stage": set(LATENCY_STAGES),
        "kind": set(RELEASE_KINDS),
        "outcome": set(PANE_OUTCOMES),
        "rule": set(RULES),
        "state": set(AGENT_STATES),
    }
    allowed["kind"] |= set(SOURCE_NOTICES)
    reasons = {
        "procvault_records_rejected_total": set(REJECT_REASONS),
        "procvault_agent_events_withheld_total": set(AGENT_WITHHELD_REASONS),
        "procvault_agent_announcements_refused_total": set(ANNOUNCEMENT_REFUSALS),
    }
    per_sample = {
        ("procvault_attestation_requests_total", "outcome"): set(ATTESTATION_REQUEST_OUTCOMES),
        ("procvault_agent_vault_trust", "state"): set(TRUST_STATES),
    }
    seen = set()
    for metrics in _drive_all():
        for sample, label, value in label_values(metrics.registry):
            seen.add(label)
            assert value not in DATA_LIKE, (sample, label, value)
            if label == "le":
                assert value in buckets or float(value) in LATENCY_BUCKETS, (sample, value)
            elif label == "partition":
                assert re.fullmatch(r"[0-9]+", value), (sample, value)
            elif label == "reason":
                assert value in reasons[sample], (sample, value)
            elif (sample, label) in per_sample:
                assert value in per_sample[sample, label], (sample, label, value)
            else:
                assert value in allowed[label], (sample, label, value)
    assert seen == {
        "le",
        "partition",
        "reason",
        "org",
        "stage",
        "kind",
        "outcome",
        "rule",
        "state",
    }


def test_an_unregistered_org_is_counted_under_one_fixed_label() -> None:
    m = VaultMetrics(orgs=ORGS)
    m.records_in("case-0042", 3)
    m.records_in("hospital")
    text = exposition(m.registry)
    assert f'procvault_records_in_total{{org="{UNREGISTERED_ORG}"}} 3.0' in text
    assert "case-0042" not in text


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda v, a, r: v.records_rejected("case-0042"),
            "reason must be one of bad_signature, bad_tag",
        ),
        (lambda v, a, r: v.observe_latency("ER Registration", [0.1]), "stage must be one of"),
        (lambda v, a, r: a.events_withheld("Dr. Smith"), "reason must be one of activity_denied"),
        (lambda v, a, r: r.released("pane/7"), "kind must be one of pane, window, withheld"),
        (lambda v, a, r: r.set_pane_values(cases={"c1": 1}), "outcome must be one of"),
        (lambda v, a, r: r.set_pane_values(violations={"R9": 1}), "rule must be one of R1, R2"),
    ],
)
def test_values_outside_an_enumeration_are_refused(call, match) -> None:  # type: ignore[no-untyped-def]
    vault = VaultMetrics(orgs=ORGS, detailed=True)
    agent, release = AgentMetrics(), ReleaseMetrics(rules=RULES)
    with pytest.raises(ValueError, match=match):
        call(vault, agent, release)


def test_agent_accepts_every_event_level_policy_reason() -> None:
    from procvault.organization.policy.reserved import Reason

    event_level = {
        Reason.ACTIVITY_DENIED,
        Reason.RESOURCE_DENIED,
        Reason.VALUE_DENIED,
        Reason.OUTSIDE_WINDOW,
        Reason.OTHER_ORG,
    }
    m = AgentMetrics()
    for reason in event_level:
        m.events_withheld(reason)
    text = exposition(m.registry)
    for reason in event_level:
        assert f'procvault_agent_events_withheld_total{{reason="{reason.lower()}"}} 1.0' in text


def _buckets(registry: CollectorRegistry, name: str) -> list[float]:
    (family,) = (f for f in registry.collect() if f.name == name)
    return [s.value for s in family.samples if s.name == f"{name}_bucket"]


def _sum(registry: CollectorRegistry, name: str) -> float:
    (family,) = (f for f in registry.collect() if f.name == name)
    return next(s.value for s in family.samples if s.name == f"{name}_sum")


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.integers(min_value=0, max_value=20_000_000_000), max_size=200),
    st.booleans(),
)
def test_histogram_agrees_with_prometheus_client(ns: list[int], as_array: bool) -> None:
    """Single, batched (both code paths) and scaled observations bin as prometheus_client's."""
    ref_reg, reg = CollectorRegistry(), CollectorRegistry()
    ref = ClientHistogram("h_seconds", "h", buckets=LATENCY_BUCKETS, registry=ref_reg)
    ours = Histogram("h_seconds", "h", registry=reg)
    for v in ns:
        ref.observe(v / 1e9)
    half = len(ns) // 2
    for v in ns[:half]:
        ours.observe(v / 1e9)
    rest = ns[half:]
    ours.observe_many(np.array(rest) if as_array else rest, unit=1e-9)
    assert _buckets(reg, "h_seconds") == _buckets(ref_reg, "h_seconds")
    assert math.isclose(_sum(reg, "h_seconds"), _sum(ref_reg, "h_seconds"), rel_tol=1e-9)


def test_bucket_bounds_are_inclusive_in_every_unit() -> None:
    reg = CollectorRegistry()
    h = Histogram("b_seconds", "b", registry=reg)
    h.observe(5e-6)
    h.observe_many([5_000], unit=1e-9)
    h.observe_many(np.full(40, 5.0), unit=1e-6)
    counts = _buckets(reg, "b_seconds")
    assert counts[LATENCY_BUCKETS.index(5e-6)] == 42
    assert counts[LATENCY_BUCKETS.index(5e-6) - 1] == 0


def test_serve_exposes_every_class_and_the_text_parses() -> None:
    expected = {
        "vault": {"procvault_records_in", "procvault_latency_seconds", "procvault_consumer_lag"},
        "agent": {"procvault_agent_events_sent", "procvault_agent_send_seconds"},
        "release": {"procvault_releases", "procvault_privacy_epsilon_remaining"},
    }
    for role, metrics in zip(expected, _drive_all(), strict=True):
        with serve(metrics.registry, 0) as server:
            assert server.port > 0
            body = urlopen(server.url, timeout=5).read().decode()
        families = {f.name: f for f in text_string_to_metric_families(body)}
        assert expected[role] <= set(families), role
        assert "process_resident_memory_bytes" in families
        assert not any(name.endswith("_created") for name in families)
    hist = families["procvault_release_latency_seconds"]
    assert hist.type == "histogram"
    assert {s.labels.get("le") for s in hist.samples} >= {"1e-06", "10.0", "+Inf"}


def test_a_closed_server_refuses_connections() -> None:
    server = serve(AgentMetrics().registry, 0)
    server.close()
    server.close()  # harmless
    with pytest.raises(OSError):
        urlopen(server.url, timeout=2)


def test_by_default_nothing_exported_counts_the_data() -> None:
    """Events applied, cases, alerts, late or future events, per-event engine times (a
    histogram's count is an exact event count) and the send -> release latency (its count is
    the number of panes that held events) exist only in detailed mode."""
    vault, release = VaultMetrics(orgs=ORGS), ReleaseMetrics(rules=RULES)
    vault.events_applied(5)
    vault.observe_engine([3e-6])
    vault.observe_latency("applied", [0.1])
    vault.set_active_cases(40)
    vault.alerts_sent(2)
    vault.cases_completed(3)
    vault.records_rejected("future")
    release.observe_released(2.5)
    text = exposition(vault.registry) + exposition(release.registry)
    for name in (
        "procvault_events_applied",
        "procvault_engine_seconds",
        "procvault_latency_seconds",
        "procvault_active_cases",
        "procvault_alerts",
        "procvault_cases_completed",
        'reason="future"',
    ):
        assert name not in text, name
    assert "procvault_records_in_total" in text and "procvault_batches_total" in text
