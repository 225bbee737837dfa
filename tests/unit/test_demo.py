"""``procvault demo``'s parts that run without a broker: the bundle, the stream, the carrier's
policy on it, the self-check's verdicts, ``keys init --if-missing``, the packaging."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from procvault.demo.bundle import Bundle
from procvault.demo.check import compare_cases, scan_bytes, vault_case_results
from procvault.demo.stream import needles, share_sizes, simulate_orders, write_stream

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def orders() -> list:
    return simulate_orders(60, seed=3)


def test_bundled_copies_equal_the_examples() -> None:
    b = Bundle.default()
    assert b.model.read_bytes() == (REPO / "examples" / "order_to_cash.pnml").read_bytes()
    assert b.split_map.read_bytes() == (REPO / "examples" / "order_to_cash_orgs.yaml").read_bytes()
    assert (
        b.results_policy.read_bytes()
        == (REPO / "policies" / "consortium" / "full.yaml").read_bytes()
    )


def test_the_bundle_loads_as_the_commands_load_it() -> None:
    from procvault.config.dp import load_dp_policy
    from procvault.config.engines import load_engines
    from procvault.organization.policy import PolicyEngine
    from procvault.organization.policy.pseudonym import PseudonymKey

    b = Bundle.default()
    engines = load_engines(str(b.model), str(b.rules))
    assert engines.rules is not None and len(engines.rules) == 3
    load_dp_policy(b.dp_policy)
    PolicyEngine.from_file(b.carrier_policy, key=PseudonymKey(b"k" * 32))
    assert b.orgs == ("customer", "supplier", "carrier")


def test_every_package_and_data_file_is_in_the_wheel() -> None:
    """pyproject's package list names every package folder (a wheel holds nothing else), and
    the demo's data files match its package-data globs."""
    tool = PYPROJECT["tool"]["setuptools"]
    listed = set(tool["packages"])
    mapping = tool["package-dir"]
    for name, folder in mapping.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(REPO / folder)
            package = ".".join([name, *rel.parts])
            if ".venv" not in init.parts and "build" not in init.parts:
                assert package in listed, f"{package} is not in pyproject's packages"
    globs = tool["package-data"]["procvault.demo"]
    data = REPO / "procvault" / "demo" / "data"
    for path in data.iterdir():
        assert any(fnmatch(f"data/{path.name}", g) for g in globs), path.name


def test_the_stream_is_seeded_and_crosses_the_three_organizations(
    orders: list, tmp_path: Path
) -> None:
    again = simulate_orders(60, seed=3)
    assert again == orders
    assert simulate_orders(60, seed=4) != orders
    cases = {e.case_id for e in orders}
    assert all(re.fullmatch(r"order-03-\d{6}", c) for c in cases)
    log = tmp_path / "s.xes"
    assert write_stream(orders, log) == len(cases)
    shares = share_sizes(log, Bundle.default().split_map)
    assert set(shares) == {"customer", "supplier", "carrier"}
    assert sum(shares.values()) == len(orders) + len(cases)  # events and end markers


def test_the_carrier_policy_pseudonymises_and_scrubs_what_the_stream_holds(orders: list) -> None:
    """Every clear value of the carrier's events that identifies someone (driver, recipient,
    phone number, position) is gone after its policy; the activity and case id stay."""
    from procvault.generators.split import ActivityMapping, assign
    from procvault.organization.policy import PolicyEngine
    from procvault.organization.policy.pseudonym import PseudonymKey

    b = Bundle.default()
    engine = PolicyEngine.from_file(b.carrier_policy, key=PseudonymKey(b"k" * 32))
    split = assign(orders, ActivityMapping.from_file(b.split_map))
    carrier = [e for e in split if e.org == "carrier"]
    assert carrier
    for ev in carrier:
        (sent,) = engine.apply(ev)
        if True:
            assert sent.case_id == ev.case_id and sent.activity == ev.activity
            assert sent.resource is None or sent.resource.startswith("r_")
            text = repr(sent.attributes)
            for key in ("driver", "gps_position", "delivery_note"):
                value = ev.attr(key)
                if value is not None:
                    assert str(value) not in text, (key, text)
            note = sent.attr("delivery_note")
            if note is not None:
                assert "[NAME]" in note and "[PHONE]" in note, note
                assert not re.search(r"\d{4}", note), note


def test_needles_are_long_strings_only(orders: list) -> None:
    data, activities = needles(orders)
    assert all(len(n) >= 6 for n in data | activities)
    assert {e.case_id.encode() for e in orders} <= data
    assert b"Ship Goods" in activities and b"5200" not in data


def test_the_case_check_fails_on_any_difference() -> None:
    ref = {
        f"c{i}": {"case": f"c{i}", "fitness": 1.0, "rules": {"r": "Satisfied"}} for i in range(3)
    }
    assert compare_cases(ref, {k: dict(v) for k, v in ref.items()}).ok
    changed = {k: dict(v) for k, v in ref.items()}
    changed["c1"]["rules"] = {"r": "Violated"}
    assert not compare_cases(ref, changed).ok
    assert not compare_cases(ref, {k: v for k, v in ref.items() if k != "c2"}).ok
    assert not compare_cases(ref, {**ref, "c9": {"case": "c9"}}).ok
    items = [{"type": "case", "case": "c1", "fitness": 1.0, "sent_us": 5, "own_events": 2}]
    assert vault_case_results(items) == {"c1": {"case": "c1", "fitness": 1.0}}
    with pytest.raises(ValueError, match="different results"):
        vault_case_results([*items, {**items[0], "fitness": 0.5}])


def test_the_scan_finds_values_anywhere_and_activities_outside_the_aggregates() -> None:
    topics = {
        "p.events.lab": [b"\x01\x02ciphertext"],
        "p.results.aggregates": [b'{"Ship Goods": 3}'],
    }
    assert scan_bytes(topics, {b"order-01-000001"}, {b"Ship Goods"}, "p.results.aggregates").ok
    leaked = {**topics, "p.vault.changelog": [b"key|..order-01-000001.."]}
    check = scan_bytes(leaked, {b"order-01-000001"}, {b"Ship Goods"}, "p.results.aggregates")
    assert not check.ok and "p.vault.changelog" in check.detail
    moved = {"p.events.lab": [b"..Ship Goods.."], "p.results.aggregates": []}
    assert not scan_bytes(moved, set(), {b"Ship Goods"}, "p.results.aggregates").ok
    in_aggs = {"p.results.aggregates": [b"order-01-000001"]}
    assert not scan_bytes(in_aggs, {b"order-01-000001"}, set(), "p.results.aggregates").ok


def _keys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "procvault", "keys", "init", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_keys_init_if_missing_keeps_a_whole_keyring(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    first = _keys(str(d), "--orgs", "lab,ward", "--if-missing")
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    again = _keys(str(d), "--orgs", "lab,ward", "--if-missing")
    assert again.returncode == 0 and "kept" in again.stderr, again.stderr
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    refused = _keys(str(d), "--orgs", "lab,ward")
    assert refused.returncode == 2 and "already exists" in refused.stderr
    other = _keys(str(d), "--orgs", "lab,ward,er", "--if-missing")
    assert other.returncode == 2 and "registers ['lab', 'ward']" in other.stderr, other.stderr
    assert "Traceback" not in other.stderr
    (d / "org-ward.json").unlink()
    partial = _keys(str(d), "--orgs", "lab,ward", "--if-missing")
    assert partial.returncode == 2 and "incomplete keyring" in partial.stderr, partial.stderr


def test_vault_takes_expect_orgs() -> None:
    from procvault.cli import build_parser

    args = build_parser().parse_args(
        ["vault", "--kafka", "h:1", "--keys", "k", "--rules", "r", "--expect-orgs", "lab,ward"]
    )
    assert args.expect_orgs == ("lab", "ward")
