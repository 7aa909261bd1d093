"""`migration-ledger worker` and `topics ensure` refuse bad input clearly, without traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from ledger.cli.app import app

runner = CliRunner()


def test_topics_ensure_without_a_broker_says_so_and_exits_non_zero() -> None:
    result = runner.invoke(
        app,
        ["topics", "ensure", "--bootstrap-servers", "127.0.0.1:1", "--connect-timeout", "0.5"],
    )
    assert result.exit_code == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in result.output
    assert "Traceback" not in result.output


def test_worker_refuses_a_pairing_timeout_that_is_not_positive() -> None:
    result = runner.invoke(app, ["worker", "--pairing-timeout", "0"])
    assert result.exit_code == 2
    assert "--pairing-timeout" in result.output


def test_worker_help_names_its_options() -> None:
    result = runner.invoke(app, ["worker", "--help"])
    assert result.exit_code == 0
    for option in ("--pairing-timeout", "--web-port", "--without-web"):
        assert option in result.output
