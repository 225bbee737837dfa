"""The adversary suite: attacks run against the real local broker with Kafka access only.

The broker, the shared data and the topic fixtures come from ``tests/conftest.py`` (one broker
per test session); the pipeline harness (real ``procvault`` processes) from
``tests/integration/pipeline_harness.py``, which this folder puts on the import path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS / "integration") not in sys.path:
    sys.path.insert(0, str(_TESTS / "integration"))

#: The same as ``tests/conftest.py``'s (the harness imports it from whichever ``conftest``
#: module Python finds first).
SHARED_DATA = Path(
    os.environ.get("PROCVAULT_SHARED_DATA", _TESTS.parent.parent / "shared" / "data")
)
