"""``procvault dp plan``: relative errors before anything runs, and a pane length."""

from __future__ import annotations

from pathlib import Path

import pytest

from procvault.cli import main
from procvault.config.dp import load_dp_policy
from procvault.config.engines import load_engines
from procvault.monitor.privacy.intervals import half_width
from procvault.monitor.privacy.plan import ReleasePlan

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "policies" / "dp" / "process_map.yaml"


def _run(capsys: pytest.CaptureFixture[str], model: Path, rate: str) -> str:
    code = main(["dp", "plan", "--policy", str(POLICY), "--model", str(model), "--rate", rate])
    assert code == 0
    return capsys.readouterr().out


def test_plan_prints_the_mechanisms_intervals_and_suggests_a_pane(
    capsys: pytest.CaptureFixture[str], shared_data: Path
) -> None:
    model = shared_data / "models" / "pm4py" / "running-example.pnml"
    plan = ReleasePlan.build(load_dp_policy(POLICY), load_engines(model, None).known())
    out = _run(capsys, model, "100000")
    for spec in plan.statistics:
        line = next(x for x in out.splitlines() if x.startswith(f"{spec.name} ") and " 1 " in x)
        assert f"{half_width(spec.scale):,}" in line.split()
    assert "suggested pane length: 1:00:00" in out  # 100,000 events/hour: hourly panes do
    slow = _run(capsys, model, "0.01")
    assert "no pane length reaches 20%" in slow


def test_plan_needs_a_rate_or_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dp", "plan", "--policy", str(POLICY), "--model", "m.pnml"])
    assert "--rate" in capsys.readouterr().err
