"""Rollups: per-minute pre-aggregates of a segment's rows, kept in the segment's own folder.

A report over a long window should cost what the window's *minutes* cost, not what its
rows cost. So each segment carries, beside its ``<table>.parquet`` files, the aggregates of
those rows per UTC minute and per reporting dimension:

======================  =====================================================================
file                    one row per
======================  =====================================================================
``rollup.operations``   minute, pool, role, operation, outcome, error type: count, duration
                        and CPU sums, max memory, the distinct workers, first/last time
``rollup.latency``      minute, pool, operation, outcome, DDSketch bin: count (the health
                        windows' mapping, ``ledger.health.latency_key``'s 1 % bins)
``rollup.comparisons``  minute, category, operation, fingerprint: count, late count,
                        first/last time, the earliest example (by time, then event id)
``rollup.decisions``    minute, flag, pool, reason: count, first/last time
``rollup.<name>_hour``  the same four per UTC hour (``minute`` is then the hour's first
                        minute): a long window reads hours, and minutes only at its ends
``rollup.latest``       session: its newest decision in the segment (every decision column),
                        sorted by session id in small row groups, so ``replay --session S``
                        (latest) reads one row group per segment instead of every session id
======================  =====================================================================

Why in the segment folder: the segment's rename commits rows and rollups together, so a
crash or a redelivery can never count a row twice or miss it (the rollups are *named by the
segment they cover*: the folder). Compaction recomputes the merged segment's rollups from its
merged rows, and the parts' rollups go with the parts, so the live set of rollups always
covers exactly the live rows. A segment without its rollups (written before they existed,
or :func:`backfill` interrupted) is simply read raw: a segment is "rolled" for a table only
when both of that table's rollup files are present (``rollup.latency`` is written before
``rollup.operations``, each by an atomic rename).

Every aggregate here is mergeable (sums, counts, min/max, unions of sets, sketch bins added
per bin, arg-min by a total order), so a report re-aggregates rollup rows of whole minutes
with the rows of the window's ragged edges aggregated by the *same* SQL: the result equals
the report computed from rows alone, count for count and bin for bin (float sums up to
rounding order).

This module is SQL text and file names, shared by the writer, the readers and the reports.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import Any

from ledger.health import RELATIVE_ACCURACY
from ledger.store.schema import TABLES

__all__ = [
    "AGGREGATES",
    "HOUR_MINUTES",
    "MINUTE_US",
    "ROLLUPS",
    "ROLLUP_TABLES",
    "SOURCE_OF",
    "latency_key_sql",
    "rollup_file",
    "rollup_sql",
    "write_rollups",
]

MINUTE_US = 60_000_000

#: Rollup name -> the table it aggregates. Order matters for writing: a table's rollups are
#: written in this order and the LAST one of a table marks the table as rolled.
SOURCE_OF: dict[str, str] = {
    "latency": "operations",
    "latency_hour": "operations",
    "operations_hour": "operations",
    "operations": "operations",
    "comparisons_hour": "comparisons",
    "comparisons": "comparisons",
    "decisions_hour": "decisions",
    "decisions": "decisions",
    "latest": "decisions",
}
#: Rollups that are per-minute aggregates (``latest`` is a lookup table, not aggregated).
AGGREGATES = ("latency", "operations", "comparisons", "decisions")
ROLLUPS = tuple(SOURCE_OF)
#: Tables that have rollups -> their rollups (the last is the marker).
ROLLUP_TABLES: dict[str, tuple[str, ...]] = {}
for _name, _table in SOURCE_OF.items():
    ROLLUP_TABLES.setdefault(_table, ())
    ROLLUP_TABLES[_table] += (_name,)

_TIME = {"operations": "started_at", "comparisons": "at", "decisions": "at"}


def _gamma_multiplier(relative_accuracy: float) -> float:
    """``ddsketch.LogarithmicMapping``'s multiplier: key = ceil(log2(v) * m) (offset 0).

    Written out (not the library's ``key``) because it runs in SQL over every row; the bins
    are those of ``ledger.health.latency_key`` up to float rounding on a bin edge, and every
    rollup and every raw-row report use this same expression, so they agree bin for bin.
    """
    gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
    return math.log(2) / math.log(gamma)  # 1 / log2(gamma)


#: Smallest latency a 1 % bin can tell from zero (``LogarithmicMapping.min_possible``);
#: at or below it a value goes to the zero bucket (key NULL), as ``latency_key`` does.
_MIN_POSSIBLE = 2.2250738585072014e-308 * ((1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY))


def latency_key_sql(column: str) -> str:
    m = _gamma_multiplier(RELATIVE_ACCURACY)
    return (
        f"CASE WHEN {column} > {_MIN_POSSIBLE!r} "
        f"THEN CAST(ceil(log2({column}) * {m!r}) AS INTEGER) END"
    )


HOUR_MINUTES = 60


def rollup_sql(name: str, source: str) -> str:
    """SQL aggregating the rows of ``source`` (a table, view or subquery) into rollup ``name``.

    ``<name>_hour`` is ``<name>`` per hour: its ``minute`` is the hour's first minute. Rows
    come out in minute order, so a reader's minute filter skips row groups.
    """
    if name.endswith("_hour"):
        step = HOUR_MINUTES
        name = name.removesuffix("_hour")
    else:
        step = 1

    def _minute(column: str) -> str:
        return f"(epoch_us({column}) // {MINUTE_US * step} * {step})"

    return _ordered(name, _body(name, source, _minute))


def _ordered(name: str, body: str) -> str:
    if name == "latest":
        return body
    return f"SELECT * FROM ({body}) ORDER BY minute"


def _body(name: str, source: str, _minute: Any) -> str:
    if name == "operations":
        t = _minute("started_at")
        return f"""
            SELECT {t} AS minute, pool, role, operation, outcome,
                   CASE WHEN outcome = 'error' THEN json_extract_string(error, '$.type') END
                       AS error_type,
                   count(*) AS n,
                   sum(duration_ms) AS duration_sum, count(duration_ms) AS duration_n,
                   sum(resources.cpu_ms) AS cpu_sum, count(resources.cpu_ms) AS cpu_n,
                   max(resources.memory_bytes) AS memory_max,
                   list_sort(list_distinct(list(resources.worker_id))) AS workers,
                   min(started_at) AS first_at, max(started_at) AS last_at
            FROM {source}
            GROUP BY ALL
        """
    if name == "latency":
        t = _minute("started_at")
        return f"""
            SELECT {t} AS minute, pool, operation, outcome,
                   {latency_key_sql("duration_ms")} AS key, count(*) AS n
            FROM {source}
            GROUP BY ALL
        """
    if name == "comparisons":
        t = _minute('"at"')
        order = '("at", event_id)'
        return f"""
            SELECT {t} AS minute, category, operation, fingerprint,
                   count(*) AS n, count(*) FILTER (WHERE late) AS late,
                   min("at") AS first_at, max("at") AS last_at,
                   min({order}) AS example_order,
                   arg_min(correlation_id, {order}) AS example_correlation_id,
                   arg_min(CAST(differences AS VARCHAR), {order}) AS example_differences,
                   arg_min(difference_count, {order}) AS example_difference_count,
                   arg_min(v1_error_type, {order}) AS example_v1_error_type,
                   arg_min(v2_error_type, {order}) AS example_v2_error_type
            FROM {source}
            GROUP BY ALL
        """
    if name == "decisions":
        t = _minute('"at"')
        return f"""
            SELECT {t} AS minute, flag, pool, reason, count(*) AS n,
                   min("at") AS first_at, max("at") AS last_at
            FROM {source}
            GROUP BY ALL
        """
    if name == "latest":
        columns = ", ".join(f'"{c.name}"' for c in TABLES["decisions"].event_columns)
        return f"""
            SELECT {columns} FROM {source}
            QUALIFY row_number() OVER (
                PARTITION BY session_id ORDER BY "at" DESC, event_id DESC) = 1
            ORDER BY session_id
        """
    raise KeyError(f"no rollup {name!r}")


def time_column(table: str) -> str:
    return _TIME[table]


def rollup_file(segment_dir: Path, name: str) -> Path:
    return segment_dir / f"rollup.{name}.parquet"


def is_rolled(present: set[str], table: str) -> bool:
    """Whether a segment's file names hold every rollup of ``table`` (see module doc)."""
    return all(f"rollup.{name}.parquet" in present for name in ROLLUP_TABLES[table])


#: Small row groups for the lookup table: a session's row is found in one of ~8,000 rows.
_ROW_GROUP = {"latest": 8192}


def write_rollups(
    con: Any,
    segment_dir: Path,
    sources: dict[str, str],
    *,
    fsync: bool = True,
    staging: Path | None = None,
) -> dict[str, int]:
    """Write the rollups of the tables in ``sources`` (table -> a relation over its rows).

    Each file is written under ``staging`` (default: the segment folder itself, for a
    segment still in ``tmp/``) and renamed into ``segment_dir``, a table's marker rollup
    last, so a crash leaves a table either rolled or read raw. Returns rows per rollup.
    """
    written: dict[str, int] = {}
    for name in ROLLUPS:
        table = SOURCE_OF[name]
        if table not in sources:
            continue
        target = rollup_file(segment_dir, name)
        tmp = (staging or segment_dir) / f".rollup.{name}.{uuid.uuid4().hex}.parquet"
        path_sql = str(tmp).replace("'", "''")
        row = con.execute(
            f"COPY ({rollup_sql(name, sources[table])}) TO '{path_sql}' "
            f"(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {_ROW_GROUP.get(name, 122880)})"
        ).fetchall()
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        tmp.rename(target)
        written[name] = int(row[0][0]) if row else 0
    return written
