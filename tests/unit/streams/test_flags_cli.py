"""The `flags` command line: values are parsed strictly before anything is published."""

from __future__ import annotations

from typer.testing import CliRunner

from ledger.cli.app import app

runner = CliRunner()


def test_bad_value_exits_2_before_anything_is_sent() -> None:
    result = runner.invoke(
        app,
        [
            "flags",
            "set",
            "v2_rollout_percentage",
            "250",
            "--reason",
            "ramp",
            "--bootstrap-servers",
            "127.0.0.1:1",
        ],
    )
    assert result.exit_code == 2
    assert "250" in result.output
    assert "0..100" in result.output
    assert "Traceback" not in result.output


def test_override_to_an_unknown_pool_exits_2() -> None:
    result = runner.invoke(
        app,
        [
            "flags",
            "override",
            "session",
            "s-1",
            "v3",
            "--reason",
            "pin",
            "--bootstrap-servers",
            "127.0.0.1:1",
        ],
    )
    assert result.exit_code == 2
    assert "v1, v2 or clear" in result.output
