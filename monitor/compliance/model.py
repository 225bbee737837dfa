"""The rule model: frozen values that say what a compliance rule checks, and nothing about how.

Two kinds of rule share one set of state names (ProMTEE's):

* :class:`DeclareRule`: a Declare template over an *activation* and (for binary templates) a
  *target* activity, with optional conditions on each event's attributes, correlation between
  the activation and the target, and a time window. Its runtime verdict is RV-LTL's four values
  (temporarily / permanently satisfied / violated), named ``TemporarySatisfied``,
  ``TemporaryViolated``, ``Satisfied`` and ``Violated``.
* :class:`StateMachineRule`: a guarded state machine in ProMTEE's style (states ``Init``,
  ``TemporarySatisfied`` ...), for rules that are not Declare templates, and for the native
  equivalents of ProMTEE's Rego rules.

See ``docs/rules.md`` for the YAML form and each template's meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, NamedTuple

from ..event import AttrValue, Event

__all__ = [
    "BINARY_TEMPLATES",
    "END",
    "INIT",
    "PENDING",
    "SATISFIED",
    "STATE_NAMES",
    "TEMPLATES",
    "TEMP_SATISFIED",
    "TEMP_VIOLATED",
    "UNARY_TEMPLATES",
    "VIOLATED",
    "Aggregate",
    "Alert",
    "AttrTest",
    "Correlation",
    "DeclareRule",
    "Guard",
    "Rule",
    "StateMachineRule",
    "Transition",
    "Window",
]

# ProMTEE's state numbering (its compiler's ``statesMap``).
INIT: Final = 0
PENDING: Final = 1
VIOLATED: Final = 2
SATISFIED: Final = 3
TEMP_SATISFIED: Final = 4
TEMP_VIOLATED: Final = 5
#: State names, indexed by the state numbers above.
STATE_NAMES: Final = (
    "Init",
    "Pending",
    "Violated",
    "Satisfied",
    "TemporarySatisfied",
    "TemporaryViolated",
)

#: The pseudo-activity of a case's end in state-machine triggers (ProMTEE's ``__END__``).
END: Final = "__END__"

UNARY_TEMPLATES: Final = frozenset({"existence", "absence", "exactly", "init", "end"})
BINARY_TEMPLATES: Final = frozenset(
    {
        "responded_existence",
        "co_existence",
        "response",
        "precedence",
        "succession",
        "alternate_response",
        "alternate_precedence",
        "alternate_succession",
        "chain_response",
        "chain_precedence",
        "chain_succession",
        "not_coexistence",
        "not_succession",
        "not_chain_succession",
    }
)
TEMPLATES: Final = UNARY_TEMPLATES | BINARY_TEMPLATES

Op = Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "exists", "missing"]
OPS: Final = ("eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "exists", "missing")


def _compare(op: str, left: object, right: object) -> bool:  # noqa: PLR0911 - one per op
    """``left op right``; an ordering between values of incomparable types is False."""
    try:
        if op == "eq":
            return left == right
        if op == "ne":
            return left != right
        if op == "lt":
            return bool(left < right)  # type: ignore[operator]
        if op == "le":
            return bool(left <= right)  # type: ignore[operator]
        if op == "gt":
            return bool(left > right)  # type: ignore[operator]
        if op == "ge":
            return bool(left >= right)  # type: ignore[operator]
    except TypeError:
        return False
    raise ValueError(f"unknown comparison {op!r}")


@dataclass(frozen=True, slots=True)
class AttrTest:
    """A condition on one attribute of one event.

    ``attr`` names an event attribute; ``resource`` (or ``org:resource``, its XES key) and
    ``org`` name the event's fields. A
    missing attribute fails every test except ``missing`` (and ``ne``/``not_in``, which need
    the value too: missing fails them as well).

    >>> from datetime import datetime, UTC
    >>> e = Event.create("c", "A", datetime(2024, 1, 1, tzinfo=UTC), attributes={"x": 5})
    >>> AttrTest("x", "gt", 3).holds(e), AttrTest("x", "in", frozenset({1, 2})).holds(e)
    (True, False)
    >>> AttrTest("y", "missing").holds(e)
    True
    """

    attr: str
    op: Op
    value: AttrValue | frozenset[AttrValue] = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown operator {self.op!r} (one of {', '.join(OPS)})")
        if self.op in ("in", "not_in") and not isinstance(self.value, frozenset):
            raise TypeError(f"'{self.op}' needs a set of values")

    def value_of(self, event: Event) -> AttrValue:
        """The attribute's value in ``event`` (``None`` when missing)."""
        return _value(event, self.attr)

    def holds(self, event: Event) -> bool:
        """Whether ``event`` satisfies the condition."""
        v = _value(event, self.attr)
        op = self.op
        if op == "missing":
            return v is None
        if v is None:
            return False
        if op == "exists":
            return True
        if op == "in":
            return v in self.value  # type: ignore[operator]
        if op == "not_in":
            return v not in self.value  # type: ignore[operator]
        return _compare(op, v, self.value)


def _value(event: Event, attr: str) -> AttrValue:
    if attr in ("resource", "org:resource"):
        return event.resource
    if attr == "org":
        return event.org or None
    for k, v in event.attributes:
        if k == attr:
            return v  # type: ignore[no-any-return]
    return None


@dataclass(frozen=True, slots=True)
class Correlation:
    """Activation and target must agree (``same``) or differ (``different``) on ``attr``.

    ``same: resource`` between two activities is a binding of duties; ``different: resource``
    is separation of duties (four eyes). A missing value never correlates.
    """

    attr: str
    same: bool = True


@dataclass(frozen=True, slots=True)
class Window:
    """The delay between activation and target must lie in ``[after, within]``.

    For response-like templates the target follows the activation; for precedence-like
    templates it precedes it; ``not_succession`` forbids a target inside the window.
    """

    after: timedelta | None = None
    within: timedelta | None = None

    def __post_init__(self) -> None:
        if self.after is None and self.within is None:
            raise ValueError("a window needs 'after' or 'within'")
        if self.after is not None and self.after < timedelta(0):
            raise ValueError("'after' must not be negative")
        if self.within is not None and self.within < timedelta(0):
            raise ValueError("'within' must not be negative")
        if self.after is not None and self.within is not None and self.after > self.within:
            raise ValueError("'after' must not exceed 'within'")

    def admits(self, delay: timedelta) -> bool:
        """Whether a delay (target time minus activation time, or the reverse) fits."""
        if self.after is not None and delay < self.after:
            return False
        return self.within is None or delay <= self.within


@dataclass(frozen=True, slots=True)
class DeclareRule:
    """A Declare constraint.

    Parameters
    ----------
    name
        Unique rule name (reported in alerts and case results).
    template
        One of :data:`TEMPLATES`.
    activation
        The activity whose events activate the constraint (for ``existence``/``absence``/
        ``exactly``/``init``/``end``: the activity counted or expected).
    target
        The activity that fulfils (or, for negative templates, violates) an activation.
    activation_if, target_if
        Conditions an activation / target event must meet to count as one.
    correlation
        Conditions between an activation and its target.
    window
        Time bounds between activation and target.
    count
        ``existence``: at least ``count``; ``absence``: at most ``count``; ``exactly``: ``count``.
    source
        Where the rule was defined (``file:line``), for messages.
    """

    name: str
    template: str
    activation: str
    target: str | None = None
    activation_if: tuple[AttrTest, ...] = ()
    target_if: tuple[AttrTest, ...] = ()
    correlation: tuple[Correlation, ...] = ()
    window: Window | None = None
    count: int = 1
    source: str = ""

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else ""
        if self.template not in TEMPLATES:
            raise ValueError(
                f"{where}rule {self.name!r}: unknown template {self.template!r} "
                f"(one of {', '.join(sorted(TEMPLATES))})"
            )
        if self.template in BINARY_TEMPLATES:
            if not self.target:
                raise ValueError(f"{where}rule {self.name!r}: {self.template} needs a target")
            if self.target == self.activation:
                raise ValueError(
                    f"{where}rule {self.name!r}: activation and target must be different activities"
                )
        elif self.target is not None or self.target_if or self.correlation or self.window:
            raise ValueError(
                f"{where}rule {self.name!r}: {self.template} takes no target, correlation or window"
            )
        if self.template in ("responded_existence", "co_existence", "not_coexistence") and (
            self.window is not None
        ):
            raise ValueError(f"{where}rule {self.name!r}: {self.template} takes no time window")
        if self.count < (1 if self.template == "existence" else 0):
            raise ValueError(f"{where}rule {self.name!r}: count {self.count} is out of range")

    @property
    def activities(self) -> frozenset[str]:
        """The activities the rule mentions."""
        return frozenset(a for a in (self.activation, self.target) if a)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """A running value over a case's events of ``activity`` (``*``: any activity).

    ``kind`` is ``count``, ``sum``, ``max`` or ``min`` (of ``attr``), or ``first``/``last``
    (the event time). Events that lack ``attr`` are skipped, as a Rego comprehension skips them.
    """

    kind: Literal["count", "sum", "max", "min", "first", "last"]
    activity: str
    attr: str | None = None
    where: tuple[AttrTest, ...] = ()


@dataclass(frozen=True, slots=True)
class Guard:
    """One condition of a state-machine transition.

    ``kind`` and its fields:

    * ``attr``: ``test`` holds on the current event.
    * ``seen``/``not_seen``: ``aggregate`` (a ``count``) is > 0 / == 0. Aggregates include
      the current event.
    * ``compare``: ``sum(coef * aggregate) op value`` over ``terms`` (e.g. ``max cost <= 3 *
      (sum km)``); an aggregate with no events is undefined and makes the guard false, except
      ``count`` and ``sum``, which are 0.
    * ``elapsed``: current event time minus ``terms[0]`` (a ``first``/``last`` time) ``op``
      ``value`` (a timedelta).
    * ``delay``: ``terms[1]`` minus ``terms[0]`` (two times) ``op`` ``value`` (a timedelta).
    * ``time``: current event time ``op`` ``value`` (a datetime).
    * ``since_attr``: current event time minus the datetime attribute ``attr`` ``op`` ``value``.
    * ``shared``: some event of ``activities[0]`` and some of ``activities[1]`` (current
      included) have equal values of ``attr``.
    * ``earlier``: correlation with the past. Some *earlier* event (the current one excluded)
      of one of ``activities`` that meets ``where`` has a value of ``attr`` equal to
      (``same``) or different from (``not same``) the current event's value; with
      ``other_activity``, only earlier events of an activity other than the current event's
      count. A missing value never correlates: the guard is false when the current event
      lacks ``attr``, and earlier events that lack it are ignored.
    * ``not``: ``inner`` does not hold.

    >>> Guard("not", inner=Guard("seen", terms=((1.0, Aggregate("count", "A")),))).flat()[1].kind
    'seen'
    """

    kind: Literal[
        "attr",
        "seen",
        "not_seen",
        "compare",
        "elapsed",
        "delay",
        "time",
        "since_attr",
        "shared",
        "earlier",
        "not",
    ]
    op: Op = "eq"
    value: object = None
    test: AttrTest | None = None
    terms: tuple[tuple[float, Aggregate], ...] = ()
    attr: str | None = None
    activities: tuple[str, ...] = ()
    same: bool = True
    other_activity: bool = False
    where: tuple[AttrTest, ...] = ()
    inner: Guard | None = None

    def __post_init__(self) -> None:
        if self.kind == "not" and self.inner is None:
            raise ValueError("a 'not' guard needs an inner guard")
        if self.kind in ("earlier", "shared") and (not self.attr or not self.activities):
            raise ValueError(f"a '{self.kind}' guard needs an attribute and activities")

    def flat(self) -> tuple[Guard, ...]:
        """This guard and the guards nested in it (``not``), outermost first."""
        return (self,) if self.inner is None else (self, *self.inner.flat())


@dataclass(frozen=True, slots=True)
class Transition:
    """``source`` -> ``target`` when the event matches ``on`` and every guard holds.

    ``on`` lists activities (and/or :data:`END`); ``None`` means every event, the end
    included; ``on_except`` then excludes some.
    """

    source: int
    target: int
    on: frozenset[str] | None = None
    on_except: frozenset[str] = frozenset()
    guards: tuple[Guard, ...] = ()

    def triggered_by(self, activity: str) -> bool:
        """Whether an event of ``activity`` (or :data:`END`) is examined by this transition."""
        if self.on is not None:
            return activity in self.on
        return activity not in self.on_except


@dataclass(frozen=True, slots=True)
class StateMachineRule:
    """A guarded state machine, driven as ProMTEE drives its rule FSMs.

    On each event (and once at the case's end, as the activity :data:`END`), with ``s0`` the
    state before it: the targets of ``s0``'s transitions are visited in list order (with
    repetitions); for each target ``t``, if some transition from the *current* state to ``t``
    is triggered by the event and its guards hold, the rule moves to ``t``. The machine starts
    in ``Init``. Its state at the end of the case is its final state, whatever it is (ProMTEE
    leaves, say, ``TemporarySatisfied`` as it is).
    """

    name: str
    transitions: tuple[Transition, ...]
    source: str = ""
    promtee: str | None = None

    @property
    def activities(self) -> frozenset[str]:
        """The activities named by triggers and guards (not :data:`END`)."""
        out: set[str] = set()
        for t in self.transitions:
            out |= (t.on or frozenset()) | t.on_except
            for outer in t.guards:
                for g in outer.flat():
                    out.update(a.activity for _, a in g.terms)
                    out.update(g.activities)
        out.discard(END)
        out.discard("*")
        return frozenset(out)


Rule = DeclareRule | StateMachineRule


class Alert(NamedTuple):
    """A rule changed state for a case.

    Attributes
    ----------
    rule
        The rule's name.
    case_id
        The case.
    old, new
        State names before and after.
    activity
        The activity of the event that caused it; ``""`` for a deadline passed by the
        watermark, :data:`END` for the case's end.
    timestamp
        The event time (for a deadline: the deadline itself).
    """

    rule: str
    case_id: str
    old: str
    new: str
    activity: str
    timestamp: datetime
