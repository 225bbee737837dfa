"""Import pm4py quietly: no progress bars, no import-time banner or warnings."""

from __future__ import annotations

import os
import warnings
from types import ModuleType


def import_pm4py() -> ModuleType:
    """The ``pm4py`` module, imported (once) with its progress bars off and its warnings muted.

    pm4py reads ``PM4PY_SHOW_PROGRESS_BAR`` when it is first imported, so this must run before
    any other import of it; it is heavy (about a second), so callers import it lazily.
    """
    os.environ.setdefault("PM4PY_SHOW_PROGRESS_BAR", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pm4py

    module: ModuleType = pm4py
    return module
