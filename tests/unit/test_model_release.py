"""The consortium's model release offline: the worker's sealed partials, the publisher's
combination and refusals, and what an organization opens (the Kafka path is
``tests/integration/test_discovery_pipeline.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from procvault.generators.xes import read_xes
from procvault.monitor.discovery import DiscoveryCounts, DiscoveryTracker, build_model, decode_model
from procvault.streams.changelog import StateKeys
from procvault.streams.envelope import RejectedRecord
from procvault.streams.frames import Topics, open_result
from procvault.streams.model_publisher import ModelPublisher
from procvault.streams.models import (
    DiscoveryPartial,
    decode_release,
    discovery_key,
    models_topic,
    seal_discovery,
)
from procvault.streams.secrets import OrgKeys, Registry, VaultSecrets, init_keyring


def _publisher(keys: Path, orgs: list[str]) -> ModelPublisher:
    return ModelPublisher(
        "localhost:1",
        Topics("t."),
        VaultSecrets.load(keys / "vault.json"),
        Registry.load(keys / "registry.json"),
        orgs,
    )


def _split_counts(shared_data: Path) -> tuple[list[DiscoveryCounts], DiscoveryCounts]:
    events = list(
        read_xes(shared_data / "logs" / "running-example.xes.gz").replay(end_markers=True)
    )
    parts = [DiscoveryTracker() for _ in range(3)]
    whole = DiscoveryTracker()
    for e in events:
        parts[sum(map(ord, e.case_id)) % 3].update(e)
        whole.update(e)
    return [t.counts() for t in parts], whole.counts()


def test_partials_of_every_partition_combine_into_the_whole_logs_model(
    tmp_path: Path, shared_data: Path
) -> None:
    init_keyring(tmp_path, ["lab", "ward"])
    pub = _publisher(tmp_path, ["lab", "ward"])
    parts, whole = _split_counts(shared_data)
    keys = StateKeys(pub.secrets)
    for p, counts in enumerate(parts):
        k, v = seal_discovery(keys, DiscoveryPartial(p, 3, 5, p != 2, counts))
        assert pub.receive(k, v)
    assert pub.combiner.complete and not pub.combiner.finished
    k, v = seal_discovery(keys, DiscoveryPartial(2, 3, 6, True, parts[2]))
    assert pub.receive(k, v) and pub.combiner.finished
    assert not pub.receive(k, v)  # a copy of what it holds
    out = pub.release()
    assert [t for t, _ in out] == [models_topic("t.", "lab"), models_topic("t.", "ward")]
    announced = {e: s.public() for e, s in pub.secrets.epochs.items()}
    for (topic, value), org in zip(out, ["lab", "ward"], strict=True):
        org_keys = OrgKeys.load(tmp_path / f"org-{org}.json")
        release = decode_release(open_result(org_keys.alerts, value, topic=topic, keys=announced))
        assert release.finished and release.versions == ((0, 5), (1, 5), (2, 6))
        assert decode_model(release.model) == build_model(whole)
    # another organization's record does not open with this one's key
    lab = OrgKeys.load(tmp_path / "org-lab.json")
    with pytest.raises(RejectedRecord):
        open_result(lab.alerts, out[1][1], topic=out[1][0], keys=announced)


def test_forged_moved_and_foreign_partials_are_refused_and_counted(tmp_path: Path) -> None:
    init_keyring(tmp_path / "a", ["lab"])
    init_keyring(tmp_path / "b", ["lab"])
    pub = _publisher(tmp_path / "a", ["lab"])
    ours = StateKeys(pub.secrets)
    theirs = StateKeys(VaultSecrets.load(tmp_path / "b" / "vault.json"))
    part = DiscoveryPartial(0, 2, 1, True, DiscoveryCounts.empty())
    k, v = seal_discovery(ours, part)
    assert not pub.receive(discovery_key(1), v)  # moved to partition 1's key
    assert not pub.receive(k, v[:-1] + bytes([v[-1] ^ 1]))  # tampered
    assert not pub.receive(*seal_discovery(theirs, part))  # another vault's
    assert not pub.receive(k, b"\x00" * 40)
    assert not pub.receive(None, None)
    assert sum(pub.rejected.values()) == 5
    assert pub.combiner.partitions is None  # nothing was taken
    assert pub.receive(k, v)
    other = DiscoveryPartial(1, 3, 1, True, DiscoveryCounts.empty())  # another partition count
    assert not pub.receive(*seal_discovery(ours, other))
    assert pub.rejected["mismatch"] == 1


def test_an_unregistered_organization_is_a_one_line_error(tmp_path: Path) -> None:
    from procvault.monitor.errors import ConfigError

    init_keyring(tmp_path, ["lab"])
    with pytest.raises(ConfigError, match="unregistered organizations: ward"):
        _publisher(tmp_path, ["lab", "ward"])
