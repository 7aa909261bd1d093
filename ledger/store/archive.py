"""Retention: move old segments out of the live ledger into day-partitioned Parquet.

``archive_before(ledger, before, out)`` writes, for every live segment whose rows all lie before
``before``, each table's rows to ``out/<table>/day=YYYY-MM-DD/<segment>.parquet`` (hive
style: DuckDB, Spark, Polars and pyarrow read ``out/<table>/**/*.parquet`` with a ``day``
column), reads the written files back and compares, per segment and table, the row count and
a hash of the rows (``md5`` over each row's provenance and exact wire text, in offset order),
records both in ``out/manifest.json``, and only then removes the segments from the ledger.

Kept in the live ledger whatever their age, with the reason in the result:

- a segment holding flag log rows (``flag_events``): the flag log is never archived away
  (replay, audit and the flag writer read it from the start);
- the newest segment of each (topic, partition): its name is the committed offset and its
  manifest the partition's Merkle tree, which the sink resumes from;
- a segment with a row at or after ``before``.

Archiving takes the single-writer lock (stop the sink, or run it between the sink's runs)
and swaps under the exclusive snapshot lock, as a commit does. Readers opened before the swap
may fail to read removed files; open them again. Known limits: an event archived away and
later ingested again is stored again (the writer's duplicate index covers live segments);
checkpoints held from before an archive prove a prefix of live plus archive, which
``audit --checkpoint`` does not read yet.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from ledger.errors import StoreError
from ledger.store.layout import Layout, Segment, fsync_dir, live_segments
from ledger.store.schema import TABLES

__all__ = ["ArchiveResult", "archive_before", "archive_files", "time_column"]

#: Tables the archive never takes rows of (a segment holding any stays live).
NEVER_ARCHIVED = ("flag_events",)
MANIFEST = "manifest.json"


def time_column(table: str) -> str:
    return "started_at" if table == "operations" else "at"


@dataclass(frozen=True)
class ArchiveResult:
    out: Path
    archived: tuple[str, ...]
    rows: dict[str, int]
    kept: tuple[tuple[str, str], ...] = field(default=())


def _quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _digest_sql(source: str) -> str:
    return (
        "SELECT count(*), md5(coalesce(string_agg(md5(concat_ws(chr(10), _topic, "
        "CAST(_partition AS VARCHAR), CAST(_offset AS VARCHAR), event_id, wire)), '' "
        f"ORDER BY _topic, _partition, _offset, event_id), '')) FROM {source}"
    )


def archive_files(out: Path, table: str) -> list[Path]:
    """The archive's Parquet files of ``table`` (empty when it has none)."""
    return sorted((out / table).glob("day=*/*.parquet"))


def archive_before(
    ledger: Path, before: datetime, out: Path, *, dry_run: bool = False
) -> ArchiveResult:
    """Archive every segment whose rows are all before ``before``; see the module docstring."""
    if before.tzinfo is None:
        raise ValueError("before: a time with a UTC offset")
    layout = Layout(ledger)
    layout.check_readable()
    fd = layout.acquire_writer_lock()
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        live, _ = live_segments(layout.list_segments())
        newest: dict[tuple[str, int], Segment] = {}
        for segment in live:
            newest[(segment.topic, segment.partition)] = segment
        chosen: list[tuple[Segment, dict[str, Path]]] = []
        kept: list[tuple[str, str]] = []
        for segment in live:
            files = {
                name: layout.segment_dir(segment) / f"{name}.parquet"
                for name in TABLES
                if (layout.segment_dir(segment) / f"{name}.parquet").is_file()
            }
            why = _keep_reason(con, segment, files, newest, before)
            if why:
                kept.append((segment.name, why))
            else:
                chosen.append((segment, files))
        rows: dict[str, int] = {}
        entries = []
        for segment, files in chosen:
            for table, source in files.items():
                count, digest = _write(con, segment, table, source, out, dry_run=dry_run)
                rows[table] = rows.get(table, 0) + count
                entries.append(
                    {"segment": segment.name, "table": table, "rows": count, "md5": digest}
                )
        if not dry_run and chosen:
            _record(out, entries, before)
            with layout.snapshot_lock(exclusive=True):
                for segment, _ in chosen:
                    target = layout.tmp / f"archived-{segment.name}"
                    os.rename(layout.segment_dir(segment), target)
                fsync_dir(layout.segments)
            for segment, _ in chosen:
                shutil.rmtree(layout.tmp / f"archived-{segment.name}", ignore_errors=True)
        return ArchiveResult(out, tuple(s.name for s, _ in chosen), rows, tuple(kept))
    finally:
        con.close()
        os.close(fd)


def _keep_reason(
    con: duckdb.DuckDBPyConnection,
    segment: Segment,
    files: dict[str, Path],
    newest: dict[tuple[str, int], Segment],
    before: datetime,
) -> str:
    if newest[(segment.topic, segment.partition)] == segment:
        return "newest segment of its partition (the committed offset)"
    for table in NEVER_ARCHIVED:
        if table in files:
            (n,) = con.execute(
                f"SELECT count(*) FROM read_parquet({_quote(files[table])})"
            ).fetchone()  # type: ignore[misc]
            if n:
                return f"holds {n} {table} rows (the flag log is never archived)"
    for table, source in files.items():
        column = time_column(table)
        row = con.execute(f'SELECT max("{column}") FROM read_parquet({_quote(source)})').fetchone()
        last = row[0] if row else None
        if last is not None and last >= before:
            return f"{table} has rows at {last.isoformat()}, not before {before.isoformat()}"
    return ""


def _write(
    con: duckdb.DuckDBPyConnection,
    segment: Segment,
    table: str,
    source: Path,
    out: Path,
    *,
    dry_run: bool,
) -> tuple[int, str]:
    """Copy one segment's table into day partitions; verify; (rows, md5)."""
    src = f"read_parquet({_quote(source)})"
    count, digest = con.execute(_digest_sql(src)).fetchone()  # type: ignore[misc]
    if dry_run or count == 0:
        return int(count), str(digest)
    column = time_column(table)
    days = [
        d
        for (d,) in con.execute(
            f"SELECT DISTINCT strftime(\"{column}\", '%Y-%m-%d') FROM {src} ORDER BY 1"
        ).fetchall()
    ]
    written: list[Path] = []
    for day in days:
        target_dir = out / table / f"day={day if day is not None else 'unknown'}"
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / f"{segment.name}.parquet"
        partial = target.with_suffix(".parquet.partial")
        where = (
            f"strftime(\"{column}\", '%Y-%m-%d') = '{day}'"
            if day is not None
            else f'"{column}" IS NULL'
        )
        con.execute(
            f"COPY (SELECT * FROM {src} WHERE {where} ORDER BY _offset) "
            f"TO {_quote(partial)} (FORMAT parquet)"
        )
        os.replace(partial, target)
        written.append(target)
    back = f"read_parquet([{', '.join(_quote(p) for p in written)}])"
    again, again_digest = con.execute(_digest_sql(back)).fetchone()  # type: ignore[misc]
    if (again, again_digest) != (count, digest):
        raise StoreError(
            f"archive of {segment.name}/{table} does not verify: wrote {again} rows "
            f"(md5 {again_digest}), the segment has {count} (md5 {digest}); nothing was removed"
        )
    return int(count), str(digest)


def _record(out: Path, entries: list[dict[str, object]], before: datetime) -> None:
    path = out / MANIFEST
    previous: list[object] = []
    if path.is_file():
        try:
            previous = list(json.loads(path.read_text()).get("segments", []))
        except (OSError, ValueError) as exc:
            raise StoreError(f"unreadable archive manifest {path}: {exc}") from exc
    document = {"format": 1, "before": before.isoformat(), "segments": [*previous, *entries]}
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(document, indent=1) + "\n")
    os.replace(partial, path)
