"""``report compatibility | cleanup | post-migration`` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

from lastmile_factories import compatibility_ledger, migration_ledger
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.comparison import load_rules

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_compatibility_writes_a_draft_rules_file_the_rules_loader_reads(tmp_path: Path) -> None:
    path, _ = compatibility_ledger(tmp_path / "ledger")
    draft = tmp_path / "draft.toml"
    code, out, _ = run(
        "report", "compatibility", "-f", "json", "--draft-rules", str(draft),
        "--duckdb", str(path),
    )  # fmt: skip
    assert code == 0
    document = json.loads(out)
    assert document["meta"]["breaking_changes"] == 3
    assert load_rules(draft).normalizer("v1").rename == {"user_name": "username"}


def test_compatibility_html_is_one_page_with_the_breaking_table(tmp_path: Path) -> None:
    path, _ = compatibility_ledger(tmp_path / "ledger")
    page = tmp_path / "compat.html"
    code, _, _ = run(
        "report", "compatibility", "-f", "html", "-o", str(page), "--duckdb", str(path)
    )
    assert code == 0
    text = page.read_text()
    assert "Breaking changes" in text
    assert "rename user_name -&gt; username" in text


def test_compatibility_refuses_an_unreadable_rules_file(tmp_path: Path) -> None:
    path, _ = compatibility_ledger(tmp_path / "ledger")
    code, _, err = run(
        "report", "compatibility", "--rules", str(tmp_path / "none.toml"), "--duckdb", str(path)
    )
    assert code == 2
    assert "none.toml" in err


def test_cleanup_exits_1_while_not_ready_and_0_once_ready(tmp_path: Path) -> None:
    path, _ = migration_ledger(tmp_path / "ledger")
    code, out, _ = run(
        "report", "cleanup", "--now", "2025-03-09T10:00:00+00:00", "--duckdb", str(path)
    )
    assert code == 1
    assert "v2_at_100_percent" in out
    assert "FAIL" in out
    code, out, _ = run(
        "report", "cleanup", "--now", "2025-03-21T10:00:00+00:00", "--min-days", "14",
        "-f", "json", "--duckdb", str(path),
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["passed"] is True


def test_cleanup_refuses_a_time_without_offset(tmp_path: Path) -> None:
    path, _ = migration_ledger(tmp_path / "ledger")
    code, _, err = run("report", "cleanup", "--now", "2025-03-09T10:00:00", "--duckdb", str(path))
    assert code == 2
    assert "--now" in err


def test_post_migration_json_names_the_periods(tmp_path: Path) -> None:
    path, _ = migration_ledger(tmp_path / "ledger")
    code, out, _ = run(
        "report", "post-migration", "-f", "json", "--seed", "1", "--duckdb", str(path)
    )
    assert code == 0
    document = json.loads(out)
    assert [r["period"] for r in document["sections"]["periods"]] == ["baseline", "now"]
    assert document["meta"]["seed"] == 1
