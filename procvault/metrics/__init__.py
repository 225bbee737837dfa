"""procvault.metrics."""
