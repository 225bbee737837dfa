"""procvault.results: reading, verifying and showing what the pipeline publishes
(:mod:`procvault.results.reader`)."""
