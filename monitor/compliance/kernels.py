"""Incremental evaluators ("kernels"), one per Declare template family, plus the state machine.

A kernel is compiled once from a rule. Per case it owns one *slot*: a verdict (a state number,
see :mod:`.model`) in ``case.v[slot]`` and a small data value in ``case.d[slot]`` (a flag, a
counter, a short list of pending activations). It exposes the handlers the evaluator calls:

* ``act(case, event)`` for an event of the activation activity,
* ``tgt(case, event)`` for an event of the target activity,
* ``nxt(case, event)`` for the event right after the kernel asked to watch it,
* ``expire(case, watermark)`` when one of its deadlines may have passed,
* ``close(case)`` at the end of the case (temporary verdicts become permanent).

Every handler does O(1) work per call, except with correlation or time windows, where it walks
the case's open activations of that rule (usually one or two). Permanent verdicts never change.

**Codes and verdict maps.** ``case.v`` is a ``bytearray``: a slot's byte is a *code*, a state
number or a temporary state with a *phase* (:func:`phased`; :data:`PUBLIC` gives the state of
each code). A kernel of a rule without correlation or time window keeps all it needs in the
phase (the count of a counting rule, "a target came since the last activation", "an activation
came"), so its handlers are pure code-to-code maps (:meth:`Kernel.maps`) that the evaluator
applies in its dispatch loop without calling anything; the others keep their data in
``case.d`` and are called.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final

from ..event import AttrValue, Event
from .model import (
    END,
    INIT,
    SATISFIED,
    TEMP_SATISFIED,
    TEMP_VIOLATED,
    VIOLATED,
    Aggregate,
    AttrTest,
    DeclareRule,
    Guard,
    StateMachineRule,
    _compare,
    _value,
)

__all__ = ["Case", "Kernel", "StateMachineKernel", "declare_kernels"]

Check = Callable[[Event], bool]
Key = tuple[AttrValue, ...]
#: An open activation or a remembered target: its time and its correlation key.
Rec = tuple[datetime, Key]

_RANK = {VIOLATED: 0, TEMP_VIOLATED: 1, TEMP_SATISFIED: 2, SATISFIED: 3, INIT: 2}


def conj(a: int, b: int) -> int:
    """RV-LTL conjunction: the weaker of two verdicts (V < TV < TS < S)."""
    return a if _RANK[a] <= _RANK[b] else b


class Case:
    """Per-case state of the evaluator: verdicts and data per slot, the previous event.

    A rule's state is its slot's verdict, or the conjunction of its two slots' verdicts.
    """

    __slots__ = ("d", "last", "v", "watch")

    def __init__(self, v: bytearray, watch: list[int] | None) -> None:
        #: verdict per kernel slot (a state number per byte)
        self.v = v
        #: kernel data per slot (None until first used)
        self.d: list[Any] = [None] * len(v)
        #: the previous activity event of the case
        self.last: Event | None = None
        #: slots that watch the next event
        self.watch = watch


def _getter(attr: str) -> Callable[[Event], AttrValue]:
    """A function reading ``attr`` from an event, as :func:`.model._value` does."""
    if attr in ("resource", "org:resource"):
        return lambda ev: ev.resource
    if attr == "org":
        return lambda ev: ev.org or None

    def scan(ev: Event) -> AttrValue:
        for k, v in ev.attributes:
            if k == attr:
                return v  # type: ignore[no-any-return]
        return None

    return scan


def compile_test(test: AttrTest) -> Check:
    """``test.holds`` as a closure specialised to its operator (same results, fewer steps).

    >>> from datetime import datetime, UTC
    >>> e = Event.create("c", "A", datetime(2024, 1, 1, tzinfo=UTC), attributes={"g": "B"})
    >>> compile_test(AttrTest("g", "in", frozenset({"A", "B"})))(e)
    True
    """
    get, op, want, attr = _getter(test.attr), test.op, test.value, test.attr
    if op == "in" and attr not in ("resource", "org:resource", "org"):  # the common case

        def in_set(ev: Event) -> bool:
            for k, x in ev.attributes:
                if k == attr:
                    return x is not None and x in want  # type: ignore[operator]
            return False

        return in_set
    if op == "in":
        return lambda ev: (x := get(ev)) is not None and x in want  # type: ignore[operator]
    if op == "not_in":
        return lambda ev: (x := get(ev)) is not None and x not in want  # type: ignore[operator]
    if op == "eq":
        return lambda ev: (x := get(ev)) is not None and x == want
    if op == "ne":
        return lambda ev: (x := get(ev)) is not None and x != want
    return test.holds


def _check(tests: tuple[AttrTest, ...]) -> Check | None:
    if not tests:
        return None
    checks = tuple(compile_test(t) for t in tests)
    if len(checks) == 1:
        return checks[0]
    return lambda ev: all(f(ev) for f in checks)


# ----------------------------------------------------------------------------- verdict codes
# A slot's byte in ``Case.v`` holds a *code*: one of the six state numbers, or a state with a
# phase (TemporarySatisfied or TemporaryViolated, plus what a simple kernel must remember: how
# many activations a counting rule has seen, whether a target came since the last activation).
# With the phase in the code, the handlers of every Declare rule without correlation or window
# are pure maps from code to code, applied by the evaluator without a call.
#: phases per temporary state (a counting rule with a larger count is evaluated by calls)
N_PHASES: Final = 15
#: the number of codes: six states, then TemporarySatisfied and TemporaryViolated phases
N_CODES: Final = 6 + 2 * N_PHASES


def phased(state: int, phase: int) -> int:
    """The code of ``state`` (TemporarySatisfied/TemporaryViolated) in ``phase`` (0: itself)."""
    if phase == 0:
        return state
    if state not in (TEMP_SATISFIED, TEMP_VIOLATED) or not 0 < phase <= N_PHASES:
        raise ValueError(f"no phase {phase} of state {state}")
    return 6 + (0 if state == TEMP_SATISFIED else N_PHASES) + phase - 1


#: the state each code stands for, as a ``bytes.translate`` table
PUBLIC: Final = bytes(
    [*range(6), *[TEMP_SATISFIED] * N_PHASES, *[TEMP_VIOLATED] * N_PHASES, *[0] * (256 - N_CODES)]
)

#: A verdict map: the new code per current code (-1: no change).
VerdictMap = tuple[int, ...]


def _vmap(changes: dict[int, int]) -> VerdictMap:
    return tuple(changes.get(x, -1) for x in range(N_CODES))


class Kernel:
    """Base class: the fixed settings of one slot."""

    #: the verdict of a new case
    initial = TEMP_SATISFIED
    #: whether the kernel uses watchers (``nxt``)
    watches = False
    #: whether the kernel registers deadlines (``expire``)
    deadlines = False
    #: the verdicts in which ``act`` / ``tgt`` can change anything (others are skipped)
    act_live: frozenset[int] = frozenset({TEMP_SATISFIED, TEMP_VIOLATED})
    tgt_live: frozenset[int] = frozenset({TEMP_SATISFIED, TEMP_VIOLATED})

    def __init__(self, slot: int, rule: DeclareRule, activation: str, target: str | None) -> None:
        self.slot = slot
        self.rule = rule
        self.activation = activation
        self.target = target
        self.acond = _check(rule.activation_if)
        self.tcond = _check(rule.target_if)
        self.corr = tuple((c.attr, c.same) for c in rule.correlation)
        self.window = rule.window
        self.within: timedelta | None = rule.window.within if rule.window else None
        self.simple = not self.corr and rule.window is None
        #: set by the evaluator: push(deadline, case_id, slot)
        self.push: Callable[[datetime, str, int], None] | None = None

    #: pure verdict maps for ``act`` / ``tgt`` (see :meth:`maps`); None: call the handler
    act_map: VerdictMap | None = None
    tgt_map: VerdictMap | None = None

    def maps(self) -> tuple[VerdictMap | None, VerdictMap | None]:
        """``act``/``tgt`` as verdict maps, when that is all they do (no data, no time).

        The evaluator then applies them in its loop (after the condition on the event) and
        never calls the handler: most handlers of rules without correlation or window only
        move the verdict. ``act_live``/``tgt_live`` are exactly the verdicts a map changes.
        """
        return self.act_map, self.tgt_map

    # -- helpers -------------------------------------------------------------------------
    def key(self, ev: Event) -> Key:
        if not self.corr:
            return ()
        return tuple(_value(ev, a) for a, _ in self.corr)

    def match(self, a: Key, b: Key) -> bool:
        for (_, same), x, y in zip(self.corr, a, b, strict=True):
            if x is None or y is None or (x == y) != same:
                return False
        return True

    def fits(self, delay: timedelta) -> bool:
        w = self.window
        return w is None or w.admits(delay)

    # -- handlers (overridden) -----------------------------------------------------------
    def act(self, c: Case, ev: Event) -> None:
        """An event of the activation activity."""

    def tgt(self, c: Case, ev: Event) -> None:
        """An event of the target activity."""

    def nxt(self, c: Case, ev: Event) -> None:
        """The event after a watch request."""

    def expire(self, c: Case, case_id: str, watermark: datetime) -> None:
        """Deadlines before ``watermark`` have passed."""

    def close(self, c: Case) -> None:
        """End of the case: temporary verdicts become permanent."""
        v = c.v[self.slot]
        if v == TEMP_SATISFIED:
            c.v[self.slot] = SATISFIED
        elif v == TEMP_VIOLATED:
            c.v[self.slot] = VIOLATED

    def snapshot_data(self, data: Any) -> Any:
        """An immutable copy of a slot's data."""
        if isinstance(data, list):
            return tuple(data)
        return data

    def restore_data(self, data: Any) -> Any:
        """The mutable form of :meth:`snapshot_data`."""
        if isinstance(data, tuple) and not (data and isinstance(data[0], datetime)):
            return list(data)
        return data


# ----------------------------------------------------------------------------- counting
class Existence(Kernel):
    """existence (at least n), absence (at most n), exactly (n)."""

    def __init__(self, slot: int, rule: DeclareRule, activation: str, target: str | None) -> None:
        super().__init__(slot, rule, activation, target)
        self.mode = rule.template
        self.n = rule.count
        self.initial = self._verdict(0)
        if self.mode == "existence":
            self.act_live = frozenset({TEMP_VIOLATED})
        elif self.mode == "absence":
            self.act_live = frozenset({TEMP_SATISFIED})
        if self.n <= N_PHASES:  # the count is the phase: an activation maps code to code
            codes: list[int] = []
            for k in range(self.n + 2):
                v = self._verdict(k)
                same = sum(1 for j in range(k) if self._verdict(j) == v)
                codes.append(v if v in (VIOLATED, SATISFIED) else phased(v, same))
            changes = {a: b for a, b in itertools.pairwise(codes) if a != b}
            self.act_map = _vmap(changes)
            self.act_live = frozenset(changes)

    def _verdict(self, k: int) -> int:
        n = self.n
        if self.mode == "existence":
            return SATISFIED if k >= n else TEMP_VIOLATED
        if self.mode == "absence":
            return VIOLATED if k > n else TEMP_SATISFIED
        if k > n:
            return VIOLATED
        return TEMP_SATISFIED if k == n else TEMP_VIOLATED

    def act(self, c: Case, ev: Event) -> None:
        if self.acond is not None and not self.acond(ev):
            return
        k = (c.d[self.slot] or 0) + 1
        c.d[self.slot] = k
        c.v[self.slot] = self._verdict(k)


class Init(Kernel):
    """The case's first event is the activity (watches the first event)."""

    act_live = frozenset()
    tgt_live = frozenset()

    initial = TEMP_VIOLATED
    watches = True

    def nxt(self, c: Case, ev: Event) -> None:
        ok = ev.activity == self.activation and (self.acond is None or self.acond(ev))
        c.v[self.slot] = SATISFIED if ok else VIOLATED


class End(Kernel):
    """The case's last event is the activity."""

    initial = TEMP_VIOLATED
    watches = True

    def act(self, c: Case, ev: Event) -> None:
        if self.acond is not None and not self.acond(ev):
            return
        c.v[self.slot] = TEMP_SATISFIED
        _watch(c, self.slot)

    def nxt(self, c: Case, ev: Event) -> None:
        if ev.activity != self.activation or (self.acond is not None and not self.acond(ev)):
            c.v[self.slot] = TEMP_VIOLATED


def _watch(c: Case, slot: int) -> None:
    if c.watch is None:
        c.watch = [slot]
    else:
        c.watch.append(slot)


# ----------------------------------------------------------------------------- obligations
class Response(Kernel):
    """Every activation is followed by a target (in the window, correlated)."""

    deadlines = True
    tgt_live = frozenset({TEMP_VIOLATED})

    def __init__(self, slot: int, rule: DeclareRule, activation: str, target: str | None) -> None:
        super().__init__(slot, rule, activation, target)
        if self.simple and type(self) is Response:
            self.act_live = frozenset({TEMP_SATISFIED})  # a second activation changes nothing
            self.act_map = _vmap({TEMP_SATISFIED: TEMP_VIOLATED})
        if self.simple:
            self.tgt_map = _vmap({TEMP_VIOLATED: TEMP_SATISFIED})

    def act(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] == VIOLATED or (self.acond is not None and not self.acond(ev)):
            return
        if self.simple:
            c.d[s] = True
        else:
            pend = c.d[s]
            if pend is None:
                pend = c.d[s] = []
            pend.append((ev.timestamp, self.key(ev)))
            if self.within is not None and self.push is not None:
                self.push(ev.timestamp + self.within, ev.case_id, s)
        c.v[s] = TEMP_VIOLATED

    def tgt(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] != TEMP_VIOLATED or (self.tcond is not None and not self.tcond(ev)):
            return
        if self.simple:
            c.d[s] = False
            c.v[s] = TEMP_SATISFIED
            return
        key = self.key(ev)
        ts = ev.timestamp
        keep = [r for r in c.d[s] if not (self.match(r[1], key) and self.fits(ts - r[0]))]
        c.d[s] = keep
        if not keep:
            c.v[s] = TEMP_SATISFIED

    def expire(self, c: Case, case_id: str, watermark: datetime) -> None:
        s = self.slot
        if c.v[s] != TEMP_VIOLATED or self.within is None:
            return
        limit = watermark - self.within
        for r in c.d[s]:
            if r[0] < limit:
                c.v[s] = VIOLATED
                return


class AlternateResponse(Response):
    """Every activation is followed by a target before the next activation."""

    def __init__(self, slot: int, rule: DeclareRule, activation: str, target: str | None) -> None:
        super().__init__(slot, rule, activation, target)
        if self.simple:  # an open activation violates; otherwise one opens
            self.act_map = _vmap({TEMP_SATISFIED: TEMP_VIOLATED, TEMP_VIOLATED: VIOLATED})

    def act(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] == VIOLATED or (self.acond is not None and not self.acond(ev)):
            return
        if c.v[s] == TEMP_VIOLATED:  # the previous activation is still open
            c.v[s] = VIOLATED
            return
        super().act(c, ev)


class ChainResponse(Kernel):
    """Every activation is immediately followed by a target."""

    tgt_live = frozenset()

    watches = True
    deadlines = True

    def act(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] == VIOLATED or (self.acond is not None and not self.acond(ev)):
            return
        c.d[s] = (ev.timestamp, self.key(ev)) if not self.simple else True
        c.v[s] = TEMP_VIOLATED
        _watch(c, s)
        if self.within is not None and self.push is not None:
            self.push(ev.timestamp + self.within, ev.case_id, s)

    def nxt(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] != TEMP_VIOLATED:
            return
        ok = ev.activity == self.target and (self.tcond is None or self.tcond(ev))
        if ok and not self.simple:
            ts, key = c.d[s]
            ok = self.match(key, self.key(ev)) and self.fits(ev.timestamp - ts)
        c.d[s] = None
        c.v[s] = TEMP_SATISFIED if ok else VIOLATED

    def expire(self, c: Case, case_id: str, watermark: datetime) -> None:
        s = self.slot
        w = self.within
        open_at = c.d[s]
        if c.v[s] == TEMP_VIOLATED and w is not None and open_at is not None:
            c.v[s] = VIOLATED if open_at[0] < watermark - w else c.v[s]


class RespondedExistence(Kernel):
    """Every activation has a target somewhere in the case (before or after)."""

    def __init__(self, slot: int, rule: DeclareRule, activation: str, target: str | None) -> None:
        super().__init__(slot, rule, activation, target)
        if self.simple:
            self.act_live = frozenset({TEMP_SATISFIED})
            self.act_map = _vmap({TEMP_SATISFIED: TEMP_VIOLATED})
            self.tgt_map = _vmap({TEMP_SATISFIED: SATISFIED, TEMP_VIOLATED: SATISFIED})

    def act(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] == SATISFIED or (self.acond is not None and not self.acond(ev)):
            return
        if self.simple:
            c.v[s] = TEMP_VIOLATED  # no target yet, or the verdict would be Satisfied
            return
        d = c.d[s]
        if d is None:
            d = c.d[s] = ([], [])
        key = self.key(ev)
        if any(self.match(key, t) for t in d[1]):
            return
        d[0].append(key)
        c.v[s] = TEMP_VIOLATED

    def tgt(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] == SATISFIED or (self.tcond is not None and not self.tcond(ev)):
            return
        if self.simple:
            c.v[s] = SATISFIED  # every activation, past or future, has its target
            return
        d = c.d[s]
        if d is None:
            d = c.d[s] = ([], [])
        key = self.key(ev)
        d[1].append(key)
        d[0][:] = [a for a in d[0] if not self.match(a, key)]
        if not d[0]:
            c.v[s] = TEMP_SATISFIED

    def snapshot_data(self, data: Any) -> Any:
        if isinstance(data, tuple):
            return (tuple(data[0]), tuple(data[1]))
        return data

    def restore_data(self, data: Any) -> Any:
        if isinstance(data, tuple):
            return (list(data[0]), list(data[1]))
        return data


# ----------------------------------------------------------------------------- look-backs
class Precedence(Kernel):
    """Every activation is preceded by a target (in the window, correlated)."""

    act_live = frozenset({TEMP_SATISFIED})
    tgt_live = frozenset({TEMP_SATISFIED})

    def __init__(self, slot: int, rule: DeclareRule, activation: str, target: str | None) -> None:
        super().__init__(slot, rule, activation, target)
        if self.simple:  # a target settles every later activation; an activation first violates
            self.act_map = _vmap({TEMP_SATISFIED: VIOLATED})
            self.tgt_map = _vmap({TEMP_SATISFIED: SATISFIED})

    def tgt(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] in (VIOLATED, SATISFIED) or (self.tcond is not None and not self.tcond(ev)):
            return
        if self.simple:
            c.v[s] = SATISFIED  # every later activation is preceded by this target
            return
        seen = c.d[s]
        if seen is None:
            seen = c.d[s] = []
        seen.append((ev.timestamp, self.key(ev)))

    def act(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] in (VIOLATED, SATISFIED) or (self.acond is not None and not self.acond(ev)):
            return
        if self.simple:
            c.v[s] = VIOLATED
            return
        seen = c.d[s] or ()
        key, ts = self.key(ev), ev.timestamp
        if not any(self.match(key, r[1]) and self.fits(ts - r[0]) for r in seen):
            c.v[s] = VIOLATED
        elif (
            self.within is not None
        ):  # targets too old for this activation are too old for later ones
            limit = ts - self.within
            c.d[s] = [r for r in seen if r[0] >= limit]


class AlternatePrecedence(Kernel):
    """Every activation is preceded by a target, with no other activation in between."""

    act_live = frozenset({TEMP_SATISFIED})
    tgt_live = frozenset({TEMP_SATISFIED})

    def __init__(self, slot: int, rule: DeclareRule, activation: str, target: str | None) -> None:
        super().__init__(slot, rule, activation, target)
        if self.simple:  # phase 1: a target came since the last activation
            ready = phased(TEMP_SATISFIED, 1)
            self.tgt_map = _vmap({TEMP_SATISFIED: ready})
            self.act_map = _vmap({ready: TEMP_SATISFIED, TEMP_SATISFIED: VIOLATED})
            self.act_live = frozenset({ready, TEMP_SATISFIED})

    def tgt(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] == VIOLATED or (self.tcond is not None and not self.tcond(ev)):
            return
        if self.simple:
            c.d[s] = True
            return
        seen = c.d[s]
        if seen is None:
            seen = c.d[s] = []
        seen.append((ev.timestamp, self.key(ev)))

    def act(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] == VIOLATED or (self.acond is not None and not self.acond(ev)):
            return
        if self.simple:
            ok = bool(c.d[s])
        else:
            key, ts = self.key(ev), ev.timestamp
            ok = any(self.match(key, r[1]) and self.fits(ts - r[0]) for r in c.d[s] or ())
        c.d[s] = None
        if not ok:
            c.v[s] = VIOLATED


class ChainPrecedence(Kernel):
    """Every activation is immediately preceded by a target."""

    act_live = frozenset({TEMP_SATISFIED})
    tgt_live = frozenset({TEMP_SATISFIED})

    def act(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] == VIOLATED or (self.acond is not None and not self.acond(ev)):
            return
        prev = c.last
        ok = (
            prev is not None
            and prev.activity == self.target
            and (self.tcond is None or self.tcond(prev))
        )
        if ok and not self.simple:
            assert prev is not None
            ok = self.match(self.key(ev), self.key(prev)) and self.fits(
                ev.timestamp - prev.timestamp
            )
        if not ok:
            c.v[s] = VIOLATED


class NotSuccession(Kernel):
    """No target follows an activation (in the window, correlated)."""

    act_live = frozenset({TEMP_SATISFIED})
    tgt_live = frozenset({TEMP_SATISFIED})

    def __init__(self, slot: int, rule: DeclareRule, activation: str, target: str | None) -> None:
        super().__init__(slot, rule, activation, target)
        if self.simple:  # phase 1: an activation came; a target then violates
            armed = phased(TEMP_SATISFIED, 1)
            self.act_map = _vmap({TEMP_SATISFIED: armed})
            self.tgt_map = _vmap({armed: VIOLATED})
            self.tgt_live = frozenset({armed})

    def act(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] == VIOLATED or (self.acond is not None and not self.acond(ev)):
            return
        if self.simple:
            c.d[s] = True
            return
        seen = c.d[s]
        if seen is None:
            seen = c.d[s] = []
        seen.append((ev.timestamp, self.key(ev)))

    def tgt(self, c: Case, ev: Event) -> None:
        s = self.slot
        d = c.d[s]
        if not d or c.v[s] == VIOLATED or (self.tcond is not None and not self.tcond(ev)):
            return
        if self.simple:
            c.v[s] = VIOLATED
            return
        key, ts = self.key(ev), ev.timestamp
        if any(self.match(r[1], key) and self.fits(ts - r[0]) for r in d):
            c.v[s] = VIOLATED
        elif self.within is not None:
            limit = ts - self.within
            c.d[s] = [r for r in d if r[0] >= limit]


class NotChainSuccession(Kernel):
    """An activation is never immediately followed by a target."""

    act_live = frozenset({TEMP_SATISFIED})
    tgt_live = frozenset({TEMP_SATISFIED})

    def tgt(self, c: Case, ev: Event) -> None:
        s = self.slot
        if c.v[s] == VIOLATED or (self.tcond is not None and not self.tcond(ev)):
            return
        prev = c.last
        if prev is None or prev.activity != self.activation:
            return
        if self.acond is not None and not self.acond(prev):
            return
        if self.simple or (
            self.match(self.key(prev), self.key(ev)) and self.fits(ev.timestamp - prev.timestamp)
        ):
            c.v[s] = VIOLATED


class NotCoexistence(Kernel):
    """Activation and target do not both occur (correlated)."""

    act_live = frozenset({TEMP_SATISFIED})
    tgt_live = frozenset({TEMP_SATISFIED})

    def __init__(self, slot: int, rule: DeclareRule, activation: str, target: str | None) -> None:
        super().__init__(slot, rule, activation, target)
        if self.simple:  # phase 1: an activation came; phase 2: a target came
            a, b = phased(TEMP_SATISFIED, 1), phased(TEMP_SATISFIED, 2)
            self.act_map = _vmap({TEMP_SATISFIED: a, b: VIOLATED})
            self.tgt_map = _vmap({TEMP_SATISFIED: b, a: VIOLATED})
            self.act_live = frozenset({TEMP_SATISFIED, b})
            self.tgt_live = frozenset({TEMP_SATISFIED, a})

    def _side(self, c: Case, ev: Event, mine: int, other: int, cond: Check | None) -> None:
        s = self.slot
        if c.v[s] == VIOLATED or (cond is not None and not cond(ev)):
            return
        d = c.d[s]
        if d is None:
            d = c.d[s] = ([], [])
        key = self.key(ev)
        if any(self.match(key, k) for k in d[other]):
            c.v[s] = VIOLATED
            return
        if not d[mine] or not self.simple:
            d[mine].append(key)

    def act(self, c: Case, ev: Event) -> None:
        self._side(c, ev, 0, 1, self.acond)

    def tgt(self, c: Case, ev: Event) -> None:
        self._side(c, ev, 1, 0, self.tcond)

    snapshot_data = RespondedExistence.snapshot_data
    restore_data = RespondedExistence.restore_data


def _swap(rule: DeclareRule) -> DeclareRule:
    """The same rule seen from the target's side (for the second half of a conjunction)."""
    return DeclareRule(
        rule.name,
        rule.template,
        rule.target or "",
        rule.activation,
        activation_if=rule.target_if,
        target_if=rule.activation_if,
        correlation=rule.correlation,
        window=rule.window,
        count=rule.count,
        source=rule.source,
    )


_SINGLE: dict[str, type[Kernel]] = {
    "existence": Existence,
    "absence": Existence,
    "exactly": Existence,
    "init": Init,
    "end": End,
    "responded_existence": RespondedExistence,
    "response": Response,
    "alternate_response": AlternateResponse,
    "chain_response": ChainResponse,
    "precedence": Precedence,
    "alternate_precedence": AlternatePrecedence,
    "chain_precedence": ChainPrecedence,
    "not_succession": NotSuccession,
    "not_chain_succession": NotChainSuccession,
    "not_coexistence": NotCoexistence,
}
#: conjunctions: (first kernel, second kernel on the swapped rule)
_PAIRS: dict[str, tuple[type[Kernel], type[Kernel]]] = {
    "co_existence": (RespondedExistence, RespondedExistence),
    "succession": (Response, Precedence),
    "alternate_succession": (AlternateResponse, AlternatePrecedence),
    "chain_succession": (ChainResponse, ChainPrecedence),
}


def declare_kernels(rule: DeclareRule, first_slot: int) -> list[Kernel]:
    """The kernels (one or two slots) that evaluate ``rule``.

    For a precedence-like kernel the *activation* handler runs on the rule's activation events
    and the *target* handler on its target events, exactly as for response-like ones; the
    second kernel of a conjunction sees the rule from the other side (its activation is the
    rule's target): ``succession(A, B)`` is ``response(A, B)`` and ``precedence`` where each
    ``B`` needs an ``A`` before it.
    """
    t = rule.template
    if t in _SINGLE:
        return [_SINGLE[t](first_slot, rule, rule.activation, rule.target)]
    k1, k2 = _PAIRS[t]
    swapped = _swap(rule)
    return [
        k1(first_slot, rule, rule.activation, rule.target),
        k2(first_slot + 1, swapped, swapped.activation, swapped.target),
    ]


# ----------------------------------------------------------------------------- state machine
class _Agg:
    """How one aggregate is kept: a slot in the machine's fact list."""

    __slots__ = ("agg", "index", "where")

    def __init__(self, agg: Aggregate, index: int) -> None:
        self.agg = agg
        self.index = index
        self.where = _check(agg.where)

    def update(self, facts: list[Any], ev: Event) -> None:
        a = self.agg
        if self.where is not None and not self.where(ev):
            return
        i = self.index
        kind = a.kind
        if kind == "count":
            facts[i] = (facts[i] or 0) + 1
            return
        if kind == "first":
            if facts[i] is None:
                facts[i] = ev.timestamp
            return
        if kind == "last":
            facts[i] = ev.timestamp
            return
        v = _value(ev, a.attr or "")
        if v is None or isinstance(v, bool) or not isinstance(v, int | float):
            return
        cur = facts[i]
        if kind == "sum":
            facts[i] = (cur or 0) + v
        elif kind == "max":
            facts[i] = v if cur is None or v > cur else cur
        else:
            facts[i] = v if cur is None or v < cur else cur


class StateMachineKernel:
    """Evaluates a :class:`StateMachineRule` (see its docstring for the driving order)."""

    initial = INIT
    watches = False
    deadlines = False

    def __init__(self, slot: int, rule: StateMachineRule) -> None:
        self.slot = slot
        self.rule = rule
        aggs: dict[Aggregate, _Agg] = {}
        shared: dict[tuple[str, tuple[str, ...]], int] = {}
        earlier: dict[tuple[str, tuple[str, ...], tuple[AttrTest, ...]], int] = {}
        guards = [g for t in rule.transitions for outer in t.guards for g in outer.flat()]
        for g in guards:
            for _, a in g.terms:
                if a not in aggs:
                    aggs[a] = _Agg(a, len(aggs))
        n = len(aggs)
        for g in guards:
            if g.kind == "shared":
                k = (g.attr or "", g.activities)
                if k not in shared:
                    shared[k] = n
                    n += 3  # values of side 0, values of side 1, found flag
            elif g.kind == "earlier":
                ek = (g.attr or "", g.activities, g.where)
                if ek not in earlier:
                    earlier[ek] = n
                    n += len(g.activities)  # the values seen so far, per activity
        self.n_facts = n
        self.aggs = aggs
        self.shared = shared
        #: earlier-event correlation: (attr, activities, where) -> first fact index, and the
        #: per-activity recorders run after the machine moved (the current event is excluded)
        self.earlier = earlier
        rec: dict[str, list[tuple[str, int, Check | None]]] = {}
        for (attr, acts, where), i in earlier.items():
            for j, act in enumerate(acts):
                rec.setdefault(act, []).append((attr, i + j, _check(where)))
        self.earlier_by_activity = {k: tuple(v) for k, v in rec.items()}
        by_activity: dict[str, list[_Agg]] = {}
        for kept in aggs.values():
            by_activity.setdefault(kept.agg.activity, []).append(kept)
        self.aggs_by_activity = {k: tuple(v) for k, v in by_activity.items()}
        self.any_aggs = self.aggs_by_activity.get("*", ())
        # ProMTEE's order: the targets of each state, in list order, with repetitions;
        # and the transitions per (current, target) pair, tried as alternatives.
        targets: dict[int, list[int]] = {}
        pairs: dict[tuple[int, int], list[Any]] = {}
        for t in rule.transitions:
            targets.setdefault(t.source, []).append(t.target)
            pairs.setdefault((t.source, t.target), []).append(t)
        self.targets = {k: tuple(v) for k, v in targets.items()}
        self.pairs = {k: tuple(v) for k, v in pairs.items()}
        #: whether every event must reach the machine (a trigger or aggregate for any event)
        self.every_event = bool(self.any_aggs) or any(t.on is None for t in rule.transitions)
        self.activities = rule.activities

    def _facts(self, c: Case) -> list[Any]:
        f = c.d[self.slot]
        if f is None:
            f = c.d[self.slot] = [None] * self.n_facts
        return f  # type: ignore[no-any-return]

    def step(self, c: Case, ev: Event) -> None:
        """An activity event of the case."""
        facts = self._facts(c)
        for a in self.aggs_by_activity.get(ev.activity, ()):
            a.update(facts, ev)
        for a in self.any_aggs:
            a.update(facts, ev)
        for (attr, acts), i in self.shared.items():
            side = 0 if ev.activity == acts[0] else 1 if ev.activity == acts[1] else -1
            if side < 0:
                continue
            v = _value(ev, attr)
            if v is None:
                continue
            for j in (0, 1):
                if facts[i + j] is None:
                    facts[i + j] = set()
            facts[i + side].add(v)
            if v in facts[i + 1 - side]:
                facts[i + 2] = True
        self._drive(c, facts, ev.activity, ev.timestamp, ev)
        for attr, i, where in self.earlier_by_activity.get(ev.activity, ()):
            if where is not None and not where(ev):
                continue
            v = _value(ev, attr)
            if v is not None:
                seen = facts[i]
                if seen is None:
                    facts[i] = {v}
                else:
                    seen.add(v)

    def end(self, c: Case, timestamp: datetime) -> None:
        """The case's end, as the event :data:`END`."""
        self._drive(c, self._facts(c), END, timestamp, None)

    def _drive(
        self, c: Case, facts: list[Any], activity: str, ts: datetime, ev: Event | None
    ) -> None:
        s = self.slot
        start = c.v[s]
        for target in self.targets.get(start, ()):
            for t in self.pairs.get((c.v[s], target), ()):
                if t.triggered_by(activity) and all(
                    self._holds(g, facts, ts, ev) for g in t.guards
                ):
                    c.v[s] = target
                    break

    def _term(self, facts: list[Any], agg: Aggregate) -> Any:
        v = facts[self.aggs[agg].index]
        if v is None and agg.kind in ("count", "sum"):
            return 0
        return v

    def _holds(  # noqa: PLR0911 - one exit per guard kind
        self, g: Guard, facts: list[Any], ts: datetime, ev: Event | None
    ) -> bool:
        kind = g.kind
        if kind == "attr":
            return ev is not None and g.test is not None and g.test.holds(ev)
        if kind in ("seen", "not_seen"):
            n = self._term(facts, g.terms[0][1])
            return bool(n > 0) == (kind == "seen")
        if kind == "compare":
            total: float = 0
            for coef, agg in g.terms:
                v = self._term(facts, agg)
                if v is None:
                    return False
                total += coef * v
            return _compare(g.op, total, g.value)
        if kind == "elapsed":
            t0 = self._term(facts, g.terms[0][1])
            return t0 is not None and _compare(g.op, ts - t0, g.value)
        if kind == "delay":
            t0 = self._term(facts, g.terms[0][1])
            t1 = self._term(facts, g.terms[1][1])
            return t0 is not None and t1 is not None and _compare(g.op, t1 - t0, g.value)
        if kind == "time":
            return _compare(g.op, ts, g.value)
        if kind == "since_attr":
            if ev is None:
                return False
            v = _value(ev, g.attr or "")
            if isinstance(v, str):
                try:
                    v = datetime.fromisoformat(v)
                except ValueError:
                    return False
            return isinstance(v, datetime) and _compare(g.op, ts - v, g.value)
        if kind == "shared":
            return bool(facts[self.shared[(g.attr or "", g.activities)] + 2])
        if kind == "earlier":
            return self._earlier(g, facts, ev)
        if kind == "not":
            return g.inner is not None and not self._holds(g.inner, facts, ts, ev)
        raise ValueError(f"unknown guard kind {kind!r}")

    def _earlier(self, g: Guard, facts: list[Any], ev: Event | None) -> bool:
        if ev is None:
            return False
        v = _value(ev, g.attr or "")
        if v is None:
            return False
        first = self.earlier[(g.attr or "", g.activities, g.where)]
        for j, act in enumerate(g.activities):
            seen = facts[first + j]
            if not seen or (g.other_activity and act == ev.activity):
                continue
            if g.same:
                if v in seen:
                    return True
            elif len(seen) > (1 if v in seen else 0):  # a value other than v
                return True
        return False

    def snapshot_data(self, data: Any) -> Any:
        if data is None:
            return None
        return tuple(frozenset(x) if isinstance(x, set) else x for x in data)

    def restore_data(self, data: Any) -> Any:
        if data is None:
            return None
        return [set(x) if isinstance(x, frozenset) else x for x in data]

    def close(self, c: Case) -> None:
        """A state machine's final state is the state it is in."""
