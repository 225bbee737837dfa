"""DCAP verification on the real SGX/TDX quotes against attestation policies (every TDX
register pinned), policy files, and the hardware providers' file interfaces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.errors import ConfigError
from procvault.streams.attestation import AttestationError, Evidence
from procvault.streams.attestation_hw import (
    ConfigfsTsmProvider,
    DcapPolicy,
    DcapVerifier,
    GramineSgxProvider,
    check_report,
    collateral_from_files,
    load_attestation_policy,
)

pytest.importorskip("dcap_qvl")

# Inside each collateral's validity window (see ../shared/data/attestation/README.md).
TDX_NOW, SGX_NOW, OUTDATED_NOW, TD15_NOW = (
    1_750_330_000,
    1_750_331_000,
    1_771_412_400,
    1_791_419_400,
)
TDX_REGISTERS = {
    "mrtd": "mr_td",
    "rtmr0": "rt_mr0",
    "rtmr1": "rt_mr1",
    "rtmr2": "rt_mr2",
    "rtmr3": "rt_mr3",
    "mrconfigid": "mr_config_id",
    "mrowner": "mr_owner",
}


@pytest.fixture(scope="module")
def vectors(shared_data: Path) -> dict[str, tuple[bytes, Path]]:
    d = shared_data / "attestation"
    names = ("tdx_quote", "sgx_quote", "tdx_quote_outdated", "tdx_quote_td15ex")
    return {n: ((d / n).read_bytes(), d / f"{n}_collateral.json") for n in names}


def _report(quote: bytes, collateral: Path, now: int) -> tuple[str, str, dict[str, Any]]:
    import dcap_qvl

    col = dcap_qvl.QuoteCollateralV3.from_json(collateral.read_text())
    result = json.loads(dcap_qvl.verify(quote, col, now).to_json())
    kind, body = next(iter(result["report"].items()))
    while "report_data" not in body:
        body = body["base"]
    return result["status"], kind, body


def _tdx_policy(body: dict[str, Any], **override: str) -> dict[str, Any]:
    measurements = {name: body[field] for name, field in TDX_REGISTERS.items()}
    measurements.update(override)
    return {"kind": "tdx", "measurements": measurements}


def _verifier(vectors: dict, now: int, policy: dict[str, Any]) -> DcapVerifier:
    files = {q: p for q, p in vectors.values()}
    return DcapVerifier(
        DcapPolicy.from_mapping(policy), collateral_from_files(files), clock=lambda: now
    )


def _bound(quote: bytes, body: dict[str, Any], kind: str = "tdx-dcap") -> tuple[Evidence, bytes]:
    rd = bytes.fromhex(body["report_data"])
    return Evidence(kind, rd, quote), rd


# ----------------------------------------------------------------------------- TDX
def test_tdx_quote_passes_every_check_but_the_key_binding(vectors: dict) -> None:
    quote, col = vectors["tdx_quote"]
    _, _, body = _report(quote, col, TDX_NOW)
    ok = _verifier(vectors, TDX_NOW, _tdx_policy(body))
    ev, bound = _bound(quote, body)
    assert ok.verify(ev, bound).kind == "tdx-dcap"  # the quote's own report data
    with pytest.raises(AttestationError, match="does not bind"):
        ok.verify(Evidence("tdx-dcap", b"\1" * 64, quote), b"\1" * 64)  # our keys


@pytest.mark.parametrize("register", sorted(TDX_REGISTERS))
def test_every_tdx_register_is_checked(vectors: dict, register: str) -> None:
    """The TDX policy pins MRTD, RTMR0-3, MRCONFIGID and MROWNER: another workload on the same
    firmware (same MRTD) fails on the register it changed."""
    quote, col = vectors["tdx_quote"]
    _, _, body = _report(quote, col, TDX_NOW)
    wrong = "ab" * 48
    v = _verifier(vectors, TDX_NOW, _tdx_policy(body, **{register: wrong}))
    ev, bound = _bound(quote, body)
    label = {"mrconfigid": "MRCONFIGID", "mrowner": "MROWNER", "mrtd": "MRTD"}.get(
        register, register.upper()
    )
    with pytest.raises(
        AttestationError, match=f"^{label} [0-9a-f]{{16}}\\.\\.\\. is not in the policy$"
    ):
        v.verify(ev, bound)


def test_a_tdx_policy_must_pin_every_register() -> None:
    for missing in TDX_REGISTERS:
        measurements = {n: "00" * 48 for n in TDX_REGISTERS if n != missing}
        with pytest.raises(ConfigError, match=f"missing {missing}"):
            DcapPolicy.from_mapping({"kind": "tdx", "measurements": measurements})


def test_outdated_tdx_quote_refused(vectors: dict) -> None:
    quote, _ = vectors["tdx_quote_outdated"]
    v = _verifier(
        vectors, OUTDATED_NOW, _tdx_policy({f: "00" * 48 for f in TDX_REGISTERS.values()})
    )
    with pytest.raises(AttestationError, match="No matching TCB level"):
        v.verify(Evidence("tdx-dcap", b"\0" * 64, quote), b"\0" * 64)


def test_expired_collateral_and_flipped_byte_refused(vectors: dict) -> None:
    quote, col = vectors["tdx_quote"]
    _, _, body = _report(quote, col, TDX_NOW)
    with pytest.raises(AttestationError, match="verification failed"):
        _verifier(vectors, 1_900_000_000, _tdx_policy(body)).verify(*_bound(quote, body))
    bad = bytearray(quote)
    bad[700] ^= 1
    v = DcapVerifier(
        DcapPolicy.from_mapping(_tdx_policy(body)),
        collateral_from_files({bytes(bad): col}),
        clock=lambda: TDX_NOW,
    )
    with pytest.raises(AttestationError, match="verification failed"):
        v.verify(
            Evidence("tdx-dcap", bytes.fromhex(body["report_data"]), bytes(bad)),
            bytes.fromhex(body["report_data"]),
        )


def test_td15_report_layout_is_understood(vectors: dict) -> None:
    quote, col = vectors["tdx_quote_td15ex"]
    _, kind, body = _report(quote, col, TD15_NOW)
    assert kind == "TD15Ex"
    v = _verifier(vectors, TD15_NOW, _tdx_policy(body))
    assert v.verify(*_bound(quote, body)).kind == "tdx-dcap"


# ----------------------------------------------------------------------------- SGX
def test_sgx_tcb_status_policy_and_identity(vectors: dict) -> None:
    quote, col = vectors["sgx_quote"]
    _, _, body = _report(quote, col, SGX_NOW)
    ev, bound = _bound(quote, body, "sgx-dcap")
    strict = {"kind": "sgx", "measurements": {"mrenclave": body["mr_enclave"]}}
    with pytest.raises(AttestationError, match="TCB status ConfigurationAndSWHardeningNeeded"):
        _verifier(vectors, SGX_NOW, strict).verify(ev, bound)
    relaxed = {**strict, "tcb_statuses": ["UpToDate", "ConfigurationAndSWHardeningNeeded"]}
    assert _verifier(vectors, SGX_NOW, relaxed).verify(ev, bound) is ev
    signer = {
        **relaxed,
        "measurements": {"mrsigner": body["mr_signer"], "isv_prod_id": 0, "min_isv_svn": 0},
    }
    assert _verifier(vectors, SGX_NOW, signer).verify(ev, bound) is ev
    signer["measurements"]["isv_prod_id"] = 7  # type: ignore[index]
    with pytest.raises(AttestationError, match="ISV product id 0 is not the policy's 7"):
        _verifier(vectors, SGX_NOW, signer).verify(ev, bound)
    signer["measurements"].update(isv_prod_id=0, min_isv_svn=3)  # type: ignore[attr-defined]
    with pytest.raises(AttestationError, match="ISV SVN 0 is below the policy's minimum 3"):
        _verifier(vectors, SGX_NOW, signer).verify(ev, bound)
    other = {**relaxed, "measurements": {"mrenclave": "00" * 32}}
    with pytest.raises(AttestationError, match="MRENCLAVE"):
        _verifier(vectors, SGX_NOW, other).verify(ev, bound)


def test_a_quote_of_the_other_kind_is_refused(vectors: dict) -> None:
    quote, col = vectors["tdx_quote"]
    _, _, body = _report(quote, col, TDX_NOW)
    sgx = {"kind": "sgx", "measurements": {"mrenclave": "00" * 32}}
    with pytest.raises(AttestationError, match="policy is for sgx-dcap"):
        _verifier(vectors, TDX_NOW, sgx).verify(*_bound(quote, body))
    # a TDX quote announced as SGX evidence: the quote's own type decides
    with pytest.raises(AttestationError, match="a tdx quote, but the policy is for sgx"):
        _verifier(vectors, TDX_NOW, sgx).verify(*_bound(quote, body, "sgx-dcap"))


def test_debug_enclaves_and_tds_are_refused_unless_allowed(vectors: dict) -> None:
    """None of the real quotes is a debug one (a debug quote cannot be made from them without
    breaking its signature), so the check runs on their verified reports with the flag set."""
    quote, col = vectors["tdx_quote"]
    status, kind, body = _report(quote, col, TDX_NOW)
    bound = bytes.fromhex(body["report_data"])
    policy = DcapPolicy.from_mapping(_tdx_policy(body))
    check_report(policy, status, kind, body, bound)  # as it is: not debug
    attrs = bytearray.fromhex(body["td_attributes"])
    attrs[0] |= 0x01
    debug = {**body, "td_attributes": attrs.hex()}
    with pytest.raises(AttestationError, match="debug mode"):
        check_report(policy, status, kind, debug, bound)
    allowing = DcapPolicy.from_mapping({**_tdx_policy(body), "allow_debug": True})
    check_report(allowing, status, kind, debug, bound)
    squote, scol = vectors["sgx_quote"]
    sstatus, skind, sbody = _report(squote, scol, SGX_NOW)
    sattrs = bytearray.fromhex(sbody["attributes"])
    sattrs[0] |= 0x02
    spolicy = DcapPolicy.from_mapping(
        {
            "kind": "sgx",
            "measurements": {"mrenclave": sbody["mr_enclave"]},
            "tcb_statuses": [sstatus],
        }
    )
    with pytest.raises(AttestationError, match="debug mode"):
        check_report(
            spolicy,
            sstatus,
            skind,
            {**sbody, "attributes": sattrs.hex()},
            bytes.fromhex(sbody["report_data"]),
        )


def test_simulated_and_snp_evidence_not_accepted_by_dcap(vectors: dict) -> None:
    v = _verifier(vectors, TDX_NOW, {"kind": "sgx", "measurements": {"mrenclave": "00" * 32}})
    for kind in ("simulated-INSECURE", "sev-snp"):
        with pytest.raises(AttestationError, match="cannot be verified by DCAP"):
            v.verify(Evidence(kind, b"\0" * 64, b""), b"\0" * 64)


@settings(max_examples=2000, deadline=None)
@given(st.data())
def test_fuzz_dcap_verifier_refuses_any_payload_with_an_attestation_error(
    vectors: dict, data: st.DataObject
) -> None:
    quote, col = vectors["tdx_quote"]
    kind = data.draw(st.sampled_from(["random", "flipped", "cut"]))
    if kind == "random":
        payload = data.draw(st.binary(max_size=6000))
    elif kind == "flipped":
        b = bytearray(quote)
        for i in data.draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=4)):
            b[i] ^= data.draw(st.integers(1, 255))
        payload = bytes(b)
    else:
        payload = quote[: data.draw(st.integers(0, len(quote) - 1))]
    v = DcapVerifier(
        DcapPolicy.from_mapping(_tdx_policy({f: "00" * 48 for f in TDX_REGISTERS.values()})),
        lambda _q: col.read_text(),
        clock=lambda: TDX_NOW,
    )
    with pytest.raises(AttestationError):
        v.verify(Evidence("tdx-dcap", b"\0" * 64, payload), b"\0" * 64)


# ----------------------------------------------------------------------------- policy files
def test_policy_file_with_offline_collateral(tmp_path: Path, vectors: dict) -> None:
    quote, col = vectors["tdx_quote"]
    _, _, body = _report(quote, col, TDX_NOW)
    import yaml

    (tmp_path / "col.json").write_text(col.read_text())
    policy = {**_tdx_policy(body), "collateral": {"file": "col.json", "verify_at": TDX_NOW}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    v = load_attestation_policy(path)
    assert v.policy.verify_at == TDX_NOW
    assert v.verify(*_bound(quote, body)).kind == "tdx-dcap"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: sev\nmeasurements: {}\n", "kind must be sgx or tdx"),
        ("kind: tdx\n", "'measurements' must be a mapping"),
        ("kind: sgx\nmeasurements: {mrenclave: zz}\n", "is not 32 bytes of hex"),
        ("kind: sgx\nmeasurements: {mrsigner: '" + "00" * 32 + "'}\n", "pins isv_prod_id too"),
        ("kind: sgx\nmeasurements: {mrtd: " + "00" * 48 + "}\n", "unknown sgx measurement"),
        ("kind: sgx\nmeasurements: {mrenclave: " + "00" * 32 + "}\nfoo: 1\n", "unknown setting"),
        ("kind: sgx\nmeasurements: {mrenclave: '" + "00" * 32 + "'}\n", "collateral: give 'file'"),
        (
            "kind: sgx\nmeasurements: {mrenclave: '" + "00" * 32 + "'}\nallow_debug: maybe\n",
            "allow_debug must be true or false",
        ),
        ("kind: [tdx]\n", "kind must be sgx or tdx"),
        ("kind: sgx\nmeasurements: {mrenclave: " + "00" * 32 + "}\n", "as quoted strings"),
        ("{{{", "not a YAML attestation policy"),
    ],
)
def test_policy_file_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_attestation_policy(path)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(path))


# ----------------------------------------------------------------------------- providers
def test_gramine_provider_file_protocol(tmp_path: Path) -> None:
    (tmp_path / "quote").write_bytes(b"QUOTE")
    ev = GramineSgxProvider(tmp_path).evidence(b"r" * 64)
    assert (ev.kind, ev.payload) == ("sgx-dcap", b"QUOTE")
    assert (tmp_path / "user_report_data").read_bytes() == b"r" * 64
    (tmp_path / "attestation_type").write_text("none\n")
    with pytest.raises(AttestationError, match="attestation type is 'none'"):
        GramineSgxProvider(tmp_path).evidence(b"r" * 64)
    with pytest.raises(AttestationError, match="inside Gramine"):
        GramineSgxProvider(tmp_path / "missing").evidence(b"r" * 64)


def test_configfs_tsm_provider_file_protocol(tmp_path: Path) -> None:
    import threading

    stop = threading.Event()

    def kernel() -> None:  # what configfs does on mkdir: the entry's attributes appear
        while not stop.is_set():
            for entry in tmp_path.iterdir():
                if entry.is_dir() and not (entry / "provider").exists():
                    (entry / "outblob").write_bytes(b"REPORT")
                    (entry / "provider").write_text("tdx_guest\n")
            stop.wait(0.002)

    t = threading.Thread(target=kernel, daemon=True)
    t.start()
    try:
        ev = ConfigfsTsmProvider(tmp_path, expect="tdx_guest").evidence(b"r" * 64)
        assert (ev.kind, ev.payload) == ("tdx-dcap", b"REPORT")
        (entry,) = [e for e in tmp_path.iterdir() if e.is_dir()]
        assert (entry / "inblob").read_bytes() == b"r" * 64
        with pytest.raises(AttestationError, match="provider is 'tdx_guest', not 'sev_guest'"):
            ConfigfsTsmProvider(tmp_path, expect="sev_guest").evidence(b"r" * 64)
    finally:
        stop.set()
        t.join()
    with pytest.raises(AttestationError, match="configfs-tsm"):
        ConfigfsTsmProvider(tmp_path / "nope").evidence(b"r" * 64)
