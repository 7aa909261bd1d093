"""What reading the ledger costs: each report, one replay, the bulk audit, on a big ledger.

Usage: ``python bench/reports.py [--events N] [--ledger DIR] [--keep] [--rounds R]``

Without ``--ledger`` it builds a synthetic ledger of about N events (default 10,000,000) in
a temporary folder: the flag log through the real ``LedgerWriter`` (a real hash chain), then
operations, comparisons, decisions and dead letters as Parquet segments written straight
by DuckDB in the ledger's own layout (building 10 M events through the writer would
measure the writer; ``bench/ledger.py`` does that). Decisions are made in SQL with
``ledger.rollout``'s bucket expression against the flag state in force at their time, so the
audit has real work: every one is recomputed, a sample is replayed in Python.

``--ledger DIR`` measures an existing ledger instead (e.g. the one ``bench/ledger.py``
built). Figures: wall-clock seconds (best of R rounds) of each report in every format's
common part (the SQL and the shaping; rendering is negligible), one ``replay`` (decision
lookup + flag log + recomputation) in milliseconds, and bulk audit decisions per second.
Goals (issue 6): every report < 2 s, a replay < 50 ms, audit > 1 M decisions/s.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

# Run as a script, this file's folder comes first on sys.path and bench/ledger.py would hide
# the ``ledger`` package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

T0 = datetime(2025, 3, 1, 0, 0, tzinfo=UTC)
DAYS = 7
SESSIONS = 100_000
FLAG = "v2_migration"
FILE_ROWS = 1_000_000
OPERATION_NAMES = "['execute_program', 'list_sessions', 'upload_file', 'get_status', 'cancel']"

#: (day fraction of the week, command fields) of the synthetic flag log.
SCRIPT: tuple[tuple[float, dict[str, Any]], ...] = (
    (0.00, {"command": "enable", "reason": "shadow run starts"}),
    (0.05, {"command": "set_percentage", "percentage_bp": 100, "reason": "1 %"}),
    (0.15, {"command": "set_percentage", "percentage_bp": 500, "reason": "5 %"}),
    (0.25, {"command": "set_session_override", "session_id": "s42", "pool": "v2",
            "reason": "pilot customer"}),
    (0.30, {"command": "set_percentage", "percentage_bp": 1000, "reason": "10 %"}),
    (0.40, {"command": "set_percentage", "percentage_bp": 2500, "reason": "25 %"}),
    (0.45, {"command": "rollback", "reason": "p99 ratio 2.3", "actor": "health-monitor"}),
    (0.55, {"command": "enable", "reason": "pool resized"}),
    (0.60, {"command": "set_percentage", "percentage_bp": 2500, "reason": "25 % again"}),
    (0.75, {"command": "set_percentage", "percentage_bp": 5000, "reason": "50 %"}),
    (0.90, {"command": "set_percentage", "percentage_bp": 7500, "reason": "75 %"}),
)  # fmt: skip


def _flag_log() -> list[Any]:
    from ledger import flags
    from ledger.events import FlagChanged

    state = flags.initial_state(FLAG)
    changes = []
    for index, (fraction, fields) in enumerate(SCRIPT):
        data = {"command_id": f"bench-{index}", "flag": FLAG, "actor": "alice", **fields}
        command = flags.decode_command(json.dumps(data).encode())
        at = T0 + timedelta(days=DAYS) * fraction
        event = flags.decide_command(state, command, at=at, event_id=f"bench-fe-{index}")
        if isinstance(event, FlagChanged):
            state = flags.apply(state, event)
            changes.append(event)
    return changes


def _segment(root: Path, topic: str, partition: int, first: int, last: int) -> Path:
    from ledger.store.layout import Layout, Segment

    return Layout(root).segment_dir(Segment(topic, partition, first, last))


def _select(table: str, body: str) -> str:
    """Cast ``body``'s columns to the stored types of ``table`` (JSON stored as text)."""
    from ledger.store import TABLES

    casts = ", ".join(
        f'CAST("{c.name}" AS {"VARCHAR" if c.type == "JSON" else c.type}) AS "{c.name}"'
        for c in TABLES[table].columns
    )
    return f"SELECT {casts} FROM ({body})"


OPERATIONS = """
WITH base AS (
    SELECT i, (i // 2) AS pair, CASE WHEN i % 2 = 0 THEN 'v1' ELSE 'v2' END AS pool,
           CAST(hash(i // 2) % 1000000007 AS BIGINT) AS h,
           random() AS u1, random() AS u2, random() AS u3
    FROM range($first, $last + 1) t(i)
)
SELECT 'op-' || i AS event_id, 1 AS schema_version, 'OperationRecorded' AS type,
       'c' || pair AS correlation_id, 's' || (h % $sessions) AS session_id, pool,
       CASE WHEN pool = 'v1' THEN 'primary' ELSE 'shadow' END AS role,
       $operation_names[CAST(1 + h % 5 AS BIGINT)]
           AS operation,
       CASE WHEN u3 < (CASE WHEN pool = 'v1' THEN 0.010 ELSE 0.013 END) THEN 'error'
            ELSE 'ok' END AS outcome,
       CASE WHEN u3 < 0.013 THEN NULL ELSE '{"rows": ' || (h % 97) || ', "status": "done"}'
       END AS result,
       CASE WHEN u3 < (CASE WHEN pool = 'v1' THEN 0.010 ELSE 0.013 END)
            THEN '{"type": "timeout", "message": "slow"}' END AS error,
       TIMESTAMPTZ '2025-03-01 00:00:00+00' + to_microseconds(
           CAST(pair * $step_us AS BIGINT)) AS started_at,
       exp((CASE WHEN pool = 'v1' THEN 3.0 ELSE 2.9 END)
           + (CASE WHEN pool = 'v1' THEN 0.4 ELSE 0.5 END)
             * sqrt(-2 * ln(greatest(u1, 1e-12))) * cos(2 * pi() * u2)) AS duration_ms,
       NULL AS environment, NULL AS args_digest,
       {'cpu_ms': 5 + 20 * u2, 'memory_bytes': CAST(1e6 + 1e6 * u1 AS BIGINT),
        'worker_id': pool || '-' || (h % 8)} AS resources,
       'pool.operations' AS _topic, 0 AS _partition, i AS _offset, 'c' || pair AS _key,
       '{}' AS wire
FROM base
"""

COMPARISONS = """
WITH base AS (
    SELECT i, CAST(hash(i) % 1000000007 AS BIGINT) AS h, random() AS u
    FROM range($first, $last + 1) t(i)
), classified AS (
    SELECT *, CASE WHEN u < 0.95 THEN 'match' WHEN u < 0.975 THEN 'value_mismatch'
                   WHEN u < 0.985 THEN 'shape_mismatch' WHEN u < 0.99 THEN 'v2_error'
                   WHEN u < 0.995 THEN 'error_match' ELSE 'shadow_missing' END AS category
    FROM base
)
SELECT 'cmp-' || i AS event_id, 1 AS schema_version, 'ComparisonRecorded' AS type,
       'cmp-' || i AS comparison_id, 'c' || i AS correlation_id,
       's' || (hash(i) % $sessions) AS session_id,
       $operation_names[CAST(1 + h % 5 AS BIGINT)]
           AS operation, NULL AS environment, category,
       CASE WHEN category IN ('value_mismatch', 'shape_mismatch')
            THEN '[{"path": "items[].f' || (h % 40) || '", "kind": "value", "v1": 1, "v2": 2}]'
            ELSE '[]' END AS differences,
       false AS differences_truncated,
       CASE WHEN category IN ('value_mismatch', 'shape_mismatch') THEN 1 ELSE 0 END
           AS difference_count,
       CASE WHEN category = 'match' THEN 'fp-match'
            ELSE 'fp-' || category || '-' || (h % 40) END AS fingerprint,
       'default-3' AS rules_version, 'v1' AS primary_pool,
       'op-' || (2 * i) AS v1_event_id, 'op-' || (2 * i + 1) AS v2_event_id,
       20.0 AS v1_duration_ms, 18.0 AS v2_duration_ms, 0.9 AS latency_ratio,
       NULL AS v1_error_type,
       CASE WHEN category = 'v2_error' THEN 'timeout' END AS v2_error_type,
       false AS late,
       TIMESTAMPTZ '2025-03-01 00:00:00+00' + to_microseconds(
           CAST(i * $step_us AS BIGINT) + 1000000) AS "at",
       'ledger.comparisons' AS _topic, 0 AS _partition, i AS _offset, 'c' || i AS _key,
       '{}' AS wire
FROM classified
"""

# Each decision is made against the flag state in force at its time (ASOF join), with the
# rollout module's own bucket expression; wire is the event's JSON, as the routers publish.
DECISIONS = """
WITH base AS (
    SELECT i, 's' || (hash(i) % $sessions) AS session_id, 'c' || i AS correlation_id,
           TIMESTAMPTZ '2025-03-01 00:00:00+00' + to_microseconds(
               CAST(i * $step_us AS BIGINT)) AS "at"
    FROM range($first, $last + 1) t(i)
), versioned AS (
    SELECT b.*, coalesce(s.version, 0) AS flag_version, coalesce(s.enabled, false) AS enabled,
           coalesce(s.rollout_bp, 0) AS rollout_bp
    FROM base b ASOF LEFT JOIN bench_states s ON b."at" >= s."at"
), decided AS (
    SELECT v.*, so.pool AS session_pool, {bucket} AS computed
    FROM versioned v
    LEFT JOIN bench_overrides so ON so.version = v.flag_version AND so.key = v.session_id
), routed AS (
    SELECT *,
           CASE WHEN session_pool IS NOT NULL THEN 'SESSION_OVERRIDE'
                WHEN NOT enabled THEN 'DISABLED' ELSE 'SPLIT' END AS reason,
           CASE WHEN session_pool IS NOT NULL THEN session_pool WHEN NOT enabled THEN 'v1'
                WHEN computed < rollout_bp THEN 'v2' ELSE 'v1' END AS pool,
           computed AS bucket, rollout_bp AS threshold_bp
    FROM decided
)
SELECT 'd-' || i AS event_id, 1 AS schema_version, 'RolloutDecided' AS type, '{flag}' AS flag,
       session_id, correlation_id, NULL AS environment, pool, reason, bucket, threshold_bp,
       flag_version, {hash_version} AS hash_version, "at", CAST(NULL AS VARCHAR) AS flag_event_hash,
       'ledger.decisions' AS _topic, 0 AS _partition, i AS _offset, session_id AS _key,
       to_json({{'event_id': 'd-' || i, 'schema_version': 1, 'type': 'RolloutDecided',
                 'flag': '{flag}', 'session_id': session_id, 'correlation_id': correlation_id,
                 'environment': NULL, 'pool': pool, 'reason': reason, 'bucket': bucket,
                 'threshold_bp': threshold_bp, 'flag_version': flag_version,
                 'hash_version': {hash_version},
                 'at': strftime("at", '%Y-%m-%dT%H:%M:%S.%f+00:00')}}) AS wire
FROM routed
"""


def build(root: Path, events: int, seed: float = 0.42) -> dict[str, int]:
    """A synthetic ledger of about ``events`` events at ``root``; rows per table."""
    import duckdb

    from ledger.events import encode_event
    from ledger.store import LedgerWriter, SourceRecord
    from ledger.store.rollups import write_rollups

    changes = _flag_log()
    with LedgerWriter(root, fsync=False) as writer:
        writer.write_batch(
            SourceRecord("ledger.flag-events", 0, i, FLAG.encode(), encode_event(e))
            for i, e in enumerate(changes)
        )
    pairs = max(events // 4, 1)
    step_us = DAYS * 86_400_000_000 // pairs
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SELECT setseed({seed})")
    con.execute(
        'CREATE TABLE bench_states (version BIGINT, "at" TIMESTAMPTZ, enabled BOOLEAN, '
        "rollout_bp BIGINT)"
    )
    con.executemany(
        "INSERT INTO bench_states VALUES (?, ?, ?, ?)",
        [(c.version, c.at, c.v2_pool_enabled, c.v2_rollout_bp) for c in changes],
    )
    con.execute("CREATE TABLE bench_overrides (version BIGINT, key VARCHAR, pool VARCHAR)")
    con.executemany(
        "INSERT INTO bench_overrides VALUES (?, ?, ?)",
        [(c.version, k, p) for c in changes for k, p in c.session_overrides.items()],
    )
    from ledger import rollout
    from reports.audit import _bucket_sql

    bucket = _bucket_sql(f"'{FLAG}'", "session_id")
    plans = (
        ("operations", "pool.operations", OPERATIONS, 2 * pairs),
        ("comparisons", "ledger.comparisons", COMPARISONS, pairs),
        (
            "decisions",
            "ledger.decisions",
            DECISIONS.format(bucket=bucket, flag=FLAG, hash_version=rollout.HASH_VERSION),
            pairs,
        ),
    )
    rows: dict[str, int] = {"flag_events": len(changes)}
    for table, topic, sql, total in plans:
        for partition, first in enumerate(range(0, total, FILE_ROWS)):
            last = min(first + FILE_ROWS, total) - 1
            folder = _segment(root, topic, partition, first, last)
            folder.mkdir(parents=True)
            body = sql.replace("$first", str(first)).replace("$last", str(last))
            body = body.replace("$sessions", str(SESSIONS)).replace("$step_us", str(step_us))
            body = body.replace("$operation_names", OPERATION_NAMES)
            con.execute(
                f"COPY ({_select(table, body)}) TO '{folder / (table + '.parquet')}' "
                "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)"
            )
            # The rollups the sink writes with each segment (``ledger.store.rollups``).
            write_rollups(
                con,
                folder,
                {table: f"read_parquet('{folder / (table + '.parquet')}')"},
                fsync=False,
            )
            (folder / "manifest.json").write_text(
                json.dumps({"rows": {table: last - first + 1}, "dead_lettered": 0})
            )
        rows[table] = total
    con.close()
    return rows


class Figure(NamedTuple):
    """One printed figure (the same shape as ``bench/ledger.py``'s, for its MEASUREMENTS)."""

    name: str
    value: float
    unit: str


def timed(rounds: int, run: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of every thread of this process) of the fastest round.

    The machine is shared: CPU time says what the work costs whatever the neighbours do.
    """
    best = (float("inf"), float("inf"))
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def measure(path: Path, rounds: int = 3, replays: int = 20) -> list[Figure]:
    """Seconds per report, milliseconds per replay, decisions per second of the audit."""
    from ledger.store import open_reader
    from reports.audit import AuditResult, bulk
    from reports.catalog import REPORTS, ReportOptions, build_report
    from reports.explain import explain
    from reports.html import render_html

    figures: list[Figure] = []

    def both(name: str, unit: str, scale: float, wall_cpu: tuple[float, float]) -> None:
        figures.append(Figure(f"{name} (wall)", wall_cpu[0] * scale, unit))
        figures.append(Figure(f"{name} (cpu)", wall_cpu[1] * scale, unit))

    both("open_reader", "s", 1, timed(rounds, lambda: open_reader(path).close()))
    # One hour in the middle of the ledger: whole minutes from rollups, no edges.
    hour = ReportOptions(
        flag=FLAG,
        audit_sample=200,
        charts=False,
        since=T0 + timedelta(days=3),
        until=T0 + timedelta(days=3, hours=1),
    )
    con = open_reader(path)
    # As the CLI builds them for table, json and csv (no charts) ...
    # cleanup judges as of a time (the CLI's --now): the end of the synthetic window.
    now = {"now": datetime(2025, 4, 1, tzinfo=UTC)}
    options = ReportOptions(flag=FLAG, audit_sample=200, charts=False, extra=now)
    # The first go-no-go of a ledger re-decides every segment once and keeps the verdicts.
    both(
        "report go-no-go, first run (verdicts kept)",
        "s",
        1,
        timed(1, lambda: build_report(con, "go-no-go", options)),
    )
    for name in REPORTS:
        both(f"report {name}", "s", 1, timed(rounds, lambda n=name: build_report(con, n, options)))
    for name in ("summary", "go-no-go"):
        both(
            f"report {name} --since/--until 1 h",
            "s",
            1,
            timed(rounds, lambda n=name: build_report(con, n, hour)),
        )
    # ... and for html: the charts too, and the page.
    with_charts = ReportOptions(flag=FLAG, audit_sample=200)
    for name in ("summary", "daily"):
        both(
            f"report {name} --format html",
            "s",
            1,
            timed(rounds, lambda n=name: render_html(build_report(con, n, with_charts))),
        )

    # "Why did session S go where it went at T?": T is a decision's time; also the latest
    # decision of a session, and the decision of one correlation id.
    sampled = con.execute(
        'SELECT session_id, "at", correlation_id FROM decisions '
        "USING SAMPLE reservoir(100 ROWS) REPEATABLE (1)"
    ).fetchall()
    rng = random.Random(1)
    asks: tuple[tuple[str, Callable[[tuple[Any, ...]], dict[str, Any]]], ...] = (
        ("replay --session --at", lambda row: {"session_id": row[0], "at": row[1]}),
        ("replay --session (latest)", lambda row: {"session_id": row[0]}),
        ("replay --correlation-id", lambda row: {"correlation_id": row[2]}),
    )
    for label, ask in asks:
        walls, cpus = [], []
        for _ in range(replays):
            kwargs = ask(rng.choice(sampled))
            wall, cpu = timed(1, lambda k=kwargs: explain(con, **k))
            walls.append(wall)
            cpus.append(cpu)
        figures.append(Figure(f"{label}, median (wall)", 1000 * statistics.median(walls), "ms"))
        figures.append(Figure(f"{label}, median (cpu)", 1000 * statistics.median(cpus), "ms"))

    results: list[tuple[float, float, AuditResult]] = []
    for _ in range(rounds):
        result = AuditResult()
        wall, cpu = timed(1, lambda r=result: bulk(con, r))
        results.append((wall, cpu, result))
    wall, cpu, result = min(results, key=lambda item: item[0])
    figures.append(Figure("audit decisions", result.decisions, ""))
    figures.append(Figure("audit disagreeing", result.disagreeing, ""))
    figures.append(Figure("audit (wall)", result.decisions / wall, "decisions/s"))
    figures.append(Figure("audit (cpu)", result.decisions / cpu, "decisions/cpu-s"))
    con.close()
    return figures


def figures(path: Path) -> list[Figure]:
    """For ``bench/ledger.py``'s MEASUREMENTS: this bench's figures on its ledger."""
    return measure(path, rounds=2, replays=10)


#: The JSON line's keys (issue 18) -> the wall-clock figure each is.
JSON_KEYS = {
    "summary_s": "report summary (wall)",
    "performance_s": "report performance (wall)",
    "rollout_s": "report rollout (wall)",
    "daily_s": "report daily (wall)",
    "go_no_go_s": "report go-no-go (wall)",
    "go_no_go_first_s": "report go-no-go, first run (verdicts kept) (wall)",
    "summary_html_s": "report summary --format html (wall)",
    "daily_html_s": "report daily --format html (wall)",
    "summary_1h_s": "report summary --since/--until 1 h (wall)",
    "go_no_go_1h_s": "report go-no-go --since/--until 1 h (wall)",
    "replay_at_ms": "replay --session --at, median (wall)",
    "replay_latest_ms": "replay --session (latest), median (wall)",
    "replay_correlation_ms": "replay --correlation-id, median (wall)",
    "audit_decisions_per_s": "audit (wall)",
}


def summary_json(measured: list[Figure]) -> dict[str, float]:
    by_name = {figure.name: figure.value for figure in measured}
    return {key: round(by_name[name], 4) for key, name in JSON_KEYS.items() if name in by_name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--ledger", type=Path, help="measure this ledger instead of building")
    parser.add_argument("--keep", action="store_true", help="keep the built ledger")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with one JSON line of figures")
    args = parser.parse_args()
    temporary = None
    path = args.ledger
    try:
        if path is None:
            temporary = Path(tempfile.mkdtemp(prefix="bench-reports-"))
            path = temporary / "ledger"
            start = time.perf_counter()
            rows = build(path, args.events)
            print(
                f"built {sum(rows.values()):,} events in {time.perf_counter() - start:.1f} s "
                f"at {path}: {rows}"
            )
        measured = measure(path, args.rounds)
        for figure in measured:
            print(f"  {figure.name:<42} {figure.value:>14,.3f} {figure.unit}")
        if args.json:
            print(json.dumps(summary_json(measured)))
    finally:
        if temporary is not None:
            if args.keep:
                print(f"ledger kept at {path}")
            else:
                shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
