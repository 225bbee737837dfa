"""Names the policy stage reserves on events: placeholders, reason codes and consent context.

Every attribute key starting with ``pv:`` belongs to procvault. The policy stage drops such keys
from incoming events (reason ``RESERVED``) so that a source cannot forge a consent context or
a placeholder, then adds its own:

=================== ===================================================================
attribute           on
=================== ===================================================================
``pv:policy``       every emitted event: the policy id (consent context)
``pv:policy_version`` every emitted event: the policy version (consent context)
``pv:scope``        every emitted event: the consent scope
``pv:withheld``     an event that lost fields: ``REASON:count`` pairs, e.g. ``MINIMISED:3``
``pv:scrubbed``     an event whose text was scrubbed: ``kind:count`` pairs, e.g. ``email:1``
``pv:reason``       a placeholder: why the event was withheld (a :class:`Reason`)
``pv:position``     a placeholder: the withheld event's position in its case (1 = first)
``pv:actor``        a placeholder: who withheld it (the policy stage, later a reviewer)
=================== ===================================================================

A *placeholder* is an :class:`~procvault.monitor.event.Event` of kind ``PLACEHOLDER``
whose activity is :data:`PLACEHOLDER_ACTIVITY` (``pv:withheld``), whose case id is the case's
pseudonym (or id), whose resource is ``None`` and whose attributes are only the reserved ones
above: it says *that* something was withheld, where and why, never what.

>>> from datetime import datetime, UTC
>>> from procvault.monitor.event import Event, EventKind
>>> ph = Event.create("c_1", PLACEHOLDER_ACTIVITY, datetime(2024, 1, 1, tzinfo=UTC),
...                   attributes={ATTR_REASON: "OUTSIDE_WINDOW", ATTR_POSITION: 3,
...                               ATTR_ACTOR: "policy", ATTR_POLICY: "p", ATTR_POLICY_VERSION: 1,
...                               ATTR_SCOPE: "monitoring"}, kind=EventKind.PLACEHOLDER)
>>> is_placeholder(ph), consent_of(ph)
(True, ConsentContext(policy='p', version=1, scope='monitoring'))
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from procvault.monitor.event import PLACEHOLDER_ACTIVITY, Event, EventKind

__all__ = [
    "ATTR_ACTOR",
    "ATTR_POLICY",
    "ATTR_POLICY_VERSION",
    "ATTR_POSITION",
    "ATTR_REASON",
    "ATTR_SCOPE",
    "ATTR_SCRUBBED",
    "ATTR_WITHHELD",
    "PLACEHOLDER_ACTIVITY",
    "RESERVED_PREFIX",
    "ConsentContext",
    "Reason",
    "consent_of",
    "is_placeholder",
]

#: Attribute keys (and the placeholder activity) with this prefix are procvault's.
RESERVED_PREFIX: Final = "pv:"
ATTR_POLICY: Final = "pv:policy"
ATTR_POLICY_VERSION: Final = "pv:policy_version"
ATTR_SCOPE: Final = "pv:scope"
ATTR_WITHHELD: Final = "pv:withheld"
ATTR_SCRUBBED: Final = "pv:scrubbed"
ATTR_REASON: Final = "pv:reason"
ATTR_POSITION: Final = "pv:position"
ATTR_ACTOR: Final = "pv:actor"


class Reason(enum.StrEnum):
    """Why an event or a field was withheld (stable codes: they go on the wire and in audits)."""

    #: Event: the activity is denied (denylist) or not allowed (allowlist).
    ACTIVITY_DENIED = "ACTIVITY_DENIED"
    #: Event: the resource is denied or not allowed.
    RESOURCE_DENIED = "RESOURCE_DENIED"
    #: Event or field: an attribute value matches a denied pattern or misses the allowed one.
    VALUE_DENIED = "VALUE_DENIED"
    #: Event: outside every collection window that applies to its resource or group.
    OUTSIDE_WINDOW = "OUTSIDE_WINDOW"
    #: Event: it belongs to another organization than the policy's.
    OTHER_ORG = "OTHER_ORG"
    #: Field: the attribute key is denied or not allowed.
    ATTRIBUTE_DENIED = "ATTRIBUTE_DENIED"
    #: Field: not needed for this activity (minimisation, e.g. a ProMTEE manifest).
    MINIMISED = "MINIMISED"
    #: Field: the key uses the reserved ``pv:`` prefix.
    RESERVED = "RESERVED"
    #: Event: a reviewer dropped it from the review queue (``procvault review drop``).
    REVIEW_DROPPED = "REVIEW_DROPPED"
    #: Field: a reviewer redacted it (``procvault review redact``).
    REVIEW_REDACTED = "REVIEW_REDACTED"


@dataclass(frozen=True)
class ConsentContext:
    """The consent an emitted event travels under: policy id, version and scope."""

    policy: str
    version: int
    scope: str


def is_placeholder(event: Event) -> bool:
    """True for a placeholder standing in for a withheld event."""
    return event.kind == EventKind.PLACEHOLDER


def consent_of(event: Event) -> ConsentContext | None:
    """The consent context an event carries, or ``None`` if it has none (it never passed a
    policy stage)."""
    policy = event.attr(ATTR_POLICY)
    version = event.attr(ATTR_POLICY_VERSION)
    scope = event.attr(ATTR_SCOPE)
    if not isinstance(policy, str) or not isinstance(version, int) or not isinstance(scope, str):
        return None
    return ConsentContext(policy, version, scope)
