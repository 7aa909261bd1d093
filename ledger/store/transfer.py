"""Export a ledger's events in their wire form, and ingest such files into a ledger offline.

Export writes one file per event type: NDJSON (``<Type>.ndjson``, one wire JSON per line) or
Parquet partitioned by day (``<Type>/day=YYYY-MM-DD/data_0.parquet`` with the ``wire`` column
and its provenance). Rows go out in (topic, partition, offset) order, so an ingest replays
them in the order the ledger received them.

Ingest reads those files (or folders of them) and feeds their wire texts through the same
``LedgerWriter.write_batch`` as the sink, under the pseudo topic ``_ingest`` (partition 0,
offsets continuing from the last ingest): the same validation, dead-lettering and event-id
dedupe, so ingesting a file twice adds nothing.

Positions (issue 13): an export carries each row's Kafka position (the Parquet provenance
columns; for NDJSON a ``<Type>.positions`` file beside ``<Type>.ndjson``, one JSON array per
line: topic, partition, offset, key, and the wire text itself when it holds a line break).
Ingest then stores every row at its original position, all files merged in (topic,
partition, offset) order, so the writer rebuilds the same Merkle trees and an honest
export -> ingest verifies against the checkpoints taken of the original ledger.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ledger.checkpoint import Signer
from ledger.errors import StoreError
from ledger.events import EVENT_TYPES
from ledger.store.layout import INGEST_TOPIC
from ledger.store.reader import open_reader
from ledger.store.schema import TABLES, TIME_COLUMN
from ledger.store.writer import LedgerWriter, SourceRecord, WriteResult

__all__ = ["ExportResult", "IngestResult", "export_ledger", "ingest_files", "iter_file_records"]

ExportFormat = Literal["ndjson", "parquet"]
INGEST_BATCH = 50_000


@dataclass
class ExportResult:
    #: Event type -> rows written.
    events: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)


@dataclass
class IngestResult:
    files: int = 0
    records: int = 0
    stored: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    duplicates: int = 0
    #: Rows at positions already stored (an export ingested again): ignored.
    skipped: int = 0

    def add(self, written: WriteResult) -> None:
        self.records += written.records
        for table, rows in written.stored.items():
            self.stored[table] = self.stored.get(table, 0) + rows
        self.dead_lettered += written.dead_lettered
        self.duplicates += written.duplicates
        self.skipped += written.skipped


def export_ledger(ledger: Path, out: Path, fmt: ExportFormat) -> ExportResult:
    """Write every stored event, in wire form, to ``out`` (one file or folder per type)."""
    if fmt not in ("ndjson", "parquet"):
        raise StoreError(f"unknown export format {fmt!r}: ndjson or parquet")
    con = open_reader(ledger)
    result = ExportResult()
    out.mkdir(parents=True, exist_ok=True)
    try:
        for name, table in TABLES.items():
            for event_type in table.event_types:
                where = f"FROM \"{name}\" WHERE type = '{event_type}'"
                rows = int(con.sql(f"SELECT count(*) {where}").fetchall()[0][0])
                if rows == 0:
                    continue
                result.events[event_type] = rows
                order = "ORDER BY _topic, _partition, _offset"
                if fmt == "ndjson":
                    target = out / f"{event_type}.ndjson"
                    _write_ndjson(con.sql(f"SELECT wire {where} {order}"), target)
                    _write_positions(
                        con.sql(f"SELECT _topic, _partition, _offset, _key, wire {where} {order}"),
                        target.with_suffix(POSITIONS),
                    )
                else:
                    target = out / event_type
                    day = f"strftime(\"{TIME_COLUMN[name]}\", '%Y-%m-%d')"
                    con.execute(
                        f"COPY (SELECT type, event_id, {day} AS day, _topic, _partition, "
                        f"_offset, _key, wire {where} {order}) TO '{_sql_path(target)}' "
                        "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (day), OVERWRITE)"
                    )
                result.files.append(target)
    finally:
        con.close()
    return result


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _write_ndjson(relation: duckdb.DuckDBPyRelation, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as sink:
        batches: Iterable[pa.RecordBatch] = relation.to_arrow_reader(100_000)
        for batch in batches:
            for wire in batch.column(0).to_pylist():
                # A line break in valid JSON is whitespace; NDJSON needs one line per event.
                sink.write(str(wire).replace("\r", " ").replace("\n", " "))
                sink.write("\n")
    tmp.replace(target)


POSITIONS = ".positions"


def _write_positions(relation: duckdb.DuckDBPyRelation, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as sink:
        batches: Iterable[pa.RecordBatch] = relation.to_arrow_reader(100_000)
        for batch in batches:
            columns = [batch.column(i).to_pylist() for i in range(5)]
            for topic, partition, offset, key, wire in zip(*columns, strict=True):
                # The NDJSON line cannot hold a line break of the wire text; this line can.
                kept = wire if ("\n" in wire or "\r" in wire) else None
                sink.write(json.dumps([topic, partition, offset, key, kept]) + "\n")
    tmp.replace(target)


def _ingestable(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix in (".ndjson", ".jsonl", ".json", ".parquet")
            )
            if not found:
                raise StoreError(f"{path} holds no .ndjson or .parquet files")
            yield from found
        elif path.is_file():
            yield path
        else:
            raise StoreError(f"no such file or folder: {path}")


def iter_file_records(
    path: Path,
) -> Iterator[tuple[bytes | None, bytes | None, str, str | None]]:
    """(key, value, origin, type hint) of every event in one exported file.

    The hint is the event type the export wrote the line under (its ``type`` column, or an
    NDJSON file named ``<Type>.ndjson``): a wire that left ``type`` out (allowed on a topic
    holding one type) is ingested as what it was stored as.
    """
    if path.suffix == ".parquet":
        try:
            parquet = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several unrelated types for bad files
            raise StoreError(f"{path} is not a readable Parquet file: {exc}") from exc
        if "wire" not in parquet.schema_arrow.names:
            raise StoreError(f"{path} has no `wire` column: not a ledger export")
        names = parquet.schema_arrow.names
        columns = ["wire"] + [c for c in ("_key", "type") if c in names]
        # An export partitions by day under a folder named for the type.
        folder_type = next((p.name for p in path.parents if p.name in EVENT_TYPES), None)
        row = 0
        for batch in parquet.iter_batches(columns=columns, batch_size=INGEST_BATCH):
            data = batch.to_pydict()
            wires = data["wire"]
            keys = data.get("_key") or [None] * len(wires)
            types = data.get("type") or [folder_type] * len(wires)
            for wire, key, hint in zip(wires, keys, types, strict=True):
                row += 1
                yield (
                    None if key is None else str(key).encode(),
                    None if wire is None else str(wire).encode(),
                    f"{path} row {row}",
                    None if hint is None else str(hint),
                )
        return
    stem_type = path.stem if path.stem in EVENT_TYPES else None
    with path.open("rb") as source:
        for number, line in enumerate(source, start=1):
            text = line.rstrip(b"\r\n")
            if not text.strip():
                continue
            yield None, text, f"{path} line {number}", stem_type


#: (topic, partition, offset, key, value, origin) of a row exported with its position.
Positioned = tuple[str, int, int, bytes | None, bytes | None, str]


def _positioned(path: Path) -> Iterator[Positioned] | None:
    """The rows of an exported file at their original positions (None: it has none)."""
    if path.suffix == ".parquet":
        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception:  # pyarrow raises several unrelated types for bad files
            return None
        if not {"_topic", "_partition", "_offset", "wire"} <= set(names):
            return None
        return _parquet_positioned(path)
    sidecar = path.with_suffix(POSITIONS)
    if not sidecar.is_file():
        return None
    return _ndjson_positioned(path, sidecar)


def _parquet_positioned(path: Path) -> Iterator[Positioned]:
    parquet = pq.ParquetFile(path)
    columns = ["_topic", "_partition", "_offset", "_key", "wire"]
    row = 0
    for batch in parquet.iter_batches(columns=columns, batch_size=INGEST_BATCH):
        values = [batch.column(i).to_pylist() for i in range(5)]
        for topic, partition, offset, key, wire in zip(*values, strict=True):
            row += 1
            yield (
                str(topic),
                int(partition),
                int(offset),
                None if key is None else str(key).encode(),
                None if wire is None else str(wire).encode(),
                f"{path} row {row}",
            )


def _ndjson_positioned(path: Path, sidecar: Path) -> Iterator[Positioned]:
    lines = iter_file_records(path)
    with sidecar.open("r", encoding="utf-8") as positions:
        for number, line in enumerate(positions, start=1):
            try:
                topic, partition, offset, key, kept = json.loads(line)
            except ValueError as exc:
                raise StoreError(f"{sidecar} line {number} is not a position: {exc}") from None
            record = next(lines, None)
            if record is None:
                raise StoreError(f"{sidecar} has more positions than {path} has lines")
            _, value, origin, _ = record
            if kept is not None:
                value = str(kept).encode()
            yield (
                str(topic),
                int(partition),
                int(offset),
                None if key is None else str(key).encode(),
                value,
                origin,
            )
    if next(lines, None) is not None:
        raise StoreError(f"{path} has more lines than {sidecar} has positions")


def _position(row: Positioned) -> tuple[str, int, int]:
    return row[0], row[1], row[2]


def ingest_files(
    ledger: Path, paths: Sequence[Path], *, fsync: bool = True, signer: Signer | None = None
) -> IngestResult:
    """Load exported files into ``ledger`` (created if new), validating as the sink does.

    Rows exported with their positions go back to them (every such file merged in position
    order); files without positions are appended under the ``_ingest`` topic.
    """
    files = list(_ingestable(paths))
    result = IngestResult(files=len(files))
    positioned: list[Iterator[Positioned]] = []
    plain: list[Path] = []
    for path in files:
        rows = _positioned(path)
        if rows is None:
            plain.append(path)
        else:
            positioned.append(rows)
    with LedgerWriter(ledger, fsync=fsync, signer=signer) as writer:
        batch: list[SourceRecord] = []
        for topic, partition, at, key, value, origin in heapq.merge(*positioned, key=_position):
            batch.append(SourceRecord(topic, partition, at, key, value, origin=origin))
            if len(batch) >= INGEST_BATCH:
                result.add(writer.write_batch(batch))
                batch = []
        if batch:
            result.add(writer.write_batch(batch))
            batch = []
        offset = writer.committed_offsets().get((INGEST_TOPIC, 0), -1)
        for path in plain:
            for key, value, origin, hint in iter_file_records(path):
                offset += 1
                batch.append(
                    SourceRecord(INGEST_TOPIC, 0, offset, key, value, origin=origin, type_hint=hint)
                )
                if len(batch) >= INGEST_BATCH:
                    result.add(writer.write_batch(batch))
                    batch = []
        if batch:
            result.add(writer.write_batch(batch))
    return result
