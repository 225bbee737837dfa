"""procvault.config."""
