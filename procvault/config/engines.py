"""The engines a command builds from its files: the model, its compiled net, the rules, and the
keys known in advance. Shared by the CLI, the benchmarks and the tests (none of them imports
another's helpers).

>>> from pathlib import Path
>>> repo = Path(__file__).resolve().parents[2]
>>> engines = load_engines(repo / "examples" / "order_to_cash.pnml", None)
>>> engines.net is not None, engines.rules
(True, None)
>>> "Ship Goods" in engines.known().activities
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from procvault.monitor.errors import InputError, ModelError
from procvault.monitor.petri import CompiledNet, compile_net

from .models import LoadedModel, load_model

if TYPE_CHECKING:
    from procvault.monitor.compliance.model import Rule
    from procvault.monitor.privacy.settings import KnownKeys

__all__ = ["Engines", "load_engines"]


@dataclass(frozen=True)
class Engines:
    """What :func:`load_engines` read (each ``None`` where its file was not given)."""

    model: LoadedModel | None
    net: CompiledNet | None
    rules: list[Rule] | None

    def activities(self) -> set[str]:
        """The model's visible activities (empty without a model)."""
        if self.model is None:
            return set()
        return {t.label for t in self.model.net.transitions if t.label is not None}

    def known(self) -> KnownKeys:
        """The keys known in advance (the model's visible activities, the rules' ids): what
        the vault workers' accumulators and the release stage must agree on."""
        from procvault.monitor.privacy import KnownKeys

        return KnownKeys.build(self.activities(), rules=[r.name for r in self.rules or ()])


def load_engines(
    model_path: str | os.PathLike[str] | None,
    rules_path: str | os.PathLike[str] | None,
    final_marking: str | None = None,
) -> Engines:
    """The model (compiled) and the rules from a model file and a rule file or folder (each
    optional). Rules are checked against the model's activities."""
    model = net = None
    if model_path:
        model = load_model(model_path, final_marking=final_marking)
        try:
            net = compile_net(model.net, model.initial_marking, model.final_marking)
        except ModelError as exc:
            raise InputError(f"{model_path}: {exc}") from None
    rules = None
    if rules_path:
        from .rules import load_rules

        labels = {t.label for t in model.net.transitions if t.label is not None} if model else None
        rules = list(load_rules(rules_path, activities=labels))
    return Engines(model, net, rules)
