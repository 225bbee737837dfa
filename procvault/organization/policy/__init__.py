"""The organization's own privacy policy, applied to its events before they leave.

Load a policy file and compile it once; then each event becomes exactly one event that may leave
(or a placeholder that says something was withheld, where and why, never what):

>>> from datetime import datetime, UTC
>>> from procvault.monitor.event import Event
>>> policy = parse_policy({"policy": "demo", "version": 1, "org": "shop", "mode": "allowlist",
...                        "consent": {"scope": "monitoring"}, "activities": ["Pay", "Ship"]})
>>> engine = PolicyEngine(policy)
>>> [out] = engine.apply(Event.create("o-1", "Pay", datetime(2024, 1, 1, tzinfo=UTC)))
>>> out.activity, consent_of(out)
('Pay', ConsentContext(policy='demo', version=1, scope='monitoring'))
>>> [ph] = engine.apply(Event.create("o-1", "Audit", datetime(2024, 1, 1, tzinfo=UTC)))
>>> is_placeholder(ph), ph.attr("pv:reason")
(True, 'ACTIVITY_DENIED')

Modules: :mod:`.schema` (the typed policy), :mod:`.loader` (policy files and ProMTEE manifests),
:mod:`.engine` (the stage), :mod:`.windows` (collection windows), :mod:`.pseudonym` (keyed
pseudonyms), :mod:`.pii` (scrubbing), :mod:`.reserved` (placeholders, consent, reason codes),
:mod:`.audit` (the hash-chained audit log), :mod:`.revocation` (signed revocation records).
The schema of policy files is in ``docs/privacy-policy.md``.
"""

from __future__ import annotations

from .audit import AuditLog, AuditReport, verify_audit_log
from .engine import Decision, PolicyEngine, PolicyStats
from .loader import load_policy, parse_manifest, parse_policy
from .pii import Scrubber, ScrubSettings
from .pseudonym import Pseudonymizer, PseudonymKey
from .reserved import PLACEHOLDER_ACTIVITY, ConsentContext, Reason, consent_of, is_placeholder
from .revocation import Revocation, sign_revocation, verify_revocation
from .schema import Policy

__all__ = [
    "PLACEHOLDER_ACTIVITY",
    "AuditLog",
    "AuditReport",
    "ConsentContext",
    "Decision",
    "Policy",
    "PolicyEngine",
    "PolicyStats",
    "PseudonymKey",
    "Pseudonymizer",
    "Reason",
    "Revocation",
    "ScrubSettings",
    "Scrubber",
    "consent_of",
    "is_placeholder",
    "load_policy",
    "parse_manifest",
    "parse_policy",
    "sign_revocation",
    "verify_audit_log",
    "verify_revocation",
]
