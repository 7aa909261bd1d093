"""``report compatibility`` over a ledger with a known rename, removal, retype and error names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lastmile_factories import compatibility_ledger

from ledger.comparison import parse_rules
from reports.catalog import ReportOptions, build_report


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ledger.store import open_reader

    path, _ = compatibility_ledger(tmp_path_factory.mktemp("compat") / "ledger")
    con = open_reader(path)
    try:
        return build_report(con, "compatibility", ReportOptions(charts=False))
    finally:
        con.close()


def test_paths_only_in_one_pool_and_type_changes_with_their_shares(report: Any) -> None:
    rows = {(r["path"], r["status"]): r for r in report.section("paths").records()}
    assert set(rows) == {
        ("user_name", "only_v1"),
        ("legacy", "only_v1"),
        ("username", "only_v2"),
        ("age", "type_change"),
    }
    assert rows[("legacy", "only_v1")]["v1_share"] == 1.0  # 10 V1 answers, all with it
    assert rows[("username", "only_v2")]["v2_share"] == 1.0  # 11 V2 answers
    assert rows[("age", "type_change")]["v2_types"] == "number/string"
    assert rows[("age", "type_change")]["example_correlation_id"] == "c00"


def test_mismatch_rate_per_path_counts_comparisons_with_both_halves(report: Any) -> None:
    rows = {r["path"]: r for r in report.section("mismatches").records()}
    # 13 comparisons; 10 with both answers carry the rename and the removal; 3 retype age.
    assert rows["user_name"]["mismatches"] == 10
    assert rows["user_name"]["comparisons"] == 13
    assert rows["user_name"]["rate"] == round(10 / 13, 4)
    assert rows["age"]["mismatches"] == 3
    assert rows["age"]["example_correlation_id"] == "c07"


def test_error_types_per_pool_say_whether_a_rule_maps_them(report: Any) -> None:
    rows = {(r["pool"], r["native_type"]): r for r in report.section("errors").records()}
    assert rows[("v1", "db_gone")]["count"] == 2
    assert rows[("v1", "db_gone")]["mapped"] is False
    assert rows[("v1", "db_gone")]["canonical"] == "system"
    assert rows[("v2", "connection_error")]["mapped"] is True
    assert rows[("v2", "connection_error")]["canonical"] == "connection"
    assert rows[("v1", "weird_fail")]["mapped"] is False


def test_breaking_changes_name_the_removal_and_the_retype_with_their_translation(
    report: Any,
) -> None:
    rows = {(r["path"], r["change"]): r for r in report.section("breaking").records()}
    assert set(rows) == {("user_name", "removed"), ("legacy", "removed"), ("age", "type")}
    assert rows[("age", "type")]["share"] == round(3 / 11, 4)
    assert rows[("user_name", "removed")]["translation"] == "rename user_name -> username"
    assert rows[("legacy", "removed")]["translation"] == ""


def test_draft_rules_parse_and_propose_the_rename_and_the_error_mapping(report: Any) -> None:
    text = "\n".join(r["line"] for r in report.section("draft_rules").records()) + "\n"
    rules = parse_rules(text, "draft.toml")
    assert rules.normalizer("v1").rename == {"user_name": "username"}
    assert rules.normalizer("v1").errors.exact["db_gone"] == "connection"
    assert '# "weird_fail" = "?"' in text


def test_a_higher_breaking_share_leaves_the_minor_retype_out(tmp_path: Path) -> None:
    from ledger.store import open_reader

    path, _ = compatibility_ledger(tmp_path / "ledger")
    con = open_reader(path)
    try:
        built = build_report(
            con, "compatibility", ReportOptions(charts=False, extra={"breaking_share": 0.5})
        )
    finally:
        con.close()
    assert {r["path"] for r in built.section("breaking").records()} == {"user_name", "legacy"}


def test_a_pair_sample_is_seeded_and_keeps_its_size(tmp_path: Path) -> None:
    from ledger.store import open_reader

    path, _ = compatibility_ledger(tmp_path / "ledger")
    con = open_reader(path)
    try:
        options = ReportOptions(charts=False, extra={"pair_limit": 5})
        first = build_report(con, "compatibility", options)
        again = build_report(con, "compatibility", options)
    finally:
        con.close()
    assert first.meta["pairs"] == 5
    assert first.meta["pairs_sampled"] is True
    assert first.section("paths").rows == again.section("paths").rows
