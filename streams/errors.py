"""The exception tree of procvault's I/O shell.

Every error procvault raises on purpose derives from :class:`ProcvaultError`. Its message is one
line a user can act on; ``retriable`` tells a loop whether trying again may help.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "ConfigError",
    "InputError",
    "KafkaSetupError",
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
