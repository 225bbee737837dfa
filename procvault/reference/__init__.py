"""procvault.reference."""
