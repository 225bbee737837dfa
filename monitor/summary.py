"""A run's summary as a practitioner reads it: verdicts per rule, where the log deviates, and
the log fitness as pm4py defines it. Pure: fed with what :meth:`Vault.update` returns.

Log fitness is pm4py's token-based replay fitness of the whole log
(``pm4py.fitness_token_based_replay``'s ``log_fitness``): the token counts summed over every
case, ``0.5 * (1 - missing / consumed) + 0.5 * (1 - remaining / produced)``. It weighs long
cases more than the mean of the cases' fitness (``average_trace_fitness``) does, so the two
differ (on Sepsis with its model: 0.6598 against 0.7012).

Deviations are counted by activity (with their kind) and by the model transition the event
fired (``missing_tokens`` only: an unknown activity and an event after completion fire none).

Examples
--------
>>> from datetime import datetime, UTC
>>> from procvault.monitor.vault import CaseResult, Deviation
>>> s = RunSummary()
>>> t = datetime(2024, 1, 1, tzinfo=UTC)
>>> s.add_deviations((Deviation("c1", "B", t, "missing_tokens", "tB", ("p1",)),))
>>> s.add_results((CaseResult("c1", 2, 3, 3, 1, 1, 0.6667, False, 0, "end_marker",
...                            rules={"r": "Violated"}),))
>>> round(s.log_fitness or 0, 4), s.rule_states
(0.6667, {'r': {'Violated': 1}})
>>> s.top_activities(), s.top_transitions()
([('B', {'missing_tokens': 1})], [('tB', 1)])
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from .vault import CaseResult, Deviation

__all__ = ["RunSummary"]


class RunSummary:
    """Counts over a monitoring run: cases, token totals, deviations, rule verdicts.

    O(1) per deviation and per completed case; memory grows with the number of distinct
    activities, transitions and rule states, never with the cases.
    """

    def __init__(self) -> None:
        self.cases = 0
        self.events = 0
        self.fitting_cases = 0
        self.conformance_cases = 0
        self.fitness_sum = 0.0
        self.produced = 0
        self.consumed = 0
        self.missing = 0
        self.remaining = 0
        self.deviations = 0
        self.alerts = 0
        self._by_activity: dict[str, Counter[str]] = {}
        self._by_transition: Counter[str] = Counter()
        self._rule_states: dict[str, Counter[str]] = {}

    def add_deviations(self, deviations: Iterable[Deviation]) -> None:
        """Count deviations by activity (and kind) and by the transition they fired."""
        for d in deviations:
            self.deviations += 1
            kinds = self._by_activity.get(d.activity)
            if kinds is None:
                kinds = self._by_activity[d.activity] = Counter()
            kinds[d.kind] += 1
            if d.kind == "missing_tokens" and d.transition is not None:
                self._by_transition[d.transition] += 1

    def add_alerts(self, n: int) -> None:
        """Count ``n`` rule alerts (state changes)."""
        self.alerts += n

    def add_results(self, results: Iterable[CaseResult]) -> None:
        """Count completed cases: their token totals and each rule's final state."""
        for r in results:
            self.cases += 1
            self.events += r.events
            if r.conformance:
                self.conformance_cases += 1
                self.fitting_cases += r.is_fit
                self.fitness_sum += r.fitness
                self.produced += r.produced
                self.consumed += r.consumed
                self.missing += r.missing
                self.remaining += r.remaining
            for rule, state in (r.rules or {}).items():
                states = self._rule_states.get(rule)
                if states is None:
                    states = self._rule_states[rule] = Counter()
                states[state] += 1

    @property
    def log_fitness(self) -> float | None:
        """pm4py's token-based ``log_fitness`` (``None`` without conformance results)."""
        if not self.conformance_cases or self.produced <= 0 or self.consumed <= 0:
            return None
        return 0.5 * (1 - self.missing / self.consumed) + 0.5 * (1 - self.remaining / self.produced)

    @property
    def mean_fitness(self) -> float | None:
        """The mean of the cases' fitness (pm4py's ``average_trace_fitness``)."""
        if not self.conformance_cases:
            return None
        return self.fitness_sum / self.conformance_cases

    @property
    def rule_states(self) -> dict[str, dict[str, int]]:
        """Each rule's final states over the cases: ``{rule: {state: cases}}``."""
        return {rule: dict(states) for rule, states in self._rule_states.items()}

    def top_activities(self, n: int = 10) -> list[tuple[str, dict[str, int]]]:
        """The ``n`` activities with the most deviations, each with its counts per kind.

        Ties are broken by activity name, so the order is deterministic.
        """
        ranked = sorted(self._by_activity.items(), key=lambda kv: (-kv[1].total(), kv[0]))
        return [(activity, dict(kinds)) for activity, kinds in ranked[:n]]

    def top_transitions(self, n: int = 10) -> list[tuple[str, int]]:
        """The ``n`` transitions fired most often without being enabled (ties by name)."""
        ranked = sorted(self._by_transition.items(), key=lambda kv: (-kv[1], kv[0]))
        return ranked[:n]

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """A JSON-ready dict of everything above (``top`` entries per deviation list)."""
        return {
            "cases": self.cases,
            "events": self.events,
            "fitting_cases": self.fitting_cases if self.conformance_cases else None,
            "mean_fitness": self.mean_fitness,
            "log_fitness": self.log_fitness,
            "tokens": {
                "produced": self.produced,
                "consumed": self.consumed,
                "missing": self.missing,
                "remaining": self.remaining,
            },
            "deviations": self.deviations,
            "deviations_by_activity": [
                {"activity": a, "deviations": sum(k.values()), "by_kind": k}
                for a, k in self.top_activities(top)
            ],
            "deviations_by_transition": [
                {"transition": t, "deviations": n} for t, n in self.top_transitions(top)
            ],
            "alerts": self.alerts,
            "rule_states": self.rule_states,
        }
