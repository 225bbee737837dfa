"""Online token replay equals pm4py's offline token replay, case by case.

The oracle is ``pm4py.conformance_diagnostics_token_based_replay`` on the same net objects; our
results come from the :class:`Vault` fed the log as a stream (global timestamp order, cases
interleaved, end-of-case markers).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from random_nets import ALPHABET, process_tree, trees

from procvault.config.models import load_model
from procvault.generators._pm4py import import_pm4py
from procvault.generators.xes import read_xes
from procvault.monitor.event import Event
from procvault.monitor.petri import compile_net
from procvault.monitor.vault import CaseResult, Vault

pm4py = import_pm4py()


def _oracle(log: Any, net: Any, im: Any, fm: Any) -> dict[str, tuple]:
    diag = pm4py.conformance_diagnostics_token_based_replay(log, net, im, fm)
    return {
        trace.attributes["concept:name"]: (
            d["produced_tokens"],
            d["consumed_tokens"],
            d["missing_tokens"],
            d["remaining_tokens"],
            d["trace_is_fit"],
            d["trace_fitness"],
        )
        for trace, d in zip(log, diag, strict=True)
    }


def _ours(events: list[Event], net: Any, im: Any, fm: Any) -> dict[str, CaseResult]:
    vault = Vault(compile_net(net, im, fm))
    results: dict[str, CaseResult] = {}
    for ev in events:
        for r in vault.update(ev).completed:
            results[r.case_id] = r
    assert vault.state().active_cases == 0
    return results


def _as_tuple(r: CaseResult) -> tuple:
    return (r.produced, r.consumed, r.missing, r.remaining, r.is_fit, r.fitness)


def _compare(log_path: Path, net: Any, im: Any, fm: Any) -> int:
    log = pm4py.read_xes(str(log_path), return_legacy_log_object=True)
    expected = _oracle(log, net, im, fm)
    got = _ours(list(read_xes(log_path).replay(end_markers=True)), net, im, fm)
    assert set(got) == set(expected)
    wrong = {
        c: (_as_tuple(got[c]), expected[c]) for c in expected if _as_tuple(got[c]) != expected[c]
    }
    assert not wrong, f"{len(wrong)} cases differ, e.g. {next(iter(wrong.items()))}"
    return len(expected)


@pytest.mark.parametrize(
    ("log", "model"),
    [
        ("logs/sepsis_cases.xes.gz", "models/promtee/pnml/sepsis.pnml"),
        ("logs/roadtraffic100traces.xes.gz", "models/pm4py/roadtraffic.pnml"),
        ("logs/roadtraffic100traces.xes.gz", "models/promtee/pnml/trafficFines.pnml"),
        ("logs/running-example.xes.gz", "models/pm4py/running-example.pnml"),
        ("logs/running-example.xes.gz", "models/pm4py/running-example.bpmn"),
    ],
)
def test_shared_logs_with_their_models(shared_data: Path, log: str, model: str) -> None:
    m = load_model(shared_data / model)
    assert _compare(shared_data / log, m.net, m.initial_marking, m.final_marking) > 0


@pytest.mark.parametrize("log", ["logs/helpdesk.xes.gz", "logs/receipt.xes.gz"])
@pytest.mark.parametrize("noise_threshold", [0.0, 0.2])
def test_logs_with_inductive_miner_models(
    shared_data: Path, log: str, noise_threshold: float
) -> None:
    df = pm4py.read_xes(str(shared_data / log))
    net, im, fm = pm4py.discover_petri_net_inductive(df, noise_threshold=noise_threshold)
    assert _compare(shared_data / log, net, im, fm) > 0


# ----------------------------------------------------------------------------- property test
def _interleaved_stream(traces: list[list[str]]) -> list[Event]:
    """All traces as one stream, cases interleaved round-robin, each followed by its marker."""
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    out: list[Event] = []
    longest = max((len(t) for t in traces), default=0)
    for j in range(longest + 1):
        for i, acts in enumerate(traces):
            ts = t0 + timedelta(minutes=j)
            if j < len(acts):
                out.append(Event.create(f"c{i}", acts[j], ts))
            elif j == len(acts) and acts:
                out.append(Event.case_end(f"c{i}", ts))
    return out


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    tree=trees(3),
    traces=st.lists(
        st.lists(st.sampled_from([*ALPHABET, "zz"]), min_size=1, max_size=8), min_size=1, max_size=8
    ),
    played=st.integers(min_value=0, max_value=4),
)
def test_random_workflow_nets_equal_pm4py(
    make_pm4py_log: Any, tree: Any, traces: list[list[str]], played: int
) -> None:
    pt = process_tree(tree)
    net, im, fm = pm4py.convert_to_petri_net(pt)
    # add a few traces the model can produce, so fitting behaviour is covered too
    if played:
        sim = pm4py.play_out(net, im, fm, parameters={"no_traces": played, "random_seed": 7})
        traces = traces + [[e["concept:name"] for e in t] for t in sim if len(t)]
    log = make_pm4py_log(traces)
    expected = _oracle(log, net, im, fm)
    got = _ours(_interleaved_stream(traces), net, im, fm)
    for case_id, exp in expected.items():
        assert _as_tuple(got[case_id]) == exp, (case_id, pt)
