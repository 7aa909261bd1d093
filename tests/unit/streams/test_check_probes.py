"""What `check` observes of a ledger folder without a broker: absent, foreign, written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger.checks import Status, Thresholds, judge_store
from ledger.cli.probes import observe_store
from ledger.settings import Settings

pytest.importorskip("ledger.store.writer")


def at(settings: Settings, location: Path) -> Settings:
    return settings.model_copy(update={"duckdb": location})


def test_a_location_that_does_not_exist_is_no_ledger_yet(settings: Settings) -> None:
    seen = observe_store(settings, timeout_s=1.0)
    assert seen.exists is False


def test_an_empty_folder_is_no_ledger_yet(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert observe_store(at(settings, tmp_path / "empty"), timeout_s=1.0).exists is False


def test_a_folder_of_other_things_fails_naming_the_missing_marker(
    settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a ledger")
    seen = observe_store(at(settings, folder), timeout_s=1.0)
    finding = judge_store(seen, Thresholds(), now=datetime.now(UTC))
    assert finding.status is Status.FAIL
    assert "LEDGER marker" in finding.figure


def test_a_written_ledger_shows_its_rows_and_last_commit_but_no_lag_without_kafka(
    settings: Settings, tmp_path: Path
) -> None:
    from ledger.store.writer import LedgerWriter, SourceRecord

    location = tmp_path / "ledger"
    before = datetime.now(UTC) - timedelta(seconds=2)
    with LedgerWriter(location, fsync=False) as writer:
        writer.write_batch(
            # Bytes that are not events: stored as dead letters, rows all the same.
            SourceRecord("p.pool.operations", 0, i, None, b"not json %d" % i)
            for i in range(3)
        )
    seen = observe_store(at(settings, location), timeout_s=1.0)
    assert seen.rows == 3
    assert seen.lag is None
    assert seen.last_commit_at is not None
    assert seen.last_commit_at >= before
