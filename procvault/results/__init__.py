"""Reading and showing what the pipeline published (the library behind ``procvault results``
and ``procvault dp plan``): :class:`~procvault.results.reader.ResultsReader` (verify and
show records), :class:`~procvault.results.mapview.MapView` (the DP process map),
:func:`~procvault.results.text.render_record`,
:mod:`~procvault.monitor.privacy.intervals` (95% noise intervals) and
:mod:`~procvault.results.planner` (expected relative errors)."""
