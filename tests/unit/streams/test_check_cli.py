"""`migration-ledger check` from the command line when nothing answers (no broker needed)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.settings import Settings


def invoke(settings: Settings, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        [
            "check",
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
            "--duckdb",
            str(settings.duckdb),
            "--timeout",
            "1",
            *extra,
        ],
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout


def test_dead_broker_fails_the_check_and_skips_what_depends_on_it(settings: Settings) -> None:
    code, out = invoke(settings, "--format", "json")
    assert code == 1
    lines = {line["check"]: line for line in json.loads(out)["checks"]}
    assert lines["broker"]["status"] == "FAIL"
    assert settings.bootstrap_servers in lines["broker"]["figure"]
    assert lines["topics"]["status"] == "SKIP"
    assert lines["flag log"]["status"] == "SKIP"
    assert lines["worker"]["status"] == "SKIP"
    assert lines["sink"]["status"] == "WARN"


def test_table_output_ends_with_the_go_no_go_verdict(settings: Settings) -> None:
    code, out = invoke(settings)
    assert code == 1
    assert "FAIL" in out
    assert "NO-GO: 1 WARN, 1 FAIL, 3 SKIP" in out


def test_nonsense_settings_are_refused_with_a_message_not_a_traceback(
    settings: Settings,
) -> None:
    result = CliRunner().invoke(app, ["check", "--flag", ""])
    assert result.exit_code == 2
    assert "flag" in result.output
    assert "Traceback" not in result.output
