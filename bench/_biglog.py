"""The benchmarks' million-event log: Sepsis repeated under fresh case ids, written once.

Round ``k`` (``0 <= k < rounds``) holds every Sepsis trace with case id ``<id>#k`` (round 0
keeps the ids) and its timestamps shifted by ``k`` times (the log's span plus one day), as
``XesLog.replay(repeat=...)`` shifts them, so cases of different rounds do not overlap. Every
event attribute is written with its XES type. 66 rounds give 1,004,124 events in 69,300 cases
(about 12 MB gzip, 313 MB of XML). The file is cached under ``bench/results/`` (git-ignored) and
rebuilt only when missing.
"""

from __future__ import annotations

import gzip
import io
import os
from datetime import timedelta
from pathlib import Path

import msgspec

from procvault.generators.xes import read_xes
from procvault.generators.xes_write import write_xes_text

SHARED = Path(
    os.environ.get("PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
SEPSIS = SHARED / "logs" / "sepsis_cases.xes.gz"
RESULTS = Path(__file__).resolve().parent / "results"


def million_log(rounds: int = 66, *, source: Path = SEPSIS) -> Path:
    """The path of the repeated log (built on first use)."""
    target = RESULTS / f"{source.name.split('.')[0]}_x{rounds}.xes.gz"
    if target.exists():
        return target
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = list(read_xes(source).replay())
    step = base[-1].timestamp - base[0].timestamp + timedelta(days=1)
    tmp = target.with_name(target.name + ".part")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as text,
    ):
        # write_xes_text groups a stream by case (traces in order of first event); one round at
        # a time, spliced into one document, keeps memory at one round's worth.
        for k in range(rounds):
            events = (
                e
                if k == 0
                else msgspec.structs.replace(
                    e, case_id=f"{e.case_id}#{k}", timestamp=e.timestamp + step * k
                )
                for e in base
            )
            buf = io.StringIO()
            write_xes_text(events, buf)
            body = buf.getvalue()
            start, end = body.index("<trace>"), body.rindex("</log>")
            text.write(body[start:end] if k else body[:end])
        text.write("</log>\n")
    os.replace(tmp, target)
    return target
