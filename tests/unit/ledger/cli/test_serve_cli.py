"""`migration-ledger serve`: no public bind without a token; the token stays secret."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.settings import Settings

runner = CliRunner()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.7", "myhost"])
def test_serve_refuses_a_public_bind_without_a_token(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIGRATION_LEDGER_SERVE_TOKEN", raising=False)
    result = runner.invoke(app, ["serve", "--host", host, "--bootstrap-servers", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "MIGRATION_LEDGER_SERVE_TOKEN" in result.output
    assert f"--host {host}" in result.output


def test_the_serve_token_comes_from_the_environment_and_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIGRATION_LEDGER_SERVE_TOKEN", "do-not-print-me")
    settings = Settings()
    assert settings.serve_token is not None
    assert settings.serve_token.get_secret_value() == "do-not-print-me"
    assert "do-not-print-me" not in repr(settings)
    assert "do-not-print-me" not in str(settings.model_dump())
