"""The ledger's tables, columns and views: the single source of truth for ad-hoc SQL.

Every table holds the events' own fields under their own names (typed: ``TIMESTAMPTZ`` for
timestamps, ``JSON`` for free-form payloads, ``STRUCT`` for closed records, lists for tuples),
followed by the same five provenance columns: where the record sat in Kafka (``_topic``,
``_partition``, ``_offset``, ``_key``) and ``wire``, the exact JSON text as received, which
``export`` writes back out byte for byte.

This module is pure data (no DuckDB import): the writer, the readers, the README and the
reports all read the same constants. Column order is the models' field order, so a new field
appended to a model is appended to its table (old segments read it as NULL).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CLUSTER_KEYS",
    "EVENT_TABLE",
    "PROVENANCE_COLUMNS",
    "TABLES",
    "TIME_COLUMN",
    "VIEWS",
    "Column",
    "Table",
    "describe_schema",
]


@dataclass(frozen=True)
class Column:
    name: str
    #: DuckDB type as seen by readers (``JSON`` columns are stored as Parquet strings).
    type: str
    doc: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    #: The event ``type`` values stored in this table.
    event_types: tuple[str, ...]
    #: The events' own fields (``type`` included), then :data:`PROVENANCE_COLUMNS`.
    event_columns: tuple[Column, ...]
    doc: str

    @property
    def columns(self) -> tuple[Column, ...]:
        return self.event_columns + PROVENANCE_COLUMNS

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"{self.name} has no column {name!r}")


def _c(name: str, type_: str, doc: str = "") -> Column:
    return Column(name, type_, doc)


PROVENANCE_COLUMNS: tuple[Column, ...] = (
    _c("_topic", "VARCHAR", "Kafka topic the record came from (`_ingest` for offline ingest)"),
    _c("_partition", "INTEGER", "its partition"),
    _c("_offset", "BIGINT", "its offset"),
    _c("_key", "VARCHAR", "its key (UTF-8, undecodable bytes replaced)"),
    _c("wire", "VARCHAR", "the event's JSON exactly as received"),
)

_BASE = (
    _c("event_id", "VARCHAR", "unique id; the ledger keeps one row per event_id per table"),
    _c("schema_version", "BIGINT"),
    _c("type", "VARCHAR", "event type (always set; `wire` may leave it out on a one-type topic)"),
)

RESOURCES = "STRUCT(cpu_ms DOUBLE, memory_bytes BIGINT, worker_id VARCHAR)"

OPERATIONS = Table(
    "operations",
    ("OperationRecorded",),
    (
        *_BASE,
        _c("correlation_id", "VARCHAR", "shared by the V1 and V2 executions of one operation"),
        _c("session_id", "VARCHAR"),
        _c("pool", "VARCHAR", "v1 | v2"),
        _c("role", "VARCHAR", "primary | shadow"),
        _c("operation", "VARCHAR"),
        _c("outcome", "VARCHAR", "ok | error"),
        _c("result", "JSON"),
        _c("error", "JSON", "{type, message, ...} when outcome = 'error'"),
        _c("started_at", "TIMESTAMPTZ"),
        _c("duration_ms", "DOUBLE"),
        _c("environment", "VARCHAR"),
        _c("args_digest", "VARCHAR"),
        _c("resources", RESOURCES),
    ),
    "OperationRecorded: one execution of one operation on one pool",
)

COMPARISONS = Table(
    "comparisons",
    ("ComparisonRecorded",),
    (
        *_BASE,
        _c("comparison_id", "VARCHAR"),
        _c("correlation_id", "VARCHAR"),
        _c("session_id", "VARCHAR"),
        _c("operation", "VARCHAR"),
        _c("environment", "VARCHAR"),
        _c("category", "VARCHAR"),
        _c("differences", "JSON", "[{path, kind, v1, v2}, ...] (the first few)"),
        _c("differences_truncated", "BOOLEAN"),
        _c("difference_count", "BIGINT"),
        _c("fingerprint", "VARCHAR"),
        _c("rules_version", "VARCHAR"),
        _c("primary_pool", "VARCHAR"),
        _c("v1_event_id", "VARCHAR"),
        _c("v2_event_id", "VARCHAR"),
        _c("v1_duration_ms", "DOUBLE"),
        _c("v2_duration_ms", "DOUBLE"),
        _c("latency_ratio", "DOUBLE"),
        _c("v1_error_type", "VARCHAR"),
        _c("v2_error_type", "VARCHAR"),
        _c("late", "BOOLEAN"),
        _c("at", "TIMESTAMPTZ"),
    ),
    "ComparisonRecorded: the classified comparison of one correlation id",
)

FLAG_EVENTS = Table(
    "flag_events",
    ("FlagChanged", "CommandRejected"),
    (
        *_BASE,
        _c("flag", "VARCHAR"),
        _c("version", "BIGINT", "FlagChanged: 1, 2, ... without gaps per flag"),
        _c("command", "VARCHAR"),
        _c("command_id", "VARCHAR"),
        _c("v2_pool_enabled", "BOOLEAN"),
        _c("v2_rollout_bp", "BIGINT", "rollout in basis points (0..10000)"),
        _c("shadow_mode_enabled", "BOOLEAN"),
        _c("shadow_sample_bp", "BIGINT"),
        _c("session_overrides", "JSON", "{session_id: pool}"),
        _c("environment_overrides", "JSON", "{environment: pool}"),
        _c("frozen", "BOOLEAN"),
        _c("actor", "VARCHAR"),
        _c("reason", "VARCHAR"),
        _c("cause_id", "VARCHAR"),
        _c("at", "TIMESTAMPTZ"),
        _c("prev_hash", "VARCHAR"),
        _c("hash", "VARCHAR"),
        _c("current_version", "BIGINT", "CommandRejected: the flag version it was refused at"),
        _c("rejection", "VARCHAR", "CommandRejected: why (a code)"),
        _c("detail", "VARCHAR", "CommandRejected: the rejection explained"),
    ),
    "FlagChanged and CommandRejected (the flag log), told apart by `type`",
)

DECISIONS = Table(
    "decisions",
    ("RolloutDecided",),
    (
        *_BASE,
        _c("flag", "VARCHAR"),
        _c("session_id", "VARCHAR"),
        _c("correlation_id", "VARCHAR"),
        _c("environment", "VARCHAR"),
        _c("pool", "VARCHAR"),
        _c("reason", "VARCHAR", "ENVIRONMENT_OVERRIDE | SESSION_OVERRIDE | DISABLED | SPLIT | ..."),
        _c("bucket", "BIGINT", "0..9999"),
        _c("threshold_bp", "BIGINT"),
        _c("flag_version", "BIGINT", "the flag log version the decision used"),
        _c("hash_version", "BIGINT"),
        _c("at", "TIMESTAMPTZ"),
        _c("flag_event_hash", "VARCHAR", "`hash` of the FlagChanged used (newer decisions)"),
    ),
    "RolloutDecided: where one request was routed and why",
)

HEALTH = Table(
    "health",
    ("HealthAssessed",),
    (
        *_BASE,
        _c("pool", "VARCHAR"),
        _c("operation", "VARCHAR", "an operation or '*' for all"),
        _c("window_start", "TIMESTAMPTZ"),
        _c("window_end", "TIMESTAMPTZ"),
        _c("count", "BIGINT"),
        _c("error_count", "BIGINT"),
        _c("errors_by_type", "JSON"),
        _c("p50_ms", "DOUBLE"),
        _c("p95_ms", "DOUBLE"),
        _c("p99_ms", "DOUBLE"),
        _c("mean_ms", "DOUBLE"),
        _c("comparisons", "BIGINT"),
        _c("mismatches", "BIGINT"),
        _c("missing", "BIGINT"),
        _c("cpu_ms_mean", "DOUBLE"),
        _c("memory_bytes_max", "BIGINT"),
        _c("worker_failures", "BIGINT"),
        _c("verdict", "VARCHAR", "ok | warn | rollback | insufficient_data | unjudged"),
        _c("triggers", "VARCHAR[]"),
        _c("warnings", "VARCHAR[]"),
        _c("alerts", "VARCHAR[]"),
        _c("compared_with", "VARCHAR"),
        _c("judge_verdict", "VARCHAR"),
        _c("judge_score", "DOUBLE"),
        _c("judge", "JSON"),
        _c("metrics", "JSON"),
        _c("latency_sample_ms", "DOUBLE[]"),
        _c("latency_sketch", "JSON"),
        _c("at", "TIMESTAMPTZ"),
    ),
    "HealthAssessed: one closed health window of one pool and operation",
)

ROLLBACKS = Table(
    "rollbacks",
    ("RollbackTriggered",),
    (
        *_BASE,
        _c("flag", "VARCHAR"),
        _c("command_id", "VARCHAR"),
        _c("actor", "VARCHAR"),
        _c("reason", "VARCHAR"),
        _c("cause_id", "VARCHAR"),
        _c("triggers", "VARCHAR[]"),
        _c("operation", "VARCHAR"),
        _c("window_start", "TIMESTAMPTZ"),
        _c("window_end", "TIMESTAMPTZ"),
        _c("metrics", "JSON"),
        _c("baseline_id", "VARCHAR"),
        _c("at", "TIMESTAMPTZ"),
    ),
    "RollbackTriggered: why a rollback command was sent",
)

SWITCHOVERS = Table(
    "switchovers",
    ("SwitchoverRecorded",),
    (
        *_BASE,
        _c("flag", "VARCHAR"),
        _c("action", "VARCHAR"),
        _c("stage", "BIGINT"),
        _c("percentage_bp", "BIGINT"),
        _c("actor", "VARCHAR"),
        _c("reason", "VARCHAR"),
        _c("cause_id", "VARCHAR"),
        _c("gates", "JSON"),
        _c("plan", "VARCHAR"),
        _c("soak_s", "DOUBLE"),
        _c("flag_version", "BIGINT"),
        _c("command_id", "VARCHAR"),
        _c("at", "TIMESTAMPTZ"),
    ),
    "SwitchoverRecorded: the switchover controller's steps",
)

GATE_VERDICTS = Table(
    "gate_verdicts",
    ("GateVerdict",),
    (
        *_BASE,
        _c("flag", "VARCHAR"),
        _c("gate", "VARCHAR"),
        _c("passed", "BOOLEAN"),
        _c("test", "VARCHAR", "threshold | mixture_sprt"),
        _c("estimate", "DOUBLE"),
        _c("interval_low", "DOUBLE"),
        _c("interval_high", "DOUBLE"),
        _c("p_value", "DOUBLE"),
        _c("e_value", "DOUBLE"),
        _c("threshold", "DOUBLE"),
        _c("v1_n", "BIGINT"),
        _c("v1_events", "BIGINT"),
        _c("v2_n", "BIGINT"),
        _c("v2_events", "BIGINT"),
        _c("windows", "TIMESTAMPTZ[]"),
        _c("stage", "BIGINT"),
        _c("details", "JSON"),
        _c("at", "TIMESTAMPTZ"),
    ),
    "GateVerdict: one gate's verdict and its statistics, cited by the step it caused",
)

BREAKER_EVENTS = Table(
    "breaker_events",
    ("BreakerStateChanged",),
    (
        *_BASE,
        _c("breaker", "VARCHAR"),
        _c("previous", "VARCHAR"),
        _c("current", "VARCHAR"),
        _c("reason", "VARCHAR"),
        _c("consecutive_failures", "BIGINT"),
        _c("half_open_successes", "BIGINT"),
        _c("retry_at", "TIMESTAMPTZ"),
        _c("at", "TIMESTAMPTZ"),
    ),
    "BreakerStateChanged: the V2 circuit breaker's transitions",
)

CHECKPOINTS = Table(
    "checkpoints",
    ("CheckpointPublished",),
    (
        *_BASE,
        _c("origin", "VARCHAR", "the tree: migration-ledger/flag-log/<topic>"),
        _c("tree_size", "BIGINT", "flag events covered"),
        _c("root_hash", "VARCHAR", "RFC 6962 root, hex"),
        _c("note", "VARCHAR", "the checkpoint as a C2SP signed note"),
        _c("signed", "BOOLEAN"),
        _c("key_name", "VARCHAR"),
        _c("last_offset", "BIGINT", "offset of the newest flag event covered"),
        _c("at", "TIMESTAMPTZ", "time of the newest flag event covered"),
    ),
    "CheckpointPublished: signed tree heads of the flag log, one per append",
)

DEAD_LETTERS = Table(
    "dead_letters",
    ("DeadLettered",),
    (
        *_BASE,
        _c("source_topic", "VARCHAR"),
        _c("source_partition", "BIGINT"),
        _c("source_offset", "BIGINT"),
        _c("reason", "VARCHAR"),
        _c("original_key", "VARCHAR"),
        _c("original_b64", "VARCHAR", "the rejected bytes, base64"),
        _c("at", "TIMESTAMPTZ"),
    ),
    "DeadLettered: input that could not be used (from the worker or the sink itself)",
)

#: Every table, in the order the README lists them.
TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        OPERATIONS,
        COMPARISONS,
        FLAG_EVENTS,
        DECISIONS,
        HEALTH,
        ROLLBACKS,
        SWITCHOVERS,
        GATE_VERDICTS,
        BREAKER_EVENTS,
        CHECKPOINTS,
        DEAD_LETTERS,
    )
}

#: Compaction sorts a table's rows by these columns (then offset), so that point lookups by
#: them (a session's decisions for replay, one correlation id's pair) skip most row groups.
CLUSTER_KEYS: dict[str, tuple[str, ...]] = {
    "operations": ("correlation_id",),
    "comparisons": ("correlation_id",),
    "decisions": ("session_id", "at"),
    "flag_events": ("flag", "version"),
}

#: Event ``type`` -> the table that stores it.
EVENT_TABLE: dict[str, str] = {
    event_type: table.name for table in TABLES.values() for event_type in table.event_types
}

#: The column that says when a table's events happened (export partitions days by it).
TIME_COLUMN: dict[str, str] = {name: "at" for name in TABLES} | {"operations": "started_at"}


def _events_view() -> str:
    parts = [
        f"SELECT '{name}' AS table_name, type, event_id, \"{TIME_COLUMN[name]}\" AS occurred_at, "
        f"_topic, _partition, _offset, wire FROM {name}"
        for name in TABLES
    ]
    return "\nUNION ALL\n".join(parts)


#: Columns of each half in ``operation_pairs`` (prefixed ``v1_`` / ``v2_``).
PAIR_HALF_COLUMNS = (
    "event_id",
    "role",
    "outcome",
    "started_at",
    "duration_ms",
    "result",
    "error",
    "resources",
)
#: Columns of the comparison in ``operation_pairs``.
PAIR_COMPARISON_COLUMNS = (
    "comparison_event_id",
    "category",
    "fingerprint",
    "difference_count",
    "differences",
    "primary_pool",
    "late",
    "compared_at",
)


def _pairs_view() -> str:
    """A pivot (group by correlation id), not outer joins: a filter on ``correlation_id``
    reaches the Parquet scans (row groups skipped), and only the columns a query uses are read.
    """
    halves = ",\n".join(
        f"any_value({c}) FILTER (WHERE pool = '{pool}') AS {pool}_{c}"
        for pool in ("v1", "v2")
        for c in PAIR_HALF_COLUMNS
    )
    compared = ",\n".join(f"any_value({c}) AS {c}" for c in PAIR_COMPARISON_COLUMNS)
    return f"""
        SELECT correlation_id,
               any_value(session_id) AS session_id,
               any_value(operation) AS operation,
               any_value(environment) AS environment,
               {halves},
               {compared}
        FROM (
            SELECT correlation_id, session_id, operation, environment, pool,
                   {", ".join(PAIR_HALF_COLUMNS)}
            FROM operations
            UNION ALL BY NAME
            SELECT correlation_id, session_id, operation, environment, 'comparison' AS pool,
                   event_id AS comparison_event_id, category, fingerprint, difference_count,
                   differences, primary_pool, late, "at" AS compared_at
            FROM comparisons
        )
        GROUP BY correlation_id
    """


#: View name -> its SQL (defined after the tables, in this order).
VIEWS: dict[str, str] = {
    # One row per correlation id: the V1 and V2 halves side by side with their comparison.
    "operation_pairs": _pairs_view(),
    # The flag log proper: accepted changes in version order per flag.
    "flag_changes": """
        SELECT * EXCLUDE (current_version, rejection, detail) FROM flag_events
        WHERE type = 'FlagChanged'
    """,
    "flag_rejections": """
        SELECT event_id, schema_version, type, flag, command, command_id, current_version,
               actor, reason, cause_id, rejection, detail, "at",
               _topic, _partition, _offset, _key, wire
        FROM flag_events WHERE type = 'CommandRejected'
    """,
    # Every event of every table on one timeline (wire form), e.g. for export or a time line.
    "events": _events_view(),
}


def describe_schema() -> str:
    """The tables and views as Markdown (the README's schema section is this text)."""
    lines: list[str] = []
    for table in TABLES.values():
        lines.append(f"### `{table.name}` — {table.doc}")
        lines.append("")
        lines.append("| column | type | note |")
        lines.append("|---|---|---|")
        for column in table.event_columns:
            note = column.doc.replace("|", "\\|")  # a bare pipe would end the cell
            lines.append(f"| `{column.name}` | {column.type} | {note} |")
        lines.append(
            "| `_topic`, `_partition`, `_offset`, `_key`, `wire` | provenance | "
            "where the record sat in Kafka, and its exact JSON |"
        )
        lines.append("")
    lines.append("### Views")
    lines.append("")
    lines.append(
        "- `operation_pairs`: one row per correlation id, V1 and V2 halves (`v1_*`, `v2_*`) "
        "with their comparison (`category`, `fingerprint`, `differences`, ...)."
    )
    lines.append("- `flag_changes`, `flag_rejections`: the two halves of `flag_events`.")
    lines.append(
        "- `events`: every event of every table (`table_name`, `type`, `event_id`, "
        "`occurred_at`, provenance, `wire`)."
    )
    lines.append(
        "- `segments`: the committed Parquet segments (`topic`, `partition`, `first_offset`, "
        "`last_offset`, `rows`, `path`); `committed_offsets`: the last stored offset per "
        "topic and partition."
    )
    return "\n".join(lines)
