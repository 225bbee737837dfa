"""Hardware attestation: evidence from SGX (Gramine) and TDX/SEV-SNP (configfs-tsm), DCAP checks
against an attestation policy file.

Providers read evidence through the documented interfaces (both take their root folder as a
setting, ``procvault vault --attestation-dir``, so tests run the same code against a folder
laid out like the real interface):

* :class:`GramineSgxProvider` (``--attestation gramine-sgx``): write the 64-byte report data to
  ``/dev/attestation/user_report_data``, read the DCAP quote from ``/dev/attestation/quote``
  (and, where Gramine exposes it, check ``attestation_type`` is ``dcap``).
* :class:`ConfigfsTsmProvider` (``--attestation tdx`` or ``sev-snp``): create
  ``/sys/kernel/config/tsm/report/<name>`` (one entry per request, so concurrent requests never
  mix), read ``provider`` (``tdx_guest`` or ``sev_guest``: it must be the expected one), write
  the report data to ``inblob``, read ``outblob``, remove the entry.

:class:`DcapVerifier` verifies SGX and TDX quotes with ``dcap-qvl`` (signature chain, CRLs, TCB
level against the collateral, at a given time) and then the :class:`DcapPolicy`: the quote's
kind, an accepted TCB status, every pinned measurement (SGX: MRENCLAVE and/or MRSIGNER with ISV
product id and minimum SVN; TDX: MRTD, RTMR0-3, MRCONFIGID, MROWNER, optionally
MROWNERCONFIG), the debug flag, and that the quote's report data is exactly the binding of the
announced keys, epoch, nonce and identity. SEV-SNP reports are read by the provider but not
verified yet (refused).

**Policy files** (YAML, :func:`load_attestation_policy`)::

    kind: tdx                      # or sgx
    measurements:                  # every TDX register below is required; values: one or a list
      mrtd: 91eb2b44...            # 48-byte hex
      rtmr0: 44c0197b...
      rtmr1: 0084452c...
      rtmr2: d833feef...
      rtmr3: "000000..."
      mrconfigid: "000000..."
      mrowner: "000000..."
    tcb_statuses: [UpToDate]       # default
    allow_debug: false             # default
    collateral:
      file: tdx_collateral.json    # offline collateral (PCS/PCCS JSON), relative to this file
      verify_at: 1750330000        # optional, offline tests only: verify as of this Unix time

For SGX: ``mrenclave`` and/or ``mrsigner`` (32-byte hex), and with ``mrsigner``
``isv_prod_id`` (and optionally ``min_isv_svn``).

>>> p = DcapPolicy.from_mapping({"kind": "sgx", "measurements": {"mrenclave": "ab" * 32}})
>>> p.kind, sorted(p.measurements), sorted(p.statuses)
('sgx', ['mr_enclave'], ['UpToDate'])
>>> DcapPolicy.from_mapping({"kind": "tdx", "measurements": {"mrtd": "00" * 48}})
Traceback (most recent call last):
...
procvault.monitor.errors.ConfigError: a tdx policy pins every register: missing rtmr0, rtmr1, ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from procvault.monitor.errors import ConfigError

from .attestation import AttestationError, Evidence

__all__ = [
    "DEFAULT_CONFIGFS_TSM",
    "DEFAULT_GRAMINE",
    "ConfigfsTsmProvider",
    "DcapPolicy",
    "DcapVerifier",
    "GramineSgxProvider",
    "check_report",
    "collateral_from_file",
    "collateral_from_files",
    "load_attestation_policy",
]

#: Gramine's pseudo-file interface.
DEFAULT_GRAMINE: Final = Path("/dev/attestation")
#: Linux configfs-tsm's report folder.
DEFAULT_CONFIGFS_TSM: Final = Path("/sys/kernel/config/tsm/report")

_SGX_DEBUG = 0x02  # SGX ATTRIBUTES.FLAGS bit 1
_TDX_DEBUG = 0x01  # TDX TD_ATTRIBUTES bit 0

#: Policy file name -> field of dcap-qvl's report, and its size in bytes.
_SGX_FIELDS: Final = {"mrenclave": ("mr_enclave", 32), "mrsigner": ("mr_signer", 32)}
_TDX_FIELDS: Final = {
    "mrtd": ("mr_td", 48),
    "rtmr0": ("rt_mr0", 48),
    "rtmr1": ("rt_mr1", 48),
    "rtmr2": ("rt_mr2", 48),
    "rtmr3": ("rt_mr3", 48),
    "mrconfigid": ("mr_config_id", 48),
    "mrowner": ("mr_owner", 48),
    "mrownerconfig": ("mr_owner_config", 48),
}
_TDX_REQUIRED: Final = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner")
_LABELS: Final = {
    "mr_enclave": "MRENCLAVE",
    "mr_signer": "MRSIGNER",
    "mr_td": "MRTD",
    "rt_mr0": "RTMR0",
    "rt_mr1": "RTMR1",
    "rt_mr2": "RTMR2",
    "rt_mr3": "RTMR3",
    "mr_config_id": "MRCONFIGID",
    "mr_owner": "MROWNER",
    "mr_owner_config": "MROWNERCONFIG",
}
_EVIDENCE_KIND: Final = {"sgx": "sgx-dcap", "tdx": "tdx-dcap"}


# ----------------------------------------------------------------------------- providers
@dataclass(frozen=True)
class GramineSgxProvider:
    """SGX DCAP quotes through Gramine's ``/dev/attestation`` pseudo-files."""

    root: Path = DEFAULT_GRAMINE

    def evidence(self, report_data: bytes) -> Evidence:
        """Write the report data, read back the quote."""
        if len(report_data) != 64:
            raise ValueError("report data must be 64 bytes")
        try:
            kind_file = self.root / "attestation_type"
            if kind_file.exists():
                kind = kind_file.read_text().strip()
                if kind != "dcap":
                    raise AttestationError(
                        f"{self.root}: Gramine's attestation type is {kind!r}, not 'dcap' "
                        '(set sgx.remote_attestation = "dcap" in the manifest)'
                    )
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
    """TDX or SEV-SNP reports through Linux configfs-tsm.

    Parameters
    ----------
    root
        The report folder (``/sys/kernel/config/tsm/report``).
    expect
        The provider the vault was started for (``tdx_guest`` or ``sev_guest``); another one
        is refused. ``None``: whichever the kernel offers.
    settle
        Seconds to wait for a new entry's attributes to appear (configfs creates them with the
        entry, so this costs nothing there; it lets a test double serve a plain folder).
    """

    root: Path = DEFAULT_CONFIGFS_TSM
    expect: str | None = None
    settle: float = 2.0

    def _wait(self, path: Path) -> None:
        deadline = time.monotonic() + self.settle
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.002)

    def evidence(self, report_data: bytes) -> Evidence:
        """Create a report entry, check the provider, write the report data, read the report."""
        if len(report_data) != 64:
            raise ValueError("report data must be 64 bytes")
        entry = self.root / f"procvault-{uuid.uuid4().hex[:12]}"
        try:
            entry.mkdir()
            try:
                self._wait(entry / "provider")
                provider = (entry / "provider").read_text().strip()
                if self.expect is not None and provider != self.expect:
                    raise AttestationError(
                        f"{self.root}: the configfs-tsm provider is {provider!r}, not "
                        f"{self.expect!r} (is --attestation right for this machine?)"
                    )
                (entry / "inblob").write_bytes(report_data)
                self._wait(entry / "outblob")
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


# ----------------------------------------------------------------------------- policy
def _hex_values(value: Any, name: str, size: int) -> frozenset[str]:
    values = [value] if isinstance(value, str) else value
    if isinstance(value, int | float) or (
        isinstance(values, list) and any(isinstance(v, int | float) for v in values)
    ):
        values = None  # YAML read an unquoted hex string of digits as a number
    if not isinstance(values, list) or not values:
        raise ConfigError(
            f"measurement {name}: give a hex value or a list of them, as quoted strings "
            "(YAML reads an unquoted run of digits as a number)"
        )
    out = set()
    for v in values:
        try:
            raw = bytes.fromhex(v) if isinstance(v, str) else None
        except ValueError:
            raw = None
        if raw is None or len(raw) != size:
            raise ConfigError(f"measurement {name}: {v!r} is not {size} bytes of hex")
        out.add(raw.hex())
    return frozenset(out)


def _non_negative(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**16:
        raise ConfigError(f"measurement {name}: must be an integer in [0, 65535]")
    return value


@dataclass(frozen=True)
class DcapPolicy:
    """What a :class:`DcapVerifier` accepts.

    Parameters
    ----------
    kind
        ``sgx`` or ``tdx``: the only kind of quote accepted.
    measurements
        dcap-qvl report field (``mr_enclave``, ``mr_td``, ``rt_mr0``, ...) -> accepted values
        (lower-case hex). Every field given must match; see :meth:`from_mapping` for which are
        required.
    statuses
        Accepted TCB statuses (``UpToDate`` by default).
    allow_debug
        Accept enclaves/TDs with the debug flag set (never in production).
    isv_prod_id, min_isv_svn
        SGX: the enclave's product id, and the lowest security version accepted.
    verify_at
        Verify as of this Unix time instead of now (offline tests with old collateral only).
    """

    kind: str
    measurements: Mapping[str, frozenset[str]]
    statuses: Collection[str] = ("UpToDate",)
    allow_debug: bool = False
    isv_prod_id: int | None = None
    min_isv_svn: int | None = None
    verify_at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in _EVIDENCE_KIND:
            raise ConfigError(
                f"attestation policy kind {self.kind!r}: give sgx or tdx "
                "(SEV-SNP is not verified yet)"
            )
        if not self.measurements:
            raise ConfigError("an attestation policy must pin measurements")
        object.__setattr__(self, "statuses", frozenset(self.statuses))

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "attestation policy") -> DcapPolicy:
        """A policy from a parsed policy file (``collateral`` is read by
        :func:`load_attestation_policy`); :class:`ConfigError` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: not a mapping")
        unknown = set(data) - {"kind", "measurements", "tcb_statuses", "allow_debug", "collateral"}
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting(s) {', '.join(sorted(map(str, unknown)))}"
            )
        kind = data.get("kind")
        if not isinstance(kind, str) or kind not in _EVIDENCE_KIND:
            raise ConfigError(
                f"{source}: kind must be sgx or tdx, got {kind!r} (SEV-SNP is not verified yet)"
            )
        given = data.get("measurements")
        if not isinstance(given, Mapping) or not given:
            raise ConfigError(f"{source}: 'measurements' must be a mapping")
        fields = _SGX_FIELDS if kind == "sgx" else _TDX_FIELDS
        extra = {"isv_prod_id", "min_isv_svn"} if kind == "sgx" else set()
        unknown = set(given) - set(fields) - extra
        if unknown:
            raise ConfigError(
                f"{source}: unknown {kind} measurement(s) {', '.join(sorted(map(str, unknown)))} "
                f"(known: {', '.join(sorted(set(fields) | extra))})"
            )
        measurements = {
            fields[name][0]: _hex_values(given[name], name, fields[name][1])
            for name in fields
            if name in given
        }
        isv_prod_id = min_svn = None
        if kind == "tdx":
            missing = [n for n in _TDX_REQUIRED if n not in given]
            if missing:
                raise ConfigError(f"a tdx policy pins every register: missing {', '.join(missing)}")
        else:
            if "mrenclave" not in given and "mrsigner" not in given:
                raise ConfigError(f"{source}: an sgx policy pins mrenclave and/or mrsigner")
            if "mrsigner" in given and "isv_prod_id" not in given:
                raise ConfigError(f"{source}: an sgx policy with mrsigner pins isv_prod_id too")
            if "isv_prod_id" in given:
                isv_prod_id = _non_negative(given["isv_prod_id"], "isv_prod_id")
            if "min_isv_svn" in given:
                min_svn = _non_negative(given["min_isv_svn"], "min_isv_svn")
        statuses = data.get("tcb_statuses", ["UpToDate"])
        if (
            not isinstance(statuses, list)
            or not statuses
            or not all(isinstance(s, str) for s in statuses)
        ):
            raise ConfigError(f"{source}: tcb_statuses must be a list of TCB status names")
        allow_debug = data.get("allow_debug", False)
        if not isinstance(allow_debug, bool):
            raise ConfigError(f"{source}: allow_debug must be true or false")
        return cls(
            str(kind),
            measurements,
            tuple(statuses),
            allow_debug,
            isv_prod_id=isv_prod_id,
            min_isv_svn=min_svn,
        )


def _innermost_report(report: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The report kind and the dict holding ``report_data`` (TD 1.5 reports nest a base)."""
    kind, body = next(iter(report.items()))
    while "report_data" not in body and "base" in body:
        body = body["base"]
    return str(kind), body


def check_report(
    policy: DcapPolicy, status: str, kind: str, body: Mapping[str, Any], expected: bytes
) -> None:
    """The policy checks on a verified quote's report (``kind``: dcap-qvl's report type,
    ``body``: its fields, ``expected``: the report data it must carry); one-line
    :class:`AttestationError` for the first that fails. Pure, so it is tested on any report."""
    if kind == "SgxEnclave":
        quote_kind = "sgx"
    elif kind.startswith("TD"):
        quote_kind = "tdx"
    else:
        raise AttestationError(f"unknown quote report type {kind!r}")
    if quote_kind != policy.kind:
        raise AttestationError(f"a {quote_kind} quote, but the policy is for {policy.kind}")
    if status not in policy.statuses:
        raise AttestationError(f"TCB status {status} is not accepted by the policy")
    for name, allowed in policy.measurements.items():
        value = str(body.get(name, "")).lower()
        if value not in allowed:
            raise AttestationError(
                f"{_LABELS.get(name, name)} {value[:16]}... is not in the policy"
            )
    if quote_kind == "sgx":
        debug = bool(bytes.fromhex(str(body["attributes"]))[0] & _SGX_DEBUG)
        if policy.isv_prod_id is not None and body.get("isv_prod_id") != policy.isv_prod_id:
            raise AttestationError(
                f"ISV product id {body.get('isv_prod_id')!r} is not the policy's "
                f"{policy.isv_prod_id}"
            )
        svn = body.get("isv_svn")
        if policy.min_isv_svn is not None and not (
            isinstance(svn, int) and svn >= policy.min_isv_svn
        ):
            raise AttestationError(
                f"ISV SVN {svn!r} is below the policy's minimum {policy.min_isv_svn}"
            )
    else:
        debug = bool(bytes.fromhex(str(body["td_attributes"]))[0] & _TDX_DEBUG)
    if debug and not policy.allow_debug:
        raise AttestationError("the enclave/TD runs in debug mode")
    if bytes.fromhex(str(body["report_data"])) != expected:
        raise AttestationError("evidence does not bind the announced keys, epoch and nonce")


@dataclass(frozen=True)
class DcapVerifier:
    """Verifies SGX/TDX DCAP quotes with ``dcap-qvl``, then the :class:`DcapPolicy`.

    ``collateral`` returns the verification collateral (JSON text) for a quote: offline from a
    file, from a PCCS in production. ``clock`` gives the verification time in Unix seconds (the
    collateral's validity window is checked against it; ``policy.verify_at`` overrides it).
    """

    policy: DcapPolicy
    collateral: Callable[[bytes], str]
    clock: Callable[[], float] = field(default=time.time)

    def verify(self, evidence: Evidence, expected_report_data: bytes) -> Evidence:
        """Return ``evidence`` if it passes every check, else raise :class:`AttestationError`."""
        if evidence.kind not in ("sgx-dcap", "tdx-dcap"):
            raise AttestationError(f"{evidence.kind} evidence cannot be verified by DCAP")
        wanted = _EVIDENCE_KIND[self.policy.kind]
        if evidence.kind != wanted:
            raise AttestationError(
                f"{evidence.kind} evidence, but the attestation policy is for {wanted}"
            )
        if evidence.report_data != expected_report_data:
            raise AttestationError("evidence does not bind the announced keys, epoch and nonce")
        import dcap_qvl

        now = self.policy.verify_at if self.policy.verify_at is not None else self.clock()
        try:
            collateral = dcap_qvl.QuoteCollateralV3.from_json(self.collateral(evidence.payload))
            verified = dcap_qvl.verify(evidence.payload, collateral, int(now))
            result = json.loads(verified.to_json())
            status = str(result["status"])
            kind, body = _innermost_report(result["report"])
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # dcap-qvl raises ValueError; a Rust panic is BaseException
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AttestationError(f"quote verification failed: {first[:200]}") from None
        check_report(self.policy, status, kind, body, expected_report_data)
        return evidence


def collateral_from_files(mapping: Mapping[bytes, Path]) -> Callable[[bytes], str]:
    """A collateral source for tests: quote bytes -> JSON file."""

    def lookup(quote: bytes) -> str:
        path = mapping.get(quote)
        if path is None:
            raise ValueError("no collateral for this quote")
        return path.read_text()

    return lookup


def collateral_from_file(path: Path) -> Callable[[bytes], str]:
    """Offline collateral (the platform's PCS/PCCS JSON) for every quote, read once."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the collateral file: {exc.strerror}") from None
    return lambda _quote: text


def load_attestation_policy(path: str | Path) -> DcapVerifier:
    """A :class:`DcapVerifier` from an attestation policy file (see the module docstring);
    :class:`ConfigError` naming the file and what is wrong."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the attestation policy: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not a YAML attestation policy: {first}") from None
    try:
        policy = DcapPolicy.from_mapping(data, source=str(path))
    except ConfigError as exc:
        message = str(exc)
        if not message.startswith(str(path)):
            message = f"{path}: {message}"
        raise ConfigError(message) from None
    collateral = data.get("collateral")
    if not isinstance(collateral, Mapping) or not isinstance(collateral.get("file"), str):
        raise ConfigError(
            f"{path}: collateral: give 'file' (the offline PCS/PCCS collateral JSON); fetching "
            "from a PCCS is not supported yet"
        )
    unknown = set(collateral) - {"file", "verify_at"}
    if unknown:
        raise ConfigError(f"{path}: collateral: unknown setting(s) {', '.join(sorted(unknown))}")
    verify_at = collateral.get("verify_at")
    if verify_at is not None and (
        isinstance(verify_at, bool) or not isinstance(verify_at, int | float) or verify_at < 0
    ):
        raise ConfigError(f"{path}: collateral.verify_at must be a Unix time in seconds")
    file = (path.parent / collateral["file"]).resolve()
    if verify_at is not None:
        policy = dataclasses.replace(policy, verify_at=float(verify_at))
    return DcapVerifier(policy, collateral_from_file(file))
