"""Hardware attestation: evidence from SGX (Gramine) and TDX/SEV-SNP (configfs-tsm), DCAP checks.

Providers read evidence through the documented kernel/runtime interfaces:

* :class:`GramineSgxProvider`: write the 64-byte report data to
  ``/dev/attestation/user_report_data``, read the DCAP quote from ``/dev/attestation/quote``.
* :class:`ConfigfsTsmProvider`: create ``/sys/kernel/config/tsm/report/<name>``, write the report
  data to ``inblob``, read ``provider`` (``tdx_guest`` or ``sev_guest``) and ``outblob``.

Both take their root folder as a setting, so tests run the same code against a folder laid out
like the real interface.

:class:`DcapVerifier` verifies SGX and TDX quotes with ``dcap-qvl`` (signature chain, CRLs, TCB
level against the collateral, at a given time) and then checks the procvault policy: accepted TCB
statuses, the expected measurement (MRENCLAVE for SGX, MRTD for TDX), the debug flag, and that
the quote's report data is exactly the expected binding of the vault's keys, epoch and nonce.
SEV-SNP reports are read by the provider but not verified yet (the verifier refuses them).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .attestation import AttestationError, Evidence

__all__ = ["ConfigfsTsmProvider", "DcapPolicy", "DcapVerifier", "GramineSgxProvider"]

_SGX_DEBUG = 0x02  # SGX ATTRIBUTES.FLAGS bit 1
_TDX_DEBUG = 0x01  # TDX TD_ATTRIBUTES bit 0


@dataclass(frozen=True)
class GramineSgxProvider:
    """SGX DCAP quotes through Gramine's ``/dev/attestation`` pseudo-files."""

    root: Path = Path("/dev/attestation")

    def evidence(self, report_data: bytes) -> Evidence:
        """Write the report data, read back the quote."""
        if len(report_data) != 64:
            raise ValueError("report data must be 64 bytes")
        try:
            (self.root / "user_report_data").write_bytes(report_data)
            quote = (self.root / "quote").read_bytes()
        except OSError as exc:
            raise AttestationError(
                f"cannot get an SGX quote from {self.root} ({exc.strerror or exc}); "
                "is this running inside Gramine with remote attestation enabled?"
            ) from None
        return Evidence("sgx-dcap", report_data, quote)


@dataclass(frozen=True)
class ConfigfsTsmProvider:
    """TDX or SEV-SNP reports through Linux configfs-tsm."""

    root: Path = Path("/sys/kernel/config/tsm/report")

    def evidence(self, report_data: bytes) -> Evidence:
        """Create a report entry, write the report data, read the provider and the report."""
        if len(report_data) != 64:
            raise ValueError("report data must be 64 bytes")
        entry = self.root / f"procvault-{uuid.uuid4().hex[:12]}"
        try:
            entry.mkdir()
            try:
                (entry / "inblob").write_bytes(report_data)
                provider = (entry / "provider").read_text().strip()
                blob = (entry / "outblob").read_bytes()
            finally:
                with contextlib.suppress(OSError):
                    entry.rmdir()
        except OSError as exc:
            raise AttestationError(
                f"cannot get a report from {self.root} ({exc.strerror or exc}); "
                "is configfs-tsm available in this confidential VM?"
            ) from None
        kinds = {"tdx_guest": "tdx-dcap", "sev_guest": "sev-snp"}
        if provider not in kinds:
            raise AttestationError(f"unknown configfs-tsm provider {provider!r}")
        return Evidence(kinds[provider], report_data, blob)


@dataclass(frozen=True)
class DcapPolicy:
    """What a verifier accepts.

    Parameters
    ----------
    measurements
        Accepted MRENCLAVE (SGX) or MRTD (TDX) values, hex. Empty: refuse everything.
    statuses
        Accepted TCB statuses (``UpToDate`` by default).
    allow_debug
        Accept enclaves/TDs with the debug flag set (never in production).
    """

    measurements: Collection[str] = ()
    statuses: Collection[str] = ("UpToDate",)
    allow_debug: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "measurements", frozenset(m.lower() for m in self.measurements))
        object.__setattr__(self, "statuses", frozenset(self.statuses))


def _innermost_report(report: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The report kind and the dict holding ``report_data`` (TD 1.5 reports nest a base)."""
    kind, body = next(iter(report.items()))
    while "report_data" not in body and "base" in body:
        body = body["base"]
    return str(kind), body


@dataclass(frozen=True)
class DcapVerifier:
    """Verifies SGX/TDX DCAP quotes with ``dcap-qvl``, then the procvault policy.

    ``collateral`` returns the verification collateral (JSON text) for a quote: offline from a
    file in tests, from a PCCS in production. ``clock`` gives the verification time in Unix
    seconds (the collateral's validity window is checked against it).
    """

    policy: DcapPolicy
    collateral: Callable[[bytes], str]
    clock: Callable[[], float] = field(default=time.time)

    def verify(self, evidence: Evidence, expected_report_data: bytes) -> Evidence:
        """Return ``evidence`` if it passes every check, else raise :class:`AttestationError`."""
        if evidence.kind not in ("sgx-dcap", "tdx-dcap"):
            raise AttestationError(f"{evidence.kind} evidence cannot be verified by DCAP")
        import dcap_qvl

        try:
            collateral = dcap_qvl.QuoteCollateralV3.from_json(self.collateral(evidence.payload))
            verified = dcap_qvl.verify(evidence.payload, collateral, int(self.clock()))
        except (ValueError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AttestationError(f"quote verification failed: {first}") from None
        result = json.loads(verified.to_json())
        status = str(result["status"])
        if status not in self.policy.statuses:
            raise AttestationError(f"TCB status {status} is not accepted by the policy")
        kind, body = _innermost_report(result["report"])
        if kind == "SgxEnclave":
            measurement = str(body["mr_enclave"])
            debug = bool(bytes.fromhex(body["attributes"])[0] & _SGX_DEBUG)
        else:
            measurement = str(body["mr_td"])
            debug = bool(bytes.fromhex(body["td_attributes"])[0] & _TDX_DEBUG)
        if measurement.lower() not in self.policy.measurements:
            raise AttestationError(f"measurement {measurement[:16]}... is not in the policy")
        if debug and not self.policy.allow_debug:
            raise AttestationError("the enclave/TD runs in debug mode")
        if bytes.fromhex(body["report_data"]) != expected_report_data:
            raise AttestationError("evidence does not bind the announced keys, epoch and nonce")
        if evidence.report_data != expected_report_data:
            raise AttestationError("evidence report data does not match its quote")
        return evidence


def collateral_from_files(mapping: Mapping[bytes, Path]) -> Callable[[bytes], str]:
    """A collateral source for tests and air-gapped sites: quote bytes → JSON file."""

    def lookup(quote: bytes) -> str:
        path = mapping.get(quote)
        if path is None:
            raise ValueError("no collateral for this quote")
        return path.read_text()

    return lookup
