"""Done-means: ``anonymize`` runs on every shared log, in both modes, and keeps R1 and fresh ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from procvault.generators.xes import read_xes
from procvault.monitor.amun import AnonymizeSettings, CaseLog, anonymize, compare_logs

LOGS = ("sepsis_cases", "helpdesk", "receipt", "roadtraffic100traces", "running-example")


def test_every_shared_log_is_covered(shared_data: Path) -> None:
    present = {p.name.removesuffix(".xes.gz") for p in (shared_data / "logs").glob("*.xes.gz")}
    assert present == set(LOGS), "a shared log was added or removed: update LOGS"


@pytest.mark.parametrize("name", LOGS)
def test_anonymize_runs_on_shared_log(name: str, shared_data: Path) -> None:
    path = shared_data / "logs" / f"{name}.xes.gz"
    if not path.exists():
        pytest.fail(f"shared data file {path} is missing (set PROCVAULT_SHARED_DATA)")
    log = CaseLog.from_events(read_xes(path).events)
    original_ids = {c.case_id for c in log.cases}
    for mode, net in (("amun", "paper"), ("amun", "prototype"), ("strict", "paper")):
        out = anonymize(log, AnonymizeSettings(delta=0.2, mode=mode, seed=0, amun_net=net))
        assert out.report.cases_in == len(log.cases)
        report = compare_logs(log, out.log)
        assert report.r1_holds, (name, mode, net)
        assert not {c.case_id for c in out.log.cases} & original_ids
        if mode == "amun":
            assert out.log.cases, (name, net)  # amun mode always releases something here
