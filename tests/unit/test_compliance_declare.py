"""Declare templates against an independent brute-force LTLf reference (Hypothesis).

Each template is written as an LTLf formula over finite traces (Montali et al.'s Declare
semantics; conditions become atom predicates), evaluated by a direct recursive evaluator. The
RV-LTL verdict of a prefix ``u`` is brute-forced from the formula: permanently satisfied
(violated) if every extension ``u·v`` with ``|v| <= 2`` over the alphabet satisfies (violates)
it, otherwise temporarily satisfied or violated by ``u`` itself. With counts at most 2 (at
most 1 for ``absence``), two extra events are enough to witness every change these templates
can undergo. The engine must report that verdict after every event, and Satisfied/Violated
(the LTLf value of the finished trace) when the case completes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.compliance import (
    TEMPLATES,
    UNARY_TEMPLATES,
    AttrTest,
    Compliance,
    DeclareRule,
)
from procvault.monitor.event import Event

Sym = tuple[str, int]  # (activity, value of attribute x)
Trace = tuple[Sym, ...]
F = Callable[[Trace, int], bool]

ALPHABET: tuple[Sym, ...] = tuple(itertools.product("ABC", (0, 1)))
T0 = datetime(2024, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------------------- LTLf
def atom(p: Callable[[Sym], bool]) -> F:
    return lambda t, i: i < len(t) and p(t[i])


def neg(f: F) -> F:
    return lambda t, i: not f(t, i)


def conj(*fs: F) -> F:
    return lambda t, i: all(f(t, i) for f in fs)


def disj(*fs: F) -> F:
    return lambda t, i: any(f(t, i) for f in fs)


def implies(f: F, g: F) -> F:
    return disj(neg(f), g)


def nxt(f: F) -> F:  # strong next
    return lambda t, i: i + 1 < len(t) and f(t, i + 1)


def wnxt(f: F) -> F:  # weak next
    return lambda t, i: i + 1 >= len(t) or f(t, i + 1)


def ev(f: F) -> F:  # eventually
    return lambda t, i: any(f(t, j) for j in range(i, len(t)))


def alw(f: F) -> F:  # always
    return lambda t, i: all(f(t, j) for j in range(i, len(t)))


def until(f: F, g: F) -> F:
    def u(t: Trace, i: int) -> bool:
        for j in range(i, len(t)):
            if g(t, j):
                return True
            if not f(t, j):
                return False
        return False

    return u


def wuntil(f: F, g: F) -> F:
    return disj(until(f, g), alw(f))


TRUE: F = lambda t, i: True  # noqa: E731
FALSE: F = lambda t, i: False  # noqa: E731


def at_least(a: F, n: int) -> F:
    return TRUE if n == 0 else ev(conj(a, nxt(at_least(a, n - 1)) if n > 1 else a))


def formula(template: str, a: F, b: F, n: int) -> F:  # noqa: PLR0911
    """Declare semantics (activation ``a``, target ``b``), as documented in docs/rules.md."""
    match template:
        case "existence":
            return at_least(a, n)
        case "absence":
            return neg(at_least(a, n + 1))
        case "exactly":
            return conj(at_least(a, n), neg(at_least(a, n + 1)))
        case "init":
            return a
        case "end":
            return ev(conj(a, wnxt(FALSE)))
        case "responded_existence":
            return implies(ev(a), ev(b))
        case "co_existence":
            return conj(implies(ev(a), ev(b)), implies(ev(b), ev(a)))
        case "response":
            return alw(implies(a, ev(b)))
        case "precedence":
            return wuntil(neg(a), b)
        case "succession":
            return conj(alw(implies(a, ev(b))), wuntil(neg(b), a))
        case "alternate_response":
            return alw(implies(a, nxt(until(neg(a), b))))
        case "alternate_precedence":
            return conj(wuntil(neg(a), b), alw(implies(a, wnxt(wuntil(neg(a), b)))))
        case "alternate_succession":
            return conj(
                alw(implies(a, nxt(until(neg(a), b)))),
                wuntil(neg(b), a),
                alw(implies(b, wnxt(wuntil(neg(b), a)))),
            )
        case "chain_response":
            return alw(implies(a, nxt(b)))
        case "chain_precedence":
            return conj(neg(a), alw(implies(nxt(a), b)))
        case "chain_succession":
            return conj(alw(implies(a, nxt(b))), neg(b), alw(implies(nxt(b), a)))
        case "not_coexistence":
            return neg(conj(ev(a), ev(b)))
        case "not_succession":
            return alw(implies(a, neg(ev(b))))
        case "not_chain_succession":
            return alw(implies(a, wnxt(neg(b))))
    raise AssertionError(template)


EXTENSIONS: tuple[Trace, ...] = (
    (),
    *((s,) for s in ALPHABET),
    *itertools.product(ALPHABET, repeat=2),
)


def rv_verdict(phi: F, u: Trace) -> str:
    values = {phi((*u, *v), 0) for v in EXTENSIONS}
    if values == {True}:
        return "Satisfied"
    if values == {False}:
        return "Violated"
    return "TemporarySatisfied" if phi(u, 0) else "TemporaryViolated"


# ----------------------------------------------------------------------------- rules
COND = {None: None, 0: AttrTest("x", "eq", 0), 1: AttrTest("x", "eq", 1)}


@cache
def _case(template: str, acond: int | None, tcond: int | None, n: int) -> tuple[DeclareRule, F]:
    unary = template in UNARY_TEMPLATES
    rule = DeclareRule(
        "r",
        template,
        "A",
        None if unary else "B",
        activation_if=() if acond is None else (COND[acond],),
        target_if=() if tcond is None or unary else (COND[tcond],),
        count=n,
    )

    def pa(s: Sym) -> bool:
        return s[0] == "A" and (acond is None or s[1] == acond)

    def pb(s: Sym) -> bool:
        return s[0] == "B" and (tcond is None or s[1] == tcond)

    return rule, formula(template, atom(pa), atom(pb), n)


def _event(i: int, s: Sym) -> Event:
    return Event.create("c", s[0], T0 + timedelta(minutes=i), attributes={"x": s[1]})


templates = st.sampled_from(sorted(TEMPLATES))
traces = st.lists(st.sampled_from(ALPHABET), max_size=7).map(tuple)


@settings(max_examples=400, deadline=timedelta(seconds=2))
@given(
    template=templates,
    acond=st.sampled_from([None, 0, 1]),
    tcond=st.sampled_from([None, 0, 1]),
    n=st.integers(0, 2),
    trace=traces,
)
def test_declare_verdicts_match_brute_force_ltlf(
    template: str, acond: int | None, tcond: int | None, n: int, trace: Trace
) -> None:
    if template == "existence":
        n = max(n, 1)
    elif template == "absence":
        n = min(n, 1)  # at most n: n + 1 events must fit in the extensions
    elif template != "exactly":
        n = 1
    rule, phi = _case(template, acond, tcond, n)
    cc = Compliance([rule], alerts="changes")
    assert cc.states("c")["r"] == rv_verdict(phi, ()), "initial verdict"
    for i, s in enumerate(trace):
        cc.update(_event(i, s))
        assert cc.states("c")["r"] == rv_verdict(phi, trace[: i + 1]), (trace[: i + 1], i)
    if trace:
        final = cc.complete("c")["r"]
        assert final == ("Satisfied" if phi(trace, 0) else "Violated")


@settings(max_examples=150, deadline=timedelta(seconds=2))
@given(template=templates, trace=traces, cut=st.integers(0, 7))
def test_snapshot_restore_continues_identically(template: str, trace: Trace, cut: int) -> None:
    rule, _ = _case(template, None, None, 1)
    whole = Compliance([rule], alerts="changes")
    first = Compliance([rule], alerts="changes")
    alerts_whole = [a for i, s in enumerate(trace) for a in whole.update(_event(i, s))]
    alerts_split = [a for i, s in enumerate(trace[:cut]) for a in first.update(_event(i, s))]
    second = Compliance([rule], alerts="changes")
    if "c" in first:
        snap = first.snapshot("c")
        hash(snap.verdicts)
        second.restore(snap)
    for i, s in enumerate(trace[cut:], start=cut):
        alerts_split.extend(second.update(_event(i, s)))
    assert alerts_split == alerts_whole
    if trace:
        assert second.complete("c") == whole.complete("c")
