"""Declare constraints with support and confidence, from counts, exactly as pm4py discovers them.

pm4py's ``discover_declare`` (``algo/discovery/declare/variants/classic.py``) gives every
completed case a value per candidate rule: ``+1`` (activated and satisfied), ``-1`` (activated
and violated) or ``0`` (not activated). A rule's *support* is the number of cases where it is
activated, its *confidence* the number where it is satisfied. With ``N`` completed cases, ``#a``
the cases containing ``a`` and ``#ab`` those containing both ``a`` and ``b`` (``a != b``), the
templates (pm4py's names) count as follows; a relation's satisfied cases are tallied per case
by the tracker (:class:`~.counts.DeclarePairStat`):

======================  ==========================  =========================================
template                support                     confidence: cases where ...
======================  ==========================  =========================================
existence(a)            N                           a occurs
absence(a)              N                           a does not occur
exactly_one(a)          N                           a occurs exactly once
init(a)                 N                           the case starts with a
responded_existence     #a                          a and b occur
response(a, b)          #a                          the last a comes before the last b
precedence(a, b)        #b                          the first a comes before the first b
succession(a, b)        #a + #b - #ab               response and precedence hold
altresponse(a, b)       #a                          after every a, a b comes before the next a
altprecedence(a, b)     #b                          before every b, an a comes after the
                                                    previous b
altsuccession(a, b)     #a + #b - #ab               altresponse and altprecedence hold
chainresponse(a, b)     #a                          every a is immediately followed by b
chainprecedence(a, b)   #b                          every b is immediately preceded by a
chainsuccession(a, b)   #a + #b - #ab               chainresponse and chainprecedence hold
coexistence(a, b)       #a + #b - #ab               a and b occur
noncoexistence(a, b)    #a + #b - #ab               only one of a and b occurs
nonsuccession(a, b)     #a + #b - #ab               succession is violated
nonchainsuccession      #a + #b - #ab               chainsuccession is violated
======================  ==========================  =========================================

As in pm4py, a derived template is only computed when the templates it is built from are
allowed too (``absence`` needs ``existence``; ``succession`` needs ``response`` and
``precedence``; the ``alt``/``chain`` successions their response and precedence;
``coexistence`` needs ``responded_existence``; ``noncoexistence`` also ``coexistence``;
``nonsuccession`` and ``nonchainsuccession`` their succession and its parts). Activities are
those of the completed cases.

**Selection** (pm4py's ``get_rules_from_rules_df``): rules with support 0 are never kept. With
neither ratio given, pm4py picks the rule with the largest ``(support/N) * (confidence/support)``
(ties: the largest ``(template, activities)``) and sets ``min_support_ratio`` to its
``support/N * m`` and ``min_confidence_ratio`` to its ``confidence/support * m``, with ``m`` the
``auto_selection_multiplier`` (0.8). A rule is kept when ``support >= N * min_support_ratio``
and ``confidence >= support * min_confidence_ratio`` (a ratio not given is 0).

References
----------
F.M. Maggi, A.J. Mooij, W.M.P. van der Aalst. "User-guided discovery of declarative process
models." IEEE CIDM 2011, pp. 192-199.

Examples
--------
>>> from procvault.monitor.discovery.counts import DeclareActivityStat, DiscoveryCounts
>>> counts = DiscoveryCounts(
...     events=3, cases_started=2, cases_completed=2,
...     declare_activities=(DeclareActivityStat("A", 2, 2, 2), DeclareActivityStat("B", 1, 1, 0)),
...     declare_pairs=(DeclarePairStat("A", "B", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),
...                    DeclarePairStat("B", "A", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
... )
>>> model = discover_declare(counts, DeclareSettings(templates=("existence", "response")))
>>> [(c.template, c.activities, c.support, c.confidence) for c in model.constraints]
[('existence', ('A',), 2, 2)]
>>> model.min_support_ratio, model.min_confidence_ratio
(0.8, 0.8)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Final

import msgspec

from ..errors import ConfigError
from .counts import DeclarePairStat, DiscoveryCounts

__all__ = [
    "BINARY_TEMPLATES",
    "TEMPLATES",
    "UNARY_TEMPLATES",
    "Constraint",
    "DeclareResult",
    "DeclareSettings",
    "candidate_rules",
    "discover_declare",
]

#: Templates on one activity (pm4py's names).
UNARY_TEMPLATES: Final = ("existence", "absence", "exactly_one", "init")
#: Templates on an ordered pair of activities (pm4py's names).
BINARY_TEMPLATES: Final = (
    "responded_existence",
    "response",
    "precedence",
    "succession",
    "altresponse",
    "altprecedence",
    "altsuccession",
    "chainresponse",
    "chainprecedence",
    "chainsuccession",
    "coexistence",
    "noncoexistence",
    "nonsuccession",
    "nonchainsuccession",
)
#: Every template, the set pm4py's ``discover_declare`` computes by default.
TEMPLATES: Final = UNARY_TEMPLATES + BINARY_TEMPLATES

#: A template is computed only when these are allowed as well (pm4py's rule).
_NEEDS: Final[dict[str, tuple[str, ...]]] = {
    "absence": ("existence",),
    "succession": ("response", "precedence"),
    "altsuccession": ("altresponse", "altprecedence"),
    "chainsuccession": ("chainresponse", "chainprecedence"),
    "coexistence": ("responded_existence",),
    "noncoexistence": ("coexistence", "responded_existence"),
    "nonsuccession": ("succession", "response", "precedence"),
    "nonchainsuccession": ("chainsuccession", "chainresponse", "chainprecedence"),
}


class DeclareSettings(msgspec.Struct, frozen=True, kw_only=True):
    """pm4py's ``discover_declare`` parameters: the allowed templates (default: all of
    :data:`TEMPLATES`) and the two ratios (``None``: chosen automatically, see the module
    docstring)."""

    templates: tuple[str, ...] = TEMPLATES
    min_support_ratio: float | None = None
    min_confidence_ratio: float | None = None
    auto_selection_multiplier: float = 0.8

    def __post_init__(self) -> None:
        if isinstance(self.templates, str):
            raise ConfigError("templates must be a collection of template names, not a string")
        unknown = sorted(set(self.templates) - set(TEMPLATES))
        if unknown:
            raise ConfigError(f"unknown Declare templates {unknown}; known: {list(TEMPLATES)}")
        for name in ("min_support_ratio", "min_confidence_ratio"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value)
            ):
                raise ConfigError(f"{name} must be a number or None, not {value!r}")
        m = self.auto_selection_multiplier
        if isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m):
            raise ConfigError(f"auto_selection_multiplier must be a finite number, not {m!r}")

    def computed(self) -> tuple[str, ...]:
        """The templates that are computed: allowed, with everything they need allowed."""
        allowed = set(self.templates)
        return tuple(t for t in TEMPLATES if t in allowed and set(_NEEDS.get(t, ())) <= allowed)


class Constraint(msgspec.Struct, frozen=True, array_like=True):
    """A discovered rule: its template, activities (one or two), support and confidence (in
    cases)."""

    template: str
    activities: tuple[str, ...]
    support: int
    confidence: int


class DeclareResult(msgspec.Struct, frozen=True, kw_only=True):
    """The Declare model derived from counts: the kept rules (sorted by template, then
    activities), over ``cases`` completed cases, with the ratios that selected them."""

    settings: DeclareSettings
    cases: int
    min_support_ratio: float
    min_confidence_ratio: float
    constraints: tuple[Constraint, ...]


_ZERO: Final = DeclarePairStat("", "", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def candidate_rules(
    counts: DiscoveryCounts, settings: DeclareSettings | None = None
) -> Iterator[Constraint]:
    """Every rule of the computed templates with its support and confidence, support 0
    included, in template order (pm4py's whole rules table, summed per column)."""
    s = settings if settings is not None else DeclareSettings()
    templates = s.computed()
    n = counts.cases_completed
    acts = {a.name: a for a in counts.declare_activities if a.cases}
    names = sorted(acts)
    pairs = {(p.a, p.b): p for p in counts.declare_pairs}
    for t in templates:
        if t in UNARY_TEMPLATES:
            for a in names:
                st = acts[a]
                conf = {
                    "existence": st.cases,
                    "absence": n - st.cases,
                    "exactly_one": st.once,
                    "init": st.first,
                }[t]
                yield Constraint(t, (a,), n, conf)
            continue
        for a in names:
            ca = acts[a].cases
            for b in names:
                if a == b:
                    continue
                cb = acts[b].cases
                p = pairs.get((a, b), _ZERO)
                union = ca + cb - p.both
                yield Constraint(t, (a, b), *_binary(t, p, ca, cb, union))


#: Per binary template: whose cases activate it (``"a"``, ``"b"`` or ``"union"``: either), and
#: its satisfied cases from the pair's tallies and the union's size.
_BINARY: Final[dict[str, tuple[str, Callable[[DeclarePairStat, int], int]]]] = {
    "responded_existence": ("a", lambda p, u: p.both),
    "response": ("a", lambda p, u: p.response),
    "precedence": ("b", lambda p, u: p.precedence),
    "succession": ("union", lambda p, u: p.succession),
    "altresponse": ("a", lambda p, u: p.alt_response),
    "altprecedence": ("b", lambda p, u: p.alt_precedence),
    "altsuccession": ("union", lambda p, u: p.alt_succession),
    "chainresponse": ("a", lambda p, u: p.chain_response),
    "chainprecedence": ("b", lambda p, u: p.chain_precedence),
    "chainsuccession": ("union", lambda p, u: p.chain_succession),
    "coexistence": ("union", lambda p, u: p.both),
    "noncoexistence": ("union", lambda p, u: u - p.both),
    "nonsuccession": ("union", lambda p, u: u - p.succession),
    "nonchainsuccession": ("union", lambda p, u: u - p.chain_succession),
}


def _binary(t: str, p: DeclarePairStat, ca: int, cb: int, union: int) -> tuple[int, int]:
    """``(support, confidence)`` of binary template ``t`` on the pair ``p``."""
    who, satisfied = _BINARY[t]
    support = ca if who == "a" else cb if who == "b" else union
    return support, satisfied(p, union)


def discover_declare(
    counts: DiscoveryCounts, settings: DeclareSettings | None = None
) -> DeclareResult:
    """The Declare model of ``counts``' completed cases, selected as pm4py selects it.

    Raises ``ValueError`` if ``counts`` hold no Declare tallies (a tracker without Declare).
    """
    s = settings if settings is not None else DeclareSettings()
    if not counts.declare:
        raise ValueError("these counts hold no Declare tallies (tracked with declare=False)")
    n = counts.cases_completed
    if n == 0:
        return DeclareResult(
            settings=s, cases=0, min_support_ratio=0.0, min_confidence_ratio=0.0, constraints=()
        )
    rules = [r for r in candidate_rules(counts, s) if r.support > 0]
    min_supp, min_conf = s.min_support_ratio, s.min_confidence_ratio
    if min_supp is None and min_conf is None:
        if not rules:
            return DeclareResult(
                settings=s, cases=n, min_support_ratio=0.0, min_confidence_ratio=0.0,
                constraints=(),
            )  # fmt: skip
        mult = s.auto_selection_multiplier
        best = max(
            rules,
            key=lambda r: (
                float(r.support) / float(n) * (float(r.confidence) / float(r.support)),
                (r.template, *r.activities),
            ),
        )
        min_supp = float(best.support) / float(n) * mult
        min_conf = float(best.confidence) / float(best.support) * mult
    min_supp = 0.0 if min_supp is None else float(min_supp)
    min_conf = 0.0 if min_conf is None else float(min_conf)
    kept = [r for r in rules if r.support >= n * min_supp and r.confidence >= r.support * min_conf]
    kept.sort(key=lambda r: (r.template, r.activities))
    return DeclareResult(
        settings=s,
        cases=n,
        min_support_ratio=min_supp,
        min_confidence_ratio=min_conf,
        constraints=tuple(kept),
    )
