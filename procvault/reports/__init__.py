"""procvault.reports."""
