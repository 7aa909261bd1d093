"""The SQL of every report, over the ledger's tables (``ledger.store.schema``).

Reports read ``scoped_*`` views, not the tables: :func:`scope` defines them once per
connection with the ``--since`` / ``--until`` window as plain ``WHERE`` clauses, which DuckDB
pushes down into the Parquet scans. The flag log is never scoped: the state at the start of a
window depends on every change before it.

Queries take DuckDB named parameters (``$name``). Timestamps are UTC (``scope`` sets the
connection's time zone), so day boundaries are UTC days.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

__all__ = [
    "MISMATCH_CATEGORIES",
    "MISSING_CATEGORIES",
    "SCOPED_TABLES",
    "scope",
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
    sql = re.sub(r"BUCKET\(([^()]+)\)", lambda m: _bucket(m.group(1)), sql)
    return re.sub(r"DAY\(([^()]+)\)", lambda m: _day(m.group(1)), sql)


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{value}'" for value in values) + ")"


MISMATCH_IN = _in(MISMATCH_CATEGORIES)
MISSING_IN = _in(MISSING_CATEGORIES)


def scope(con: Any, since: datetime | None = None, until: datetime | None = None) -> None:
    """Define ``scoped_<table>`` views restricted to ``[since, until)`` on ``con``."""
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


# --- summary ----------------------------------------------------------------------------------

OVERVIEW = """
SELECT 'operations' AS "table", count(*) AS events,
       min(started_at) AS first_at, max(started_at) AS last_at FROM scoped_operations
UNION ALL SELECT 'comparisons', count(*), min("at"), max("at") FROM scoped_comparisons
UNION ALL SELECT 'decisions', count(*), min("at"), max("at") FROM scoped_decisions
UNION ALL SELECT 'flag_events', count(*), min("at"), max("at") FROM flag_events
UNION ALL SELECT 'health', count(*), min("at"), max("at") FROM scoped_health
UNION ALL SELECT 'dead_letters', count(*), min("at"), max("at") FROM scoped_dead_letters
"""

POOLS = """
SELECT pool, role, count(*) AS operations,
       count(*) FILTER (WHERE outcome = 'error') AS errors,
       round(count(*) FILTER (WHERE outcome = 'error') / count(*), 4) AS error_rate,
       count(DISTINCT operation) AS operation_kinds
FROM scoped_operations
GROUP BY pool, role
ORDER BY pool, role
"""

CATEGORIES = """
SELECT category, count(*) AS comparisons,
       round(count(*) / sum(count(*)) OVER (), 4) AS share,
       count(*) FILTER (WHERE late) AS late
FROM scoped_comparisons
GROUP BY category
ORDER BY comparisons DESC, category
"""

# One example per fingerprint: the earliest comparison, with its first difference spelled out
# (or the two canonical error types when the category is about errors, which have no paths).
FINGERPRINTS = """
WITH grouped AS (
    SELECT fingerprint, category, operation, count(*) AS count,
           arg_min(correlation_id, "at") AS example_correlation_id,
           arg_min(differences, "at") AS example_differences,
           arg_min(difference_count, "at") AS example_difference_count,
           arg_min(v1_error_type, "at") AS v1_error_type,
           arg_min(v2_error_type, "at") AS v2_error_type
    FROM scoped_comparisons
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

# One quantile aggregate with a list of fractions: one buffer per group instead of three.
PERFORMANCE = """
WITH grouped AS (
    SELECT operation, pool, count(*) AS count,
           count(*) FILTER (WHERE outcome = 'error') AS errors,
           quantile_cont(duration_ms, [0.50, 0.95, 0.99]) AS q,
           avg(duration_ms) AS mean_ms,
           avg(resources.cpu_ms) AS cpu_ms_mean,
           max(resources.memory_bytes) AS memory_bytes_max,
           count(DISTINCT resources.worker_id) AS workers
    FROM scoped_operations
    GROUP BY operation, pool
)
SELECT operation, pool, count, errors, round(errors / count, 4) AS error_rate,
       round(q[1], 2) AS p50_ms, round(q[2], 2) AS p95_ms, round(q[3], 2) AS p99_ms,
       round(mean_ms, 2) AS mean_ms, round(cpu_ms_mean, 2) AS cpu_ms_mean,
       memory_bytes_max, workers
FROM grouped
ORDER BY operation, pool
"""

# --- rollout ----------------------------------------------------------------------------------

DECISION_TOTALS = """
SELECT pool, reason, count(*) AS decisions,
       round(count(*) / sum(count(*)) OVER (), 4) AS share
FROM scoped_decisions
GROUP BY pool, reason
ORDER BY pool, reason
"""

DECISIONS_OVER_TIME = _macros(
    """
SELECT BUCKET("at") AS bucket, pool, reason, count(*) AS n
FROM scoped_decisions
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
SELECT count(*) AS comparisons,
       count(*) FILTER (WHERE category IN {MISMATCH_IN}) AS mismatches,
       count(*) FILTER (WHERE category IN {MISSING_IN}) AS missing
FROM scoped_comparisons
"""

GATE_POOLS = """
SELECT pool, count(*) AS operations,
       count(*) FILTER (WHERE outcome = 'error') AS errors,
       -- answers only, as the health windows: a timeout's duration is the timeout setting
       quantile_cont(duration_ms, 0.99) FILTER (WHERE outcome <> 'error') AS p99_ms
FROM scoped_operations
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
    SELECT DAY(started_at) AS day,
           count(*) FILTER (WHERE pool = 'v1') AS v1_operations,
           count(*) FILTER (WHERE pool = 'v2') AS v2_operations,
           count(*) FILTER (WHERE pool = 'v1' AND outcome = 'error') AS v1_errors,
           count(*) FILTER (WHERE pool = 'v2' AND outcome = 'error') AS v2_errors,
           quantile_cont(duration_ms, 0.99) FILTER (WHERE pool = 'v1') AS v1_p99_ms,
           quantile_cont(duration_ms, 0.99) FILTER (WHERE pool = 'v2') AS v2_p99_ms
    FROM scoped_operations GROUP BY 1
), cmp AS (
    SELECT DAY("at") AS day, count(*) AS comparisons,
           count(*) FILTER (WHERE category IN {MISMATCH_IN}) AS mismatches,
           count(*) FILTER (WHERE category IN {MISSING_IN}) AS missing
    FROM scoped_comparisons GROUP BY 1
), dec AS (
    SELECT DAY("at") AS day, count(*) AS decisions,
           count(*) FILTER (WHERE pool = 'v2') AS to_v2
    FROM scoped_decisions GROUP BY 1
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
    SELECT min(started_at) AS first_at, max(started_at) AS last_at FROM scoped_operations
    UNION ALL SELECT min("at"), max("at") FROM scoped_comparisons
    UNION ALL SELECT min("at"), max("at") FROM scoped_decisions
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
SELECT BUCKET("at") AS bucket,
       100 * count(*) FILTER (WHERE pool = 'v2') / count(*) AS pct
FROM scoped_decisions
GROUP BY 1 ORDER BY 1
"""
)

# Logarithmic bins fixed in advance ($per_decade per factor of ten: bin k holds durations in
# [10^(k/n), 10^((k+1)/n)) ms), so one pass suffices; a zero duration counts as 1 us.
CHART_LATENCY = """
SELECT pool,
       CAST(floor(log10(greatest(duration_ms, 0.001)) * $per_decade) AS BIGINT) AS bin,
       count(*) AS n
FROM scoped_operations
GROUP BY ALL
ORDER BY pool, bin
"""

CHART_CATEGORIES = _macros(
    """
SELECT BUCKET("at") AS bucket, category, count(*) AS n
FROM scoped_comparisons
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
