"""The SQL of every report, over the ledger's tables (``ledger.store.schema``).

Reports read ``scoped_*`` views, not the tables: :func:`scope` defines them once per
connection with the ``--since`` / ``--until`` window as plain ``WHERE`` clauses, which DuckDB
pushes down into the Parquet scans. The flag log is never scoped: the state at the start of a
window depends on every change before it.

The busy tables (operations, comparisons, decisions) are read through ``agg_<rollup>`` views
instead (``ledger.store.rollups``): the rollup rows of the window's whole minutes, plus the
window's ragged edges (and segments without rollups) aggregated from raw rows by the same SQL.
With ``use_rollups=False`` the ``agg_`` views aggregate the raw rows of the window alone: the
same numbers (the tests compare the two), at the cost of a scan of every row.

Queries take DuckDB named parameters (``$name``). Timestamps are UTC (``scope`` sets the
connection's time zone), so day boundaries are UTC days.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.health import LatencySketch
from ledger.store import rollups
from ledger.store.rollups import MINUTE_US, SOURCE_OF, rollup_sql

__all__ = [
    "MISMATCH_CATEGORIES",
    "MISSING_CATEGORIES",
    "SCOPED_TABLES",
    "bucketed",
    "scope",
    "sketches",
]

#: Categories where V2 answered differently from V1 (errors on both sides that agree are not).
MISMATCH_CATEGORIES = ("value_mismatch", "shape_mismatch", "error_mismatch", "v2_error")
#: Categories where one half never arrived in time.
MISSING_CATEGORIES = ("shadow_missing", "primary_missing")

#: Table -> its time column, for the tables a report window applies to.
SCOPED_TABLES: dict[str, str] = {
    "operations": "started_at",
    "comparisons": "at",
    "decisions": "at",
    "health": "at",
    "dead_letters": "at",
    "rollbacks": "at",
}


def _minute_bucket(column: str) -> str:
    """Start of the ``$step_us`` bucket holding rollup minute ``column`` (see :func:`_bucket`).

    Only for steps of whole minutes (:func:`bucketed` picks the raw-row twin otherwise)."""
    return f"to_timestamp(((({column}) * {MINUTE_US} // $step_us) * $step_us) / 1000000)"


def _bucket(column: str) -> str:
    """Start of ``column``'s time bucket of ``$step_us`` microseconds (epoch aligned, UTC).

    Integer arithmetic on the epoch: several times cheaper than ``time_bucket`` or
    ``date_trunc`` on TIMESTAMPTZ, which go through the time zone calendar row by row.
    """
    return f"to_timestamp(((epoch_us({column}) // $step_us) * $step_us) / 1000000)"


def _day(column: str) -> str:
    """The UTC day of ``column`` as days since 1970-01-01 (see :func:`_bucket`)."""
    return f"(epoch_us({column}) // 86400000000)"


def _macros(sql: str) -> str:
    sql = re.sub(r"MBUCKET\(([^()]+)\)", lambda m: _minute_bucket(m.group(1)), sql)
    sql = re.sub(r"MDAY\(([^()]+)\)", lambda m: f"(({m.group(1)}) // 1440)", sql)
    sql = re.sub(r"BUCKET\(([^()]+)\)", lambda m: _bucket(m.group(1)), sql)
    return re.sub(r"DAY\(([^()]+)\)", lambda m: _day(m.group(1)), sql)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


MISMATCH_IN = _in(MISMATCH_CATEGORIES)
MISSING_IN = _in(MISSING_CATEGORIES)


def _ts(at: datetime) -> str:
    return f"TIMESTAMPTZ '{at.astimezone(UTC).isoformat()}'"


def _floor_minute(at: datetime) -> datetime:
    at = at.astimezone(UTC)
    return at - timedelta(seconds=at.second, microseconds=at.microsecond)


def _ceil_minute(at: datetime) -> datetime:
    floor = _floor_minute(at)
    return floor if floor == at else floor + timedelta(minutes=1)


def _between(column: str, low: datetime | None, high: datetime | None) -> str:
    clauses = []
    if low is not None:
        clauses.append(f'"{column}" >= {_ts(low)}')
    if high is not None:
        clauses.append(f'"{column}" < {_ts(high)}')
    return " AND ".join(clauses) or "true"


def _minutes(low: int | None, high: int | None) -> str:
    clauses = [f"minute >= {low}"] * (low is not None) + [f"minute < {high}"] * (high is not None)
    return " AND ".join(clauses) or "true"


def _aggregates(
    con: Any, since: datetime | None, until: datetime | None, use_rollups: bool
) -> None:
    """Define ``agg_<rollup>`` and ``agg_m_<rollup>``: the window's rows aggregated per hour
    or minute (``agg_m_``: per minute only, for buckets finer than an hour), rollup columns.

    From rollups: the hourly rollup rows of the window's whole hours, the minute rows of its
    other whole minutes ``[low, high)``, the rows of segments without rollups in those
    minutes, and the rows of the ragged edges ``[since, low)`` and ``[high, until)``, the last
    two aggregated by the rollups' own SQL.
    """
    low = None if since is None else _ceil_minute(since)
    high = None if until is None else _floor_minute(until)
    empty_middle = low is not None and high is not None and low >= high
    low_m = None if low is None else int(low.timestamp()) // 60
    high_m = None if high is None else int(high.timestamp()) // 60
    hour = rollups.HOUR_MINUTES
    low_h = None if low_m is None else -(-low_m // hour) * hour
    high_h = None if high_m is None else high_m // hour * hour
    no_hours = low_h is not None and high_h is not None and low_h >= high_h
    for name in rollups.AGGREGATES:
        table = SOURCE_OF[name]
        column = rollups.time_column(table)
        if not use_rollups:
            raw = rollup_sql(name, f"scoped_{table}")
            for prefix in ("agg_", "agg_m_"):
                con.execute(f"CREATE OR REPLACE TEMP VIEW {prefix}{name} AS {raw}")
            continue
        if empty_middle:
            edges = [_between(column, since, until)]
        else:
            edges = []
            if since is not None and low != since:
                edges.append(_between(column, since, low))
            if until is not None and high != until:
                edges.append(_between(column, high, until))
        common = []
        if not empty_middle:
            middle = _between(column, low, high)
            unrolled = f"(SELECT * FROM {table}_unrolled WHERE {middle})"
            common.append(f"SELECT * FROM ({rollup_sql(name, unrolled)})")
        if edges:
            where = " OR ".join(f"({edge})" for edge in edges)
            ragged = f"(SELECT * FROM {table} WHERE {where})"
            common.append(f"SELECT * FROM ({rollup_sql(name, ragged)})")
        minutes_only = list(common)
        coarse = list(common)
        if not empty_middle:
            minutes_only.append(f"SELECT * FROM rollup_{name} WHERE {_minutes(low_m, high_m)}")
            if no_hours:
                coarse.append(f"SELECT * FROM rollup_{name} WHERE {_minutes(low_m, high_m)}")
            else:
                coarse.append(f"SELECT * FROM rollup_{name}_hour WHERE {_minutes(low_h, high_h)}")
                if low_m != low_h:
                    coarse.append(f"SELECT * FROM rollup_{name} WHERE {_minutes(low_m, low_h)}")
                if high_h != high_m:
                    coarse.append(f"SELECT * FROM rollup_{name} WHERE {_minutes(high_h, high_m)}")
        for prefix, parts in (("agg_", coarse), ("agg_m_", minutes_only)):
            con.execute(
                f"CREATE OR REPLACE TEMP VIEW {prefix}{name} AS "
                + "\nUNION ALL BY NAME\n".join(parts)
            )


def scope(
    con: Any,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    use_rollups: bool = True,
) -> None:
    """Define ``scoped_<table>`` views restricted to ``[since, until)`` on ``con``, and the
    ``agg_<rollup>`` views of the same window (from rollups unless ``use_rollups`` is False).
    """
    con.execute("SET TimeZone = 'UTC'")
    con.execute("DROP TABLE IF EXISTS scoped_spans")  # the window's first/last times
    for table, column in SCOPED_TABLES.items():
        clauses = []
        if since is not None:
            clauses.append(f"\"{column}\" >= TIMESTAMPTZ '{since.isoformat()}'")
        if until is not None:
            clauses.append(f"\"{column}\" < TIMESTAMPTZ '{until.isoformat()}'")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        con.execute(f"CREATE OR REPLACE TEMP VIEW scoped_{table} AS SELECT * FROM {table}{where}")
    _aggregates(con, since, until, use_rollups)


def sketches(
    con: Any, dimensions: tuple[str, ...], where: str = "true"
) -> dict[tuple[Any, ...], LatencySketch]:
    """Latency sketches of the window's operations per ``dimensions`` (expressions over
    ``agg_latency``'s minute, pool, operation, outcome), merged bin by bin."""
    dims = "".join(f"{d}, " for d in dimensions)
    rows = con.execute(
        f"SELECT {dims}key, sum(n) FROM agg_latency WHERE {where} GROUP BY ALL"
    ).fetchall()
    out: dict[tuple[Any, ...], LatencySketch] = {}
    for row in rows:
        group, key, n = tuple(row[: len(dimensions)]), row[-2], int(row[-1])
        sketch = out.setdefault(group, LatencySketch())
        if key is None:
            sketch.zero_count += n
        else:
            sketch.bins[int(key)] = sketch.bins.get(int(key), 0) + n
    return out


# --- summary ----------------------------------------------------------------------------------

OVERVIEW = """
SELECT 'operations' AS "table", coalesce(sum(n), 0) AS events,
       min(first_at) AS first_at, max(last_at) AS last_at FROM agg_operations
UNION ALL SELECT 'comparisons', coalesce(sum(n), 0), min(first_at), max(last_at)
    FROM agg_comparisons
UNION ALL SELECT 'decisions', coalesce(sum(n), 0), min(first_at), max(last_at)
    FROM agg_decisions
UNION ALL SELECT 'flag_events', count(*), min("at"), max("at") FROM flag_events
UNION ALL SELECT 'health', count(*), min("at"), max("at") FROM scoped_health
UNION ALL SELECT 'dead_letters', count(*), min("at"), max("at") FROM scoped_dead_letters
"""

POOLS = """
SELECT pool, role, sum(n) AS operations,
       coalesce(sum(n) FILTER (WHERE outcome = 'error'), 0) AS errors,
       round(coalesce(sum(n) FILTER (WHERE outcome = 'error'), 0) / sum(n), 4) AS error_rate,
       count(DISTINCT operation) AS operation_kinds
FROM agg_operations
GROUP BY pool, role
ORDER BY pool, role
"""

CATEGORIES = """
SELECT category, sum(n) AS comparisons,
       round(sum(n) / sum(sum(n)) OVER (), 4) AS share,
       sum(late) AS late
FROM agg_comparisons
GROUP BY category
ORDER BY comparisons DESC, category
"""

# One example per fingerprint: the earliest comparison (ties: the smallest event id), with its
# first difference spelled out (or the two canonical error types when the category is about
# errors, which have no paths).
FINGERPRINTS = """
WITH grouped AS (
    SELECT fingerprint, category, operation, sum(n) AS count,
           arg_min(example_correlation_id, example_order) AS example_correlation_id,
           CAST(arg_min(example_differences, example_order) AS JSON) AS example_differences,
           arg_min(example_difference_count, example_order) AS example_difference_count,
           arg_min(example_v1_error_type, example_order) AS v1_error_type,
           arg_min(example_v2_error_type, example_order) AS v2_error_type
    FROM agg_comparisons
    WHERE category <> 'match'
    GROUP BY fingerprint, category, operation
    ORDER BY count DESC, fingerprint
    LIMIT $limit
)
SELECT fingerprint, category, operation, count, example_correlation_id,
       CASE
         WHEN json_array_length(example_differences) > 0 THEN
           json_extract_string(example_differences, '$[0].path') || ' ('
           || json_extract_string(example_differences, '$[0].kind') || '): '
           || coalesce(CAST(json_extract(example_differences, '$[0].v1') AS VARCHAR), 'null')
           || ' -> '
           || coalesce(CAST(json_extract(example_differences, '$[0].v2') AS VARCHAR), 'null')
           || CASE WHEN example_difference_count > 1
                   THEN ' (+' || (example_difference_count - 1) || ' more)' ELSE '' END
         WHEN v1_error_type IS NOT NULL OR v2_error_type IS NOT NULL THEN
           'v1 ' || coalesce(v1_error_type, 'ok') || ', v2 ' || coalesce(v2_error_type, 'ok')
         ELSE category
       END AS example
FROM grouped
ORDER BY count DESC, fingerprint
"""

DEAD_LETTERS = """
SELECT source_topic, left(reason, 120) AS reason, count(*) AS count, max("at") AS last_at
FROM scoped_dead_letters
GROUP BY ALL
ORDER BY count DESC, source_topic, reason
LIMIT $limit
"""

# --- performance ------------------------------------------------------------------------------

# Quantiles come from the DDSketch bins of agg_latency (1 % relative accuracy, the health
# windows' sketch): the builder fills p50/p95/p99 in, this SQL leaves them NULL.
PERFORMANCE = """
WITH grouped AS (
    SELECT operation, pool, sum(n) AS count,
           coalesce(sum(n) FILTER (WHERE outcome = 'error'), 0) AS errors,
           sum(duration_sum) / nullif(sum(duration_n), 0) AS mean_ms,
           sum(cpu_sum) / nullif(sum(cpu_n), 0) AS cpu_ms_mean,
           max(memory_max) AS memory_bytes_max,
           list_unique(flatten(list(workers))) AS workers
    FROM agg_operations
    GROUP BY operation, pool
)
SELECT operation, pool, count, errors, round(errors / count, 4) AS error_rate,
       CAST(NULL AS DOUBLE) AS p50_ms, CAST(NULL AS DOUBLE) AS p95_ms,
       CAST(NULL AS DOUBLE) AS p99_ms,
       round(mean_ms, 2) AS mean_ms, round(cpu_ms_mean, 2) AS cpu_ms_mean,
       memory_bytes_max, workers
FROM grouped
ORDER BY operation, pool
"""

# --- rollout ----------------------------------------------------------------------------------

DECISION_TOTALS = """
SELECT pool, reason, sum(n) AS decisions,
       round(sum(n) / sum(sum(n)) OVER (), 4) AS share
FROM agg_decisions
GROUP BY pool, reason
ORDER BY pool, reason
"""

DECISIONS_OVER_TIME = _macros(
    """
SELECT MBUCKET(minute) AS bucket, pool, reason, sum(n) AS n
FROM agg_decisions
GROUP BY ALL
ORDER BY ALL
"""
)

FLAG_HISTORY = """
SELECT version, "at", command, actor, reason,
       v2_pool_enabled AS enabled,
       v2_rollout_bp / 100 AS rollout_pct,
       shadow_mode_enabled AS shadow,
       shadow_sample_bp / 100 AS shadow_sample_pct,
       frozen,
       coalesce(json_array_length(json_keys(session_overrides)), 0) AS session_overrides,
       coalesce(json_array_length(json_keys(environment_overrides)), 0) AS environment_overrides,
       cause_id
FROM flag_events
WHERE type = 'FlagChanged' AND flag = $flag
ORDER BY version
"""

FLAG_REJECTIONS = """
SELECT "at", command, actor, current_version, rejection, reason
FROM flag_events
WHERE type = 'CommandRejected' AND flag = $flag
ORDER BY "at", event_id
"""

ROLLBACKS = """
SELECT "at", actor, reason, array_to_string(triggers, ', ') AS triggers, operation, cause_id,
       command_id
FROM scoped_rollbacks
WHERE flag = $flag
ORDER BY "at", event_id
"""

# --- go / no-go -------------------------------------------------------------------------------

GATE_COMPARISONS = f"""
SELECT coalesce(sum(n), 0) AS comparisons,
       coalesce(sum(n) FILTER (WHERE category IN {MISMATCH_IN}), 0) AS mismatches,
       coalesce(sum(n) FILTER (WHERE category IN {MISSING_IN}), 0) AS missing
FROM agg_comparisons
"""

GATE_POOLS = """
SELECT pool, sum(n) AS operations,
       coalesce(sum(n) FILTER (WHERE outcome = 'error'), 0) AS errors
FROM agg_operations
GROUP BY pool
"""

GATE_DEAD_LETTERS = "SELECT count(*) FROM scoped_dead_letters"

# The sample-ratio check (ledger.sample_ratio): distinct units (the session, else the request)
# of SPLIT decisions per flag version and threshold, by pool; then of the primary executions
# of those requests, by the pool that answered. $window = 0: the whole period, else the size of
# the epoch-aligned windows in seconds.
_SPLIT_WINDOW = (
    "CASE WHEN $window = 0 THEN NULL "
    'ELSE to_timestamp(floor(epoch(d."at") / $window) * $window) END'
)
_SPLIT_UNIT = "coalesce(d.session_id, d.correlation_id)"

GATE_SAMPLE_RATIO_DECISIONS = f"""
SELECT d.flag, d.flag_version, d.threshold_bp, {_SPLIT_WINDOW} AS window_start,
       count(DISTINCT {_SPLIT_UNIT}) FILTER (WHERE d.pool = 'v1') AS v1,
       count(DISTINCT {_SPLIT_UNIT}) FILTER (WHERE d.pool = 'v2') AS v2
FROM scoped_decisions d
WHERE d.reason = 'SPLIT' AND d.threshold_bp IS NOT NULL AND d.flag = $flag
GROUP BY ALL ORDER BY ALL
"""

GATE_SAMPLE_RATIO_OPERATIONS = f"""
SELECT d.flag, d.flag_version, d.threshold_bp, {_SPLIT_WINDOW} AS window_start,
       count(DISTINCT {_SPLIT_UNIT}) FILTER (WHERE o.pool = 'v1') AS v1,
       count(DISTINCT {_SPLIT_UNIT}) FILTER (WHERE o.pool = 'v2') AS v2
FROM scoped_operations o JOIN scoped_decisions d USING (correlation_id)
WHERE o.role = 'primary' AND d.reason = 'SPLIT' AND d.threshold_bp IS NOT NULL
  AND d.flag = $flag
GROUP BY ALL ORDER BY ALL
"""

# --- verdicts ---------------------------------------------------------------------------------

# Every switchover step of the flag with the gate verdicts it cites (its cause, or the ids in
# gates.verdict_ids): why a stage advanced, held or rolled back.
VERDICTS = """
WITH steps AS (
    SELECT s.event_id, s."at", s.action, s.stage, s.reason, s.cause_id,
           coalesce(CAST(json_extract(s.gates, '$.verdict_ids') AS VARCHAR[]), []) AS cited
    FROM switchovers s
    WHERE s.flag = $flag
      AND ($since IS NULL OR s."at" >= $since) AND ($until IS NULL OR s."at" < $until)
)
SELECT st."at", st.action, st.stage, st.reason, v.gate, v.passed, v.test, v.estimate,
       v.p_value, v.e_value, v.threshold, v.v1_n, v.v1_events, v.v2_n, v.v2_events,
       len(v.windows) AS windows, v.event_id AS verdict_id
FROM steps st
JOIN gate_verdicts v ON v.event_id = st.cause_id OR list_contains(st.cited, v.event_id)
ORDER BY st."at", st.event_id, v.gate
"""

GATE_ROLLBACKS = """
SELECT count(*) FROM flag_events
WHERE type = 'FlagChanged' AND flag = $flag AND command = 'rollback'
  AND ($since IS NULL OR "at" >= $since) AND ($until IS NULL OR "at" < $until)
"""

# --- daily ------------------------------------------------------------------------------------

DAILY = _macros(
    f"""
WITH ops AS (
    SELECT MDAY(minute) AS day,
           sum(n) FILTER (WHERE pool = 'v1') AS v1_operations,
           sum(n) FILTER (WHERE pool = 'v2') AS v2_operations,
           coalesce(sum(n) FILTER (WHERE pool = 'v1' AND outcome = 'error'), 0) AS v1_errors,
           coalesce(sum(n) FILTER (WHERE pool = 'v2' AND outcome = 'error'), 0) AS v2_errors,
           -- p99 per pool from the DDSketch bins: the builder fills these in
           CAST(NULL AS DOUBLE) AS v1_p99_ms, CAST(NULL AS DOUBLE) AS v2_p99_ms
    FROM agg_operations GROUP BY 1
), cmp AS (
    SELECT MDAY(minute) AS day, sum(n) AS comparisons,
           coalesce(sum(n) FILTER (WHERE category IN {MISMATCH_IN}), 0) AS mismatches,
           coalesce(sum(n) FILTER (WHERE category IN {MISSING_IN}), 0) AS missing
    FROM agg_comparisons GROUP BY 1
), dec AS (
    SELECT MDAY(minute) AS day, sum(n) AS decisions,
           coalesce(sum(n) FILTER (WHERE pool = 'v2'), 0) AS to_v2
    FROM agg_decisions GROUP BY 1
), flags AS (
    SELECT DAY("at") AS day,
           count(*) FILTER (WHERE type = 'FlagChanged') AS flag_changes,
           count(*) FILTER (WHERE type = 'FlagChanged' AND command = 'rollback') AS rollbacks,
           arg_max(CASE WHEN v2_pool_enabled THEN v2_rollout_bp ELSE 0 END, version)
             FILTER (WHERE type = 'FlagChanged') AS end_rollout_bp
    FROM flag_events WHERE flag = $flag GROUP BY 1
), dead AS (
    SELECT DAY("at") AS day, count(*) AS dead_letters
    FROM scoped_dead_letters GROUP BY 1
), days AS (
    SELECT day FROM ops UNION SELECT day FROM cmp UNION SELECT day FROM dec
    UNION SELECT day FROM dead
)
SELECT DATE '1970-01-01' + CAST(days.day AS INTEGER) AS day,
       coalesce(v1_operations, 0) AS v1_operations,
       coalesce(v2_operations, 0) AS v2_operations,
       round(v1_errors / nullif(v1_operations, 0), 4) AS v1_error_rate,
       round(v2_errors / nullif(v2_operations, 0), 4) AS v2_error_rate,
       round(v1_p99_ms, 2) AS v1_p99_ms,
       round(v2_p99_ms, 2) AS v2_p99_ms,
       coalesce(comparisons, 0) AS comparisons,
       round(mismatches / nullif(comparisons, 0), 4) AS mismatch_rate,
       coalesce(missing, 0) AS missing,
       coalesce(decisions, 0) AS decisions,
       round(to_v2 / nullif(decisions, 0), 4) AS v2_share,
       coalesce(flag_changes, 0) AS flag_changes,
       coalesce(rollbacks, 0) AS rollbacks,
       end_rollout_bp / 100 AS end_rollout_pct,
       coalesce(dead_letters, 0) AS dead_letters
FROM days
LEFT JOIN ops USING (day) LEFT JOIN cmp USING (day) LEFT JOIN dec USING (day)
LEFT JOIN flags USING (day) LEFT JOIN dead USING (day)
ORDER BY days.day
"""
)

# --- charts -----------------------------------------------------------------------------------

SPANS = """
SELECT min(first_at) AS first_at, max(last_at) AS last_at FROM (
    SELECT min(first_at) AS first_at, max(last_at) AS last_at FROM agg_operations
    UNION ALL SELECT min(first_at), max(last_at) FROM agg_comparisons
    UNION ALL SELECT min(first_at), max(last_at) FROM agg_decisions
)
"""

CHART_FLAG_STEPS = """
SELECT "at", CASE WHEN v2_pool_enabled THEN v2_rollout_bp ELSE 0 END / 100 AS pct, command,
       version, actor, reason
FROM flag_events
WHERE type = 'FlagChanged' AND flag = $flag
ORDER BY version
"""

CHART_V2_SHARE = _macros(
    """
SELECT MBUCKET(minute) AS bucket,
       100 * coalesce(sum(n) FILTER (WHERE pool = 'v2'), 0) / sum(n) AS pct
FROM agg_decisions
GROUP BY 1 ORDER BY 1
"""
)


CHART_CATEGORIES = _macros(
    """
SELECT MBUCKET(minute) AS bucket, category, sum(n) AS n
FROM agg_comparisons
GROUP BY ALL
ORDER BY ALL
"""
)


def fetch(con: Any, sql: str, **params: Any) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """Run one query; (column names, rows). Only the parameters the SQL names are passed."""
    used = {name: value for name, value in params.items() if f"${name}" in sql}
    cursor = con.execute(sql, used) if used else con.execute(sql)
    columns = tuple(str(d[0]) for d in cursor.description)
    return columns, cursor.fetchall()


# Buckets finer than the rollups' minute (or not whole minutes): from the window's rows.
FINE = {
    "DECISIONS_OVER_TIME": _macros(
        """
SELECT BUCKET("at") AS bucket, pool, reason, count(*) AS n
FROM scoped_decisions
GROUP BY ALL
ORDER BY ALL
"""
    ),
    "CHART_V2_SHARE": _macros(
        """
SELECT BUCKET("at") AS bucket,
       100 * count(*) FILTER (WHERE pool = 'v2') / count(*) AS pct
FROM scoped_decisions
GROUP BY 1 ORDER BY 1
"""
    ),
    "CHART_CATEGORIES": _macros(
        """
SELECT BUCKET("at") AS bucket, category, count(*) AS n
FROM scoped_comparisons
GROUP BY ALL
ORDER BY ALL
"""
    ),
}


def bucketed(name: str, step: int) -> str:
    """The query ``name`` for buckets of ``step`` microseconds: hourly rollups for whole
    hours, minute rollups for whole minutes, raw rows otherwise."""
    if step % MINUTE_US:
        return FINE[name]
    sql = str(globals()[name])
    if step % (MINUTE_US * rollups.HOUR_MINUTES):
        sql = sql.replace("FROM agg_", "FROM agg_m_")
    return sql
