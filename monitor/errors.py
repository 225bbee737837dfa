"""The exception tree of procvault, engine and shell alike.

Every error procvault raises on purpose derives from :class:`ProcvaultError`. Its message is one
line a user can act on; ``retriable`` tells a loop whether trying again may help. The tree lives
in the pure engine (``procvault.monitor``) so that the engine's own errors join it and sources,
shell and CLI import it without importing each other.

>>> issubclass(ModelError, ProcvaultError), issubclass(ModelError, ValueError)
(True, True)
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "ConfigError",
    "InputError",
    "KafkaSetupError",
    "ModelError",
    "PrivacyProofError",
    "ProcvaultError",
    "SecurityError",
    "SignatureError",
    "TamperError",
]


class ProcvaultError(Exception):
    """Root of procvault's errors."""

    retriable: bool = False


class ConfigError(ProcvaultError):
    """A setting, option or configuration file is invalid."""


class InputError(ProcvaultError):
    """An input file (log, model, mapping) is missing or unreadable."""


class CodecError(ProcvaultError):
    """Bytes that are not a valid encoded event."""


class KafkaSetupError(ProcvaultError):
    """The local Kafka broker could not be installed, started or reached."""

    retriable = True


class SecurityError(ProcvaultError):
    """Root of decryption, signature and attestation failures (never carries secrets)."""


class SignatureError(SecurityError):
    """A signature does not verify: wrong or unknown key, changed content, or no signature."""


class TamperError(SecurityError):
    """Tamper-evident data (such as a hash-chained audit log) was changed, cut or reordered."""


class ModelError(ProcvaultError, ValueError):
    """A model (Petri net, rules) cannot be monitored as given (the message says why)."""


class PrivacyProofError(ProcvaultError, ValueError):
    """OpenDP could not prove that a mechanism meets its share of the budget."""
