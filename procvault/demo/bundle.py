"""What the package ships for the demo: model, organizations, rules and policies.

The files are package data of :mod:`procvault.demo` (``procvault/demo/data/``), found through
:mod:`importlib.resources`, so the demo runs from an installed package as from the repository.

>>> b = Bundle.default()
>>> sorted(p.name for p in b.files())  # doctest: +NORMALIZE_WHITESPACE
['carrier.yaml', 'consortium.yaml', 'dp.yaml', 'order_to_cash.pnml',
 'order_to_cash_orgs.yaml', 'rules.yaml']
>>> b.orgs
('customer', 'supplier', 'carrier')
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["Bundle"]


@dataclass(frozen=True)
class Bundle:
    """Paths of the demo's bundled files.

    Attributes
    ----------
    root
        The folder holding them.
    """

    root: Path

    @classmethod
    def default(cls) -> Bundle:
        """The files installed with the package."""
        return cls(Path(str(resources.files("procvault.demo") / "data")))

    @property
    def model(self) -> Path:
        """The order-to-cash Petri net (a copy of ``examples/order_to_cash.pnml``)."""
        return self.root / "order_to_cash.pnml"

    @property
    def split_map(self) -> Path:
        """Activity -> organization (a copy of ``examples/order_to_cash_orgs.yaml``)."""
        return self.root / "order_to_cash_orgs.yaml"

    @property
    def rules(self) -> Path:
        """The demo's compliance rules."""
        return self.root / "rules.yaml"

    @property
    def dp_policy(self) -> Path:
        """The DP release policy (2-hour panes)."""
        return self.root / "dp.yaml"

    @property
    def results_policy(self) -> Path:
        """The consortium's results policy (``full``: every verdict field to every
        participant, so the self-check compares whole results)."""
        return self.root / "consortium.yaml"

    @property
    def carrier_policy(self) -> Path:
        """The carrier's privacy policy: pseudonyms and PII scrubbing."""
        return self.root / "carrier.yaml"

    @property
    def orgs(self) -> tuple[str, ...]:
        """The organizations of the split map, in order of first mention."""
        import yaml

        mapping = yaml.safe_load(self.split_map.read_text(encoding="utf-8"))["activities"]
        return tuple(dict.fromkeys(mapping.values()))

    def files(self) -> list[Path]:
        """Every bundled file."""
        return [
            self.model,
            self.split_map,
            self.rules,
            self.dp_policy,
            self.results_policy,
            self.carrier_policy,
        ]
