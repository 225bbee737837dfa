"""pm4py's XES reader, the reference :func:`~procvault.generators.xes.read_xes` is tested against.

Imported only when ``reader="pm4py"`` is asked for: pm4py's import takes about a second.
"""

from __future__ import annotations

import gc
import warnings
from pathlib import Path
from typing import Any

from procvault.monitor.errors import InputError

from ._pm4py import import_pm4py

__all__ = ["read_pm4py_log"]


def read_pm4py_log(path: Path) -> Any:
    """``pm4py.read_xes(path)`` as a legacy ``EventLog``; its failures become one-line
    :class:`InputError`\\ s naming the file."""
    pm4py = import_pm4py()
    # pm4py warns when reading (optional faster parsers): not about the log, so muted.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pm4py.read_xes(str(path), variant="iterparse", return_legacy_log_object=True)
        except EOFError:
            problem = "truncated file (compressed data ends early)"
        except OSError as exc:
            problem = f"cannot read: {exc.strerror or exc}"
        except AttributeError as exc:
            # pm4py's reader found no <log> element and fails setting its properties.
            problem = (
                "not an XES log: no <log> element"
                if "properties" in str(exc)
                else f"not a valid XES log: {exc}"
            )
        except Exception as exc:  # lxml and pm4py raise many types on malformed input
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            problem = f"not a valid XES log: {first}"
        # pm4py leaves the file open when parsing fails: close it now, quietly.
        gc.collect()
    raise InputError(f"{path}: {problem}")
