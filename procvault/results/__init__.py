"""procvault.results."""
