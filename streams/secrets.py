"""Key material of a deployment: the vault's secrets, the organizations' keys, the registry.

Three kinds of file, all JSON with hex-encoded raw keys, written with mode 0600:

``vault.json`` (the vault's, sealed to the enclave in a real deployment)
    the state key (AES-256, seals changelog values and pane partials) and the X25519/Ed25519 keys
    of each epoch still accepted, with the current one.
``org-<name>.json`` (one organization's)
    its X25519 alert key (the vault encrypts the organization's alerts and case results to it),
    its Ed25519 signing key (it signs the organization's revocations) and the consortium's
    case-pseudonym key (shared by all agents, so that a case crossing organizations gets one
    Kafka key and lands on one partition; the vault never needs it).
``registry.json`` (public)
    the registered organizations, their alert public keys and their signing public keys: what
    the vault accepts events from, encrypts results to and accepts revocations from.

A file written before signing keys existed still loads, without one: nothing is generated
silently (``procvault revoke`` then says how to add one).

``procvault keys init DIR --orgs a,b,c`` writes all of them for a local deployment; in
production each organization generates its own file and registers only its public key.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> init_keyring(d, ["hospital", "lab"])
>>> vs = VaultSecrets.load(d / "vault.json")
>>> vs.current.epoch, sorted(Registry.load(d / "registry.json").orgs)
(1, ['hospital', 'lab'])
>>> lab = OrgKeys.load(d / "org-lab.json"); lab.org
'lab'
>>> Registry.load(d / "registry.json").signing["lab"] == lab.signing_public
True
>>> repr(vs)
'VaultSecrets(epochs=[1], current=1)'
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from procvault.monitor.errors import ConfigError

from .envelope import VaultKeys

__all__ = ["OrgKeys", "Registry", "VaultSecrets", "init_keyring"]

_RAW = serialization.Encoding.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_NO_ENC = serialization.NoEncryption()


def _priv_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)


def _write_secret(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    tmp.replace(path)


def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such {what} file (create one with `procvault keys init`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable {what} file: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a {what} file")
    return data


def _hex(data: Mapping[str, Any], field: str, path: Path, size: int) -> bytes:
    try:
        raw = bytes.fromhex(data[field])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}: field {field!r} is missing or not hex") from None
    if len(raw) != size:
        raise ConfigError(f"{path}: field {field!r} must be {size} bytes")
    return raw


@dataclass(frozen=True, repr=False)
class VaultSecrets:
    """The vault's state key and its epoch keys (``repr`` shows no secret)."""

    state_key: bytes
    epochs: Mapping[int, VaultKeys]
    current_epoch: int

    def __post_init__(self) -> None:
        if len(self.state_key) != 32:
            raise ValueError("the state key must be 32 bytes")
        if self.current_epoch not in self.epochs:
            raise ValueError("the current epoch has no keys")

    def __repr__(self) -> str:
        return f"VaultSecrets(epochs={sorted(self.epochs)}, current={self.current_epoch})"

    @property
    def current(self) -> VaultKeys:
        """The keys of the current epoch."""
        return self.epochs[self.current_epoch]

    @classmethod
    def generate(cls) -> VaultSecrets:
        """Fresh secrets with epoch 1."""
        return cls(os.urandom(32), {1: VaultKeys.generate(epoch=1)}, 1)

    def rotate(self, *, keep: int = 1) -> VaultSecrets:
        """A new epoch becomes current; the newest ``keep`` older epochs stay accepted (grace)."""
        new = self.current_epoch + 1
        older = sorted(e for e in self.epochs if e != new)[-keep:] if keep else []
        epochs = {e: self.epochs[e] for e in older}
        epochs[new] = VaultKeys.generate(epoch=new)
        return VaultSecrets(self.state_key, epochs, new)

    def save(self, path: Path) -> None:
        """Write to ``path`` (mode 0600, atomically)."""
        _write_secret(
            Path(path),
            {
                "kind": "procvault-vault-secrets",
                "state_key": self.state_key.hex(),
                "current_epoch": self.current_epoch,
                "epochs": {
                    str(e): {
                        "x25519": _priv_bytes(k.x25519).hex(),
                        "ed25519": _priv_bytes(k.ed25519).hex(),
                    }
                    for e, k in self.epochs.items()
                },
            },
        )

    @classmethod
    def load(cls, path: Path) -> VaultSecrets:
        """Read what :meth:`save` wrote; :class:`ConfigError` with the reason otherwise."""
        path = Path(path)
        data = _read(path, "vault secrets")
        try:
            epochs = {
                int(e): VaultKeys(
                    int(e),
                    X25519PrivateKey.from_private_bytes(_hex(k, "x25519", path, 32)),
                    Ed25519PrivateKey.from_private_bytes(_hex(k, "ed25519", path, 32)),
                )
                for e, k in data["epochs"].items()
            }
            return cls(_hex(data, "state_key", path, 32), epochs, int(data["current_epoch"]))
        except KeyError as exc:
            raise ConfigError(f"{path}: invalid vault secrets: field {exc} is missing") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: invalid vault secrets ({exc})") from None


@dataclass(frozen=True, repr=False)
class OrgKeys:
    """One organization's alert key, its signing key and the consortium's case-pseudonym key.

    ``signing`` is ``None`` for a file written before signing keys existed.
    """

    org: str
    alerts: X25519PrivateKey
    pseudonym_key: bytes
    signing: Ed25519PrivateKey | None = None
    #: authenticates the organization's records to the vault (static-static X25519)
    sender: X25519PrivateKey | None = None

    def __repr__(self) -> str:
        return f"OrgKeys(org={self.org!r})"

    @property
    def alerts_public(self) -> bytes:
        """The raw X25519 public key to register."""
        return self.alerts.public_key().public_bytes(_RAW, _RAW_PUB)

    @property
    def sender_public(self) -> bytes | None:
        """The raw X25519 sender public key to register (``None`` without one)."""
        if self.sender is None:
            return None
        return self.sender.public_key().public_bytes(_RAW, _RAW_PUB)

    @property
    def placement_key(self) -> bytes:
        """The consortium's key that places a case on a partition (derived from the
        consortium's pseudonym key, so every organization computes the same)."""
        return hmac.new(self.pseudonym_key, b"procvault-placement-v1", hashlib.sha256).digest()

    @property
    def signing_public(self) -> bytes | None:
        """The raw Ed25519 public key to register (``None`` without a signing key)."""
        if self.signing is None:
            return None
        return self.signing.public_key().public_bytes(_RAW, _RAW_PUB)

    def save(self, path: Path) -> None:
        """Write to ``path`` (mode 0600, atomically)."""
        data = {
            "kind": "procvault-org-keys",
            "org": self.org,
            "alerts_x25519": _priv_bytes(self.alerts).hex(),
            "pseudonym_key": self.pseudonym_key.hex(),
        }
        if self.signing is not None:
            data["signing_ed25519"] = _priv_bytes(self.signing).hex()
        if self.sender is not None:
            data["sender_x25519"] = _priv_bytes(self.sender).hex()
        _write_secret(Path(path), data)

    @classmethod
    def load(cls, path: Path) -> OrgKeys:
        """Read what :meth:`save` wrote."""
        path = Path(path)
        data = _read(path, "organization keys")
        org = data.get("org")
        if not isinstance(org, str) or not org:
            raise ConfigError(f"{path}: field 'org' is missing")
        signing = None
        if "signing_ed25519" in data:
            signing = Ed25519PrivateKey.from_private_bytes(_hex(data, "signing_ed25519", path, 32))
        sender = None
        if "sender_x25519" in data:
            sender = X25519PrivateKey.from_private_bytes(_hex(data, "sender_x25519", path, 32))
        return cls(
            org,
            X25519PrivateKey.from_private_bytes(_hex(data, "alerts_x25519", path, 32)),
            _hex(data, "pseudonym_key", path, 32),
            signing,
            sender,
        )


@dataclass(frozen=True)
class Registry:
    """The registered organizations, their alert public keys and (when registered) their
    Ed25519 signing public keys (public information)."""

    orgs: Mapping[str, bytes]
    signing: Mapping[str, bytes] = field(default_factory=dict)
    sender: Mapping[str, bytes] = field(default_factory=dict)

    def trusted_signers(self) -> dict[str, list[Ed25519PublicKey]]:
        """Organization -> the signing keys its revocations are verified with."""
        return {o: [Ed25519PublicKey.from_public_bytes(k)] for o, k in self.signing.items()}

    def save(self, path: Path) -> None:
        """Write to ``path``."""
        orgs: dict[str, dict[str, str]] = {}
        for o, k in sorted(self.orgs.items()):
            orgs[o] = {"alerts_x25519": k.hex()}
            if o in self.signing:
                orgs[o]["signing_ed25519"] = self.signing[o].hex()
            if o in self.sender:
                orgs[o]["sender_x25519"] = self.sender[o].hex()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(
            json.dumps({"kind": "procvault-registry", "orgs": orgs}, indent=1),
            encoding="utf-8",
        )

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read what :meth:`save` wrote."""
        path = Path(path)
        data = _read(path, "registry")
        orgs = data.get("orgs")
        if not isinstance(orgs, dict) or not orgs:
            raise ConfigError(f"{path}: no organizations registered")
        return cls(
            {o: _hex(v, "alerts_x25519", path, 32) for o, v in orgs.items()},
            {
                o: _hex(v, "signing_ed25519", path, 32)
                for o, v in orgs.items()
                if isinstance(v, dict) and "signing_ed25519" in v
            },
            {
                o: _hex(v, "sender_x25519", path, 32)
                for o, v in orgs.items()
                if isinstance(v, dict) and "sender_x25519" in v
            },
        )


def init_keyring(directory: Path, orgs: Iterable[str]) -> None:
    """Write ``vault.json``, ``registry.json`` and ``org-<name>.json`` for a local deployment."""
    directory = Path(directory)
    names = list(dict.fromkeys(orgs))
    if not names:
        raise ConfigError("give at least one organization")
    for name in names:
        if not name or len(name.encode()) > 255 or "/" in name or name.startswith("."):
            raise ConfigError(f"invalid organization name {name!r}")
    if (directory / "vault.json").exists():
        raise ConfigError(f"{directory}: a keyring already exists here (refusing to overwrite)")
    VaultSecrets.generate().save(directory / "vault.json")
    pseudonym_key = os.urandom(32)
    publics, signers, senders = {}, {}, {}
    for name in names:
        keys = OrgKeys(
            name,
            X25519PrivateKey.generate(),
            pseudonym_key,
            Ed25519PrivateKey.generate(),
            X25519PrivateKey.generate(),
        )
        keys.save(directory / f"org-{name}.json")
        publics[name] = keys.alerts_public
        assert keys.signing is not None and keys.sender is not None
        signers[name] = keys.signing.public_key().public_bytes(_RAW, _RAW_PUB)
        senders[name] = keys.sender.public_key().public_bytes(_RAW, _RAW_PUB)
    Registry(publics, signers, senders).save(directory / "registry.json")
