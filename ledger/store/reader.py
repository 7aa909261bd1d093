"""Readers: an in-memory DuckDB connection with every table and view over the live segments.

A reader never opens a DuckDB database file, so any number of readers run beside the
writer. Each reader takes a *snapshot*: under a shared lock it lists the live segments (a
compaction or commit swaps under the exclusive lock, so the list is never half of one) and
defines each table as a view over that explicit list of files. Queries therefore see one
consistent state, as of the writer's last commit before ``open_reader``; ``refresh_reader``
moves a long-lived connection to the newest commit. Files replaced by compaction stay where
they are for the writer's grace period (10 minutes by default), so a snapshot stays readable
that long.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ledger.errors import StoreError
from ledger.store import rollups
from ledger.store.layout import Layout, Segment, committed_offsets, live_segments
from ledger.store.schema import TABLES, VIEWS, Table

__all__ = ["Snapshot", "open_reader", "refresh_reader", "take_snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """The live segments at one moment, and the files each table reads."""

    segments: tuple[Segment, ...]
    files: dict[str, tuple[str, ...]]
    rows: dict[Segment, dict[str, int]]
    #: Rollup name -> its files (segments whose table is rolled, see ``ledger.store.rollups``).
    rollup_files: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    #: Rolled-up table -> its files in segments WITHOUT rollups (read raw by the reports).
    unrolled: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        """The last stored offset per (topic, partition) as of this snapshot."""
        return committed_offsets(self.segments)


def take_snapshot(path: Path | str) -> Snapshot:
    layout = Layout(Path(path))
    layout.check_readable()
    with layout.snapshot_lock(exclusive=False):
        live, _ = live_segments(layout.list_segments())
        present: dict[Segment, set[str]] = {}
        for segment in live:
            with os.scandir(layout.segment_dir(segment)) as entries:
                present[segment] = {entry.name for entry in entries}
    files = {
        name: tuple(
            str(layout.segment_dir(s) / f"{name}.parquet")
            for s in live
            if f"{name}.parquet" in present[s]
        )
        for name in TABLES
    }
    rows = {s: _manifest_rows(layout, s) for s in live}
    rolled = {
        table: [s for s in live if rollups.is_rolled(present[s], table)]
        for table in rollups.ROLLUP_TABLES
    }
    rollup_files = {
        name: tuple(
            str(rollups.rollup_file(layout.segment_dir(s), name))
            for s in rolled[rollups.SOURCE_OF[name]]
        )
        for name in rollups.ROLLUPS
    }
    unrolled = {
        table: tuple(
            str(layout.segment_dir(s) / f"{table}.parquet")
            for s in live
            if f"{table}.parquet" in present[s] and s not in rolled[table]
        )
        for table in rollups.ROLLUP_TABLES
    }
    return Snapshot(tuple(live), files, rows, rollup_files, unrolled)


def _manifest_rows(layout: Layout, segment: Segment) -> dict[str, int]:
    try:
        manifest = json.loads((layout.segment_dir(segment) / "manifest.json").read_text())
        return {str(k): int(v) for k, v in manifest.get("rows", {}).items()}
    except (OSError, ValueError):
        # Purged since the listing (a snapshot older than the grace period); the count is
        # only informative.
        return {}


def _sql_list(paths: tuple[str, ...]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _table_sql(
    con: duckdb.DuckDBPyConnection,
    layout: Layout,
    table: Table,
    files: tuple[str, ...],
    archived: tuple[str, ...] = (),
) -> str:
    schema_file = str(layout.schema_file(table.name))
    # A column this code knows but the ledger's last writer did not (older code) reads NULL.
    stored = set(con.sql(f"SELECT * FROM read_parquet({_sql_list((schema_file,))})").columns)
    live = _select(table, stored, f"read_parquet({_sql_list((schema_file, *files))}, "
                   "union_by_name = true, hive_partitioning = false)")  # fmt: skip
    if not archived:
        return live
    # The archive's files (ledger.store.archive) as they were written; its `day` is dropped.
    source = f"read_parquet({_sql_list(archived)}, union_by_name = true, hive_partitioning = true)"
    old = set(con.sql(f"SELECT * FROM {source} LIMIT 0").columns)
    return f"{live} UNION ALL {_select(table, old, source)}"


def _select(table: Table, stored: set[str], source: str) -> str:

    def column(name: str, type_: str) -> str:
        if name not in stored:
            return f'CAST(NULL AS {type_}) AS "{name}"'
        if type_ == "JSON":
            return f'CAST("{name}" AS JSON) AS "{name}"'
        return f'"{name}"'

    select = ", ".join(column(c.name, c.type) for c in table.columns)
    return f"SELECT {select} FROM {source}"


def refresh_reader(
    con: duckdb.DuckDBPyConnection, path: Path | str, archive: Path | None = None
) -> Snapshot:
    """(Re)define every table and view of ``con`` over the ledger's newest commit.

    With ``archive`` (a folder ``migration-ledger archive`` wrote), each table also reads
    the archived rows: the ledger as it was before those segments left it.
    """
    layout = Layout(Path(path))
    snapshot = take_snapshot(path)
    if archive is not None and not (archive / "manifest.json").is_file():
        raise StoreError(f"{archive} is not an archive (no manifest.json)")
    try:
        archives: dict[str, tuple[str, ...]] = {}
        for name, table in TABLES.items():
            archived = (
                tuple(str(f) for f in sorted(archive.glob(f"{name}/day=*/*.parquet")))
                if archive is not None
                else ()
            )
            archives[name] = archived
            con.execute(
                f'CREATE OR REPLACE VIEW "{name}" AS '
                f"{_table_sql(con, layout, table, snapshot.files[name], archived)}"
            )
        for rolled in rollups.ROLLUP_TABLES:
            # The rows of segments that carry no rollups, and archived rows (an archive
            # keeps no rollups): the reports aggregate them raw.
            raw = _table_sql(
                con, layout, TABLES[rolled], snapshot.unrolled[rolled], archives[rolled]
            )
            con.execute(f'CREATE OR REPLACE VIEW "{rolled}_unrolled" AS {raw}')
        # Archived decisions alone: the incremental audit keeps no verdicts for them.
        con.execute(
            'CREATE OR REPLACE VIEW "decisions_archived" AS '
            # (no segment files: the zero-row schema file, then the archived rows)
            + _table_sql(con, layout, TABLES["decisions"], (), archives["decisions"])
        )
        for name in rollups.ROLLUPS:
            files = snapshot.rollup_files[name]
            empty = rollups.rollup_sql(
                name, f'(SELECT * FROM "{rollups.SOURCE_OF[name]}" WHERE false)'
            )
            body = (
                f"SELECT * FROM ({empty}) UNION ALL BY NAME "
                f"SELECT * FROM read_parquet({_sql_list(files)}, union_by_name = true)"
                if files
                else empty
            )
            con.execute(f'CREATE OR REPLACE VIEW "rollup_{name}" AS {body}')
        con.execute(
            "CREATE OR REPLACE TABLE segments (topic VARCHAR, partition INTEGER, "
            "first_offset BIGINT, last_offset BIGINT, rows BIGINT, path VARCHAR)"
        )
        if snapshot.segments:
            con.executemany(
                "INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        s.topic,
                        s.partition,
                        s.first,
                        s.last,
                        sum(snapshot.rows.get(s, {}).values()),
                        str(layout.segment_dir(s)),
                    )
                    for s in snapshot.segments
                ],
            )
        con.execute(
            "CREATE OR REPLACE VIEW committed_offsets AS SELECT topic, partition, "
            "max(last_offset) AS last_offset FROM segments GROUP BY topic, partition"
        )
        for name, sql in VIEWS.items():
            con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')
    except duckdb.Error as exc:
        raise StoreError(f"cannot define the ledger views over {path}: {exc}") from exc
    return snapshot


def open_reader(
    path: Path | str, archive: Path | None = None, **config: Any
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every ledger table and view defined.

    Works while the sink writes (it never touches a database file). ``config`` goes to
    ``duckdb.connect`` (e.g. ``threads``, ``memory_limit``). Raises ``StoreError`` when
    ``path`` is not a ledger.
    """
    Layout(Path(path)).check_readable()
    con = duckdb.connect(":memory:", config=config)
    try:
        con.execute("SET TimeZone = 'UTC'")
        refresh_reader(con, path, archive)
    except BaseException:
        con.close()
        raise
    return con
