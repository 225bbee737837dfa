"""procvault: confidential, privacy-preserving online process monitoring."""

__version__ = "0.1.0"
