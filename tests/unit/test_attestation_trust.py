"""Trust that stays current (:class:`TrustCore`, pure): re-verification on a schedule and on a
newer announced epoch, distrust with the reason when a round fails, nothing an impersonator
sends changes anything."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from procvault.monitor.errors import ConfigError
from procvault.organization.trust import TrustCore, TrustSettings, TrustState
from procvault.streams.attestation import (
    Evidence,
    EvidenceVerifier,
    KeyAnnouncement,
    SimulatedProvider,
    SimulatedVerifier,
)
from procvault.streams.secrets import VaultSecrets

VAULT = VaultSecrets.generate()
PINNED = VAULT.identity_public
MALLORY = VaultSecrets.generate()
WALL = 1_700_000_000.0


def _core(**kw: float) -> TrustCore:
    settings = TrustSettings(**{"reattest_interval": 60.0, "timeout": 10.0, "retry": 2.0, **kw})
    return TrustCore(PINNED, SimulatedVerifier(PINNED, allow_insecure=True), settings)


def _answer(nonce: bytes, secrets: VaultSecrets = VAULT, *, provider: object = None) -> bytes:
    p = provider or SimulatedProvider(secrets.identity)
    return KeyAnnouncement.create(secrets, p, nonce=nonce, now=WALL).to_bytes()  # type: ignore[arg-type]


def _trusted(**kw: float) -> TrustCore:
    core = _core(**kw)
    nonce = core.due(0.0)
    assert nonce is not None
    core.offer(_answer(nonce), mono=0.1, wall=WALL)
    assert core.state is TrustState.TRUSTED
    return core


def test_first_round_then_periodic_rounds_with_fresh_nonces() -> None:
    core = _core()
    assert core.state is TrustState.PENDING and core.keys is None
    first = core.due(0.0)
    assert first is not None and core.due(1.0) is None  # resent every `retry` s only
    assert core.due(2.0) == first
    core.offer(_answer(first), mono=2.5, wall=WALL)
    assert (core.state, core.keys, core.verifications) == (
        TrustState.TRUSTED,
        VAULT.current.public(),
        1,
    )
    assert core.evidence == "simulated-INSECURE"
    assert core.due(59.0) is None
    second = core.due(60.0)
    assert second is not None and second != first
    core.offer(_answer(second), mono=61.0, wall=WALL)
    assert core.verifications == 2 and core.state is TrustState.TRUSTED


def test_a_round_without_a_valid_answer_distrusts_for_good() -> None:
    core = _trusted()
    nonce = core.due(60.0)
    assert nonce is not None
    core.tick(69.9)
    assert core.state is TrustState.TRUSTED
    core.tick(70.0)
    assert core.state is TrustState.DISTRUSTED
    assert "no valid key announcement bound to this nonce within 10 s" in (core.reason or "")
    # sticky: a late genuine answer, or a later round, does not bring trust back
    core.offer(_answer(nonce), mono=71.0, wall=WALL)
    assert core.due(200.0) is None and core.state is TrustState.DISTRUSTED


def test_forged_answers_on_our_nonce_are_counted_and_change_nothing() -> None:
    core = _trusted()
    nonce = core.due(60.0)
    assert nonce is not None
    forged = _answer(nonce, MALLORY)
    for t in range(5):
        core.offer(forged, mono=60.0 + t, wall=WALL)
        core.offer(b"\x00\x01 not an announcement", mono=60.0 + t, wall=WALL)
    assert core.state is TrustState.TRUSTED and core.keys == VAULT.current.public()
    assert core.refused == {"not_pinned": 5, "malformed": 5}
    core.offer(_answer(nonce), mono=66.0, wall=WALL)  # the genuine answer still counts
    assert core.verifications == 2


def test_the_vaults_own_answer_that_fails_the_policy_distrusts_at_once() -> None:
    core = _trusted()
    nonce = core.due(60.0)
    assert nonce is not None

    class WrongBinding:
        def evidence(self, report_data: bytes) -> Evidence:
            return SimulatedProvider(VAULT.identity).evidence(bytes(64))

    core.offer(_answer(nonce, provider=WrongBinding()), mono=60.5, wall=WALL)
    assert core.state is TrustState.DISTRUSTED
    assert (core.reason or "").startswith("the vault's answer failed verification: evidence ")


def test_a_newer_epoch_announced_starts_a_round_and_then_is_used() -> None:
    core = _trusted()
    rotated = VAULT.rotate()
    startup = _answer(b"s" * 16, rotated)  # a restarted worker's announcement, other nonce
    core.offer(startup, mono=5.0, wall=WALL)
    assert core.keys == VAULT.current.public()  # not used before a fresh round verifies it
    nonce = core.due(5.0)  # the round starts at once, not after the interval
    assert nonce is not None
    core.offer(_answer(nonce, VAULT), mono=5.1, wall=WALL)  # an old worker answers first
    assert core.keys is not None and core.keys.epoch == 1 and core.state is TrustState.TRUSTED
    core.offer(startup, mono=6.0, wall=WALL)
    nonce = core.due(6.0)
    assert nonce is not None
    core.offer(_answer(nonce, rotated), mono=6.1, wall=WALL)
    assert core.keys == rotated.current.public() and core.keys.epoch == 2
    core.offer(_answer(b"t" * 16, VAULT), mono=7.0, wall=WALL)  # older epoch: ignored
    assert core.keys.epoch == 2 and core.round is None


def test_a_forged_newer_epoch_neither_switches_nor_starts_rounds() -> None:
    core = _trusted()
    fake = MALLORY.rotate().rotate()  # epoch 3, its own identity
    for t in range(3):
        core.offer(_answer(bytes([t]) * 16, fake), mono=5.0 + t, wall=WALL)
    assert core.round is None and core.due(10.0) is None
    assert core.refused == {"not_pinned": 3}


def test_two_certified_key_sets_for_one_epoch_distrust() -> None:
    from procvault.streams.envelope import VaultKeys
    from procvault.streams.identity import EpochCertificate

    core = _trusted()
    other = VaultKeys.generate(epoch=1)
    twin = VaultSecrets(
        VAULT.identity,
        VAULT.state_keys,
        VAULT.state_key_id,
        {1: other},
        {1: EpochCertificate.issue(VAULT.identity, other.public())},
        1,
    )
    nonce = core.due(60.0)
    assert nonce is not None
    core.offer(_answer(nonce, twin), mono=60.1, wall=WALL)
    assert core.state is TrustState.DISTRUSTED
    assert "two different key sets are certified for epoch 1" in (core.reason or "")


def test_the_first_round_failing_is_reported_not_distrust() -> None:
    core = TrustCore(PINNED, EvidenceVerifier(PINNED), TrustSettings(timeout=5))
    nonce = core.due(0.0)
    assert nonce is not None
    core.offer(_answer(nonce), mono=0.1, wall=WALL)
    assert core.state is TrustState.PENDING
    failure = core.first_failure
    assert failure is not None and "simulated-INSECURE evidence refused" in str(failure)
    core2 = _core(timeout=5)
    core2.due(0.0)
    core2.tick(5.0)
    assert core2.first_failure is not None and core2.state is TrustState.PENDING


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="reattest_interval must be > 0"):
        TrustSettings(reattest_interval=0)


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.none(),
            st.sampled_from(["ours", "forged", "garbage-json", "float-epoch", "other-nonce"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_fuzz_whatever_vault_keys_carries_trust_never_raises_nor_is_fooled(
    records: list[object],
) -> None:
    core = _trusted()
    nonce = core.due(60.0)
    assert nonce is not None
    genuine_seen = False
    for i, r in enumerate(records):
        if r == "ours":
            value: object = _answer(nonce)
            genuine_seen = True
        elif r == "forged":
            value = _answer(nonce, MALLORY)
        elif r == "garbage-json":
            value = json.dumps({"version": 2, "payload": "[]", "signature": "x"}).encode()
        elif r == "float-epoch":
            good = json.loads(_answer(nonce))
            payload = json.loads(good["payload"])
            payload["certificate"]["epoch"] = 1.0
            good["payload"] = json.dumps(payload)
            value = json.dumps(good).encode()
        elif r == "other-nonce":
            value = _answer(b"o" * 16)
        else:
            value = r
        core.offer(value, mono=60.0 + i / 10, wall=WALL)
    core.tick(65.0)
    assert core.state is TrustState.TRUSTED
    assert core.keys == VAULT.current.public()
    assert core.verifications == (2 if genuine_seen else 1)
