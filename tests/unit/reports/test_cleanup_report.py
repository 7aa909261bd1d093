"""``report cleanup`` over migrations with known timelines (flag log by the real flag code)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lastmile_factories import PINNED_SCRIPT, migration_ledger
from report_factories import T0

from reports.catalog import ReportOptions, build_report


def judge(path: Path, now: datetime, min_days: float = 7.0) -> Any:
    from ledger.store import open_reader

    con = open_reader(path)
    try:
        options = ReportOptions(charts=False, extra={"now": now, "min_days": min_days})
        return build_report(con, "cleanup", options)
    finally:
        con.close()


def checks(report: Any) -> dict[str, tuple[str, str]]:
    return {r["check"]: (r["status"], r["figure"]) for r in report.section("checklist").records()}


def test_sixteen_days_at_100_percent_with_shadow_off_is_ready(tmp_path: Path) -> None:
    path, _ = migration_ledger(tmp_path / "ledger")
    report = judge(path, T0 + timedelta(days=20))
    got = checks(report)
    assert report.passed is True
    assert {status for status, _ in got.values()} == {"PASS"}
    since = T0 + timedelta(days=4)
    assert got["v2_at_100_percent"][1] == f"16.00 days at 100 % (since {since.isoformat()})"
    assert got["no_decision_served_by_v1"][1] == "0 decisions"
    # V1 still ran as shadow between day 4 and day 5 (4 operations), listed, not failed.
    refs = report.section("references").records()
    assert [(r["kind"], r["name"], r["count"]) for r in refs] == [
        ("operation", "execute_program", 4)
    ]


def test_too_few_days_at_100_percent_is_not_ready(tmp_path: Path) -> None:
    path, _ = migration_ledger(tmp_path / "ledger")
    report = judge(path, T0 + timedelta(days=8))
    got = checks(report)
    assert report.passed is False
    assert got["v2_at_100_percent"] == (
        "FAIL",
        f"4.00 days at 100 % (since {(T0 + timedelta(days=4)).isoformat()})",
    )
    assert got["no_rollback_since"][0] == "PASS"


def test_before_the_ramp_ends_every_flag_condition_fails(tmp_path: Path) -> None:
    path, _ = migration_ledger(tmp_path / "ledger")
    report = judge(path, T0 + timedelta(days=3, hours=12))  # after the rollback, before 100 %
    got = checks(report)
    assert got["v2_at_100_percent"] == ("FAIL", "V2 is not at 100 % now")
    assert got["no_rollback_since"][0] == "FAIL"
    assert got["no_rollback_since"][1].startswith(
        f"last rollback {(T0 + timedelta(days=2)).isoformat()}"
    )
    assert got["shadow_off"] == ("FAIL", "on")


def test_a_session_pinned_to_v1_and_a_dead_letter_block_the_cleanup(tmp_path: Path) -> None:
    path, built = migration_ledger(tmp_path / "ledger", PINNED_SCRIPT, dead_letter_day=10)
    report = judge(path, T0 + timedelta(days=20))
    got = checks(report)
    assert report.passed is False
    assert got["no_override_pinned_to_v1"] == ("FAIL", "session s003")
    pinned = [d for d in built.decisions if d.pool == "v1" and d.at >= T0 + timedelta(days=4)]
    # Operation i starts at 6 h * i; s003 is i % 5 == 3; pinned from day 6 (i >= 24): 28..78.
    assert len(pinned) == 11
    assert got["no_decision_served_by_v1"] == ("FAIL", "11 decisions")
    assert got["no_unresolved_dead_letters"] == ("FAIL", "1 dead letters")
    refs = [
        (r["kind"], r["name"], r["detail"], r["count"])
        for r in report.section("references").records()
    ]
    assert refs[0] == ("session", "s003", "session override pinned to v1", 0)
    assert ("session", "s003", "decisions served by V1 since V2 reached 100 %", 11) in refs
    assert ("environment", "(none)", "decisions served by V1 since V2 reached 100 %", 11) in refs
