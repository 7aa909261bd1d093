"""The one writer of a ledger folder: batches of Kafka records in, offset-named segments out.

Exactly once, per (topic, partition): a batch's records of one partition, every table they
touch, and their offset range become ONE segment folder, written under ``tmp/`` and renamed
into ``segments/`` atomically. The folder name is the committed offset, so rows and offsets
cannot disagree: after a crash the writer reads the names back and the sink seeks to
``last + 1``; a half-written segment is only ever in ``tmp/`` and is discarded.

Deduplication by ``event_id`` happens here, not in the readers' views, so every report reads
plain Parquet without a window over millions of rows. The writer keeps a 64-bit hash of every
stored ``event_id`` per table in sorted numpy runs (8 bytes an event, rebuilt from the
segments at start); a hash hit is confirmed against the stored rows before anything is
dropped, so a hash collision never loses an event. A repeated id with the same content is a
duplicate (counted, dropped); with other content it is dead-lettered, never silently lost.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from ledger import wire
from ledger.checkpoint import Signer
from ledger.errors import EventDecodeError, StoreError
from ledger.events import MAX_DEAD_LETTER_REASON, DeadLettered, Event, dead_letter
from ledger.merkle import CompactTree
from ledger.store import rollups
from ledger.store.layout import (
    Layout,
    Segment,
    committed_offsets,
    fsync_dir,
    fsync_file,
    live_segments,
)
from ledger.store.schema import CLUSTER_KEYS, EVENT_TABLE, TABLES, Table
from ledger.store.trees import history_of, merkle_block, record_leaf, tree_from_block

__all__ = [
    "CompactionResult",
    "LedgerWriter",
    "SourceRecord",
    "WriteResult",
    "dead_letter_for",
]

#: A dead letter's reason is cut here: a huge payload's validation message can be huge too.
MAX_REASON = MAX_DEAD_LETTER_REASON
PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "row_group_size": 122_880}

Hashes = npt.NDArray[np.uint64]


class SourceRecord(NamedTuple):
    """One Kafka record (or one line of an ingested file, under the ``_ingest`` topic)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: Kafka's record timestamp; dates the dead letter of a bad record.
    timestamp_ms: int | None = None
    #: Where it came from besides its position (an ingested file and line), for dead letters.
    origin: str | None = None
    #: The event type its file says it holds (an export), for lines that leave ``type`` out.
    type_hint: str | None = None


@dataclass
class WriteResult:
    """What one ``write_batch`` did."""

    #: Records looked at (after skipping those at already committed offsets).
    records: int = 0
    #: Rows stored per table (dead letters included under ``dead_letters``).
    stored: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    duplicates: int = 0
    #: Records at offsets already committed (a re-delivery): ignored.
    skipped: int = 0
    segments: int = 0

    @property
    def rows(self) -> int:
        return sum(self.stored.values())


@dataclass
class CompactionResult:
    merged_segments: int = 0
    new_segments: int = 0
    rows: int = 0
    purged: int = 0
    #: Segments whose missing rollups were written (``backfill_rollups``).
    rolled_up: int = 0


class _Batch:
    """The decoded rows of one ``write_batch``, by position (``tables[i] is None``: dropped)."""

    def __init__(self, rows: list[tuple[SourceRecord, str, Event, str, bool]]) -> None:
        self.records: list[SourceRecord] = [row[0] for row in rows]
        self.tables: list[str | None] = [row[1] for row in rows]
        self.events: list[Event] = [row[2] for row in rows]
        self.wires: list[str] = [row[3] for row in rows]
        self.rejected: list[bool] = [row[4] for row in rows]
        self.duplicate: list[bool] = [False] * len(rows)

    def __len__(self) -> int:
        return len(self.records)

    def replace(self, i: int, row: tuple[SourceRecord, str, Event, str, bool]) -> None:
        _, self.tables[i], self.events[i], self.wires[i], self.rejected[i] = row


class _IdIndex:
    """Hashes of stored event ids in sorted runs merged like a binary counter (LSM style).

    Membership is a binary search per run (O(log n) runs); adding n ids costs amortised
    O(n log n) in total. A hit is only a candidate: the caller confirms it on stored rows.
    """

    def __init__(self, hashes: Hashes | None = None) -> None:
        self._runs: list[Hashes] = []
        if hashes is not None and len(hashes):
            self._runs.append(np.sort(hashes))

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def contains(self, hashes: Hashes) -> npt.NDArray[np.bool_]:
        hit = np.zeros(len(hashes), dtype=np.bool_)
        for run in self._runs:
            at = np.searchsorted(run, hashes)
            at[at == len(run)] = len(run) - 1
            hit |= run[at] == hashes
        return hit

    def add(self, hashes: Hashes) -> None:
        if not len(hashes):
            return
        self._runs.append(np.sort(hashes))
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newer = self._runs.pop()
            older = self._runs.pop()
            self._runs.append(np.sort(np.concatenate((older, newer)), kind="stable"))


def dead_letter_for(record: SourceRecord, reason: str, at: datetime) -> DeadLettered:
    """The dead letter of one unusable record (``ledger.events.dead_letter``)."""
    return dead_letter(
        record.value,
        reason=reason,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        at=at,
    )


def _stored_event(text: str, event_type: str) -> Event | str:
    """A stored row's event, or its text if today's contract refuses it (stored by an older,
    laxer build): a new event under its id then counts as other content, never as a repeat."""
    try:
        return wire.decode(text, wire.ANY, type_hint=event_type)
    except EventDecodeError:
        return text


_STRUCT = re.compile(r"^STRUCT\((.*)\)$")


def _json_spec(type_: str) -> Any:
    """A column type as ``from_json``'s structure argument."""
    if type_.endswith("[]"):
        return [_json_spec(type_[:-2])]
    match = _STRUCT.match(type_)
    if match:
        fields = (part.strip().split(" ", 1) for part in match[1].split(","))
        return {name: _json_spec(inner.strip()) for name, inner in fields}
    return type_


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _transform_sql(table: Table) -> str:
    """SQL turning a batch of canonical JSON texts into the table's typed columns."""
    spec = json.dumps({c.name: _json_spec(c.type) for c in table.event_columns})
    columns = ", ".join(f"j.{_quote(c.name)} AS {_quote(c.name)}" for c in table.event_columns)
    spec_literal = spec.replace("'", "''")
    return (
        f"SELECT {columns}, b._topic AS _topic, CAST(b._partition AS INTEGER) AS _partition, "
        f"CAST(b._offset AS BIGINT) AS _offset, b._key AS _key, b.wire AS wire "
        f"FROM (SELECT from_json(canonical, '{spec_literal}') AS j, * FROM batch) AS b"
    )


_BATCH_SCHEMA = pa.schema(
    [
        ("canonical", pa.string()),
        ("wire", pa.string()),
        ("_topic", pa.string()),
        ("_partition", pa.int32()),
        ("_offset", pa.int64()),
        ("_key", pa.string()),
    ]
)


def _now() -> datetime:
    return datetime.now(UTC)


def _offset_of(record: SourceRecord) -> int:
    return record.offset


class LedgerWriter:
    """Appends Kafka records to a ledger folder, exactly once per offset, one event id once.

    Only one writer may hold a ledger at a time (an exclusive ``flock``); readers never need
    it. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        fsync: bool = True,
        clock: Callable[[], datetime] = _now,
        grace_s: float = 600.0,
        signer: Signer | None = None,
    ) -> None:
        """``signer`` signs the checkpoint written with each commit (None: unsigned)."""
        self.layout = Layout(Path(path))
        self._signer = signer
        self.layout.create()
        self._fsync = fsync
        self._clock = clock
        self._grace_s = grace_s
        #: CPU seconds spent computing and writing rollups (bench/ledger.py: their share).
        self.rollup_cpu_s = 0.0
        self._lock_fd: int | None = self.layout.acquire_writer_lock()
        try:
            self._con = duckdb.connect(":memory:")
            self._con.execute("SET TimeZone = 'UTC'")
            self._transforms = {name: _transform_sql(table) for name, table in TABLES.items()}
            self._recover()
            self._write_schema_files()
            self._live: list[Segment] = []
            self._rows: dict[Segment, dict[str, int]] = {}
            self._load_live()
            self._indexes = {name: _IdIndex(self._stored_hashes(name)) for name in TABLES}
            self._trees = self._load_trees()
        except BaseException:
            self.close()
            raise

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
            con = getattr(self, "_con", None)
            if con is not None:
                con.close()

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recover(self) -> None:
        """Discard half-written segments (a crash before their rename) and old replaced ones."""
        for leftover in self.layout.tmp.iterdir():
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        self._purge_replaced()

    def _write_schema_files(self) -> None:
        """Zero-row files holding each table's current column types (readers union them in)."""
        for name in TABLES:
            empty = self._typed(name, _Batch([]), [])
            target = self.layout.schema_file(name)
            if target.exists() and pq.read_schema(target).equals(empty.schema):
                continue
            tmp = self.layout.tmp / f"_schema-{name}-{uuid.uuid4().hex}.parquet"
            pq.write_table(empty, tmp, **PARQUET_OPTIONS)
            tmp.rename(target)

    def _load_live(self) -> None:
        live, _ = live_segments(self.layout.list_segments())
        self._live = live
        self._rows = {segment: self._manifest_rows(segment) for segment in live}

    def _manifest_rows(self, segment: Segment) -> dict[str, int]:
        try:
            manifest = json.loads((self.layout.segment_dir(segment) / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"segment {segment.name} has no readable manifest: {exc}") from exc
        rows = manifest.get("rows", {})
        return {str(k): int(v) for k, v in rows.items()}

    def _load_trees(self) -> dict[tuple[str, int], CompactTree]:
        """Each partition's Merkle tree from its newest manifest (rebuilt from rows if absent)."""
        newest: dict[tuple[str, int], Segment] = {}
        for segment in self._live:
            newest[(segment.topic, segment.partition)] = segment  # sorted: the last is newest
        trees: dict[tuple[str, int], CompactTree] = {}
        for key, segment in newest.items():
            manifest = json.loads((self.layout.segment_dir(segment) / "manifest.json").read_text())
            tree = tree_from_block(manifest.get("merkle"))
            trees[key] = tree if tree is not None else self._rebuild_tree(*key)
        return trees

    def _rebuild_tree(self, topic: str, partition: int) -> CompactTree:
        """A partition's tree from its stored rows (a ledger written before trees existed)."""
        segments = [s for s in self._live if (s.topic, s.partition) == (topic, partition)]
        tree = CompactTree()
        files = [f for name in TABLES for f in self._files(name, segments)]
        if not files:
            return tree
        rows = self._con.execute(
            "SELECT _offset, wire FROM read_parquet(?, union_by_name = true) ORDER BY _offset",
            [files],
        ).fetchall()
        for offset, wire_text in rows:
            tree.append(record_leaf(topic, partition, int(offset), str(wire_text)))
        return tree

    # --- what is stored ---------------------------------------------------------------------

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """The last stored offset per (topic, partition); the sink resumes at ``last + 1``."""
        return committed_offsets(self._live)

    def live_segments(self) -> list[Segment]:
        return list(self._live)

    def row_counts(self) -> dict[str, int]:
        totals = dict.fromkeys(TABLES, 0)
        for rows in self._rows.values():
            for table, count in rows.items():
                totals[table] = totals.get(table, 0) + count
        return totals

    def _files(self, table: str, segments: Iterable[Segment] | None = None) -> list[str]:
        chosen = self._live if segments is None else segments
        return [
            str(self.layout.segment_dir(s) / f"{table}.parquet")
            for s in chosen
            if self._rows.get(s, {}).get(table, 0) > 0
        ]

    def _stored_hashes(self, table: str) -> Hashes:
        files = self._files(table)
        if not files:
            return np.empty(0, dtype=np.uint64)
        found = self._con.execute(
            "SELECT hash(event_id) AS h FROM read_parquet(?)", [files]
        ).fetchnumpy()
        return np.asarray(found["h"], dtype=np.uint64)

    def _hashes(self, event_ids: Sequence[str]) -> Hashes:
        ids = pa.table({"event_id": pa.array(event_ids, type=pa.string())})
        self._con.register("ids", ids)
        try:
            found = self._con.execute("SELECT hash(event_id) AS h FROM ids").fetchnumpy()
        finally:
            self._con.unregister("ids")
        return np.asarray(found["h"], dtype=np.uint64)

    def _stored_wires(self, table: str, event_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """event id -> (wire, type) of stored rows (the type: wires may leave it out)."""
        files = self._files(table)
        if not files or not event_ids:
            return {}
        rows = self._con.execute(
            "SELECT event_id, any_value(wire), any_value(type) FROM read_parquet(?) "
            "WHERE event_id IN (SELECT unnest(?)) GROUP BY event_id",
            [files, list(event_ids)],
        ).fetchall()
        return {str(event_id): (str(text), str(kind)) for event_id, text, kind in rows}

    # --- writing ----------------------------------------------------------------------------

    def write_batch(self, records: Iterable[SourceRecord]) -> WriteResult:
        """Store a batch: one segment per (topic, partition) it touches, each atomically.

        Records at offsets already committed are skipped; bad records become dead letters;
        repeated event ids are dropped. Returns what happened, counted.
        """
        result = WriteResult()
        committed = self.committed_offsets()
        by_partition: dict[tuple[str, int], list[SourceRecord]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)

        # One row per record, in (topic, partition, offset) order; each partition a run.
        ordered: list[SourceRecord] = []
        runs: list[tuple[Segment, int, int]] = []
        for key in sorted(by_partition):
            last = committed.get(key, -1)
            start = len(ordered)
            # Kafka order is offset order already; sorting is a check that costs O(n) then.
            for record in sorted(by_partition[key], key=_offset_of):
                if record.offset <= last:
                    result.skipped += 1  # at or below a committed offset: a re-delivery
                    continue
                ordered.append(record)
                last = record.offset
            if len(ordered) > start:
                first = ordered[start].offset
                runs.append((Segment(key[0], key[1], first, last), start, len(ordered)))
        if not ordered:
            return result
        batch = _Batch([self._decode(record) for record in ordered])
        result.records = len(batch)

        self._dedupe(batch)

        by_table: dict[str, list[int]] = {}
        for i, table in enumerate(batch.tables):
            if table is not None:
                by_table.setdefault(table, []).append(i)
        typed = {name: self._typed(name, batch, rows) for name, rows in by_table.items()}

        staged: list[tuple[Segment, Path]] = []
        trees: dict[tuple[str, int], CompactTree] = {}
        try:
            for segment, start, end in runs:
                slices: dict[str, pa.Table] = {}
                for name, rows in by_table.items():
                    first, last = bisect_left(rows, start), bisect_left(rows, end)
                    if last > first:
                        slices[name] = typed[name].slice(first, last - first)
                key = (segment.topic, segment.partition)
                trees[key] = self._grown_tree(key, batch, start, end)
                extra = {
                    "dead_lettered": sum(batch.rejected[start:end]),
                    "duplicates": sum(batch.duplicate[start:end]),
                    "merkle": merkle_block(*key, trees[key], segment.last, self._signer),
                }
                staged.append((segment, self._stage(segment, slices, extra)))
            self._commit(staged)
        except BaseException:
            for _, tmp in staged:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._trees.update(trees)

        for name, rows in by_table.items():
            self._indexes[name].add(self._hashes([batch.events[i].event_id for i in rows]))
            result.stored[name] = len(rows)
        result.dead_lettered = sum(batch.rejected)
        result.duplicates = sum(batch.duplicate)
        result.segments = len(staged)
        return result

    def _grown_tree(self, key: tuple[str, int], batch: _Batch, start: int, end: int) -> CompactTree:
        """The partition's tree with this run's stored rows appended (the old one untouched)."""
        old = self._trees.get(key)
        tree = CompactTree() if old is None else CompactTree.restore(old.size, old.frontier)
        for i in range(start, end):
            if batch.tables[i] is not None:
                record = batch.records[i]
                tree.append(
                    record_leaf(record.topic, record.partition, record.offset, batch.wires[i])
                )
        return tree

    def _decode(self, record: SourceRecord) -> tuple[SourceRecord, str, Event, str, bool]:
        """(record, table, event, wire text, rejected); a bad record yields its dead letter."""
        try:
            # The topic's contract, the same decoder as the worker's (``ledger.wire``).
            event = wire.decode_record(
                record.topic, record.key, record.value, type_hint=record.type_hint
            )
        except EventDecodeError as exc:
            return self._dead(str(exc), record)
        table = EVENT_TABLE.get(getattr(event, "type", ""))
        if table is None:
            return self._dead(f"no ledger table stores events of type {event!r}", record)
        return record, table, event, bytes(record.value or b"").decode("utf-8"), False

    def _dead(
        self, reason: str, record: SourceRecord
    ) -> tuple[SourceRecord, str, Event, str, bool]:
        if record.timestamp_ms is not None and record.timestamp_ms >= 0:
            at = datetime.fromtimestamp(record.timestamp_ms / 1000, tz=UTC)
        else:
            at = self._clock()
        if record.origin:
            reason = f"{reason} [{record.origin}]"
        letter = dead_letter_for(record, reason, at)
        return record, "dead_letters", letter, letter.model_dump_json(), True

    def _dedupe(self, batch: _Batch) -> None:
        """Drop repeated event ids (in the batch, then against the store), in place.

        A repeat with different content is not dropped silently: its row becomes a dead
        letter naming the event id (so an auditor sees that someone re-used an id).
        """
        by_table: dict[str, list[int]] = {}
        for i, table in enumerate(batch.tables):
            if table is not None:
                by_table.setdefault(table, []).append(i)
        for name, rows in by_table.items():
            ids = [batch.events[i].event_id for i in rows]
            candidates = self._indexes[name].contains(self._hashes(ids))
            if not candidates.any() and len(set(ids)) == len(ids):
                continue  # the usual case: nothing seen before
            suspects = [ids[k] for k in np.flatnonzero(candidates)]
            stored = self._stored_wires(name, suspects)
            seen: dict[str, Event] = {}
            for i, event_id in zip(rows, ids, strict=True):
                event = batch.events[i]
                first: Event | str | None = seen.get(event_id)
                if first is None and event_id in stored:
                    first = _stored_event(*stored[event_id])
                if first is None:
                    seen[event_id] = event
                elif first == event or name == "dead_letters":
                    # A dead letter's id is the position of the bad input: the worker and
                    # the sink both dead-letter a bad operation under the same id, in other
                    # words (reason, time). One bad input, one row.
                    batch.tables[i] = None
                    batch.duplicate[i] = True
                else:
                    original = batch.records[i]
                    reason = f"event_id {event_id!r} already stored in {name} with other content"
                    letter = self._dead(reason, original._replace(value=batch.wires[i].encode()))
                    batch.replace(i, letter)

    def _typed(self, table: str, batch: _Batch, rows: Sequence[int]) -> pa.Table:
        """The table's typed columns for some rows of the batch (DuckDB parses the JSON)."""
        records = [batch.records[i] for i in rows]
        source = pa.Table.from_arrays(
            [
                pa.array([batch.events[i].model_dump_json() for i in rows], type=pa.string()),
                pa.array([batch.wires[i] for i in rows], type=pa.string()),
                pa.array([r.topic for r in records], type=pa.string()),
                pa.array([r.partition for r in records], type=pa.int32()),
                pa.array([r.offset for r in records], type=pa.int64()),
                pa.array(
                    [None if r.key is None else r.key.decode("utf-8", "replace") for r in records],
                    type=pa.string(),
                ),
            ],
            schema=_BATCH_SCHEMA,
        )
        self._con.register("batch", source)
        try:
            typed = self._con.sql(self._transforms[table]).to_arrow_table()
        except duckdb.Error as exc:
            raise StoreError(f"cannot convert a batch of {table}: {exc}") from exc
        finally:
            self._con.unregister("batch")
        return typed

    def _stage(self, segment: Segment, slices: dict[str, pa.Table], extra: dict[str, Any]) -> Path:
        """Write one segment's files under ``tmp/``; nothing is visible yet."""
        tmp = self.layout.tmp / f"{segment.name}.{uuid.uuid4().hex}"
        tmp.mkdir()
        for name, rows in slices.items():
            path = tmp / f"{name}.parquet"
            pq.write_table(rows, path, **PARQUET_OPTIONS)
            if self._fsync:
                fsync_file(path)
        rolled = self._write_rollups(
            tmp, {name: rows for name, rows in slices.items() if name in rollups.ROLLUP_TABLES}
        )
        manifest = {
            "format": 1,
            "topic": segment.topic,
            "partition": segment.partition,
            "first": segment.first,
            "last": segment.last,
            "rows": {name: rows.num_rows for name, rows in slices.items()},
            "rollups": rolled,
            **extra,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, sort_keys=True) + "\n")
        if self._fsync:
            fsync_file(tmp / "manifest.json")
            fsync_dir(tmp)
        return tmp

    def _write_rollups(
        self, folder: Path, sources: Mapping[str, pa.Table | str], staging: Path | None = None
    ) -> dict[str, int]:
        """The rollups of a segment's rows (Arrow tables in memory, or a relation's SQL)."""
        if not sources:
            return {}
        started = time.process_time()
        registered: list[str] = []
        relations: dict[str, str] = {}
        try:
            for name, rows in sources.items():
                if isinstance(rows, str):
                    relations[name] = rows
                else:
                    view = f"rollup_source_{name}"
                    self._con.register(view, rows)
                    registered.append(view)
                    relations[name] = view
            return rollups.write_rollups(
                self._con, folder, relations, fsync=self._fsync, staging=staging
            )
        finally:
            for view in registered:
                self._con.unregister(view)
            self.rollup_cpu_s += time.process_time() - started

    def backfill_rollups(self) -> int:
        """Write the rollups a live segment lacks (older ledgers, an interrupted backfill).

        Each file is staged in ``tmp/`` and renamed into the committed segment folder; the
        rows themselves are never touched. Returns the segments completed.
        """
        done = 0
        for segment in list(self._live):
            folder = self.layout.segment_dir(segment)
            present = {p.name for p in folder.iterdir()}
            missing = {
                table: "read_parquet('" + str(folder / f"{table}.parquet").replace("'", "''") + "')"
                for table in rollups.ROLLUP_TABLES
                if f"{table}.parquet" in present and not rollups.is_rolled(present, table)
            }
            if missing:
                self._write_rollups(folder, missing, staging=self.layout.tmp)
                if self._fsync:
                    fsync_dir(folder)
                done += 1
        return done

    def _commit(self, staged: list[tuple[Segment, Path]]) -> None:
        """Rename staged segments into place: each rename is one partition's commit."""
        with self.layout.snapshot_lock(exclusive=True):
            for segment, tmp in staged:
                target = self.layout.segment_dir(segment)
                if target.exists():
                    raise StoreError(f"segment {segment.name} already exists: two writers?")
                tmp.rename(target)
            if self._fsync:
                fsync_dir(self.layout.segments)
        for segment, _ in staged:
            self._live.append(segment)
            self._rows[segment] = self._manifest_rows(segment)
        self._live.sort(key=lambda s: (s.topic, s.partition, s.first))

    # --- compaction -------------------------------------------------------------------------

    def compact(
        self, *, target_rows: int = 1_000_000, fanout: int = 8, full: bool = False
    ) -> CompactionResult:
        """Merge small consecutive segments of each partition (size-tiered, like an LSM).

        ``fanout`` segments of one size tier merge into one of the next, so each row is
        rewritten about log_fanout(target / batch) times. ``full`` merges every run of
        segments up to ``target_rows`` (for a finished ledger: fewest files). The merged
        segment's name covers the whole range, so committed offsets never change.
        """
        result = CompactionResult()
        by_partition: dict[tuple[str, int], list[Segment]] = {}
        for segment in self._live:
            by_partition.setdefault((segment.topic, segment.partition), []).append(segment)
        groups: list[list[Segment]] = []
        for segments in by_partition.values():
            groups.extend(self._plan(segments, target_rows, fanout, full))
        for group in groups:
            result.rows += self._merge(group)
            result.merged_segments += len(group)
            result.new_segments += 1
        result.rolled_up = self.backfill_rollups()
        result.purged = self._purge_replaced()
        return result

    def _plan(
        self, segments: list[Segment], target_rows: int, fanout: int, full: bool
    ) -> list[list[Segment]]:
        def size(s: Segment) -> int:
            return sum(self._rows[s].values())

        def tier(s: Segment) -> int:
            rows, level = size(s), 0
            while rows >= fanout ** (level + 1) * 64:
                level += 1
            return level

        groups: list[list[Segment]] = []
        run: list[Segment] = []
        run_rows = 0

        def flush() -> None:
            nonlocal run, run_rows
            if len(run) >= (2 if full else fanout):
                groups.append(run)
            run, run_rows = [], 0

        for segment in segments:
            rows = size(segment)
            if rows >= target_rows or (run_rows + rows > target_rows):
                flush()
                if rows >= target_rows:
                    continue
            if not full and run and tier(run[-1]) != tier(segment):
                flush()
            run.append(segment)
            run_rows += rows
            if not full and len(run) == fanout:
                flush()
        flush()
        return groups

    def _merge(self, group: list[Segment]) -> int:
        merged = Segment(group[0].topic, group[0].partition, group[0].first, group[-1].last)
        tmp = self.layout.tmp / f"{merged.name}.{uuid.uuid4().hex}"
        tmp.mkdir()
        rows: dict[str, int] = {}
        try:
            for name in TABLES:
                files = self._files(name, group)
                if not files:
                    continue
                path = tmp / f"{name}.parquet"
                schema_file = str(self.layout.schema_file(name))
                # Sorted by the table's lookup key: each row group then spans a narrow key
                # range, and a lookup (replay of one session, one correlation id) reads one
                # or two row groups instead of the whole file. Offset order breaks ties.
                order = ", ".join(_quote(c) for c in (*CLUSTER_KEYS.get(name, ()), "_offset"))
                self._con.execute(
                    f"COPY (SELECT * FROM read_parquet(?, union_by_name = true) "
                    f"ORDER BY {order}) "
                    f"TO '{path}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)",
                    [[schema_file, *files]],
                )
                if self._fsync:
                    fsync_file(path)
                rows[name] = sum(self._rows[s].get(name, 0) for s in group)
            # Recomputed from the merged rows (not added up from the parts' rollups): the
            # merged segment's rollups are then exactly those of its rows, whatever the parts
            # had (parts without rollups included).
            rolled = self._write_rollups(
                tmp,
                {
                    name: "read_parquet('" + str(tmp / f"{name}.parquet").replace("'", "''") + "')"
                    for name in rows
                    if name in rollups.ROLLUP_TABLES
                },
            )
            manifest = {
                "format": 1,
                "topic": merged.topic,
                "partition": merged.partition,
                "first": merged.first,
                "last": merged.last,
                "rows": rows,
                "compacted_from": [s.name for s in group],
                "rollups": rolled,
                **self._merged_merkle(group),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, sort_keys=True) + "\n")
            if self._fsync:
                fsync_file(tmp / "manifest.json")
                fsync_dir(tmp)
            # One rename replaces the parts: from now on every listing sees them inside the
            # merged range and skips them. They stay on disk for readers that listed them
            # before; ``_purge_replaced`` deletes them after the grace period.
            with self.layout.snapshot_lock(exclusive=True):
                tmp.rename(self.layout.segment_dir(merged))
                if self._fsync:
                    fsync_dir(self.layout.segments)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for segment in group:
            self._live.remove(segment)
            del self._rows[segment]
        self._live.append(merged)
        self._rows[merged] = rows
        self._live.sort(key=lambda s: (s.topic, s.partition, s.first))
        return sum(rows.values())

    def _merged_merkle(self, group: list[Segment]) -> dict[str, Any]:
        """The newest part's tree block, and every part's commit heads as history."""
        manifests = [
            json.loads((self.layout.segment_dir(s) / "manifest.json").read_text()) for s in group
        ]
        history = [list(entry) for entry in history_of(manifests[:-1])]
        history += [list(entry) for entry in manifests[-1].get("merkle_history", ())]
        out: dict[str, Any] = {"merkle_history": history}
        if "merkle" in manifests[-1]:
            out["merkle"] = manifests[-1]["merkle"]
        return out

    def _purge_replaced(self) -> int:
        """Delete segments replaced by compaction once their replacement is older than the grace.

        Readers that listed the parts before the merged segment appeared read them by path,
        so the parts stay until ``grace_s`` after the merge (10 minutes by default). A part
        is first renamed into ``tmp/`` (atomic: no listing sees it half deleted).
        """
        live, replaced = live_segments(self.layout.list_segments())
        now = time.time()
        purged = 0
        for segment in replaced:
            cover = next(s for s in live if s.covers(segment))
            age_s = now - self.layout.segment_dir(cover).stat().st_mtime
            if age_s < self._grace_s:
                continue
            doomed = self.layout.tmp / f"{segment.name}.replaced.{uuid.uuid4().hex}"
            self.layout.segment_dir(segment).rename(doomed)
            shutil.rmtree(doomed)
            purged += 1
        return purged
