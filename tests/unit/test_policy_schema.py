"""Policy files: the examples load, ProMTEE manifests import, and every mistake is one line that
names the file, the line and the key."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from procvault.monitor.errors import ConfigError
from procvault.organization.policy import load_policy, parse_policy
from procvault.organization.policy.schema import Bucket, Policy

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "policies" / "orgs").glob("*.yaml"))

HEADER = """\
policy: demo
version: 1
org: shop
mode: denylist
consent:
  scope: monitoring
"""


def _write(tmp_path: Path, body: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return path


def _error(tmp_path: Path, body: str) -> str:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message.removeprefix(str(path))


# ----------------------------------------------------------------------------- examples
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_policies_load(path: Path) -> None:
    policy = load_policy(path)
    assert policy.org == path.stem
    assert policy.clauses > 0
    assert len(policy.digest) == 64


def test_there_are_example_policies() -> None:
    assert {p.stem for p in EXAMPLES} >= {"hospital", "supplier", "carrier"}


@pytest.mark.parametrize("split", ["sepsis_orgs.yaml", "order_to_cash_orgs.yaml"])
def test_every_documented_organization_has_its_policy(split: str) -> None:
    """examples/*_orgs.yaml name the organizations of the docs' runs; each has
    policies/orgs/<org>.yaml, written for that organization (``procvault agent`` refuses a
    policy of another one)."""
    import yaml

    orgs = set(yaml.safe_load((REPO / "examples" / split).read_text())["activities"].values())
    assert len(orgs) == 3
    for org in orgs:
        path = REPO / "policies" / "orgs" / f"{org}.yaml"
        assert path.exists(), f"{split}: no policy for {org!r}"
        assert load_policy(path).org == org


def test_every_example_policy_names_its_file_organization() -> None:
    assert all(load_policy(p).org == p.stem for p in EXAMPLES)


def test_hospital_policy_has_twenty_clauses() -> None:
    assert load_policy(REPO / "policies" / "orgs" / "hospital.yaml").clauses == 20


def test_manifest_loads_as_policy(shared_data: Path) -> None:
    policy = load_policy(shared_data / "manifests" / "extraction_manifest_traffic.json")
    assert policy.id == "promtee-extraction_manifest_traffic"
    assert policy.minimise.kept("Payment") == frozenset({"paymentAmount"})
    assert policy.minimise.kept("Send Fine") == frozenset()
    assert policy.minimise.kept("Not in the manifest") == frozenset()


@pytest.mark.parametrize("name", ["sepsis", "traffic", "bpic2012", "motivating"], ids=lambda n: n)
def test_every_shared_manifest_imports(shared_data: Path, tmp_path: Path, name: str) -> None:
    manifest = shared_data / "manifests" / f"extraction_manifest_{name}.json"
    path = _write(tmp_path, f"minimise:\n  import: {manifest}\n")
    policy = load_policy(path)
    spec = json.loads(manifest.read_text())["attribute_extraction"]
    assert dict(policy.minimise.activities) == {a: frozenset(k) for a, k in spec.items()}
    assert policy.minimise.default == "drop"
    assert policy.minimise.source == str(manifest)


def test_manifest_import_can_be_extended_and_relative(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(
        json.dumps({"attribute_extraction": {"Payment": ["paymentAmount"]}})
    )
    path = _write(
        tmp_path,
        """\
        minimise:
          import: m.json
          default: keep
          activities:
            Send Fine: [expense]
        """,
    )
    policy = load_policy(path)
    assert policy.minimise.kept("Payment") == frozenset({"paymentAmount"})
    assert policy.minimise.kept("Send Fine") == frozenset({"expense"})
    assert policy.minimise.kept("Other") is None


def test_digest_covers_imported_files(tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"attribute_extraction": {"A": ["x"]}}))
    path = _write(tmp_path, "minimise:\n  import: m.json\n")
    first = load_policy(path).digest
    manifest.write_text(json.dumps({"attribute_extraction": {"A": ["y"]}}))
    assert load_policy(path).digest != first


# ----------------------------------------------------------------------------- bad input
def test_unknown_top_level_key_names_line_and_suggests(tmp_path: Path) -> None:
    msg = _error(tmp_path, "activites: [A]\n")
    assert msg == ":7: unknown key 'activites'; did you mean 'activities'?"


def test_unknown_nested_key(tmp_path: Path) -> None:
    msg = _error(
        tmp_path,
        """\
        windows:
          - zone: Europe/Amsterdam
            days: [mon-fri]
            hours: "09:00-17:00"
            colour: red
        """,
    )
    assert msg.startswith(":11: windows[0]: unknown key 'colour'")


def test_invalid_time_zone(tmp_path: Path) -> None:
    msg = _error(
        tmp_path,
        """\
        windows:
          - zone: Europe/Amsterdm
            days: [mon-fri]
            hours: "09:00-17:00"
        """,
    )
    assert msg == ":8: windows[0].zone: unknown IANA time zone 'Europe/Amsterdm'"


def test_regex_that_does_not_compile(tmp_path: Path) -> None:
    msg = _error(tmp_path, "activities:\n  - {regex: 'Release [A-E'}\n")
    assert msg == (
        ":8: activities[0]: regex 'Release [A-E' does not compile: "
        "unterminated character set at position 8"
    )


def test_value_regex_that_does_not_compile(tmp_path: Path) -> None:
    msg = _error(tmp_path, "attributes:\n  - key: note\n    values: {regex: '(a'}\n")
    assert ":9: attributes[0].values: regex '(a' does not compile" in msg


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("windows:\n  - {zone: UTC, days: [monday], hours: '09:00-17:00'}\n", "unknown weekday"),
        ("windows:\n  - {zone: UTC, days: [mon], hours: '9-17'}\n", "hours must look like"),
        ("windows:\n  - {zone: UTC, days: [mon], hours: 9:00}\n", "hours must be a quoted"),
        ("windows:\n  - {zone: UTC, days: [mon], hours: '10:00-10:00'}\n", "are empty"),
        ("windows:\n  - {zone: UTC, days: [mon], hours: '09:00-17:00', groups: [x]}\n", "group"),
        ("generalise:\n  timestamps: week\n", "timestamps must be one of"),
        ("generalise:\n  numbers:\n    Age: {width: -1}\n", "bucket width must be a positive"),
        ("generalise:\n  numbers:\n    Age: {edges: [5, 1]}\n", "edges must be at least two"),
        ("pseudonymise:\n  case_id: yes please\n", "must be true or false"),
        ("scrub:\n  kinds: [email, dna]\n", "unknown PII kind 'dna'"),
        ("scrub:\n  phone_regions: [XX]\n", "unknown phone region 'XX'"),
        ("scrub:\n  phone_regions: [NO]\n", "quote the region code"),
        ("scrub:\n  national_ids: [fr_insee]\n", "unknown national id 'fr_insee'"),
        ("attributes:\n  - key: pv:policy\n", "reserved"),
        ("attributes:\n  - {key: note, withhold: event}\n", "withhold: event needs a values"),
        ("attributes:\n  - {key: note, withhold: later, values: x}\n", "withhold must be"),
        ("activities: Release A\n", "must be a list"),
        ("activities:\n  - [1, 2]\n", "must be a name or {regex: ...}"),
        ("minimise:\n  import: missing.json\n", "cannot read"),
        ("minimise:\n  default: maybe\n", "default must be 'keep' or 'drop'"),
        ("placeholders:\n  timestamps: never\n", "placeholders.timestamps: must be one of"),
        ("a: 1\na: 2\n", "key 'a' appears twice"),
        ("activities: [A\n", "YAML syntax error"),
    ],
)
def test_bad_input_is_one_line_with_location(tmp_path: Path, body: str, expected: str) -> None:
    msg = _error(tmp_path, body)
    assert msg.startswith(":"), msg  # a line number follows the file name
    assert expected in msg


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("policy: demo\n", "missing required key 'version'"),
        (HEADER.replace("version: 1", "version: 0"), ":2: version: version must be >= 1"),
        (HEADER.replace("mode: denylist", "mode: greylist"), ":4: mode: mode must be 'allowl"),
        (HEADER.replace("version: 1", "version: one"), ":2: version: version must be a whole"),
        (HEADER.replace("policy: demo", "policy: 'no spaces'"), ":1: policy: policy id must"),
        (HEADER.replace("org: shop", "org: 'the shop'"), ":3: org: org must be"),
        (HEADER.replace("  scope: monitoring", "  scope: 3"), ":6: consent.scope: must be a str"),
        ("- just\n- a list\n", "must be a mapping"),
    ],
)
def test_bad_headers(tmp_path: Path, doc: str, expected: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(doc, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_empty_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the policy"):
        load_policy(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="the policy file is empty"):
        load_policy(tmp_path / "empty.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_policy(tmp_path / "bin.yaml")


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("{", "not a JSON extraction manifest"),
        ('{"a": 1}', "no 'attribute_extraction' object"),
        ('{"attribute_extraction": {"A": "x"}}', "must be a list of keys"),
        ('{"attribute_extraction": {}, "case_id": "case:id"}', "cannot be honoured"),
        ('{"attribute_extraction": {}, "colour": 1}', "unknown manifest key 'colour'"),
    ],
)
def test_bad_manifests(tmp_path: Path, manifest: str, expected: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(manifest)
    with pytest.raises(ConfigError, match=expected):
        load_policy(path)


def test_constructors_check_their_settings() -> None:
    with pytest.raises(ValueError, match="mode must be"):
        Policy(id="p", version=1, org="o", mode="open", scope="s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scope"):
        Policy(id="p", version=1, org="o", mode="denylist", scope=" ")
    with pytest.raises(ValueError, match="either a width or edges"):
        Bucket()
    policy = parse_policy(
        {"policy": "p", "version": 1, "mode": "allowlist", "consent": {"scope": "s"}}
    )
    assert policy.org == ""
    assert policy.activities is None  # absent section: no restriction


def test_a_policy_may_be_written_as_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(
        json.dumps(
            {
                "policy": "j",
                "version": 1,
                "mode": "denylist",
                "consent": {"scope": "s"},
                "activities": ["A"],
            }
        )
    )
    assert load_policy(path).activities is not None
    path.write_text(json.dumps({"policy": "j", "version": 1, "mode": "denylist"}))
    with pytest.raises(ConfigError, match="missing required key 'consent'"):
        load_policy(path)
