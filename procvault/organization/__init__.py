"""procvault.organization."""
