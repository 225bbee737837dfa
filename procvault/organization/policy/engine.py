"""The policy stage: one organization's privacy policy applied to each event before it leaves.

:class:`PolicyEngine` compiles a :class:`~.schema.Policy` once and then turns each input event
into exactly one output event: the event as the policy lets it leave (denied fields withheld,
numbers bucketed, timestamps truncated, names pseudonymised, text scrubbed, consent context
added) or, when the event itself is withheld, a *placeholder* that says where and why but not
what (see :mod:`.reserved`). Nothing is dropped silently and nothing is logged: the engine is
pure computation; :meth:`PolicyEngine.decide` returns what an audit log needs.

Order of the checks for an activity event (the first that fails names the placeholder's reason):
the event's organization (``OTHER_ORG``), its activity (``ACTIVITY_DENIED``), its resource
(``RESOURCE_DENIED``), the collection windows (``OUTSIDE_WINDOW``), then each attribute, where a
value rule with ``withhold: event`` can still withhold the event (``VALUE_DENIED``).

>>> from datetime import datetime, UTC
>>> from procvault.monitor.event import Event
>>> from procvault.organization.policy import PseudonymKey, parse_policy
>>> policy = parse_policy({
...     "policy": "shop", "version": 3, "org": "shop", "mode": "denylist",
...     "consent": {"scope": "order-monitoring"},
...     "activities": ["Refund"], "attributes": [{"key": "note"}],
...     "generalise": {"timestamps": "minute"},
...     "pseudonymise": {"case_id": True, "resource": True}})
>>> engine = PolicyEngine(policy, key=PseudonymKey(b"an organization key of 32 bytes!"))
>>> ts = datetime(2024, 5, 6, 10, 42, 17, tzinfo=UTC)
>>> [out] = engine.apply(Event.create("o-1", "Pay", ts, resource="Anna",
...                                   attributes={"amount": 12, "note": "call Anna"}))
>>> out.case_id[:2], out.resource[:2], out.timestamp.isoformat()
('c_', 'r_', '2024-05-06T10:42:00+00:00')
>>> for key, value in out.attributes:
...     print(key, value)
amount 12
pv:policy shop
pv:policy_version 3
pv:scope order-monitoring
pv:withheld ATTRIBUTE_DENIED:1
>>> [ph] = engine.apply(Event.create("o-1", "Refund", ts, resource="Anna"))
>>> ph.activity, ph.resource, ph.attr("pv:reason"), ph.attr("pv:position")
('pv:withheld', None, 'ACTIVITY_DENIED', 2)
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple
from zoneinfo import ZoneInfo

from procvault.monitor.errors import ConfigError
from procvault.monitor.event import Event, EventKind

from .loader import load_policy
from .patterns import Matcher, value_text
from .pii import Scrubber
from .pseudonym import KEY_ENV, Pseudonymizer, PseudonymKey
from .reserved import (
    ATTR_ACTOR,
    ATTR_POLICY,
    ATTR_POLICY_VERSION,
    ATTR_POSITION,
    ATTR_REASON,
    ATTR_SCOPE,
    ATTR_SCRUBBED,
    ATTR_WITHHELD,
    PLACEHOLDER_ACTIVITY,
    RESERVED_PREFIX,
    Reason,
)
from .schema import AttributeRule, Policy, TimeLevel
from .windows import CollectionWindow, week_mask

__all__ = ["Decision", "PolicyEngine", "PolicyStats", "truncate_timestamp"]

_ACTIVITY: Final = EventKind.ACTIVITY
_PLACEHOLDER: Final = EventKind.PLACEHOLDER
_PROBE: Final = (RESERVED_PREFIX,)
#: Cached per-activity plans and per-resource verdicts before the caches stop growing.
_CACHE_LIMIT: Final = 1 << 16
#: Remembered results per attribute treatment (string values only).
_MEMO_LIMIT: Final = 1 << 12


class _Withhold:
    __slots__ = ("event",)

    def __init__(self, event: bool) -> None:
        self.event = event


_WITHHOLD_FIELD: Final = _Withhold(False)
_WITHHOLD_EVENT: Final = _Withhold(True)
#: A check of one attribute's value text: ``None`` (fine) or what to withhold.
_Check = Callable[[str], _Withhold | None]

#: An attribute's treatment: ``None`` (keep as is), a reason (withhold the field), one of the
#: two ``_KEEP_*`` codes (keep; truncate dates, and also scrub text) or a function of the value.
_Action = None | str | int | Callable[[Any], Any]
_KEEP_TRUNC: Final = 1
_KEEP_SCRUB: Final = 2


#: Each timestamp level's unit in microseconds (UTC truncation is flooring to it).
_LEVEL_US: Final = {
    "exact": 1,
    "second": 1_000_000,
    "minute": 60_000_000,
    "hour": 3_600_000_000,
    "day": 86_400_000_000,
}


def truncate_timestamp(ts: datetime, level: TimeLevel) -> datetime:
    """``ts`` truncated to ``level`` (``exact``, ``second``, ``minute``, ``hour``, ``day`` in UTC).

    >>> from datetime import UTC
    >>> t = datetime(2024, 3, 31, 1, 59, 58, 123, tzinfo=UTC)
    >>> truncate_timestamp(t, "minute").isoformat(), truncate_timestamp(t, "day").isoformat()
    ('2024-03-31T01:59:00+00:00', '2024-03-31T00:00:00+00:00')
    """
    if level == "exact":
        return ts
    if level == "second":
        return ts.replace(microsecond=0)
    if level == "minute":
        return ts.replace(second=0, microsecond=0)
    if level == "hour":
        return ts.replace(minute=0, second=0, microsecond=0)
    if level == "day":
        return ts.replace(hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"unknown timestamp level {level!r}")


def _truncator(level: TimeLevel) -> Callable[[datetime], datetime] | None:
    """A fast truncation of UTC timestamps: an already-coarse timestamp is returned as it is,
    and the constructor beats ``replace`` by a third."""
    if level == "exact":
        return None
    if level == "second":
        return lambda t: (
            datetime(t.year, t.month, t.day, t.hour, t.minute, t.second, tzinfo=UTC)
            if t.microsecond
            else t
        )
    if level == "minute":
        return lambda t: (
            datetime(t.year, t.month, t.day, t.hour, t.minute, tzinfo=UTC)
            if t.second or t.microsecond
            else t
        )
    if level == "hour":
        return lambda t: (
            datetime(t.year, t.month, t.day, t.hour, tzinfo=UTC)
            if t.minute or t.second or t.microsecond
            else t
        )
    return lambda t: (
        datetime(t.year, t.month, t.day, tzinfo=UTC)
        if t.hour or t.minute or t.second or t.microsecond
        else t
    )


class Decision(NamedTuple):
    """What the policy stage did with one input event.

    ``event`` is what leaves (never ``None``: the transformed event, a placeholder or a marker).
    ``fields`` and ``scrubbed`` name attribute *keys* and PII *kinds*, never values: they are for
    the organization's own audit log.
    """

    #: The event that is emitted.
    event: Event
    #: Why the event was replaced by a placeholder, or ``None`` when it was emitted.
    withheld: Reason | None
    #: ``(attribute key, reason)`` for each field withheld from an emitted event.
    fields: tuple[tuple[str, str], ...]
    #: ``(PII kind, count)`` scrubbed from the event's text.
    scrubbed: tuple[tuple[str, int], ...]
    #: The input event's position in its case (1 = first); 0 for a marker.
    position: int


@dataclass
class PolicyStats:
    """Running counts of the engine's decisions (never any content)."""

    #: Activity events seen.
    events: int = 0
    #: Activity events emitted (possibly with fields withheld).
    emitted: int = 0
    #: Activity events replaced by a placeholder.
    placeholders: int = 0
    #: Markers (end of case) passed through.
    markers: int = 0
    #: Placeholders by reason.
    withheld: dict[str, int] = field(default_factory=dict)
    #: Fields withheld by reason.
    fields: dict[str, int] = field(default_factory=dict)
    #: PII findings by kind.
    scrubbed: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "events": self.events,
            "emitted": self.emitted,
            "placeholders": self.placeholders,
            "markers": self.markers,
            "withheld": {str(k): v for k, v in sorted(self.withheld.items())},
            "fields_withheld": {str(k): v for k, v in sorted(self.fields.items())},
            "scrubbed": dict(sorted(self.scrubbed.items())),
        }


def _memoised(action: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``action`` with its results for string values remembered (codes repeat across events)."""
    memo: dict[str, Any] = {}

    def cached(v: Any) -> Any:
        if v.__class__ is not str:
            return action(v)
        try:
            return memo[v]
        except KeyError:
            out = action(v)
            if len(memo) < _MEMO_LIMIT:
                memo[v] = out
            return out

    return cached


def _deny_check(hits: list[AttributeRule]) -> str | _Check | None:
    """Denylist rules matching one key: withhold the key, check its values, or nothing."""
    if any(r.values is None for r in hits):
        return Reason.ATTRIBUTE_DENIED.value
    if not hits:
        return None
    # A value matching an event-level rule costs the event, else a field-level one the field.
    ev_rules = [r.values for r in hits if r.withhold == "event" and r.values]
    field_rules = [r.values for r in hits if r.withhold == "field" and r.values]
    ev_m = Matcher(ev_rules) if ev_rules else None
    field_m = Matcher(field_rules) if field_rules else None

    def deny_check(text: str) -> _Withhold | None:
        if ev_m is not None and ev_m(text):
            return _WITHHOLD_EVENT
        if field_m is not None and field_m(text):
            return _WITHHOLD_FIELD
        return None

    return deny_check


def _allow_check(hits: list[AttributeRule]) -> str | _Check | None:
    """Allowlist rules matching one key: withhold the key, check its values, or nothing."""
    if not hits:
        return Reason.ATTRIBUTE_DENIED.value
    if any(r.values is None for r in hits):
        return None
    allowed = Matcher(r.values for r in hits if r.values is not None)
    # A value no rule allows costs the field, or the event if any of the rules says so.
    miss = _WITHHOLD_EVENT if any(r.withhold == "event" for r in hits) else _WITHHOLD_FIELD

    def allow_check(text: str) -> _Withhold | None:
        return None if allowed(text) else miss

    return allow_check


class _Plan:
    """What the policy does to one activity: withhold it, or how to treat each attribute key."""

    __slots__ = ("actions", "activity", "denied", "kept")

    def __init__(self, activity: str, denied: Reason | None, kept: frozenset[str] | None) -> None:
        self.activity = activity
        self.denied = denied
        self.kept = kept
        self.actions: dict[str, _Action] = {}


class PolicyEngine:
    """A compiled privacy policy: ``apply(event)`` gives the one event that may leave.

    Parameters
    ----------
    policy
        The checked :class:`~.schema.Policy`.
    key
        The organization's pseudonym key (a :class:`PseudonymKey` or its bytes); required when
        the policy pseudonymises resources or attributes (or case ids without ``case_key``).
    case_key
        The key for case-id pseudonyms, when it differs from ``key``. A case that crosses
        organizations (an order handled by a customer, a supplier and a carrier) must get the
        same pseudonym from every party, so their agents share this key; resource pseudonyms
        stay under each organization's own ``key``. Default: ``key``.
    scrub
        Turn PII scrubbing on (``True``) or off (``False``); ``None`` keeps the policy's
        ``scrub.enabled`` (off unless the policy says otherwise).
    actor
        Who is deciding, written on placeholders (``pv:actor``) and in the audit log.

    The engine keeps, per open case, the number of events seen (a placeholder's position);
    a case's counter is freed by its end-of-case marker.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        key: PseudonymKey | bytes | None = None,
        case_key: PseudonymKey | bytes | None = None,
        scrub: bool | None = None,
        actor: str = "policy-engine",
    ) -> None:
        if not isinstance(policy, Policy):
            raise TypeError("policy must be a Policy")
        if not isinstance(actor, str) or not actor:
            raise ValueError("actor must be a non-empty string")
        self.policy = policy
        self.actor = actor
        if isinstance(key, bytes | bytearray):
            key = PseudonymKey(bytes(key))
        if isinstance(case_key, bytes | bytearray):
            case_key = PseudonymKey(bytes(case_key))
        p = policy.pseudonymise
        actors_need_key = p.resource or bool(p.attributes)
        case_key = case_key if case_key is not None else key
        missing = [
            n
            for n, on in (
                ("case ids", p.case_id and case_key is None),
                ("resources", p.resource and key is None),
                ("attributes", bool(p.attributes) and key is None),
            )
            if on
        ]
        if missing:
            raise ConfigError(
                f"policy {policy.id!r} pseudonymises {' and '.join(missing)}: it needs the "
                f"organization's key (--key-file FILE or ${KEY_ENV})"
            )
        self._pseudo = Pseudonymizer(key) if key is not None and actors_need_key else None
        self._pseudo_cases = Pseudonymizer(case_key) if case_key is not None and p.case_id else None
        #: Public fingerprints of the keys in use (``None`` when unused); safe to show.
        self.key_id: str | None = self._pseudo.key.key_id if self._pseudo else None
        self.case_key_id: str | None = self._pseudo_cases.key.key_id if self._pseudo_cases else None
        self.scrub_enabled = policy.scrub_enabled if scrub is None else bool(scrub)
        self._scrubber = Scrubber(policy.scrub) if self.scrub_enabled else None
        self._scrub_skip = policy.scrub.skip_attributes
        self._n_events = self._n_placeholders = self._n_markers = 0
        self._withheld_counts: dict[str, int] = {}
        self._scrub_counts: dict[str, int] = {}
        self._fields_total: dict[str, int] = {}
        #: How often each tuple of withheld fields occurred (folded into totals on reading).
        self._field_sets: dict[tuple[tuple[str, str], ...], int] = {}
        #: The ``pv:withheld`` attribute for each tuple of withheld fields.
        self._withheld_attr: dict[tuple[tuple[str, str], ...], tuple[str, str]] = {}

        self._org = policy.org
        self._consent: tuple[tuple[str, Any], ...] = (
            (ATTR_POLICY, policy.id),
            (ATTR_POLICY_VERSION, policy.version),
            (ATTR_SCOPE, policy.scope),
        )
        deny = policy.mode == "denylist"
        self._deny = deny
        self._activities = None if policy.activities is None else Matcher(policy.activities)
        self._resources = None if policy.resources is None else Matcher(policy.resources)
        self._rules = policy.attributes
        self._trunc = _truncator(policy.generalise.timestamps)
        self._ph_trunc = _truncator(policy.placeholder_timestamps)
        self._pseudo_case = self._pseudo_cases.case if self._pseudo_cases else None
        self._pseudo_res = self._pseudo.actor if self._pseudo and p.resource else None

        self._plans: dict[str, _Plan] = {}
        self._res_verdicts: dict[str, bool] = {}
        self._positions: dict[str, int] = {}
        self._scratch: list[tuple[tuple[str, int], ...]] = []
        #: What the last apply() did, besides the event (read by decide()).
        self._last: tuple[Reason | None, tuple[tuple[str, str], ...], Any, int] = (None, (), (), 0)

        self._windows = policy.windows
        self._group_matchers = {g: Matcher(ps) for g, ps in policy.groups.items()}
        self._group_probe = (policy.group_attribute,) if policy.group_attribute else None
        self._window_plans: dict[tuple[str | None, Any], tuple[tuple[ZoneInfo, bytes], ...]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        key: PseudonymKey | bytes | None = None,
        case_key: PseudonymKey | bytes | None = None,
        scrub: bool | None = None,
        actor: str = "policy-engine",
    ) -> PolicyEngine:
        """Load and check a policy file (YAML or a ProMTEE manifest) and compile it."""
        return cls(load_policy(path), key=key, case_key=case_key, scrub=scrub, actor=actor)

    @classmethod
    def for_organization(
        cls,
        path: str | os.PathLike[str],
        org: str,
        consortium_key: bytes,
        *,
        key_file: str | os.PathLike[str] | None = None,
        actor: str = "policy-engine",
    ) -> PolicyEngine:
        """The policy stage of organization ``org``'s agent (and of its revocations).

        Case ids are pseudonymised under ``consortium_key`` (the pseudonym key every
        organization's key file holds, ``org-ORG.json``), so that a case crossing
        organizations keeps one pseudonym; resources and attributes under the organization's
        own key: ``key_file``, else ``$PROCVAULT_POLICY_KEY``, else the consortium key too
        (then any organization of the consortium can test guesses of them). A policy written
        for another organization is a one-line :class:`ConfigError`.

        >>> import tempfile
        >>> from pathlib import Path
        >>> folder = Path(tempfile.mkdtemp())
        >>> text = "policy: p, version: 1, org: lab, mode: denylist, consent: {scope: s}, "
        >>> text += "pseudonymise: {case_id: true, resource: true}"
        >>> _ = (folder / "lab.yaml").write_text("{" + text + "}")
        >>> PolicyEngine.for_organization(folder / "lab.yaml", "lab", bytes(32)).case_key_id
        '...'
        >>> PolicyEngine.for_organization(folder / "lab.yaml", "ward", bytes(32))
        Traceback (most recent call last):
        ...
        procvault.monitor.errors.ConfigError: ...lab.yaml is the policy of 'lab', not of 'ward'
        """
        policy = load_policy(path)
        if policy.org != org:
            raise ConfigError(f"{path} is the policy of {policy.org!r}, not of {org!r}")
        consortium = PseudonymKey(consortium_key)
        own = PseudonymKey.from_file(key_file) if key_file else PseudonymKey.from_env(KEY_ENV)
        return cls(policy, key=own or consortium, case_key=consortium, actor=actor)

    # ------------------------------------------------------------------ counts
    def _fold_fields(self) -> None:
        totals = self._fields_total
        for fields, n in self._field_sets.items():
            for _, reason in fields:
                totals[reason] = totals.get(reason, 0) + n
        self._field_sets.clear()

    @property
    def time_granularity_us(self) -> int:
        """The coarsest unit (µs) the policy truncates emitted times to (events or
        placeholders): an output for an input at ``t`` is never earlier than ``t`` floored to
        it. The agent promises the vault times at that granularity, no finer.

        >>> from procvault.organization.policy import parse_policy
        >>> doc = {"policy": "p", "version": 1, "org": "o", "mode": "denylist",
        ...        "consent": {"scope": "s"}, "generalise": {"timestamps": "minute"}}
        >>> PolicyEngine(parse_policy(doc), key=None).time_granularity_us  # placeholders: hour
        3600000000
        """
        p = self.policy
        return max(_LEVEL_US[p.generalise.timestamps], _LEVEL_US[p.placeholder_timestamps])

    @property
    def stats(self) -> PolicyStats:
        """Counts of the decisions so far (a fresh snapshot)."""
        self._fold_fields()
        return PolicyStats(
            events=self._n_events,
            emitted=self._n_events - self._n_placeholders,
            placeholders=self._n_placeholders,
            markers=self._n_markers,
            withheld=dict(self._withheld_counts),
            fields=dict(self._fields_total),
            scrubbed=dict(self._scrub_counts),
        )

    # ------------------------------------------------------------------ pseudonyms
    def pseudonym_case(self, case_id: str) -> str:
        """The case id as it leaves the organization (its pseudonym, or itself)."""
        return self._pseudo_case(case_id) if self._pseudo_case else case_id

    def pseudonym_resource(self, resource: str) -> str:
        """The resource as it leaves the organization (its pseudonym, or itself)."""
        return self._pseudo_res(resource) if self._pseudo_res else resource

    # ------------------------------------------------------------------ compilation (cached)
    def _plan(self, activity: str) -> _Plan:
        denied: Reason | None = None
        m = self._activities
        if m is not None and m(activity) == self._deny:
            denied = Reason.ACTIVITY_DENIED
        plan = _Plan(activity, denied, self.policy.minimise.kept(activity))
        if len(self._plans) < _CACHE_LIMIT:
            self._plans[activity] = plan
        return plan

    def _action(self, plan: _Plan, key: str) -> _Action:
        action = self._compile_action(plan, key)
        if len(plan.actions) < _CACHE_LIMIT:
            plan.actions[key] = action
        return action

    def _value_check(self, key: str) -> str | _Check | None:
        """The attribute rules for ``key``: a reason to withhold it, a check of its values, or
        ``None`` (no rule concerns it)."""
        if self._rules is None:
            return None
        hits = [r for r in self._rules if r.key.matches(key)]
        return _deny_check(hits) if self._deny else _allow_check(hits)

    def _compile_action(self, plan: _Plan, key: str) -> _Action:
        if key.startswith(RESERVED_PREFIX):
            return Reason.RESERVED.value
        check = self._value_check(key)
        if check.__class__ is str:
            return check
        if plan.kept is not None and key not in plan.kept:
            return Reason.MINIMISED.value
        policy = self.policy
        pseudo = (
            self._pseudo.actor
            if self._pseudo is not None and key in policy.pseudonymise.attributes
            else None
        )
        bucket = policy.generalise.numbers.get(key)
        trunc = self._trunc
        scrubber = (
            self._scrubber if self._scrubber is not None and key not in self._scrub_skip else None
        )
        if check is None and pseudo is None and bucket is None:
            # Handled inline by decide(): no function call per attribute.
            if scrubber is not None:
                return _KEEP_SCRUB
            return None if trunc is None else _KEEP_TRUNC
        act = self._transform(check, pseudo, bucket, trunc, scrubber, self._scratch)  # type: ignore[arg-type]
        return act if scrubber is not None else _memoised(act)

    @staticmethod
    def _transform(
        check: _Check | None,
        pseudo: Callable[[str], str] | None,
        bucket: Any,
        trunc: Callable[[datetime], datetime] | None,
        scrubber: Scrubber | None,
        scratch: list[tuple[tuple[str, int], ...]],
    ) -> Callable[[Any], Any]:
        """One attribute's treatment: value check, then pseudonym, bucket, truncation or scrub."""

        def action(v: Any) -> Any:
            if check is not None:
                verdict = check(v if v.__class__ is str else value_text(v))
                if verdict is not None:
                    return verdict
            if pseudo is not None:
                return None if v is None else pseudo(v if v.__class__ is str else value_text(v))
            cls = v.__class__
            if bucket is not None and (cls is int or cls is float):
                return bucket.apply(v)
            if trunc is not None and isinstance(v, datetime):
                return trunc(v)
            if scrubber is not None and cls is str:
                text, counts = scrubber.scrub(v)
                if counts:
                    scratch.append(counts)
                return text
            return v

        return action

    def _window_plan(
        self, resource: str | None, group_value: Any
    ) -> tuple[tuple[ZoneInfo, bytes], ...]:
        groups = {
            g for g, m in self._group_matchers.items() if resource is not None and m(resource)
        }
        if group_value is not None:
            groups.add(group_value if group_value.__class__ is str else value_text(group_value))
        by_zone: dict[str, list[CollectionWindow]] = {}
        for w in self._windows:
            applies = (
                w.applies_to_everyone
                or (resource is not None and any(p.matches(resource) for p in w.resources))
                or any(g in groups for g in w.groups)
            )
            if applies:
                by_zone.setdefault(w.zone, []).append(w)
        return tuple((ws[0].tz, week_mask(ws)) for ws in by_zone.values())

    def _in_window(self, ev: Event) -> bool:
        group_value = None
        probe = self._group_probe
        if probe is not None:
            attrs = ev.attributes
            i = bisect_left(attrs, probe)
            if i < len(attrs) and attrs[i][0] == probe[0]:
                group_value = attrs[i][1]
        ck = (ev.resource, group_value)
        plan = self._window_plans.get(ck)
        if plan is None:
            plan = self._window_plan(ev.resource, group_value)
            if len(self._window_plans) < _CACHE_LIMIT:
                self._window_plans[ck] = plan
        if not plan:
            return True
        ts = ev.timestamp
        for tz, mask in plan:
            local = ts.astimezone(tz)
            if mask[local.weekday() * 1440 + local.hour * 60 + local.minute]:
                return True
        return False

    # ------------------------------------------------------------------ per event
    def _placeholder(self, ev: Event, position: int, reason: Reason) -> list[Event]:
        self._n_placeholders += 1
        counts = self._withheld_counts
        counts[reason.value] = counts.get(reason.value, 0) + 1
        case = self._pseudo_case(ev.case_id) if self._pseudo_case else ev.case_id
        ts = self._ph_trunc(ev.timestamp) if self._ph_trunc else ev.timestamp
        attrs = (
            (ATTR_ACTOR, self.actor),
            *self._consent[:2],
            (ATTR_POSITION, position),
            (ATTR_REASON, reason.value),
            self._consent[2],
        )
        out = Event(case, PLACEHOLDER_ACTIVITY, ts, self._org or ev.org, None, attrs, _PLACEHOLDER)
        self._last = (reason, (), (), position)
        return [out]

    def _withheld_summary(self, fields: tuple[tuple[str, str], ...]) -> tuple[str, str]:
        per_reason: dict[str, int] = {}
        for _, r in fields:
            per_reason[r] = per_reason.get(r, 0) + 1
        pair = (ATTR_WITHHELD, ",".join(f"{r}:{n}" for r, n in sorted(per_reason.items())))
        if len(self._withheld_attr) < _CACHE_LIMIT:
            self._withheld_attr[fields] = pair
        return pair

    def _marker(self, ev: Event) -> list[Event]:
        self._n_markers += 1
        self._positions.pop(ev.case_id, None)
        case = self._pseudo_case(ev.case_id) if self._pseudo_case else ev.case_id
        ts = self._trunc(ev.timestamp) if self._trunc else ev.timestamp
        out = Event(case, "", ts, self._org or ev.org, None, self._consent, ev.kind)
        self._last = (None, (), (), 0)
        return [out]

    def decide(self, event: Event) -> Decision:
        """Apply the policy to one event and say what was done (for the audit log)."""
        [out] = self.apply(event)
        return tuple.__new__(Decision, (out, *self._last))

    def apply(self, event: Event) -> list[Event]:  # noqa: PLR0911 - one exit per check, flat
        """The events that leave for ``event``: always exactly one (it, changed, or a
        placeholder). :meth:`decide` says what was done."""
        if event.kind:  # a marker (EventKind.ACTIVITY is 0)
            return self._marker(event)
        self._n_events += 1
        case_id = event.case_id
        positions = self._positions
        position = positions.get(case_id, 0) + 1
        positions[case_id] = position

        org = event.org
        if org and self._org and org != self._org:
            return self._placeholder(event, position, Reason.OTHER_ORG)
        plan = self._plans.get(event.activity)
        if plan is None:
            plan = self._plan(event.activity)
        if plan.denied is not None:
            return self._placeholder(event, position, plan.denied)
        resource = event.resource
        if resource is not None and self._resources is not None:
            ok = self._res_verdicts.get(resource)
            if ok is None:
                ok = self._resources(resource) != self._deny
                if len(self._res_verdicts) < _CACHE_LIMIT:
                    self._res_verdicts[resource] = ok
            if not ok:
                return self._placeholder(event, position, Reason.RESOURCE_DENIED)
        if self._windows and not self._in_window(event):
            return self._placeholder(event, position, Reason.OUTSIDE_WINDOW)

        out: list[tuple[str, Any]] = []
        withheld: list[tuple[str, str]] | None = None
        actions = plan.actions
        scratch = self._scratch
        if scratch:
            scratch.clear()
        trunc = self._trunc
        for kv in event.attributes:
            key = kv[0]
            try:
                action = actions[key]
            except KeyError:
                action = self._action(plan, key)
            if action is None:
                out.append(kv)
            elif action.__class__ is str:
                if withheld is None:
                    withheld = []
                withheld.append((key, action))
            elif action.__class__ is int:
                v = kv[1]
                if action == _KEEP_SCRUB and v.__class__ is str:
                    text, counts = self._scrubber.scrub(v)  # type: ignore[union-attr]
                    if counts:
                        scratch.append(counts)
                    out.append((key, text))
                elif trunc is not None and isinstance(v, datetime):
                    out.append((key, trunc(v)))
                else:
                    out.append(kv)
            else:
                value = action(kv[1])  # type: ignore[operator]
                if value.__class__ is _Withhold:
                    if value.event:
                        return self._placeholder(event, position, Reason.VALUE_DENIED)
                    if withheld is None:
                        withheld = []
                    withheld.append((key, Reason.VALUE_DENIED.value))
                else:
                    out.append((key, value))

        reserved = self._consent
        scrubbed: tuple[tuple[str, int], ...] = ()
        if scratch:
            totals: dict[str, int] = {}
            for counts in scratch:
                for kind, n in counts:
                    totals[kind] = totals.get(kind, 0) + n
            scrubbed = tuple(sorted(totals.items()))
            sc = self._scrub_counts
            for kind, n in scrubbed:
                sc[kind] = sc.get(kind, 0) + n
            reserved += ((ATTR_SCRUBBED, ",".join(f"{k}:{n}" for k, n in scrubbed)),)
        fields: tuple[tuple[str, str], ...] = ()
        if withheld is not None:
            fields = tuple(withheld)
            sets = self._field_sets
            sets[fields] = sets.get(fields, 0) + 1
            if len(sets) >= _CACHE_LIMIT:
                self._fold_fields()
            pair = self._withheld_attr.get(fields)
            if pair is None:
                pair = self._withheld_summary(fields)
            reserved += (pair,)
        if not out or out[-1][0] < RESERVED_PREFIX:
            out.extend(reserved)
        else:
            i = bisect_left(out, _PROBE)
            out[i:i] = reserved

        res_out = resource
        if resource is not None and self._pseudo_res is not None:
            res_out = self._pseudo_res(resource)
        emitted = Event(
            self._pseudo_case(case_id) if self._pseudo_case else case_id,
            event.activity,
            self._trunc(event.timestamp) if self._trunc else event.timestamp,
            org or self._org,
            res_out,
            tuple(out),
            _ACTIVITY,
        )
        self._last = (None, fields, scrubbed, position)
        return [emitted]
