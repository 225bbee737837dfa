"""Per-event cost of the crypto envelope on real encoded events (Sepsis), and what a forged
record costs the vault, median of ``--runs`` runs.

Prints JSON:

* ``encode_seal`` (agent side) and ``open_decode`` (vault side) events/s and µs per event,
  ``session_setup_us_median`` (once per producer session), the bytes a record adds;
* ``open``: genuine records of a known session opened (header tag, AES-GCM) per second: the
  rate the forged ones are compared with;
* ``forged``: records rejected per second, for each kind a Kafka writer without the
  organization's sender key can make: ``new_session_random_tag`` (a genuine record with a
  fresh session id and a random header tag: every one a session the vault never saw),
  ``known_session_wrong_tag`` (a genuine record with a random header tag), and
  ``attacker_sender_key`` (a well-formed record sealed to the vault's public key with the
  attacker's own sender key, a new session each); with ``ratio_to_open`` (median of the
  per-run ratios: forged rejected / genuine opened in the same run; the bar is 0.5) and the
  sessions the opener caches after all of them (1: the genuine session's only).

Every run measures all of them one after the other in this process, so the ratios compare
figures taken under the same load.

    .venv/bin/python bench/envelope.py [--runs 5] [--log PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from procvault.generators.xes import read_xes
from procvault.streams import codec
from procvault.streams.envelope import (
    ProducerSession,
    RejectedRecord,
    SessionOpener,
    VaultKeys,
    parse_header,
    public_bytes,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import rate_summary  # bench/_timing.py

DATA = Path(
    os.environ.get("PROCVAULT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
TOPIC = "events.hospital"
PARTITION = 0
BAR = 0.5  # forged records rejected at least at half the rate genuine ones are opened


def _forge_new_session(record: bytes) -> bytes:
    """A genuine record with a fresh session id and a random header tag."""
    _, pos = parse_header(record)
    start = pos - 64  # session 16 | generation 8 | ephemeral 32 | sequence 8
    return (
        record[:start]
        + os.urandom(16)
        + record[start + 16 : pos]
        + os.urandom(16)
        + record[pos + 16 :]
    )


def _forge_tag(record: bytes) -> bytes:
    """A genuine record (its session known to the vault) with a random header tag."""
    _, pos = parse_header(record)
    return record[:pos] + os.urandom(16) + record[pos + 16 :]


def _forgeries(kind: str, records: list[bytes], plain: list[bytes], keys: VaultKeys) -> list[bytes]:
    """Records of ``kind`` (see the module docstring), as many as ``records``."""
    if kind == "new_session_random_tag":
        return [_forge_new_session(r) for r in records]
    if kind == "known_session_wrong_tag":
        return [_forge_tag(r) for r in records]
    # the attacker's own sender key, a new session every 20 records (making one costs the
    # attacker two X25519s)
    mallory = X25519PrivateKey.generate()
    out: list[bytes] = []
    for i in range(0, len(plain), 20):
        session = ProducerSession(keys.public(), mallory, org="hospital", producer="m")
        out.extend(session.seal(p, topic=TOPIC, partition=PARTITION) for p in plain[i : i + 20])
    return out


def _rejections_per_s(opener: SessionOpener, records: list[bytes]) -> float:
    t = time.perf_counter()
    for r in records:
        try:
            opener.open(r, topic=TOPIC, partition=PARTITION)
        except RejectedRecord:
            continue
        raise AssertionError("a forged record opened")
    return len(records) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs (default 5)")
    ap.add_argument("--log", type=Path, default=DATA / "logs/sepsis_cases.xes.gz")
    args = ap.parse_args()
    events = list(read_xes(args.log).events)
    plain = [codec.encode(e) for e in events]
    keys = VaultKeys.generate(epoch=1)
    org = X25519PrivateKey.generate()
    senders = {"hospital": public_bytes(org)}
    seal_rates, open_dec_rates, open_rates, setups = [], [], [], []
    forged: dict[str, list[float]] = {
        "new_session_random_tag": [],
        "known_session_wrong_tag": [],
        "attacker_sender_key": [],
    }
    ratios: dict[str, list[float]] = {k: [] for k in forged}
    cached: dict[str, int] = {}
    records: list[bytes] = []
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs} ...", file=sys.stderr)
        t = time.perf_counter()
        sender = ProducerSession(keys.public(), org, org="hospital", producer="bench")
        setups.append(time.perf_counter() - t)
        t = time.perf_counter()
        records = [sender.seal(codec.encode(e), topic=TOPIC, partition=PARTITION) for e in events]
        seal_rates.append(len(events) / (time.perf_counter() - t))
        opener = SessionOpener({1: keys}, senders=senders)
        t = time.perf_counter()
        for r in records:
            codec.decode(opener.open(r, topic=TOPIC, partition=PARTITION)[1])
        open_dec_rates.append(len(events) / (time.perf_counter() - t))
        t = time.perf_counter()  # the same records again: the session is known
        for r in records:
            opener.open(r, topic=TOPIC, partition=PARTITION)
        open_rates.append(len(records) / (time.perf_counter() - t))
        for kind, rates in forged.items():
            batch = _forgeries(kind, records, plain, keys)
            rate = _rejections_per_s(opener, batch)
            rates.append(rate)
            ratios[kind].append(rate / open_rates[-1])
            cached[kind] = opener.sessions
    plain_bytes = statistics.mean(len(p) for p in plain)
    sealed_bytes = statistics.mean(len(r) for r in records)
    out = {
        "benchmark": "envelope",
        "events": len(events),
        "runs": args.runs,
        "note": "shared 2-core machine: other jobs ran meanwhile; the ratios compare "
        "figures of the same run",
        "encode_seal": {
            **rate_summary(seal_rates),
            "us_per_event": round(1e6 / statistics.median(seal_rates), 2),
        },
        "open_decode": {
            **rate_summary(open_dec_rates),
            "us_per_event": round(1e6 / statistics.median(open_dec_rates), 2),
        },
        "open": {
            **rate_summary(open_rates),
            "us_per_record": round(1e6 / statistics.median(open_rates), 2),
        },
        "forged": {
            kind: {
                **rate_summary(rates),
                "us_per_record": round(1e6 / statistics.median(rates), 2),
                "ratio_to_open": round(statistics.median(ratios[kind]), 2),
                "sessions_cached_after": cached[kind],
            }
            for kind, rates in forged.items()
        },
        "bar": BAR,
        "meets_bar": all(statistics.median(r) >= BAR for r in ratios.values()),
        "session_setup_us_median": round(statistics.median(setups) * 1e6, 1),
        "mean_plaintext_bytes": round(plain_bytes, 1),
        "mean_record_bytes": round(sealed_bytes, 1),
    }
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
