"""Per-event cost of the crypto envelope on real encoded events (Sepsis), median of 5 runs.

Prints JSON: encode+seal (agent side) and open+decode (vault side) events/s and µs per event,
session set-up cost (once per producer session), and the bytes added per record.

    .venv/bin/python bench/envelope.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from procvault.generators.xes import read_xes
from procvault.streams import codec
from procvault.streams.envelope import ProducerSession, SessionOpener, VaultKeys, public_bytes

DATA = Path(
    os.environ.get("PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
TOPIC = "events.hospital"


def main() -> None:
    events = list(read_xes(DATA / "logs/sepsis_cases.xes.gz").events)
    keys = VaultKeys.generate(epoch=1)
    org_sender = X25519PrivateKey.generate()  # the organization's static sender key
    seal_rates, open_rates, setups = [], [], []
    for _ in range(5):
        t = time.perf_counter()
        sender = ProducerSession(keys.public(), org_sender, org="hospital", producer="bench")
        setups.append(time.perf_counter() - t)
        t = time.perf_counter()
        records = [sender.seal(codec.encode(e), topic=TOPIC, partition=0) for e in events]
        seal_rates.append(len(events) / (time.perf_counter() - t))
        opener = SessionOpener({1: keys}, senders={"hospital": public_bytes(org_sender)})
        t = time.perf_counter()
        for r in records:
            codec.decode(opener.open(r, topic=TOPIC, partition=0)[1])
        open_rates.append(len(events) / (time.perf_counter() - t))
    plain = statistics.mean(len(codec.encode(e)) for e in events)
    sealed = statistics.mean(len(r) for r in records)
    out = {
        "benchmark": "envelope",
        "events": len(events),
        "runs": 5,
        "encode_seal": {
            "events_per_s_median": round(statistics.median(seal_rates)),
            "us_per_event": round(1e6 / statistics.median(seal_rates), 2),
        },
        "open_decode": {
            "events_per_s_median": round(statistics.median(open_rates)),
            "us_per_event": round(1e6 / statistics.median(open_rates), 2),
        },
        "session_setup_us_median": round(statistics.median(setups) * 1e6, 1),
        "mean_plaintext_bytes": round(plain, 1),
        "mean_record_bytes": round(sealed, 1),
    }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
