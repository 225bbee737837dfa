"""Key material of a deployment (keyring version 2): the vault's secrets, the organizations'
keys, the public registry, and how they are written to disk.

Three kinds of file, all JSON with hex-encoded raw keys:

``vault.json`` (the vault's, sealed to the enclave in a real deployment; mode 0600)
    the vault's long-term **identity** (Ed25519; its public half is pinned in the registry), the
    **state master keys** by key id (HKDF gives a separate key per purpose, :meth:`VaultSecrets.
    derive`), and the X25519/Ed25519 keys of each epoch still accepted, each with the identity's
    certificate over it (:class:`~.identity.EpochCertificate`).
``org-<name>.json`` (one organization's; mode 0600)
    its X25519 alert key (the vault seals the organization's results to it), its Ed25519
    signing key (revocations; its HKDF child :attr:`OrgKeys.progress_key` MACs the agent's
    progress records), its X25519 **sender** key (static-static DH: authenticates its records to
    the vault) and the consortium's case-pseudonym key.
``registry.json`` (public)
    the vault's identity public key, and per registered organization its alert, signing and
    sender public keys.

**Files.** Every key file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under a temporary
name in the keyring folder, its mode set to 0600 with ``fchmod`` (whatever the umask), written,
``fsync``-ed and renamed over the target atomically, and the folder is ``fsync``-ed. The keyring
folder is created 0700. A key file, or its folder, readable or writable by anyone but its owner
is refused with a one-line error (``chmod`` fixes it); so is a leftover temporary file or a
symbolic link where the temporary file goes (nothing is ever written through it).

**Older keyrings** (version 1: no identity, no sender keys, one state key) are refused with a
one-line error naming the fix, never misread: ``procvault keys upgrade DIR`` adds what is
missing (:func:`upgrade_keyring`), or ``procvault keys init`` makes a new keyring.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp()) / "keys"
>>> init_keyring(d, ["hospital", "lab"])
>>> vs = VaultSecrets.load(d / "vault.json")
>>> reg = Registry.load(d / "registry.json")
>>> vs.current.epoch, sorted(reg.orgs), reg.identity == vs.identity_public
(1, ['hospital', 'lab'], True)
>>> vs.certificate().verify(reg.identity) == vs.current.public()
True
>>> lab = OrgKeys.load(d / "org-lab.json")
>>> reg.signing["lab"] == lab.signing_public, reg.sender["lab"] == lab.sender_public
(True, True)
>>> vs.derive("state-seal") != vs.derive("state-pseudonym")
True
>>> repr(vs)
'VaultSecrets(epochs=[1], current=1, state_keys=[1])'
>>> oct(d.stat().st_mode & 0o777), oct((d / "vault.json").stat().st_mode & 0o777)
('0o700', '0o600')
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from procvault.monitor.errors import ConfigError

from .envelope import VaultKeys
from .identity import CertificateError, EpochCertificate

__all__ = [
    "KEYRING_VERSION",
    "PURPOSE_PARTIAL",
    "PURPOSE_RELEASE_STATE",
    "PURPOSE_STATE_PSEUDONYM",
    "PURPOSE_STATE_SEAL",
    "OldKeyringError",
    "OrgKeys",
    "Registry",
    "VaultSecrets",
    "init_keyring",
    "keyring_exists",
    "upgrade_keyring",
]

#: The keyring format this code writes and reads.
KEYRING_VERSION: Final = 2
#: Purposes of :meth:`VaultSecrets.derive` used by the vault (any ``[a-z][a-z0-9-]*`` works).
PURPOSE_STATE_SEAL: Final = "state-seal"
PURPOSE_STATE_PSEUDONYM: Final = "state-pseudonym"
PURPOSE_PARTIAL: Final = "partial"
PURPOSE_RELEASE_STATE: Final = "release-state"

_VAULT_KIND: Final = "procvault-vault-secrets"
_ORG_KIND: Final = "procvault-org-keys"
_REGISTRY_KIND: Final = "procvault-registry"
_DERIVE_SALT: Final = b"procvault-state-v2\x00"
_PROGRESS_SALT: Final = b"procvault-progress-v2\x00"
_PURPOSE: Final = re.compile(r"[a-z][a-z0-9-]{0,62}")
_MAX_FILE: Final = 1 << 20  # a keyring file is a few KiB; refuse to read megabytes
_RAW = serialization.Encoding.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_NO_ENC = serialization.NoEncryption()


class OldKeyringError(ConfigError):
    """A keyring file written by an older procvault (the message names the fix)."""


def _priv_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(_RAW, _RAW_PRIV, _NO_ENC)


def _pub_bytes(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(_RAW, _RAW_PUB)


# ----------------------------------------------------------------------------- files
def _too_open(mode: int) -> bool:
    return bool(stat.S_IMODE(mode) & 0o077)


def _folder_error(folder: Path, mode: int) -> ConfigError:
    return ConfigError(
        f"{folder}: the keyring folder has mode {stat.S_IMODE(mode):04o}; it must be "
        f"accessible by its owner only (chmod 700 {folder})"
    )


def _open_folder(folder: Path, *, create: bool) -> int:
    """A descriptor of the keyring folder, checked: a directory of ours, mode 0700 or
    narrower; created 0700 when missing and ``create``."""
    if create and not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        else:
            os.chmod(folder, 0o700)  # whatever the umask
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{folder}: no such keyring folder") from None
    except NotADirectoryError:
        raise ConfigError(f"{folder}: not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot open the keyring folder: {exc.strerror}") from None
    st = os.fstat(fd)
    problem: ConfigError | None = None
    if _too_open(st.st_mode):
        problem = _folder_error(folder, st.st_mode)
    elif st.st_uid != os.geteuid():
        problem = ConfigError(f"{folder}: the keyring folder belongs to another user")
    if problem is not None:
        os.close(fd)
        raise problem
    return fd


def _write_file(path: Path, content: bytes, *, mode: int = 0o600) -> None:
    """Write ``content`` to ``path`` atomically, never through a symbolic link (see the module
    docstring); ``mode`` is set with ``fchmod``."""
    path = Path(path)
    dfd = _open_folder(path.parent, create=True)
    tmp = path.name + ".tmp"
    try:
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dfd,
            )
        except FileExistsError:
            raise ConfigError(
                f"{path.parent / tmp} already exists (left by an interrupted write, or put "
                "there by someone): nothing was written; check it, remove it and try again"
            ) from None
        try:
            os.fchmod(fd, mode)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        os.close(fd)
        try:
            os.replace(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _write_json(path: Path, data: Mapping[str, Any], *, secret: bool) -> None:
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    _write_file(path, text.encode(), mode=0o600 if secret else 0o644)


def _read(path: Path, what: str, *, secret: bool) -> dict[str, Any]:
    """A keyring file's JSON object; for a secret file, its folder and its mode checked."""
    path = Path(path)
    if secret and path.parent.is_dir():
        os.close(_open_folder(path.parent, create=False))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such {what} file (create one with `procvault keys init`)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} file: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if secret and _too_open(st.st_mode):
            raise ConfigError(
                f"{path}: the key file has mode {stat.S_IMODE(st.st_mode):04o}; it must be "
                f"readable by its owner only (chmod 600 {path})"
            )
        raw = os.read(fd, _MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(raw) > _MAX_FILE:
        raise ConfigError(f"{path}: too large for a {what} file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable {what} file: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a {what} file")
    return data


def _check_version(data: Mapping[str, Any], path: Path, kind: str, what: str) -> None:
    if data.get("kind", kind) != kind:
        raise ConfigError(f"{path}: not a {what} file (kind {data.get('kind')!r})")
    version = data.get("version", 1)
    if version == 1:
        raise OldKeyringError(
            f"{path}: a keyring written by an older procvault (version 1: no vault identity, "
            f"no sender keys); run `procvault keys upgrade {path.parent}` to add what is "
            "missing, or create a new keyring with `procvault keys init`"
        )
    if version != KEYRING_VERSION:
        raise ConfigError(
            f"{path}: keyring version {version!r} is not supported (this procvault reads "
            f"version {KEYRING_VERSION})"
        )


def _hex(data: Mapping[str, Any], name: str, path: Path, size: int) -> bytes:
    value = data.get(name) if isinstance(data, Mapping) else None
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None:
        raise ConfigError(f"{path}: field {name!r} is missing or not hex")
    if len(raw) != size:
        raise ConfigError(f"{path}: field {name!r} must be {size} bytes")
    return raw


def _int(value: Any, name: str, path: Path) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if type(value) is not int or not 0 <= value < 2**32:
        raise ConfigError(f"{path}: {name} must be an integer in [0, 2^32)")
    return value


def _obj(data: Mapping[str, Any], name: str, path: Path) -> Mapping[str, Any]:
    value = data.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: field {name!r} is missing or not an object")
    return value


def _check_org_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not name
        or len(name.encode()) > 255
        or "/" in name
        or name.startswith(".")
    ):
        raise ConfigError(f"invalid organization name {name!r}")


# ----------------------------------------------------------------------------- the vault
@dataclass(frozen=True, repr=False)
class VaultSecrets:
    """The vault's identity, state master keys and epoch keys (``repr`` shows no secret).

    Attributes
    ----------
    identity
        The long-term Ed25519 identity (its public half is pinned in ``registry.json``).
    state_keys
        State master keys by key id; :attr:`state_key_id` is the one new state is sealed with.
    epochs
        The epochs still accepted, with their keys; :attr:`current_epoch` is announced.
    certificates
        The identity's certificate over each epoch's public keys.
    placement_key
        The consortium's placement key (:attr:`OrgKeys.placement_key`), with which every
        partition checks that a case's records come in the partition its id places it on:
        an agent that sends a case to two partitions is refused (``misplaced``) instead of
        getting two sets of DP caps. ``None`` in a keyring written before it existed
        (``procvault keys placement`` adds it).
    """

    identity: Ed25519PrivateKey
    state_keys: Mapping[int, bytes]
    state_key_id: int
    epochs: Mapping[int, VaultKeys]
    certificates: Mapping[int, EpochCertificate]
    current_epoch: int
    placement_key: bytes | None = None

    def __post_init__(self) -> None:
        if self.state_key_id not in self.state_keys:
            raise ValueError("the current state key id has no key")
        if any(len(k) != 32 for k in self.state_keys.values()):
            raise ValueError("state master keys must be 32 bytes")
        if self.current_epoch not in self.epochs:
            raise ValueError("the current epoch has no keys")
        if set(self.certificates) != set(self.epochs):
            raise ValueError("every epoch needs a certificate")
        if self.placement_key is not None and len(self.placement_key) != 32:
            raise ValueError("the placement key must be 32 bytes")

    def __repr__(self) -> str:
        return (
            f"VaultSecrets(epochs={sorted(self.epochs)}, current={self.current_epoch}, "
            f"state_keys={sorted(self.state_keys)})"
        )

    @property
    def current(self) -> VaultKeys:
        """The keys of the current epoch."""
        return self.epochs[self.current_epoch]

    @property
    def identity_public(self) -> bytes:
        """The raw Ed25519 identity public key (what ``registry.json`` pins)."""
        return _pub_bytes(self.identity)

    @property
    def state_key(self) -> bytes:
        """The current state *master* key. Kept for code not yet on :meth:`derive`: use a
        derived key per purpose instead (the master key is never used for two purposes)."""
        return self.state_keys[self.state_key_id]

    def certificate(self, epoch: int | None = None) -> EpochCertificate:
        """The identity's certificate over ``epoch``'s public keys (default: the current)."""
        return self.certificates[self.current_epoch if epoch is None else epoch]

    def derive(self, purpose: str, key_id: int | None = None) -> bytes:
        """A 32-byte key for ``purpose`` from the state master key ``key_id`` (default: the
        current one): HKDF-SHA256, salt ``"procvault-state-v2" 0x00 ‖ key id u32``, info the
        purpose. Different purposes or key ids give independent keys.

        >>> vs = VaultSecrets.generate()
        >>> len(vs.derive("state-seal")), vs.derive("partial") == vs.derive("partial", 1)
        (32, True)
        >>> vs.rotate_state().derive("partial") == vs.derive("partial")
        False
        >>> vs.derive("Bad Purpose")
        Traceback (most recent call last):
        ...
        ValueError: a key purpose is [a-z][a-z0-9-]* (at most 63 characters), got 'Bad Purpose'
        """
        if not isinstance(purpose, str) or not _PURPOSE.fullmatch(purpose):
            raise ValueError(
                f"a key purpose is [a-z][a-z0-9-]* (at most 63 characters), got {purpose!r}"
            )
        kid = self.state_key_id if key_id is None else key_id
        master = self.state_keys.get(kid)
        if master is None:
            raise ConfigError(
                f"state key id {kid} is not in the keyring (known: {sorted(self.state_keys)})"
            )
        salt = _DERIVE_SALT + kid.to_bytes(4, "big")
        return HKDF(algorithm=SHA256(), length=32, salt=salt, info=purpose.encode()).derive(master)

    @classmethod
    def generate(cls) -> VaultSecrets:
        """Fresh secrets: a new identity, state key id 1, epoch 1 (certified)."""
        identity = Ed25519PrivateKey.generate()
        keys = VaultKeys.generate(epoch=1)
        cert = EpochCertificate.issue(identity, keys.public())
        return cls(identity, {1: os.urandom(32)}, 1, {1: keys}, {1: cert}, 1)

    def rotate(self, *, keep: int = 1) -> VaultSecrets:
        """A new epoch (certified by the identity) becomes current; the newest ``keep`` older
        epochs stay accepted (the grace period)."""
        if keep < 0:
            raise ValueError("keep must be >= 0")
        new = max(self.epochs) + 1
        if new >= 2**32:
            raise ConfigError("no epoch numbers left (2^32)")
        older = sorted(self.epochs)[-keep:] if keep else []
        epochs = {e: self.epochs[e] for e in older}
        epochs[new] = VaultKeys.generate(epoch=new)
        certs = {e: self.certificates[e] for e in older}
        certs[new] = EpochCertificate.issue(self.identity, epochs[new].public())
        return replace(self, epochs=epochs, certificates=certs, current_epoch=new)

    def rotate_state(self) -> VaultSecrets:
        """A new state master key (the next key id) becomes current; older ids stay, so what
        they sealed can still be read."""
        kid = max(self.state_keys) + 1
        keys = {**self.state_keys, kid: os.urandom(32)}
        return replace(self, state_keys=keys, state_key_id=kid)

    def with_placement_key(self, key: bytes) -> VaultSecrets:
        """The same secrets holding the consortium's placement key.

        >>> vs = VaultSecrets.generate().with_placement_key(bytes(32))
        >>> vs.placement_key == bytes(32), vs.rotate().placement_key == bytes(32)
        (True, True)
        """
        return replace(self, placement_key=bytes(key))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written by :meth:`save` (secrets in hex)."""
        return {
            "kind": _VAULT_KIND,
            "version": KEYRING_VERSION,
            "identity_ed25519": _priv_bytes(self.identity).hex(),
            "state": {
                "current": self.state_key_id,
                "keys": {str(k): v.hex() for k, v in sorted(self.state_keys.items())},
            },
            "current_epoch": self.current_epoch,
            "epochs": {
                str(e): {
                    "x25519": _priv_bytes(k.x25519).hex(),
                    "ed25519": _priv_bytes(k.ed25519).hex(),
                    "certificate": self.certificates[e].signature.hex(),
                }
                for e, k in sorted(self.epochs.items())
            },
            **({} if self.placement_key is None else {"placement_key": self.placement_key.hex()}),
        }

    def save(self, path: Path) -> None:
        """Write to ``path`` (mode 0600, atomically; see the module docstring)."""
        _write_json(Path(path), self.to_dict(), secret=True)

    @classmethod
    def load(cls, path: Path) -> VaultSecrets:
        """Read what :meth:`save` wrote; :class:`ConfigError` with the reason otherwise
        (:class:`OldKeyringError` for a version-1 file)."""
        path = Path(path)
        data = _read(path, "vault secrets", secret=True)
        _check_version(data, path, _VAULT_KIND, "vault secrets")
        identity = Ed25519PrivateKey.from_private_bytes(_hex(data, "identity_ed25519", path, 32))
        identity_pub = _pub_bytes(identity)
        state = _obj(data, "state", path)
        state_keys = {
            _int(k, "a state key id", path): _hex(state["keys"], k, path, 32)
            for k in _obj(state, "keys", path)
        }
        epochs: dict[int, VaultKeys] = {}
        certs: dict[int, EpochCertificate] = {}
        for e, k in _obj(data, "epochs", path).items():
            epoch = _int(e, "an epoch", path)
            keys = VaultKeys(
                epoch,
                X25519PrivateKey.from_private_bytes(_hex(k, "x25519", path, 32)),
                Ed25519PrivateKey.from_private_bytes(_hex(k, "ed25519", path, 32)),
            )
            try:
                cert = EpochCertificate(keys.public(), _hex(k, "certificate", path, 64))
                cert.verify(identity_pub)
            except CertificateError:
                raise ConfigError(
                    f"{path}: epoch {epoch}'s certificate does not verify under the vault "
                    "identity (the file was changed or assembled from two keyrings)"
                ) from None
            epochs[epoch], certs[epoch] = keys, cert
        state_id = _int(state.get("current"), "state.current", path)
        current = _int(data.get("current_epoch"), "current_epoch", path)
        placement = (
            _hex(data, "placement_key", path, 32) if data.get("placement_key") is not None else None
        )
        try:
            return cls(identity, state_keys, state_id, epochs, certs, current, placement)
        except ValueError as exc:
            raise ConfigError(f"{path}: invalid vault secrets ({exc})") from None


# ----------------------------------------------------------------------------- organizations
@dataclass(frozen=True, repr=False)
class OrgKeys:
    """One organization's keys (``repr`` shows only its name).

    Attributes
    ----------
    org
        The organization.
    alerts
        X25519: the vault seals the organization's results to it.
    pseudonym_key
        The consortium's case-pseudonym key (the same in every organization's file).
    signing
        Ed25519: signs the organization's revocations; :attr:`progress_key` derives from it.
    sender
        X25519: authenticates the organization's records to the vault (static-static DH).
    """

    org: str
    alerts: X25519PrivateKey
    pseudonym_key: bytes
    signing: Ed25519PrivateKey
    sender: X25519PrivateKey

    def __repr__(self) -> str:
        return f"OrgKeys(org={self.org!r})"

    @classmethod
    def generate(cls, org: str, pseudonym_key: bytes) -> OrgKeys:
        """Fresh keys for ``org`` with the consortium's ``pseudonym_key``."""
        _check_org_name(org)
        return cls(
            org,
            X25519PrivateKey.generate(),
            pseudonym_key,
            Ed25519PrivateKey.generate(),
            X25519PrivateKey.generate(),
        )

    @property
    def alerts_public(self) -> bytes:
        """The raw X25519 alert public key to register."""
        return _pub_bytes(self.alerts)

    @property
    def signing_public(self) -> bytes:
        """The raw Ed25519 signing public key to register."""
        return _pub_bytes(self.signing)

    @property
    def sender_public(self) -> bytes:
        """The raw X25519 sender public key to register."""
        return _pub_bytes(self.sender)

    @property
    def placement_key(self) -> bytes:
        """The consortium's key that places a case on a partition (derived from the
        consortium's pseudonym key, so every organization computes the same partition)."""
        return hmac.new(self.pseudonym_key, b"procvault-placement-v1", hashlib.sha256).digest()

    @property
    def progress_key(self) -> bytes:
        """32 bytes that MAC the agent's progress records: HKDF-SHA256 of the signing key
        (salt ``"procvault-progress-v2" 0x00``, info the organization's name), so it never
        doubles as the signing key.

        >>> k = OrgKeys.generate("lab", bytes(32))
        >>> len(k.progress_key), k.progress_key == k.progress_key
        (32, True)
        """
        return HKDF(
            algorithm=SHA256(), length=32, salt=_PROGRESS_SALT, info=self.org.encode()
        ).derive(_priv_bytes(self.signing))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written by :meth:`save`."""
        return {
            "kind": _ORG_KIND,
            "version": KEYRING_VERSION,
            "org": self.org,
            "alerts_x25519": _priv_bytes(self.alerts).hex(),
            "signing_ed25519": _priv_bytes(self.signing).hex(),
            "sender_x25519": _priv_bytes(self.sender).hex(),
            "pseudonym_key": self.pseudonym_key.hex(),
        }

    def save(self, path: Path) -> None:
        """Write to ``path`` (mode 0600, atomically)."""
        _write_json(Path(path), self.to_dict(), secret=True)

    @classmethod
    def load(cls, path: Path) -> OrgKeys:
        """Read what :meth:`save` wrote (:class:`OldKeyringError` for a version-1 file)."""
        path = Path(path)
        data = _read(path, "organization keys", secret=True)
        _check_version(data, path, _ORG_KIND, "organization keys")
        org = data.get("org")
        if not isinstance(org, str) or not org:
            raise ConfigError(f"{path}: field 'org' is missing")
        return cls(
            org,
            X25519PrivateKey.from_private_bytes(_hex(data, "alerts_x25519", path, 32)),
            _hex(data, "pseudonym_key", path, 32),
            Ed25519PrivateKey.from_private_bytes(_hex(data, "signing_ed25519", path, 32)),
            X25519PrivateKey.from_private_bytes(_hex(data, "sender_x25519", path, 32)),
        )


# ----------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Registry:
    """Public: the vault's pinned identity and the registered organizations' public keys.

    Attributes
    ----------
    orgs
        Organization -> its X25519 alert public key (the registered organizations).
    signing
        Organization -> its Ed25519 signing public key (revocations).
    sender
        Organization -> its X25519 sender public key (authenticates its records).
    identity
        The vault's Ed25519 identity public key: every announcement must chain to it.
    """

    orgs: Mapping[str, bytes]
    signing: Mapping[str, bytes]
    sender: Mapping[str, bytes]
    identity: bytes

    def __post_init__(self) -> None:
        if len(self.identity) != 32:
            raise ValueError("the vault identity must be a 32-byte Ed25519 public key")
        for what, table in (("signing", self.signing), ("sender", self.sender)):
            if set(table) != set(self.orgs):
                raise ValueError(f"every registered organization needs a {what} key")

    def trusted_signers(self) -> dict[str, list[Ed25519PublicKey]]:
        """Organization -> the signing keys its revocations are verified with."""
        return {o: [Ed25519PublicKey.from_public_bytes(k)] for o, k in self.signing.items()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written by :meth:`save`."""
        return {
            "kind": _REGISTRY_KIND,
            "version": KEYRING_VERSION,
            "vault": {"identity_ed25519": self.identity.hex()},
            "orgs": {
                o: {
                    "alerts_x25519": k.hex(),
                    "signing_ed25519": self.signing[o].hex(),
                    "sender_x25519": self.sender[o].hex(),
                }
                for o, k in sorted(self.orgs.items())
            },
        }

    def save(self, path: Path) -> None:
        """Write to ``path`` (mode 0644: public; atomically, never through a link)."""
        _write_json(Path(path), self.to_dict(), secret=False)

    @classmethod
    def load(cls, path: Path) -> Registry:
        """Read what :meth:`save` wrote (:class:`OldKeyringError` for a version-1 file)."""
        path = Path(path)
        data = _read(path, "registry", secret=False)
        _check_version(data, path, _REGISTRY_KIND, "registry")
        identity = _hex(_obj(data, "vault", path), "identity_ed25519", path, 32)
        orgs = _obj(data, "orgs", path)
        if not orgs:
            raise ConfigError(f"{path}: no organizations registered")
        tables: dict[str, dict[str, bytes]] = {"alerts": {}, "signing": {}, "sender": {}}
        for o in orgs:
            _check_org_name(o)
            entry = _obj(orgs, o, path)
            tables["alerts"][o] = _hex(entry, "alerts_x25519", path, 32)
            tables["signing"][o] = _hex(entry, "signing_ed25519", path, 32)
            tables["sender"][o] = _hex(entry, "sender_x25519", path, 32)
        return cls(tables["alerts"], tables["signing"], tables["sender"], identity)


# ----------------------------------------------------------------------------- keyrings
def _files_of(directory: Path, names: Iterable[str]) -> list[Path]:
    return [directory / "vault.json", directory / "registry.json"] + [
        directory / f"org-{n}.json" for n in names
    ]


def _narrow_if_empty(directory: Path) -> None:
    """An existing *empty* folder of ours (a container volume, say) becomes 0700 before any
    key goes in: nothing in it could have been seen. A folder with anything in it is left as
    it is (and refused if it is too open)."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        return
    mine = stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
    if mine and _too_open(st.st_mode) and not os.listdir(directory):
        os.chmod(directory, 0o700)
        if os.listdir(directory):  # something slipped in before the chmod
            raise ConfigError(f"{directory}: files appeared while the keyring was created")


def keyring_exists(directory: Path, orgs: Iterable[str]) -> bool:
    """Whether ``directory`` holds a whole keyring for exactly ``orgs`` (``init --if-missing``
    keeps it); ``False`` if none of its files exists. A partial keyring, or one registering
    other organizations, is a :class:`ConfigError`: it must not be mixed with a new one.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "keys"
    >>> keyring_exists(d, ["lab", "ward"])
    False
    >>> init_keyring(d, ["lab", "ward"])
    >>> keyring_exists(d, ["ward", "lab"])
    True
    >>> keyring_exists(d, ["lab"])
    Traceback (most recent call last):
    ...
    procvault.monitor.errors.ConfigError: ... registers ['lab', 'ward'], not ['lab']
    """
    directory = Path(directory)
    names = list(dict.fromkeys(orgs))
    files = _files_of(directory, names)
    present = [p for p in files if p.exists() or p.is_symlink()]
    if not present:
        return False
    if (directory / "registry.json").exists():
        registered = sorted(Registry.load(directory / "registry.json").orgs)
        if registered != sorted(names):
            raise ConfigError(
                f"{directory}: the keyring there registers {registered}, not {sorted(names)}"
            )
    if len(present) < len(files):
        missing = sorted(p.name for p in files if p not in present)
        raise ConfigError(
            f"{directory}: an incomplete keyring (no {', '.join(missing)}): remove it or "
            "restore the missing files"
        )
    VaultSecrets.load(directory / "vault.json")  # readable, current, not open to others
    return True


def init_keyring(directory: Path, orgs: Iterable[str]) -> None:
    """Write ``vault.json``, ``registry.json`` and ``org-<name>.json`` for a local deployment
    (the folder is created 0700, an existing empty one narrowed to 0700; nothing existing is
    overwritten)."""
    directory = Path(directory)
    names = list(dict.fromkeys(orgs))
    if not names:
        raise ConfigError("give at least one organization")
    for name in names:
        _check_org_name(name)
    for path in _files_of(directory, names):
        if path.exists() or path.is_symlink():
            raise ConfigError(
                f"{directory}: a keyring already exists here ({path.name}; refusing to overwrite)"
            )
    _narrow_if_empty(directory)
    os.close(_open_folder(directory, create=True))  # created 0700, or checked
    pseudonym_key = os.urandom(32)
    keys = [OrgKeys.generate(name, pseudonym_key) for name in names]
    vault = VaultSecrets.generate().with_placement_key(keys[0].placement_key)
    vault.save(directory / "vault.json")
    for k in keys:
        k.save(directory / f"org-{k.org}.json")
    Registry(
        {k.org: k.alerts_public for k in keys},
        {k.org: k.signing_public for k in keys},
        {k.org: k.sender_public for k in keys},
        vault.identity_public,
    ).save(directory / "registry.json")


def _is_v1(data: Mapping[str, Any], path: Path, kind: str, what: str) -> bool:
    """True for a version-1 file of ``kind``; a current one is False; anything else raises."""
    try:
        _check_version(data, path, kind, what)
    except OldKeyringError:
        return True
    return False


def _v1_vault(data: Mapping[str, Any], path: Path) -> VaultSecrets:
    """A version-1 ``vault.json`` brought to version 2: a new identity, the old state key as
    master key id 1, every epoch certified."""
    identity = Ed25519PrivateKey.generate()
    epochs: dict[int, VaultKeys] = {}
    for e, k in _obj(data, "epochs", path).items():
        epoch = _int(e, "an epoch", path)
        epochs[epoch] = VaultKeys(
            epoch,
            X25519PrivateKey.from_private_bytes(_hex(k, "x25519", path, 32)),
            Ed25519PrivateKey.from_private_bytes(_hex(k, "ed25519", path, 32)),
        )
    certs = {e: EpochCertificate.issue(identity, k.public()) for e, k in epochs.items()}
    current = _int(data.get("current_epoch"), "current_epoch", path)
    try:
        return VaultSecrets(
            identity, {1: _hex(data, "state_key", path, 32)}, 1, epochs, certs, current
        )
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid vault secrets ({exc})") from None


def _v1_org(data: Mapping[str, Any], path: Path) -> tuple[OrgKeys, list[str]]:
    """A version-1 ``org-<name>.json`` with a new sender key (and a signing key if it had
    none); also what was added."""
    org = data.get("org")
    if not isinstance(org, str) or not org:
        raise ConfigError(f"{path}: field 'org' is missing")
    added = []
    if "signing_ed25519" in data:
        signing = Ed25519PrivateKey.from_private_bytes(_hex(data, "signing_ed25519", path, 32))
    else:
        signing = Ed25519PrivateKey.generate()
        added.append("a signing key")
    added.append("a sender key")
    keys = OrgKeys(
        org,
        X25519PrivateKey.from_private_bytes(_hex(data, "alerts_x25519", path, 32)),
        _hex(data, "pseudonym_key", path, 32),
        signing,
        X25519PrivateKey.generate(),
    )
    return keys, added


def _v1_registry(
    data: Mapping[str, Any], path: Path, vault: VaultSecrets | None, orgs: Mapping[str, OrgKeys]
) -> Registry:
    """A version-1 ``registry.json`` with the vault identity and every organization's keys."""
    if vault is None:
        raise ConfigError(
            f"{path}: pinning the vault identity needs vault.json: upgrade the folder that "
            "holds it, then copy its registry.json here"
        )
    table = _obj(data, "orgs", path)
    alerts, signing, sender = {}, {}, {}
    for o in table:
        keys = orgs.get(o)
        if keys is None:
            raise ConfigError(
                f"{path}: organization {o!r} has no org-{o}.json here: its new sender key "
                "cannot be registered (upgrade with every key file present)"
            )
        alerts[o] = _hex(_obj(table, o, path), "alerts_x25519", path, 32)
        if alerts[o] != keys.alerts_public:
            raise ConfigError(
                f"{path}: the alert key registered for {o!r} is not the one in org-{o}.json"
            )
        signing[o], sender[o] = keys.signing_public, keys.sender_public
    if not alerts:
        raise ConfigError(f"{path}: no organizations registered")
    return Registry(alerts, signing, sender, vault.identity_public)


def upgrade_keyring(directory: Path) -> list[str]:
    """Bring a version-1 keyring folder to version 2; returns what was added, one line each
    (empty if it was current already).

    ``vault.json`` gets an identity (a new one: agents must pin the new ``registry.json``), its
    state key becomes master key id 1 (what it sealed stays readable) and every epoch is
    certified; each ``org-<name>.json`` gets a sender key (and a signing key if it had none);
    ``registry.json`` gets the identity and every organization's new public keys; a
    ``vault.json`` without the consortium's placement key gets it from the organizations'
    files. Everything is checked before anything is written; each file is then replaced
    atomically.
    """
    directory = Path(directory)
    os.close(_open_folder(directory, create=False))
    added: list[str] = []
    writes: list[tuple[Path, Mapping[str, Any], bool]] = []
    vault_path = directory / "vault.json"
    vault: VaultSecrets | None = None
    if vault_path.exists():
        data = _read(vault_path, "vault secrets", secret=True)
        if _is_v1(data, vault_path, _VAULT_KIND, "vault secrets"):
            vault = _v1_vault(data, vault_path)
            writes.append((vault_path, vault.to_dict(), True))
            added.append(
                f"vault.json: a vault identity ({vault.identity_public.hex()[:16]}...), "
                f"certificates for epochs {sorted(vault.epochs)}, state key id 1"
            )
        else:
            vault = VaultSecrets.load(vault_path)
    orgs: dict[str, OrgKeys] = {}
    for path in sorted(directory.glob("org-*.json")):
        data = _read(path, "organization keys", secret=True)
        if _is_v1(data, path, _ORG_KIND, "organization keys"):
            keys, new = _v1_org(data, path)
            writes.append((path, keys.to_dict(), True))
            added.append(f"{path.name}: {' and '.join(new)}")
        else:
            keys = OrgKeys.load(path)
        orgs[keys.org] = keys
    reg_path = directory / "registry.json"
    if reg_path.exists():
        data = _read(reg_path, "registry", secret=False)
        if _is_v1(data, reg_path, _REGISTRY_KIND, "registry"):
            reg = _v1_registry(data, reg_path, vault, orgs)
            writes.append((reg_path, reg.to_dict(), False))
            added.append(
                f"registry.json: the vault identity and the keys of {', '.join(sorted(reg.orgs))}"
            )
    elif writes:
        raise ConfigError(f"{directory}: no registry.json to upgrade beside the key files")
    if vault is not None and vault.placement_key is None and orgs:
        placements = {k.placement_key for k in orgs.values()}
        if len(placements) != 1:
            raise ConfigError(
                f"{directory}: the organizations' files hold different pseudonym keys (not one "
                "consortium's keyring): no placement key to give vault.json"
            )
        vault = vault.with_placement_key(placements.pop())
        writes = [w for w in writes if w[0] != vault_path]
        writes.append((vault_path, vault.to_dict(), True))
        added.append("vault.json: the consortium's placement key (misplaced cases are refused)")
    for path, content, secret in writes:
        _write_json(path, content, secret=secret)
    return added
