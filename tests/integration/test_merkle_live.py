"""Signed checkpoints end to end on the real broker: the flag log writer publishes them, the
sink stores them with its own per-commit checkpoints, and the audit verifies both."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_support import Worker
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.kafka.admin import ensure_topics
from ledger.settings import Settings

runner = CliRunner()


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_the_worker_and_the_sink_sign_checkpoints_that_the_audit_verifies(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = cli("keys", "generate", "--out", str(tmp_path / "keys"))
    assert code == 0, out
    key = str(tmp_path / "keys" / "ledger-signing.key")
    monkeypatch.setenv("MIGRATION_LEDGER_SIGNING_KEY", key)  # the worker subprocess inherits it
    ensure_topics(settings)
    common = ["--bootstrap-servers", settings.bootstrap_servers]
    common += ["--topic-prefix", settings.topic_prefix]
    worker = Worker(settings, tmp_path, pairing_timeout=5)
    worker.start()
    try:
        code, out = cli("flags", "set", "v2_pool_enabled", "true", "--reason", "go",
                        "--timeout", "60", *common)  # fmt: skip
        assert code == 0, out + worker.tail()
        code, out = cli("flags", "set", "v2_pool_enabled", "true", "--reason", "again",
                        "--timeout", "60", *common)  # fmt: skip
        assert code == 1, out  # rejected: no change; still a leaf of the flag log's tree
    finally:
        assert worker.stop() == 0
    ledger = str(settings.duckdb)
    env = {"MIGRATION_LEDGER_SIGNING_KEY": key}
    code, out = cli("sink", "--until-idle", "3", "--no-fsync", "--quiet", "--duckdb", ledger,
                    *common, env=env)  # fmt: skip
    assert code == 0, out
    held = tmp_path / "held.json"
    code, out = cli("checkpoint", "--out", str(held), "--duckdb", ledger)
    assert code == 0, out
    flag_origin = f"migration-ledger/flag-log/{settings.topic('flag_events')}"
    assert f"{flag_origin}: 2 records" in out
    assert "UNSIGNED" not in out
    public = tmp_path / "keys" / "ledger-signing.pub"
    code, out = cli("audit", "--checkpoint", str(held), "--public-key", str(public),
                    "--duckdb", ledger)  # fmt: skip
    assert code == 0, out
    assert "the flag log" in out
    assert "CHECKPOINTS VERIFIED" in out
