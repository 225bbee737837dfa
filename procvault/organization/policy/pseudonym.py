"""Keyed pseudonyms: HMAC-SHA256 under a key that never leaves the organization.

The same clear value always gets the same pseudonym under one key, so the vault can still
count a case's events or check separation of duty on resources, yet it cannot reverse the
pseudonym or link it across organizations (each holds its own key). There are two domains:
case ids (``c_…``) and actors (``r_…``: the event's resource and any attribute the policy
pseudonymises, so that an approver named in an attribute matches the same person as a resource).

The key is read from a file or an environment variable; it is never printed: ``repr`` hides it,
and :attr:`PseudonymKey.key_id` (a keyed digest) is what summaries and the audit log show.

>>> key = PseudonymKey(b"0123456789abcdef0123456789abcdef")
>>> key
PseudonymKey(key_id='...')
>>> p = Pseudonymizer(key)
>>> p.case("case-17") == p.case("case-17"), p.case("case-17")[:2], p.actor("Anna")[:2]
(True, 'c_', 'r_')
>>> other = Pseudonymizer(PseudonymKey(b"another key of 32 bytes, really!"))
>>> other.case("case-17") != p.case("case-17")
True
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Final

from procvault.monitor.errors import ConfigError

__all__ = ["KEY_ENV", "MIN_KEY_BYTES", "PseudonymKey", "Pseudonymizer"]

#: Environment variable holding the key when no key file is given.
KEY_ENV: Final = "PROCVAULT_POLICY_KEY"
#: Shortest key accepted (bytes); 32 random bytes are recommended.
MIN_KEY_BYTES: Final = 16
#: Hex characters kept from each HMAC (96 bits: collisions need ~2^48 distinct values).
_HEX_CHARS: Final = 24
#: Cached pseudonyms per domain before the cache is cleared (bounds memory on endless streams).
_CACHE_LIMIT: Final = 1 << 20
_DOMAIN_CASE: Final = b"procvault-pseudonym-v1\x00case\x00"
_DOMAIN_ACTOR: Final = b"procvault-pseudonym-v1\x00actor\x00"
_KEY_ID_LABEL: Final = b"procvault-key-id-v1"


class PseudonymKey:
    """An organization-held HMAC key; its bytes are never shown.

    Parameters
    ----------
    secret
        At least :data:`MIN_KEY_BYTES` bytes.
    """

    __slots__ = ("_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes | bytearray):
            raise TypeError("the pseudonym key must be bytes")
        if len(secret) < MIN_KEY_BYTES:
            raise ValueError(
                f"the pseudonym key is too short ({len(secret)} bytes; "
                f"at least {MIN_KEY_BYTES}, 32 random bytes recommended)"
            )
        self._secret = bytes(secret)
        #: A public fingerprint of the key (16 hex characters), safe to log.
        self.key_id: str = hmac.digest(self._secret, _KEY_ID_LABEL, "sha256").hex()[:16]

    def __repr__(self) -> str:
        return f"PseudonymKey(key_id={self.key_id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PseudonymKey):
            return NotImplemented
        return hmac.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self.key_id)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PseudonymKey:
        """Read a key file: its bytes, without a trailing newline, are the key.

        Create one with ``head -c 32 /dev/urandom | base64 > org.key`` and keep it with the
        organization; anyone holding it can test guesses of clear values against pseudonyms.
        """
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read the key file: {exc.strerror or exc}") from None
        try:
            return cls(data.rstrip(b"\r\n"))
        except ValueError as exc:
            raise ConfigError(f"{p}: {exc}") from None

    @classmethod
    def from_env(cls, var: str = KEY_ENV) -> PseudonymKey | None:
        """The key in environment variable ``var`` (UTF-8), or ``None`` when it is unset."""
        raw = os.environ.get(var)
        if raw is None:
            return None
        try:
            return cls(raw.encode())
        except ValueError as exc:
            raise ConfigError(f"${var}: {exc}") from None

    def digest(self, domain: bytes, value: str) -> str:
        """Hex HMAC-SHA256 of ``domain + value`` (truncated to 96 bits)."""
        return hmac.digest(self._secret, domain + value.encode(), "sha256").hex()[:_HEX_CHARS]


class Pseudonymizer:
    """Pseudonyms for case ids and actors under one key, with a bounded cache.

    Parameters
    ----------
    key
        The organization's :class:`PseudonymKey`.
    """

    __slots__ = ("_actors", "_cases", "key")

    def __init__(self, key: PseudonymKey) -> None:
        if not isinstance(key, PseudonymKey):
            raise TypeError("key must be a PseudonymKey")
        self.key = key
        self._cases: dict[str, str] = {}
        self._actors: dict[str, str] = {}

    def case(self, case_id: str) -> str:
        """The pseudonym of a case id: ``c_`` and 24 hex characters."""
        out = self._cases.get(case_id)
        if out is None:
            if len(self._cases) >= _CACHE_LIMIT:
                self._cases.clear()
            out = self._cases[case_id] = "c_" + self.key.digest(_DOMAIN_CASE, case_id)
        return out

    def actor(self, name: str) -> str:
        """The pseudonym of a resource or a pseudonymised attribute value: ``r_`` and 24 hex."""
        out = self._actors.get(name)
        if out is None:
            if len(self._actors) >= _CACHE_LIMIT:
                self._actors.clear()
            out = self._actors[name] = "r_" + self.key.digest(_DOMAIN_ACTOR, name)
        return out
