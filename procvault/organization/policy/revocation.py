"""Signed revocation records (moved to :mod:`procvault.streams.revocation`, where the vault
worker can verify them without importing the organization's side; re-exported here)."""

from __future__ import annotations

from procvault.streams.revocation import (
    FORMAT,
    Revocation,
    public_key_id,
    sign_revocation,
    verify_revocation,
)

__all__ = ["FORMAT", "Revocation", "public_key_id", "sign_revocation", "verify_revocation"]
