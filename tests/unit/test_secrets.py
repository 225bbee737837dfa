"""The keyring (version 2): the vault identity and its certificates, state master keys and
derived keys, sender and progress keys, key files that never leak, older keyrings refused with
the fix, and the upgrade."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procvault.cli import main
from procvault.monitor.errors import ConfigError
from procvault.streams.envelope import ProducerSession, RejectedRecord, SessionOpener
from procvault.streams.secrets import (
    OldKeyringError,
    OrgKeys,
    Registry,
    VaultSecrets,
    init_keyring,
    upgrade_keyring,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    init_keyring(d, ["hospital", "lab"])
    return d


# ----------------------------------------------------------------------------- contents
def test_init_writes_private_files_in_a_private_folder_and_refuses_to_overwrite(
    keyring: Path,
) -> None:
    assert _mode(keyring) == 0o700
    for name in ("vault.json", "org-hospital.json", "org-lab.json"):
        assert _mode(keyring / name) == 0o600
    registry = Registry.load(keyring / "registry.json")
    lab = OrgKeys.load(keyring / "org-lab.json")
    assert registry.orgs["lab"] == lab.alerts_public
    assert registry.signing["lab"] == lab.signing_public
    assert registry.sender["lab"] == lab.sender_public
    with pytest.raises(ConfigError, match="already exists"):
        init_keyring(keyring, ["hospital"])
    assert not list(keyring.glob("*.tmp"))


def test_the_registry_pins_the_vault_identity_that_certifies_every_epoch(keyring: Path) -> None:
    vault = VaultSecrets.load(keyring / "vault.json")
    pinned = Registry.load(keyring / "registry.json").identity
    assert pinned == vault.identity_public
    assert vault.certificate().verify(pinned) == vault.current.public()
    rotated = vault.rotate(keep=1)
    assert rotated.identity_public == pinned
    assert rotated.certificate(2).verify(pinned) == rotated.epochs[2].public()
    assert rotated.certificate(1) == vault.certificate(1)


def test_a_certificate_that_does_not_match_its_keys_is_refused_on_load(keyring: Path) -> None:
    path = keyring / "vault.json"
    data = json.loads(path.read_text())
    other = VaultSecrets.generate().to_dict()
    data["epochs"]["1"]["certificate"] = other["epochs"]["1"]["certificate"]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="certificate does not verify under the vault identity"):
        VaultSecrets.load(path)


def test_rotation_keeps_a_grace_epoch_then_retires_it(keyring: Path) -> None:
    old = VaultSecrets.load(keyring / "vault.json")
    lab = OrgKeys.load(keyring / "org-lab.json")
    senders = Registry.load(keyring / "registry.json").sender
    session = ProducerSession(old.current.public(), lab.sender, org="lab", producer="a")
    record = session.seal(b"x", topic="t", partition=0)
    assert main(["keys", "rotate", str(keyring)]) == 0
    graced = VaultSecrets.load(keyring / "vault.json")
    assert graced.current_epoch == 2 and sorted(graced.epochs) == [1, 2]
    assert graced.state_keys == old.state_keys
    SessionOpener(dict(graced.epochs), senders).open(record, topic="t", partition=0)  # graced
    assert main(["keys", "rotate", str(keyring), "--keep", "0"]) == 0
    retired = VaultSecrets.load(keyring / "vault.json")
    assert sorted(retired.epochs) == [3] and sorted(retired.certificates) == [3]
    with pytest.raises(RejectedRecord, match="unknown_epoch"):
        SessionOpener(dict(retired.epochs), senders).open(record, topic="t", partition=0)


def test_derived_state_keys_are_separate_per_purpose_and_key_id(keyring: Path) -> None:
    vault = VaultSecrets.load(keyring / "vault.json")
    purposes = ("state-seal", "state-pseudonym", "partial", "release-state")
    keys = {p: vault.derive(p) for p in purposes}
    assert len(set(keys.values())) == len(purposes)
    assert all(len(k) == 32 for k in keys.values())
    assert vault.state_key not in keys.values()  # the master key is never used directly
    again = VaultSecrets.load(keyring / "vault.json")
    assert {p: again.derive(p) for p in purposes} == keys
    # keys rotate --state: a new master key is current, the old one is still there for reading
    assert main(["keys", "rotate", str(keyring), "--state"]) == 0
    rotated = VaultSecrets.load(keyring / "vault.json")
    assert (rotated.state_key_id, sorted(rotated.state_keys)) == (2, [1, 2])
    assert rotated.derive("state-seal", 1) == keys["state-seal"]
    assert rotated.derive("state-seal") != keys["state-seal"]
    assert rotated.current_epoch == vault.current_epoch  # epochs untouched
    with pytest.raises(ConfigError, match="state key id 9 is not in the keyring"):
        rotated.derive("state-seal", 9)
    with pytest.raises(ValueError, match="key purpose"):
        rotated.derive("")


def test_progress_key_is_a_separate_child_of_the_signing_key(keyring: Path) -> None:
    lab = OrgKeys.load(keyring / "org-lab.json")
    hospital = OrgKeys.load(keyring / "org-hospital.json")
    assert len(lab.progress_key) == 32
    assert lab.progress_key == OrgKeys.load(keyring / "org-lab.json").progress_key
    assert lab.progress_key != hospital.progress_key
    from cryptography.hazmat.primitives import serialization

    raw = lab.signing.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    assert lab.progress_key != raw
    assert lab.pseudonym_key == hospital.pseudonym_key  # the consortium's, shared
    assert lab.sender_public != lab.alerts_public


def test_reprs_show_no_secret(keyring: Path) -> None:
    vault = VaultSecrets.load(keyring / "vault.json")
    lab = OrgKeys.load(keyring / "org-lab.json")
    text = repr(vault) + repr(lab)
    for secret in (vault.state_key, lab.pseudonym_key, lab.progress_key):
        assert secret.hex() not in text


# ----------------------------------------------------------------------------- key files
def test_a_symlink_at_the_temporary_path_never_receives_secrets(keyring: Path) -> None:
    victim = keyring.parent / "someone-elses-file"
    victim.write_text("not yours\n")
    (keyring / "vault.json.tmp").symlink_to(victim)
    secrets = VaultSecrets.load(keyring / "vault.json")
    with pytest.raises(ConfigError, match=r"vault\.json\.tmp already exists"):
        secrets.rotate().save(keyring / "vault.json")
    assert victim.read_text() == "not yours\n"
    assert VaultSecrets.load(keyring / "vault.json").current_epoch == 1  # unchanged


def test_a_preexisting_world_readable_temporary_file_is_refused(keyring: Path) -> None:
    tmp = keyring / "org-lab.json.tmp"
    tmp.write_text("")
    os.chmod(tmp, 0o644)
    lab = OrgKeys.load(keyring / "org-lab.json")
    with pytest.raises(ConfigError, match="already exists"):
        lab.save(keyring / "org-lab.json")
    assert tmp.read_text() == ""  # nothing written into it
    assert _mode(keyring / "org-lab.json") == 0o600


def test_a_wide_folder_is_refused_for_writing_and_reading(tmp_path: Path) -> None:
    d = tmp_path / "wide"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    (d / "notes.txt").write_text("something already here")
    with pytest.raises(ConfigError, match="mode 0755; it must be accessible by its owner only"):
        init_keyring(d, ["lab"])
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]
    (d / "notes.txt").unlink()
    init_keyring(d, ["lab"])  # an empty folder of ours (a container volume): narrowed first
    assert _mode(d) == 0o700
    os.chmod(d, 0o750)
    with pytest.raises(ConfigError, match=r"chmod 700"):
        VaultSecrets.load(d / "vault.json")
    with pytest.raises(ConfigError, match=r"chmod 700"):
        OrgKeys.load(d / "org-lab.json")
    Registry.load(d / "registry.json")  # public: readable anyway


@pytest.mark.parametrize("name", ["vault.json", "org-lab.json"])
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_wide_key_file_is_refused(keyring: Path, name: str, mode: int) -> None:
    os.chmod(keyring / name, mode)
    load = VaultSecrets.load if name == "vault.json" else OrgKeys.load
    with pytest.raises(ConfigError, match=f"mode {mode:04o}; it must be readable by its owner"):
        load(keyring / name)


@pytest.mark.parametrize("umask", [0, 0o277])
def test_files_are_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        init_keyring(tmp_path / "k", ["lab"])
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k") == 0o700
    assert _mode(tmp_path / "k" / "vault.json") == 0o600
    assert _mode(tmp_path / "k" / "org-lab.json") == 0o600


def test_a_symlink_at_the_key_file_is_replaced_not_followed(keyring: Path) -> None:
    victim = keyring.parent / "victim"
    victim.write_text("untouched\n")
    target = keyring / "org-lab.json"
    lab = OrgKeys.load(target)
    target.unlink()
    target.symlink_to(victim)
    lab.save(target)
    assert victim.read_text() == "untouched\n"
    assert not target.is_symlink() and _mode(target) == 0o600
    assert OrgKeys.load(target).signing_public == lab.signing_public


def test_key_files_are_fsynced_before_the_rename_and_the_folder_after(
    keyring: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync-dir" if stat.S_ISDIR(st.st_mode) else "fsync-file", st.st_size))
        real_fsync(fd)

    def replace(*args: object, **kw: object) -> None:
        events.append(("replace", args[0]))
        real_replace(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    VaultSecrets.load(keyring / "vault.json").rotate().save(keyring / "vault.json")
    kinds = [e[0] for e in events]
    assert kinds == ["fsync-file", "replace", "fsync-dir"]
    assert events[0][1] == (keyring / "vault.json").stat().st_size  # the whole file


# ----------------------------------------------------------------------------- old keyrings
def _v1_keyring(d: Path, *, with_signing: bool = True) -> dict[str, object]:
    """What procvault wrote before keyring version 2 (the format of commit 6424efd)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    def raw(k: object) -> str:
        return k.private_bytes(  # type: ignore[attr-defined, no-any-return]
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        ).hex()

    def pub(k: object) -> str:
        return (
            k.public_key()
            .public_bytes(  # type: ignore[attr-defined, no-any-return]
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            .hex()
        )

    d.mkdir(mode=0o700)
    state_key = os.urandom(32)
    x, ed = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    vault = {
        "kind": "procvault-vault-secrets",
        "state_key": state_key.hex(),
        "current_epoch": 1,
        "epochs": {"1": {"x25519": raw(x), "ed25519": raw(ed)}},
    }
    alerts, signing = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    org = {
        "kind": "procvault-org-keys",
        "org": "lab",
        "alerts_x25519": raw(alerts),
        "pseudonym_key": os.urandom(32).hex(),
    }
    entry = {"alerts_x25519": pub(alerts)}
    if with_signing:
        org["signing_ed25519"] = raw(signing)
        entry["signing_ed25519"] = pub(signing)
    for name, data in (("vault.json", vault), ("org-lab.json", org)):
        (d / name).write_text(json.dumps(data))
        os.chmod(d / name, 0o600)
    (d / "registry.json").write_text(
        json.dumps({"kind": "procvault-registry", "orgs": {"lab": entry}})
    )
    return {"state_key": state_key, "x25519": pub(x), "alerts": pub(alerts)}


@pytest.mark.parametrize("name", ["vault.json", "org-lab.json", "registry.json"])
def test_an_old_keyring_is_refused_naming_the_fix_never_misread(tmp_path: Path, name: str) -> None:
    _v1_keyring(tmp_path / "k")
    load = {"vault.json": VaultSecrets.load, "org-lab.json": OrgKeys.load}.get(name, Registry.load)
    with pytest.raises(OldKeyringError) as info:
        load(tmp_path / "k" / name)  # type: ignore[operator]
    msg = str(info.value)
    assert "\n" not in msg
    assert f"procvault keys upgrade {tmp_path / 'k'}" in msg and "keys init" in msg


@pytest.mark.parametrize("with_signing", [True, False])
def test_keys_upgrade_adds_what_is_missing_and_keeps_what_was_there(
    tmp_path: Path, with_signing: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "k"
    old = _v1_keyring(d, with_signing=with_signing)
    assert main(["keys", "upgrade", str(d)]) == 0
    err = capsys.readouterr().err
    assert "a vault identity" in err and "a sender key" in err
    assert ("a signing key" in err) is not with_signing
    vault = VaultSecrets.load(d / "vault.json")
    registry = Registry.load(d / "registry.json")
    lab = OrgKeys.load(d / "org-lab.json")
    assert vault.state_keys == {1: old["state_key"]}  # what it sealed stays readable
    assert vault.current.public().x25519.hex() == old["x25519"]
    assert vault.certificate().verify(registry.identity) == vault.current.public()
    assert lab.alerts_public.hex() == old["alerts"]
    assert registry.sender["lab"] == lab.sender_public
    assert registry.signing["lab"] == lab.signing_public
    for name in ("vault.json", "org-lab.json"):
        assert _mode(d / name) == 0o600
    assert upgrade_keyring(d) == []  # current now: nothing to add


def test_upgrade_refuses_a_registry_without_the_key_files_it_needs(tmp_path: Path) -> None:
    d = tmp_path / "k"
    _v1_keyring(d)
    (d / "org-lab.json").unlink()
    with pytest.raises(ConfigError, match=r"organization 'lab' has no org-lab\.json here"):
        upgrade_keyring(d)
    assert "version" not in json.loads((d / "vault.json").read_text())  # nothing written


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    d = tmp_path / "k"
    d.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="no such vault secrets file"):
        VaultSecrets.load(d / "vault.json")
    path = d / "vault.json"
    path.write_text('{"kind": "procvault-vault-secrets", "version": 2, "state_key": "zz"}')
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="'identity_ed25519' is missing or not hex"):
        VaultSecrets.load(path)
    path.write_text('{"kind": "procvault-vault-secrets", "version": 7}')
    with pytest.raises(ConfigError, match="keyring version 7 is not supported"):
        VaultSecrets.load(path)
    path.write_text('{"kind": "procvault-registry", "version": 2}')
    with pytest.raises(ConfigError, match="not a vault secrets file"):
        VaultSecrets.load(path)
    with pytest.raises(ConfigError, match="invalid organization name"):
        init_keyring(tmp_path / "k2", ["../evil"])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.binary(max_size=400),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=70),
            lambda c: (
                st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=20), c, max_size=5)
            ),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_file_content_is_a_config_error_never_a_traceback(
    tmp_path: Path, content: bytes
) -> None:
    d = tmp_path / "fuzz"
    d.mkdir(mode=0o700, exist_ok=True)
    for name, load in (
        ("vault.json", VaultSecrets.load),
        ("org-x.json", OrgKeys.load),
        ("registry.json", Registry.load),
    ):
        path = d / name
        path.write_bytes(content)
        os.chmod(path, 0o600)
        with pytest.raises(ConfigError):
            load(path)  # type: ignore[operator]


def test_the_vault_holds_the_consortiums_placement_key_and_upgrade_adds_it(
    tmp_path: Path,
) -> None:
    from procvault.streams.secrets import upgrade_keyring

    init_keyring(tmp_path, ["lab", "ward"])
    vault = VaultSecrets.load(tmp_path / "vault.json")
    lab = OrgKeys.load(tmp_path / "org-lab.json")
    assert vault.placement_key == lab.placement_key
    assert vault.rotate().rotate_state().placement_key == lab.placement_key
    assert lab.placement_key.hex() not in repr(vault)
    # a vault.json from before the placement key: upgrade gives it the organizations' key
    data = json.loads((tmp_path / "vault.json").read_text())
    del data["placement_key"]
    (tmp_path / "vault.json").write_text(json.dumps(data))
    assert VaultSecrets.load(tmp_path / "vault.json").placement_key is None
    added = upgrade_keyring(tmp_path)
    assert any("placement key" in line for line in added)
    assert VaultSecrets.load(tmp_path / "vault.json").placement_key == lab.placement_key
    assert upgrade_keyring(tmp_path) == []
