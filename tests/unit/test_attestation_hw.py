"""DCAP verification on real SGX/TDX quotes, and the hardware providers' file interfaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from procvault.streams.attestation import AttestationError, Evidence
from procvault.streams.attestation_hw import (
    ConfigfsTsmProvider,
    DcapPolicy,
    DcapVerifier,
    GramineSgxProvider,
    collateral_from_files,
)

pytest.importorskip("dcap_qvl")

# Inside each collateral's validity window (see ../shared/data/attestation/README.md).
TDX_NOW, SGX_NOW, OUTDATED_NOW = 1_750_330_000, 1_750_331_000, 1_771_412_400


@pytest.fixture(scope="module")
def vectors(shared_data: Path) -> dict[str, tuple[bytes, Path]]:
    d = shared_data / "attestation"
    names = ("tdx_quote", "sgx_quote", "tdx_quote_outdated", "tdx_quote_td15ex")
    return {n: ((d / n).read_bytes(), d / f"{n}_collateral.json") for n in names}


def _report(quote: bytes, collateral: Path, now: int) -> dict:
    import dcap_qvl

    col = dcap_qvl.QuoteCollateralV3.from_json(collateral.read_text())
    _kind, body = next(
        iter(json.loads(dcap_qvl.verify(quote, col, now).to_json())["report"].items())
    )
    while "report_data" not in body:
        body = body["base"]
    return body


def _verifier(vectors: dict, now: int, **policy: object) -> DcapVerifier:
    files = {q: p for q, p in vectors.values()}
    return DcapVerifier(DcapPolicy(**policy), collateral_from_files(files), clock=lambda: now)  # type: ignore[arg-type]


def test_tdx_quote_passes_every_check_but_the_key_binding(vectors: dict) -> None:
    quote, col = vectors["tdx_quote"]
    body = _report(quote, col, TDX_NOW)
    bound = bytes.fromhex(body["report_data"])
    ok = _verifier(vectors, TDX_NOW, measurements=[body["mr_td"]])
    # the quote's own report data: every check passes
    assert ok.verify(Evidence("tdx-dcap", bound, quote), bound).kind == "tdx-dcap"
    # our keys: the quote does not bind them
    with pytest.raises(AttestationError, match="does not bind"):
        ok.verify(Evidence("tdx-dcap", b"\1" * 64, quote), b"\1" * 64)


def test_wrong_measurement_refused(vectors: dict) -> None:
    quote, col = vectors["tdx_quote"]
    bound = bytes.fromhex(_report(quote, col, TDX_NOW)["report_data"])
    with pytest.raises(AttestationError, match="measurement"):
        _verifier(vectors, TDX_NOW, measurements=["00" * 48]).verify(
            Evidence("tdx-dcap", bound, quote), bound
        )


def test_sgx_tcb_status_policy(vectors: dict) -> None:
    quote, col = vectors["sgx_quote"]
    body = _report(quote, col, SGX_NOW)
    bound = bytes.fromhex(body["report_data"])
    ev = Evidence("sgx-dcap", bound, quote)
    with pytest.raises(AttestationError, match="ConfigurationAndSWHardeningNeeded"):
        _verifier(vectors, SGX_NOW, measurements=[body["mr_enclave"]]).verify(ev, bound)
    relaxed = _verifier(
        vectors,
        SGX_NOW,
        measurements=[body["mr_enclave"]],
        statuses=["UpToDate", "ConfigurationAndSWHardeningNeeded"],
    )
    assert relaxed.verify(ev, bound) is ev


def test_outdated_tdx_quote_refused(vectors: dict) -> None:
    quote, _ = vectors["tdx_quote_outdated"]
    with pytest.raises(AttestationError, match="No matching TCB level"):
        _verifier(vectors, OUTDATED_NOW, measurements=["00"]).verify(
            Evidence("tdx-dcap", b"\0" * 64, quote), b"\0" * 64
        )


def test_expired_collateral_and_flipped_byte_refused(vectors: dict) -> None:
    quote, _ = vectors["tdx_quote"]
    with pytest.raises(AttestationError, match="verification failed"):
        _verifier(vectors, 1_900_000_000).verify(
            Evidence("tdx-dcap", b"\0" * 64, quote), b"\0" * 64
        )
    bad = bytearray(quote)
    bad[700] ^= 1
    files = {bytes(bad): vectors["tdx_quote"][1]}
    v = DcapVerifier(
        DcapPolicy(measurements=["00"]), collateral_from_files(files), clock=lambda: TDX_NOW
    )
    with pytest.raises(AttestationError, match="verification failed"):
        v.verify(Evidence("tdx-dcap", b"\0" * 64, bytes(bad)), b"\0" * 64)


def test_td15_report_layout_is_understood(vectors: dict) -> None:
    quote, col = vectors["tdx_quote_td15ex"]
    body = _report(quote, col, 1_791_419_400)
    bound = bytes.fromhex(body["report_data"])
    v = _verifier(vectors, 1_791_419_400, measurements=[body["mr_td"]])
    assert v.verify(Evidence("tdx-dcap", bound, quote), bound).kind == "tdx-dcap"


def test_simulated_and_snp_evidence_not_accepted_by_dcap(vectors: dict) -> None:
    for kind in ("simulated-INSECURE", "sev-snp"):
        with pytest.raises(AttestationError, match="cannot be verified by DCAP"):
            _verifier(vectors, TDX_NOW).verify(Evidence(kind, b"\0" * 64, b""), b"\0" * 64)


def test_gramine_provider_file_protocol(tmp_path: Path) -> None:
    (tmp_path / "quote").write_bytes(b"QUOTE")
    ev = GramineSgxProvider(tmp_path).evidence(b"r" * 64)
    assert (ev.kind, ev.payload) == ("sgx-dcap", b"QUOTE")
    assert (tmp_path / "user_report_data").read_bytes() == b"r" * 64
    with pytest.raises(AttestationError, match="inside Gramine"):
        GramineSgxProvider(tmp_path / "missing").evidence(b"r" * 64)


def test_configfs_tsm_provider_reports_missing_interface(tmp_path: Path) -> None:
    with pytest.raises(AttestationError, match="configfs-tsm"):
        ConfigfsTsmProvider(tmp_path / "nope").evidence(b"r" * 64)
