"""The keyring: files, permissions, rotation with a grace period, clear errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from procvault.cli import main
from procvault.monitor.errors import ConfigError
from procvault.streams.envelope import ProducerSession, RejectedRecord, SessionOpener
from procvault.streams.secrets import OrgKeys, Registry, VaultSecrets, init_keyring


def test_init_writes_private_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    init_keyring(tmp_path, ["hospital", "lab"])
    for name in ("vault.json", "org-hospital.json", "org-lab.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    registry = Registry.load(tmp_path / "registry.json")
    assert registry.orgs["lab"] == OrgKeys.load(tmp_path / "org-lab.json").alerts_public
    with pytest.raises(ConfigError, match="already exists"):
        init_keyring(tmp_path, ["hospital"])


def test_rotation_keeps_a_grace_epoch_then_retires_it(tmp_path: Path) -> None:
    init_keyring(tmp_path, ["lab"])
    old = VaultSecrets.load(tmp_path / "vault.json")
    lab = OrgKeys.load(tmp_path / "org-lab.json")
    assert lab.sender is not None
    senders = Registry.load(tmp_path / "registry.json").sender
    session = ProducerSession(old.current.public(), lab.sender, org="lab", producer="a")
    record = session.seal(b"x", topic="t", partition=0)
    assert main(["keys", "rotate", str(tmp_path)]) == 0
    graced = VaultSecrets.load(tmp_path / "vault.json")
    assert graced.current_epoch == 2 and sorted(graced.epochs) == [1, 2]
    assert graced.state_key == old.state_key
    SessionOpener(dict(graced.epochs), senders).open(record, topic="t", partition=0)  # graced
    assert main(["keys", "rotate", str(tmp_path), "--keep", "0"]) == 0
    retired = VaultSecrets.load(tmp_path / "vault.json")
    assert sorted(retired.epochs) == [3]
    with pytest.raises(RejectedRecord, match="unknown_epoch"):
        SessionOpener(dict(retired.epochs), senders).open(record, topic="t", partition=0)


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such vault secrets file"):
        VaultSecrets.load(tmp_path / "vault.json")
    (tmp_path / "vault.json").write_text('{"state_key": "zz"}')
    with pytest.raises(ConfigError, match="field 'epochs' is missing"):
        VaultSecrets.load(tmp_path / "vault.json")
    with pytest.raises(ConfigError, match="invalid organization name"):
        init_keyring(tmp_path / "k", ["../evil"])
