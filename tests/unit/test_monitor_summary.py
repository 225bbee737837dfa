"""``procvault monitor``'s summary against pm4py on Sepsis: log fitness, mean case fitness,
deviations by transition, per-rule verdicts; the progress bar only when asked or on a terminal."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from procvault.cli import main

RULES = Path(__file__).resolve().parents[2] / "policies" / "rules" / "sepsis.yaml"


@pytest.fixture(scope="module")
def sepsis_model(shared_data: Path) -> Path:
    return shared_data / "models" / "promtee" / "pnml" / "sepsis.pnml"


@pytest.fixture(scope="module")
def pm4py_replay(sepsis_log: Path, sepsis_model: Path) -> tuple[dict[str, float], Counter[str]]:
    """pm4py's token-based replay fitness and its forced transitions, final marking = sink."""
    import pm4py
    from pm4py.algo.conformance.tokenreplay import algorithm as token_replay
    from pm4py.objects.petri_net.obj import Marking

    log = pm4py.read_xes(str(sepsis_log), return_legacy_log_object=True)
    net, im, _ = pm4py.read_pnml(str(sepsis_model))
    (sink,) = [p for p in net.places if not p.out_arcs]
    fm = Marking({sink: 1})
    fitness = pm4py.fitness_token_based_replay(log, net, im, fm)
    forced: Counter[str] = Counter()
    for trace in token_replay.apply(log, net, im, fm):
        forced.update(t.name for t in trace["transitions_with_problems"])
    return fitness, forced


def _monitor(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert main(["monitor", *argv]) == 0
    out, err = capsys.readouterr()
    return out, err


def test_json_summary_matches_pm4py(
    sepsis_log: Path,
    sepsis_model: Path,
    pm4py_replay: tuple[dict[str, float], Counter[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    fitness, forced = pm4py_replay
    argv = [str(sepsis_log), "--model", str(sepsis_model), "--rules", str(RULES)]
    out, _ = _monitor([*argv, "--json", "--top-deviations", "1000"], capsys)
    s: dict[str, Any] = json.loads(out)
    assert s["log_fitness"] == pytest.approx(fitness["log_fitness"], abs=1e-6)
    assert round(s["log_fitness"], 4) == 0.6598
    assert s["mean_fitness"] == pytest.approx(fitness["average_trace_fitness"], abs=1e-6)
    assert s["log_fitness"] != pytest.approx(s["mean_fitness"], abs=1e-3)
    by_transition = {row["transition"]: row["deviations"] for row in s["deviations_by_transition"]}
    assert by_transition == dict(forced)
    counts = [row["deviations"] for row in s["deviations_by_transition"]]
    assert counts == sorted(counts, reverse=True)
    # every deviation is counted once by activity; missing tokens also by transition
    assert sum(row["deviations"] for row in s["deviations_by_activity"]) == s["deviations"]
    missing = sum(row["by_kind"].get("missing_tokens", 0) for row in s["deviations_by_activity"])
    assert missing == sum(forced.values())
    for states in s["rule_states"].values():
        assert sum(states.values()) == s["cases"] == 1050
    assert s["rule_states"]["iv_antibiotics_within_onehour"]["Violated"] == 707


def test_text_summary_and_progress(
    sepsis_log: Path, sepsis_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = [
        str(sepsis_log),
        "--model",
        str(sepsis_model),
        "--rules",
        str(RULES),
        "--top-deviations",
        "3",
    ]
    _, err = _monitor(base, capsys)  # stderr is not a terminal here: 'auto' draws no bar
    assert "monitoring" not in err
    assert "log fitness 0.659764 (pm4py token-based), mean case fitness 0.701207" in err
    assert "most frequent by activity:" in err and "Leucocytes" in err
    assert "by transition fired without being enabled:" in err
    assert "iv_antibiotics_within_onehour: Init 1, Satisfied 342, Violated 707" in err
    activity_rows = err.split("most frequent by activity:\n")[1].split("by transition")[0]
    assert len(activity_rows.strip().splitlines()) == 3

    _, err = _monitor([*base, "--progress", "on"], capsys)
    assert "monitoring" in err and "16264/16264" in err
