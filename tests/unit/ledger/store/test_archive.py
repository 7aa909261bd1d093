"""``ledger.store.archive``: old segments move to day partitions, verified, flag log stays."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ledger.errors import StoreError
from ledger.events import encode_event
from ledger.store import LedgerWriter, SourceRecord, archive_before, open_reader
from tests.unit.store_factories import T0, flag_changed, operation


def daily_ledger(path: Path, days: int = 5) -> int:
    """One segment per day (offsets go on): two operations a day; the flag log on day 0."""
    offset = 0
    with LedgerWriter(path, fsync=False) as writer:
        for day in range(days):
            events = [
                operation(day * 10 + k).model_copy(
                    update={"started_at": T0 + timedelta(days=day, minutes=k)}
                )
                for k in range(2)
            ]
            if day == 0:
                events.append(flag_changed(1))
            records = []
            for event in events:
                records.append(SourceRecord("t.events", 0, offset, None, encode_event(event)))
                offset += 1
            writer.write_batch(records)
    return offset


def count(con: object, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[attr-defined]


def test_archive_moves_old_segments_and_keeps_the_flag_log_and_the_newest(tmp_path: Path) -> None:
    ledger, out = tmp_path / "ledger", tmp_path / "archive"
    daily_ledger(ledger)
    result = archive_before(ledger, T0 + timedelta(days=3), out)
    # Day 0 holds the flag log, day 3 is not before the cut, day 4 is the newest segment.
    assert len(result.archived) == 2
    assert result.rows == {"operations": 4}
    reasons = [why for _, why in result.kept]
    assert reasons[0] == "holds 1 flag_events rows (the flag log is never archived)"
    assert reasons[1].startswith("operations has rows at ")
    assert reasons[2] == "newest segment of its partition (the committed offset)"
    days = sorted(p.parent.name for p in out.glob("operations/day=*/*.parquet"))
    assert days == ["day=2025-03-02", "day=2025-03-03"]
    con = open_reader(ledger)
    try:
        assert count(con, "operations") == 6
        assert count(con, "flag_events") == 1
    finally:
        con.close()
    both = open_reader(ledger, archive=out)
    try:
        assert count(both, "operations") == 10
        assert [r[0] for r in both.execute(
            "SELECT event_id FROM operations ORDER BY started_at"
        ).fetchall()] == [f"op-{d * 10 + k}-v1" for d in range(5) for k in range(2)]  # fmt: skip
    finally:
        both.close()


def test_the_manifest_records_counts_and_hashes_and_a_second_run_adds_to_it(
    tmp_path: Path,
) -> None:
    import json

    ledger, out = tmp_path / "ledger", tmp_path / "archive"
    daily_ledger(ledger, days=6)
    archive_before(ledger, T0 + timedelta(days=2), out)
    archive_before(ledger, T0 + timedelta(days=4), out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["rows"] for e in manifest["segments"]] == [2, 2, 2]
    assert all(len(e["md5"]) == 32 for e in manifest["segments"])
    assert len({e["segment"] for e in manifest["segments"]}) == 3


def test_a_dry_run_changes_nothing(tmp_path: Path) -> None:
    ledger, out = tmp_path / "ledger", tmp_path / "archive"
    daily_ledger(ledger)
    result = archive_before(ledger, T0 + timedelta(days=3), out, dry_run=True)
    assert len(result.archived) == 2
    assert not out.exists()
    con = open_reader(ledger)
    try:
        assert count(con, "operations") == 10
    finally:
        con.close()


def test_archive_refuses_while_another_writer_holds_the_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    daily_ledger(ledger)
    with LedgerWriter(ledger, fsync=False), pytest.raises(StoreError, match="being written"):
        archive_before(ledger, T0 + timedelta(days=3), tmp_path / "archive")


def test_the_writer_resumes_after_an_archive(tmp_path: Path) -> None:
    ledger, out = tmp_path / "ledger", tmp_path / "archive"
    offset = daily_ledger(ledger)
    archive_before(ledger, T0 + timedelta(days=3), out)
    event = operation(99).model_copy(update={"started_at": T0 + timedelta(days=6)})
    with LedgerWriter(ledger, fsync=False) as writer:
        writer.write_batch([SourceRecord("t.events", 0, offset, None, encode_event(event))])
    con = open_reader(ledger)
    try:
        assert count(con, "operations") == 7
        (last,) = con.execute("SELECT last_offset FROM committed_offsets").fetchone()  # type: ignore[misc]
        assert last == offset
    finally:
        con.close()
