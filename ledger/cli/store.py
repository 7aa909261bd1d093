"""``migration-ledger sql | export | ingest | compact``: the ledger folder from the shell.

All of them work without Kafka. ``sql`` and ``export`` are readers (they run beside the
sink); ``ingest`` and ``compact`` are writers (one writer at a time: they refuse to run while
the sink holds the ledger). DuckDB and pyarrow load inside the commands.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import json
import sys
import uuid
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger.cli.options import ArchiveOption, DuckdbOption, build_settings, fail
from ledger.errors import LedgerError

__all__ = ["compact", "export", "ingest", "render_rows", "sql"]


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class ExportFormat(StrEnum):
    ndjson = "ndjson"
    parquet = "parquet"


def _plain(value: Any, type_name: str = "") -> Any:
    """A DuckDB value as plain JSON data (JSON columns parsed, timestamps in RFC 3339)."""
    if value is None:
        return None
    if type_name == "JSON" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any, type_name: str) -> str:
    """One value as text for the table and CSV forms."""
    if value is None:
        return ""
    if type_name == "JSON" and isinstance(value, str):
        return value
    plain = _plain(value, type_name)
    if isinstance(plain, dict | list):
        return json.dumps(plain, separators=(",", ":"))
    return str(plain)


def render_rows(
    columns: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: OutputFormat,
    *,
    title: str | None = None,
) -> None:
    """Print a result in one of the three forms (shared by ``sql`` and, if wanted, reports)."""
    if fmt is OutputFormat.json:
        objects = [
            {c: _plain(v, t) for c, t, v in zip(columns, types, row, strict=True)} for row in rows
        ]
        typer.echo(json.dumps(objects, indent=2, ensure_ascii=False))
    elif fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(v, t) for t, v in zip(types, row, strict=True)])
        sys.stdout.flush()
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, show_lines=False)
        for column, type_name in zip(columns, types, strict=True):
            numeric = any(k in type_name for k in ("INT", "DOUBLE", "FLOAT", "DECIMAL"))
            table.add_column(column, justify="right" if numeric else "left", overflow="fold")
        for row in rows:
            table.add_row(*(_cell(v, t) for t, v in zip(types, row, strict=True)))
        Console().print(table)
        typer.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})", err=True)


def sql(
    query: Annotated[str, typer.Argument(help="SQL over the ledger's tables and views.")],
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table, json (array of objects), csv")
    ] = OutputFormat.table,
    duckdb: DuckdbOption = None,
    archive: ArchiveOption = None,
) -> None:
    """Run an ad-hoc query on the ledger (works while the sink runs).

    Tables: operations, comparisons, flag_events, decisions, health, rollbacks, switchovers,
    breaker_events, dead_letters. Views: operation_pairs, flag_changes, flag_rejections,
    events, segments, committed_offsets. Write "at" in double quotes (a DuckDB keyword).
    """
    # Deferred: DuckDB loads only when the ledger is read or written.
    import duckdb as duck

    from ledger.store import open_reader

    settings = build_settings(duckdb=duckdb)
    try:
        con = open_reader(settings.duckdb, archive=archive)
    except LedgerError as exc:
        raise fail(str(exc)) from None
    try:
        relation = con.sql(query)
        if relation is None:
            return
        columns = list(relation.columns)
        types = [str(t) for t in relation.types]
        rows = relation.fetchall()
    except duck.Error as exc:
        raise fail(f"query failed: {exc}", code=2) from None
    finally:
        con.close()
    render_rows(columns, types, rows, fmt)


def export(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the files into.")],
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="ndjson or parquet (by day)")
    ] = ExportFormat.ndjson,
    duckdb: DuckdbOption = None,
) -> None:
    """Write every stored event in its wire form, one file (or folder) per event type."""
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store import export_ledger

    settings = build_settings(duckdb=duckdb)
    try:
        result = export_ledger(settings.duckdb, out, fmt.value)
    except LedgerError as exc:
        raise fail(str(exc)) from None
    for event_type, rows in sorted(result.events.items()):
        typer.echo(f"{event_type}: {rows}")
    typer.echo(f"exported {sum(result.events.values())} events to {out}", err=True)


def ingest(
    files: Annotated[
        list[Path], typer.Argument(help="Exported .ndjson / .parquet files or their folders.")
    ],
    duckdb: DuckdbOption = None,
) -> None:
    """Load exported files into the ledger without Kafka (validated, deduplicated)."""
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store import ingest_files

    settings = build_settings(duckdb=duckdb)
    try:
        from ledger.store.keys import load_signer

        result = ingest_files(settings.duckdb, files, signer=load_signer(settings.signing_key))
    except LedgerError as exc:
        raise fail(str(exc)) from None
    for table, rows in sorted(result.stored.items()):
        typer.echo(f"{table}: {rows}")
    typer.echo(
        f"ingested {result.records} records from {result.files} file(s) into "
        f"{settings.duckdb}: {sum(result.stored.values())} rows stored, "
        f"{result.duplicates} duplicates skipped, {result.dead_lettered} dead-lettered",
        err=True,
    )


def compact(
    full: Annotated[
        bool, typer.Option("--full", help="Merge every partition into the fewest files.")
    ] = False,
    target_rows: Annotated[
        int, typer.Option("--target-rows", min=1000, help="Rows per merged segment at most.")
    ] = 1_000_000,
    duckdb: DuckdbOption = None,
) -> None:
    """Merge small segments (the sink does this itself while it runs)."""
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store import LedgerWriter

    settings = build_settings(duckdb=duckdb)
    try:
        with LedgerWriter(settings.duckdb) as writer:
            result = writer.compact(target_rows=target_rows, full=full)
    except LedgerError as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"merged {result.merged_segments} segments into {result.new_segments} "
        f"({result.rows} rows); purged {result.purged} replaced segment(s)"
        + (f"; rollups written for {result.rolled_up} segment(s)" if result.rolled_up else "")
    )


def archive(
    before: Annotated[
        str, typer.Option("--before", help="Archive segments whose rows are all before this.")
    ],
    out: Annotated[Path, typer.Option("--out", help="The archive folder (created, added to).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would move; write and remove nothing.")
    ] = False,
    duckdb: DuckdbOption = None,
) -> None:
    """Move old segments to day-partitioned Parquet in --out, verified, then off the ledger.

    --before is a date (UTC midnight) or an RFC 3339 time. The flag log and the newest segment
    of each partition stay. Needs the single-writer lock: stop the sink first. Read both with
    `sql`, `report`, `audit` --archive DIR.
    """
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store import archive_before

    try:
        when = dt.datetime.fromisoformat(before)
    except ValueError:
        raise fail(f"--before: {before!r} is not a date or RFC 3339 time", code=2) from None
    if when.tzinfo is None:
        if len(before) > 10:
            raise fail(f"--before: {before!r} has no UTC offset (add +00:00 or Z)", code=2)
        when = when.replace(tzinfo=dt.UTC)
    settings = build_settings(duckdb=duckdb)
    try:
        result = archive_before(settings.duckdb, when, out, dry_run=dry_run)
    except LedgerError as exc:
        raise fail(str(exc)) from None
    verb = "would archive" if dry_run else "archived"
    rows = ", ".join(f"{n} {table}" for table, n in sorted(result.rows.items())) or "no rows"
    typer.echo(f"{verb} {len(result.archived)} segments ({rows}) to {out}")
    for name, why in result.kept:
        typer.echo(f"kept {name}: {why}")
