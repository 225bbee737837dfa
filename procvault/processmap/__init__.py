"""procvault.processmap."""
