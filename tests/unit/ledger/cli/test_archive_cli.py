"""``archive`` and ``--archive`` on ``sql``, ``report`` and ``audit`` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ledger.cli.app import app
from tests.unit.ledger.store.test_archive import daily_ledger

runner = CliRunner()


def test_archive_then_read_live_and_archived_rows_together(tmp_path: Path) -> None:
    ledger, out = tmp_path / "ledger", tmp_path / "archive"
    daily_ledger(ledger)
    result = runner.invoke(
        app, ["archive", "--before", "2025-03-04", "--out", str(out), "--duckdb", str(ledger)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"archived 2 segments (4 operations) to {out}")
    assert "kept " in result.stdout
    query = "SELECT count(*) AS n FROM operations"
    live = runner.invoke(app, ["sql", query, "-f", "json", "--duckdb", str(ledger)])
    both = runner.invoke(
        app, ["sql", query, "-f", "json", "--duckdb", str(ledger), "--archive", str(out)]
    )
    assert json.loads(live.stdout) == [{"n": 6}]
    assert json.loads(both.stdout) == [{"n": 10}]
    report = runner.invoke(
        app, ["report", "summary", "-f", "json", "--duckdb", str(ledger), "--archive", str(out)]
    )
    assert report.exit_code == 0, report.output
    overview = {r["table"]: r["events"] for r in json.loads(report.stdout)["sections"]["overview"]}
    assert overview["operations"] == 10
    # The factory's flag log has made-up hashes: the audit's verdict is the same either way.
    audit = runner.invoke(app, ["audit", "--duckdb", str(ledger), "--archive", str(out)])
    plain = runner.invoke(app, ["audit", "--duckdb", str(ledger)])
    assert (audit.exit_code, plain.exit_code) == (1, 1)
    assert "AUDIT FAILED at v2_migration version 1" in audit.stdout


def test_archive_refuses_a_time_without_offset_and_a_folder_that_is_no_archive(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    daily_ledger(ledger)
    bad = runner.invoke(
        app, ["archive", "--before", "2025-03-04T00:00", "--out", "x", "--duckdb", str(ledger)]
    )
    assert bad.exit_code == 2
    (tmp_path / "empty").mkdir()
    read = runner.invoke(
        app, ["sql", "SELECT 1", "--duckdb", str(ledger), "--archive", str(tmp_path / "empty")]
    )
    assert read.exit_code == 1
    assert "not an archive" in read.stderr
