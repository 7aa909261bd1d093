"""The switchover and rollback commands: wiring, and clear errors without a traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from ledger.cli.app import app
from tests.conftest import OFFLINE_BOOTSTRAP

runner = CliRunner()


def test_the_switchover_commands_are_registered() -> None:
    result = runner.invoke(app, ["switchover", "--help"])

    assert result.exit_code == 0
    for command in ("status", "start", "pause", "resume", "promote"):
        assert command in result.output


def test_rollback_requires_a_reason() -> None:
    result = runner.invoke(app, ["rollback"])

    assert result.exit_code != 0
    assert "--reason" in result.output


def test_an_unknown_plan_is_refused_before_touching_kafka(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "switchover",
            "start",
            "--reason",
            "go",
            "--plan",
            str(tmp_path / "missing.toml"),
            "--bootstrap-servers",
            OFFLINE_BOOTSTRAP,
        ],
    )

    assert result.exit_code == 1
    assert "missing.toml" in result.output
    assert "Traceback" not in result.output


def test_an_unreachable_broker_is_a_clear_error() -> None:
    result = runner.invoke(app, ["switchover", "status", "--bootstrap-servers", OFFLINE_BOOTSTRAP])

    assert result.exit_code == 1
    assert "cannot reach Kafka" in result.output
    assert "Traceback" not in result.output
