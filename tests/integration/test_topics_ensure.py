"""`migration-ledger topics ensure` on the real broker: creates, then checks."""

from __future__ import annotations

from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.kafka.admin import ensure_topics
from ledger.kafka.topics import TOPIC_SPECS, topic_name
from ledger.settings import Settings

runner = CliRunner()


def test_ensure_creates_missing_topics_then_finds_them_present(settings: Settings) -> None:
    first = ensure_topics(settings)
    assert set(first.created) == {topic_name(settings, s.logical) for s in TOPIC_SPECS}
    second = ensure_topics(settings)
    assert second.created == ()
    assert second.mismatches == ()


def test_ensure_reports_a_partition_mismatch_and_exits_3(settings: Settings) -> None:
    ensure_topics(settings)
    result = runner.invoke(
        app,
        [
            "topics",
            "ensure",
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
        ],
        env={"MIGRATION_LEDGER_PARTITIONS": str(settings.partitions + 1), "COLUMNS": "200"},
    )
    assert result.exit_code == 3
    assert "MISMATCH" in result.output
    assert f"partitions is {settings.partitions}, expected {settings.partitions + 1}" in (
        result.output
    )
