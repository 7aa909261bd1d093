"""The ledger folder: batches, dedupe, offsets in names, compaction, crashes, readers, export."""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import StoreError
from ledger.events import EVENT_TYPES, Event, decode_event, encode_event
from ledger.store import (
    EVENT_TABLE,
    TABLES,
    LedgerWriter,
    SourceRecord,
    export_ledger,
    ingest_files,
    open_reader,
    refresh_reader,
)
from ledger.store.layout import Layout, Segment
from tests.unit.store_factories import comparison, every_type, operation, records

PROVENANCE = "_topic, _partition, _offset, _key"


def writer(path: Path, **kwargs: Any) -> LedgerWriter:
    # fsync costs milliseconds per file and proves nothing in a unit test.
    return LedgerWriter(path, fsync=False, **kwargs)


def rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    """A table's event columns (no provenance), ordered by event id."""
    con = open_reader(path)
    try:
        return con.sql(f"SELECT * EXCLUDE ({PROVENANCE}) FROM {table} ORDER BY event_id").fetchall()
    finally:
        con.close()


def count(path: Path, sql: str) -> Any:
    con = open_reader(path)
    try:
        return con.sql(sql).fetchall()[0][0]
    finally:
        con.close()


def expected_counts(events: list[Event]) -> dict[str, int]:
    distinct: dict[str, set[str]] = {name: set() for name in TABLES}
    for event in events:
        distinct[EVENT_TABLE[event.type]].add(event.event_id)  # type: ignore[attr-defined]
    return {name: len(ids) for name, ids in distinct.items()}


def stored_counts(path: Path) -> dict[str, int]:
    return {name: count(path, f"SELECT count(*) FROM {name}") for name in TABLES}


# --- schema -----------------------------------------------------------------------------------


def test_every_event_field_has_a_column_of_the_same_name_in_its_table() -> None:
    for event_type, model in EVENT_TYPES.items():
        table = TABLES[EVENT_TABLE[event_type]]
        names = {c.name for c in table.columns}
        assert set(model.model_fields) <= names, (event_type, set(model.model_fields) - names)


def test_every_event_type_has_a_table() -> None:
    assert set(EVENT_TYPES) == set(EVENT_TABLE)


def test_a_column_added_since_the_ledger_was_written_reads_as_null(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    with writer(tmp_path / "l") as w:
        w.write_batch(records(every_type(1)))
    # As an older writer left it: flag_events files without the newer `detail` column.
    for path in (tmp_path / "l" / "segments").rglob("flag_events.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["detail"]), path)
    con = open_reader(tmp_path / "l")
    assert con.sql("SELECT count(*), count(detail) FROM flag_events").fetchall() == [(2, 0)]


# --- batches ----------------------------------------------------------------------------------


def test_a_batch_lands_in_the_table_of_each_event_type(tmp_path: Path) -> None:
    events = every_type(3)
    with writer(tmp_path / "l") as w:
        result = w.write_batch(records(events))
    assert result.records == len(events)
    assert result.stored == {k: v for k, v in expected_counts(events).items() if v}
    assert stored_counts(tmp_path / "l") == expected_counts(events)


def test_typed_columns_hold_the_events_own_values(tmp_path: Path) -> None:
    op = operation(4, "v2")
    flag = every_type(1)[3]
    with writer(tmp_path / "l") as w:
        w.write_batch(records([op, flag, comparison(3)]))
    con = open_reader(tmp_path / "l")
    got = con.sql(
        "SELECT started_at, duration_ms, result, resources, typeof(result), typeof(started_at) "
        "FROM operations"
    ).fetchall()
    assert got == [
        (
            op.started_at,
            op.duration_ms,
            json.dumps(op.result, separators=(",", ":")),
            op.resources.model_dump() if op.resources else None,
            "JSON",
            "TIMESTAMP WITH TIME ZONE",
        )
    ]
    version, overrides, at = con.sql(
        'SELECT version, session_overrides, "at" FROM flag_events'
    ).fetchall()[0]
    assert (version, json.loads(overrides), at) == (
        flag.version,  # type: ignore[attr-defined]
        flag.session_overrides,  # type: ignore[attr-defined]
        flag.at,  # type: ignore[attr-defined]
    )
    differences = con.sql("SELECT differences FROM comparisons").fetchall()[0][0]
    assert json.loads(differences) == [{"path": "$.price", "kind": "value", "v1": 4.5, "v2": 5.5}]


def test_the_wire_column_keeps_the_exact_bytes_received(tmp_path: Path) -> None:
    op = operation(1)
    pretty = json.dumps(json.loads(encode_event(op)), indent=2).encode()
    with writer(tmp_path / "l") as w:
        w.write_batch([SourceRecord("t", 0, 0, None, pretty)])
    assert count(tmp_path / "l", "SELECT wire FROM operations") == pretty.decode()


def test_provenance_columns_say_where_each_row_sat_in_kafka(tmp_path: Path) -> None:
    with writer(tmp_path / "l") as w:
        w.write_batch([SourceRecord("t.ops", 3, 41, b"c-1", encode_event(operation(1)))])
    con = open_reader(tmp_path / "l")
    assert con.sql(f"SELECT {PROVENANCE} FROM operations").fetchall() == [("t.ops", 3, 41, "c-1")]


def test_views_pair_v1_and_v2_halves_with_their_comparison(tmp_path: Path) -> None:
    events: list[Event] = [operation(5, "v1"), operation(5, "v2"), comparison(5)]
    events += [operation(6, "v1")]
    with writer(tmp_path / "l") as w:
        w.write_batch(records(events))
    con = open_reader(tmp_path / "l")
    pairs = con.sql(
        "SELECT correlation_id, v1_event_id, v2_event_id, category FROM operation_pairs "
        "ORDER BY correlation_id"
    ).fetchall()
    assert pairs == [("c-5", "op-5-v1", "op-5-v2", "match"), ("c-6", "op-6-v1", None, None)]
    timeline = con.sql("SELECT count(*) FROM events").fetchall()[0][0]
    assert timeline == len(events)


# --- dedupe -----------------------------------------------------------------------------------


def test_a_repeated_event_id_is_stored_once_within_a_batch_and_across_batches(
    tmp_path: Path,
) -> None:
    op = operation(1)
    with writer(tmp_path / "l") as w:
        first = w.write_batch(
            [
                SourceRecord("t", 0, 0, None, encode_event(op)),
                SourceRecord("t", 0, 1, None, encode_event(op)),
            ]
        )
        later = w.write_batch([SourceRecord("t", 1, 0, None, encode_event(op))])
    assert (first.duplicates, later.duplicates) == (1, 1)
    assert count(tmp_path / "l", "SELECT count(*) FROM operations") == 1
    with writer(tmp_path / "l") as w:  # the id index is rebuilt from the segments
        assert w.write_batch([SourceRecord("t", 1, 1, None, encode_event(op))]).duplicates == 1


def test_a_repeated_event_id_with_other_content_is_dead_lettered_not_dropped(
    tmp_path: Path,
) -> None:
    op = operation(1)
    forged = op.model_copy(update={"duration_ms": 999.0})
    with writer(tmp_path / "l") as w:
        w.write_batch([SourceRecord("t", 0, 0, None, encode_event(op))])
        result = w.write_batch([SourceRecord("t", 0, 1, b"k", encode_event(forged))])
    assert (result.duplicates, result.dead_lettered) == (0, 1)
    con = open_reader(tmp_path / "l")
    reason, original = con.sql("SELECT reason, original_b64 FROM dead_letters").fetchall()[0]
    assert "op-1-v1" in reason
    assert "other content" in reason
    assert base64.b64decode(original) == encode_event(forged)
    assert count(tmp_path / "l", "SELECT duration_ms FROM operations") == op.duration_ms


def test_a_bad_record_dead_lettered_by_the_worker_and_by_the_sink_is_one_row(
    tmp_path: Path,
) -> None:
    from ledger.store.writer import dead_letter_for

    bad = SourceRecord("p.ops", 0, 7, b"k", b"{oops")
    from_worker = dead_letter_for(bad, "worker: not JSON", at=operation(1).started_at)
    with writer(tmp_path / "l") as w:
        own = w.write_batch([bad])  # the sink reads pool.operations too
        worker = w.write_batch([SourceRecord("p.dead", 0, 0, None, encode_event(from_worker))])
    assert (own.dead_lettered, worker.duplicates, worker.dead_lettered) == (1, 1, 0)
    assert count(tmp_path / "l", "SELECT count(*) FROM dead_letters") == 1


# --- offsets ----------------------------------------------------------------------------------


def test_committed_offsets_are_read_back_from_segment_names(tmp_path: Path) -> None:
    with writer(tmp_path / "l") as w:
        w.write_batch(records(every_type(2), topic="a", partitions=3))
        w.write_batch(records([operation(9)], topic="b", partitions=1, start=40))
        before = w.committed_offsets()
    names = sorted(p.name for p in (tmp_path / "l" / "segments").iterdir() if "+" in p.name)
    from_names = {}
    for name in names:
        segment = Segment.parse(name)
        assert segment is not None
        from_names[(segment.topic, segment.partition)] = segment.last
    with writer(tmp_path / "l") as w:
        assert w.committed_offsets() == before == from_names
    assert before[("b", 0)] == 40


def test_records_at_committed_offsets_are_skipped_when_redelivered(tmp_path: Path) -> None:
    batch = list(records(every_type(2)))
    with writer(tmp_path / "l") as w:
        w.write_batch(batch)
    with writer(tmp_path / "l") as w:
        again = w.write_batch(batch)
    assert (again.skipped, again.records, again.segments) == (len(batch), 0, 0)
    assert stored_counts(tmp_path / "l") == expected_counts(every_type(2))


def test_a_partition_whose_rename_never_happened_is_read_again_and_stored_once(
    tmp_path: Path,
) -> None:
    events = every_type(3)
    batch = list(records(events, partitions=2))
    with writer(tmp_path / "l") as w:
        w.write_batch(batch)
    # The crash came after partition 0's rename and before partition 1's.
    layout = Layout(tmp_path / "l")
    lost = next(s for s in layout.list_segments() if s.partition == 1)
    shutil.rmtree(layout.segment_dir(lost))
    with writer(tmp_path / "l") as w:
        assert ("t.events", 1) not in w.committed_offsets()
        again = w.write_batch(batch)  # the sink re-reads from the stored offsets
    assert again.skipped == sum(1 for r in batch if r.partition == 0)
    assert stored_counts(tmp_path / "l") == expected_counts(events)


# --- crashes ----------------------------------------------------------------------------------


def test_a_segment_left_in_tmp_by_a_crash_is_invisible_and_discarded(tmp_path: Path) -> None:
    with writer(tmp_path / "l") as w:
        w.write_batch(records([operation(1)], partitions=1))
        committed = w.committed_offsets()
        live = w.live_segments()[0]
    layout = Layout(tmp_path / "l")
    # A crash while writing the next batch: its files exist, but only under tmp/.
    half = layout.tmp / f"{Segment('t.events', 0, 1, 5).name}.deadbeef"
    shutil.copytree(layout.segment_dir(live), half)
    (layout.tmp / "stray.parquet.part").write_bytes(b"PAR1 half a footer")
    assert count(tmp_path / "l", "SELECT count(*) FROM operations") == 1
    with writer(tmp_path / "l") as w:
        assert w.committed_offsets() == committed
        assert list(layout.tmp.iterdir()) == []


def test_a_compaction_interrupted_after_its_rename_shows_no_duplicates(tmp_path: Path) -> None:
    with writer(tmp_path / "l") as w:
        for i in range(4):
            w.write_batch(records([operation(i)], partitions=1, start=i))
        parts = w.live_segments()
    layout = Layout(tmp_path / "l")
    # The merged segment made by hand: the parts' files side by side in one folder.
    merged = Segment("t.events", 0, parts[0].first, parts[-1].last)
    with writer(tmp_path / "other") as scratch:
        scratch.write_batch(
            SourceRecord("t.events", 0, i, None, encode_event(operation(i))) for i in range(4)
        )
        shutil.copytree(
            scratch.layout.segment_dir(scratch.live_segments()[0]), layout.segment_dir(merged)
        )
    assert count(tmp_path / "l", "SELECT count(*) FROM operations") == 4
    with writer(tmp_path / "l") as w:
        assert w.live_segments() == [merged]
    with writer(tmp_path / "l", grace_s=0.0) as w:  # the parts go once the grace is over
        assert {s.name for s in layout.list_segments()} == {merged.name}


# --- compaction -------------------------------------------------------------------------------


def test_compaction_keeps_every_row_and_the_committed_offsets(tmp_path: Path) -> None:
    events = every_type(6)
    with writer(tmp_path / "l") as w:
        for start in range(0, len(events), 4):
            w.write_batch(records(events[start : start + 4], partitions=2, start=start))
        before_offsets = w.committed_offsets()
        before_segments = len(w.live_segments())
        before = {name: rows(tmp_path / "l", name) for name in TABLES}
        result = w.compact(full=True)
        assert result.merged_segments == before_segments
        assert len(w.live_segments()) == 2  # one per partition
        assert w.committed_offsets() == before_offsets
    assert {name: rows(tmp_path / "l", name) for name in TABLES} == before
    with writer(tmp_path / "l") as w:
        assert w.committed_offsets() == before_offsets


def test_size_tiered_compaction_merges_only_full_runs_of_one_tier(tmp_path: Path) -> None:
    with writer(tmp_path / "l") as w:
        for i in range(11):
            w.write_batch(records([operation(i)], partitions=1, start=i))
        result = w.compact(fanout=4)
        sizes = [sum(w._rows[s].values()) for s in w.live_segments()]
    assert (result.merged_segments, result.new_segments) == (8, 2)
    assert sizes == [4, 4, 1, 1, 1]


def test_a_reader_opened_before_compaction_keeps_reading_its_snapshot(tmp_path: Path) -> None:
    with writer(tmp_path / "l") as w:
        for i in range(5):
            w.write_batch(records([operation(i)], partitions=1, start=i))
        con = open_reader(tmp_path / "l")
        w.compact(full=True)
        assert con.sql("SELECT count(*) FROM operations").fetchall() == [(5,)]
        refresh_reader(con, tmp_path / "l")
        assert con.sql("SELECT count(*) FROM segments").fetchall() == [(1,)]
        assert con.sql("SELECT count(*) FROM operations").fetchall() == [(5,)]


def test_replaced_segments_stay_for_the_grace_period_then_go(tmp_path: Path) -> None:
    with writer(tmp_path / "l") as w:
        for i in range(3):
            w.write_batch(records([operation(i)], partitions=1, start=i))
        assert w.compact(full=True).purged == 0
    layout = Layout(tmp_path / "l")
    assert len(layout.list_segments()) == 4
    with writer(tmp_path / "l", grace_s=0.0) as w:
        assert w.compact().purged == 0  # already gone when the writer started
    assert len(layout.list_segments()) == 1
    assert count(tmp_path / "l", "SELECT count(*) FROM operations") == 3


# --- bad input --------------------------------------------------------------------------------

BAD = {
    "not JSON": (b"{nope", "not JSON"),
    "empty value": (b"", "empty message value"),
    "tombstone": (None, "empty message value"),
    "not UTF-8": (b"\xff\xfe{}", "UTF-8"),
    "invalid field": (
        encode_event(operation(1)).replace(b'"duration_ms":11.0', b'"duration_ms":-1'),
        "duration_ms",
    ),
    "unknown type": (b'{"type":"Nope","event_id":"x"}', "type"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_record_becomes_a_dead_letter_with_reason_and_original_bytes(
    tmp_path: Path, case: str
) -> None:
    value, in_reason = BAD[case]
    good = encode_event(operation(2))
    with writer(tmp_path / "l") as w:
        result = w.write_batch(
            [SourceRecord("t.ops", 0, 7, b"key", value), SourceRecord("t.ops", 0, 8, None, good)]
        )
    assert (result.dead_lettered, result.stored) == (1, {"dead_letters": 1, "operations": 1})
    con = open_reader(tmp_path / "l")
    row = con.sql(
        "SELECT event_id, source_topic, source_partition, source_offset, original_key, reason, "
        "original_b64 FROM dead_letters"
    ).fetchall()[0]
    assert row[:5] == ("dead-letter:t.ops:0:7", "t.ops", 0, 7, "key")
    assert in_reason in row[5]
    assert base64.b64decode(row[6]) == (value or b"")


# --- readers and the writer -------------------------------------------------------------------


def test_readers_see_whole_batches_and_no_duplicates_while_the_writer_writes_and_compacts(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l"
    with writer(path) as w:
        w.write_batch(records([operation(0)], partitions=1))
        seen: list[tuple[int, int]] = []
        errors: list[BaseException] = []
        done = threading.Event()

        def read() -> None:
            try:
                while not done.is_set():
                    con = open_reader(path)
                    seen.append(
                        con.sql(
                            "SELECT count(*), count(DISTINCT event_id) FROM operations"
                        ).fetchall()[0]
                    )
                    con.close()
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for batch in range(1, 25):
                # Two rows a batch: a reader must never see one without the other.
                ops = [operation(2 * batch - 1), operation(2 * batch)]
                w.write_batch(records(ops, partitions=1, start=2 * batch - 1))
                if batch % 6 == 0:
                    w.compact(fanout=3)
        finally:
            done.set()
            reader.join(timeout=60)
    assert errors == []
    assert seen, "the reader never ran"
    totals = [total for total, _ in seen]
    assert all(total == distinct for total, distinct in seen)
    assert all(total % 2 == 1 for total in totals)
    assert totals == sorted(totals)


def test_a_second_writer_is_refused_while_one_holds_the_ledger(tmp_path: Path) -> None:
    with writer(tmp_path / "l"), pytest.raises(StoreError, match="being written"):
        writer(tmp_path / "l")
    writer(tmp_path / "l").close()  # released on close


def test_a_folder_that_is_not_a_ledger_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a ledger"):
        writer(tmp_path)
    with pytest.raises(StoreError, match="no ledger"):
        open_reader(tmp_path)
    (tmp_path / "old.duckdb").write_bytes(b"DUCK")
    with pytest.raises(StoreError, match="is a file"):
        open_reader(tmp_path / "old.duckdb")


# --- export and ingest ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
def test_export_then_ingest_gives_back_the_same_ledger(tmp_path: Path, fmt: str) -> None:
    events = every_type(4)
    pretty = json.dumps(json.loads(encode_event(operation(50))), indent=1).encode()
    with writer(tmp_path / "a") as w:
        w.write_batch(records(events, partitions=3))
        w.write_batch(
            [SourceRecord("x", 0, 0, None, b"garbage"), SourceRecord("x", 0, 1, None, pretty)]
        )
    exported = export_ledger(tmp_path / "a", tmp_path / "out", fmt)  # type: ignore[arg-type]
    assert sum(exported.events.values()) == len(events) + 2
    ingested = ingest_files(tmp_path / "b", [tmp_path / "out"], fsync=False)
    assert (ingested.dead_lettered, ingested.duplicates) == (0, 0)
    for name in TABLES:
        original, copy = rows(tmp_path / "a", name), rows(tmp_path / "b", name)
        if fmt == "ndjson" and name == "operations":  # NDJSON puts each event on one line
            original = [r[:-1] for r in original]
            copy = [r[:-1] for r in copy]
        assert copy == original, name


def test_ingesting_the_same_files_twice_adds_nothing(tmp_path: Path) -> None:
    with writer(tmp_path / "a") as w:
        w.write_batch(records(every_type(2)))
    export_ledger(tmp_path / "a", tmp_path / "out", "ndjson")
    ingest_files(tmp_path / "b", [tmp_path / "out"], fsync=False)
    again = ingest_files(tmp_path / "b", [tmp_path / "out"], fsync=False)
    assert again.stored == {}
    # Rows go back to their exported positions, so a second ingest finds them stored there.
    assert again.duplicates + again.skipped == len(every_type(2))


def test_ingest_dead_letters_bad_lines_naming_file_and_line(tmp_path: Path) -> None:
    source = tmp_path / "in.ndjson"
    source.write_bytes(encode_event(operation(1)) + b"\n\n{broken\n")
    result = ingest_files(tmp_path / "b", [source], fsync=False)
    assert (result.stored, result.dead_lettered) == ({"operations": 1, "dead_letters": 1}, 1)
    reason = count(tmp_path / "b", "SELECT reason FROM dead_letters")
    assert f"{source} line 3" in reason


def test_ingest_refuses_a_file_that_is_not_an_export(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        ingest_files(tmp_path / "b", [tmp_path / "missing.ndjson"])
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(StoreError, match="not a readable Parquet"):
        ingest_files(tmp_path / "b", [bad])


# --- the exactly-once property ----------------------------------------------------------------

Step = tuple[str, int]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    ids=st.lists(st.integers(0, 15), min_size=1, max_size=40),
    steps=st.lists(
        st.tuples(st.sampled_from(["read", "crash", "redeliver", "compact"]), st.integers(1, 9)),
        max_size=12,
    ),
)
def test_any_sequence_of_batches_crashes_and_redeliveries_stores_each_event_once(
    ids: list[int], steps: list[Step]
) -> None:
    """A sink's life: read batches from the stored offsets, crash, get records again."""
    log = [
        SourceRecord("t", i % 2, i // 2, None, encode_event(operation(event)))
        for i, event in enumerate(ids)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "l"
        w = writer(path)
        try:
            for action, size in [*steps, ("read", len(log))]:
                committed = w.committed_offsets()
                fresh = [r for r in log if r.offset > committed.get((r.topic, r.partition), -1)]
                if action == "read":
                    w.write_batch(fresh[:size])
                elif action == "redeliver":
                    w.write_batch(log[:size] + fresh[:size])
                elif action == "compact":
                    w.compact(fanout=2)
                else:  # half a batch left in tmp/, then a new writer
                    (w.layout.tmp / "t+0+x.part").mkdir()
                    w.close()
                    w = writer(path)
            assert w.committed_offsets() == {
                ("t", p): max(r.offset for r in log if r.partition == p)
                for p in {r.partition for r in log}
            }
        finally:
            w.close()
        stored = sorted(r[0] for r in rows(path, "operations"))
        assert stored == sorted({f"op-{event}-v1" for event in ids})


def test_decoding_a_stored_wire_gives_back_the_event(tmp_path: Path) -> None:
    events = every_type(2)
    with writer(tmp_path / "l") as w:
        w.write_batch(records(events))
    con = open_reader(tmp_path / "l")
    wires = [row[0] for row in con.sql("SELECT wire FROM events").fetchall()]
    assert sorted(decode_event(w).event_id for w in wires) == sorted(e.event_id for e in events)
