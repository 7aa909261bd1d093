"""The DuckDB ledger: a folder of offset-named Parquet segments, read through DuckDB views.

``settings.duckdb`` (``MIGRATION_LEDGER_DUCKDB``, ``--duckdb``) names a FOLDER, not a DuckDB
database file: DuckDB lets one process open a database file and then no other, yet reports,
replay, audit and ``sql`` must run while the sink writes all day. So the one writer
(:class:`LedgerWriter`) commits each batch as Parquet segments renamed into place
atomically, their names carrying the Kafka offsets they hold, and every reader
(:func:`open_reader`) is an in-memory DuckDB connection with views over those files.

The heavy parts (duckdb, pyarrow, numpy) load on first use of a name below, so importing
``ledger.store.schema`` for its constants stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ledger.store.schema import EVENT_TABLE, TABLES, VIEWS, Column, Table, describe_schema

if TYPE_CHECKING:
    from ledger.store.archive import ArchiveResult, archive_before
    from ledger.store.reader import Snapshot, open_reader, refresh_reader, take_snapshot
    from ledger.store.transfer import ExportResult, IngestResult, export_ledger, ingest_files
    from ledger.store.writer import CompactionResult, LedgerWriter, SourceRecord, WriteResult

__all__ = [
    "EVENT_TABLE",
    "TABLES",
    "VIEWS",
    "ArchiveResult",
    "Column",
    "CompactionResult",
    "ExportResult",
    "IngestResult",
    "LedgerWriter",
    "Snapshot",
    "SourceRecord",
    "Table",
    "WriteResult",
    "archive_before",
    "describe_schema",
    "export_ledger",
    "ingest_files",
    "open_reader",
    "refresh_reader",
    "take_snapshot",
]

_LAZY = {
    "ArchiveResult": "ledger.store.archive",
    "archive_before": "ledger.store.archive",
    "Snapshot": "ledger.store.reader",
    "open_reader": "ledger.store.reader",
    "refresh_reader": "ledger.store.reader",
    "take_snapshot": "ledger.store.reader",
    "ExportResult": "ledger.store.transfer",
    "IngestResult": "ledger.store.transfer",
    "export_ledger": "ledger.store.transfer",
    "ingest_files": "ledger.store.transfer",
    "CompactionResult": "ledger.store.writer",
    "LedgerWriter": "ledger.store.writer",
    "SourceRecord": "ledger.store.writer",
    "WriteResult": "ledger.store.writer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ledger.store' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
