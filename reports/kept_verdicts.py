"""The incremental audit: each segment's decisions re-decided once, the verdicts kept by name.

``audit`` (and ``report go-no-go``) would re-decide every decision of the window on every
run. Instead, each live segment's decisions are re-decided once, by the same SQL as the full
audit (:func:`reports.audit.recompute_sql`), and the counts per (minute, flag, flag version)
of decisions and disagreeing decisions are kept in ``<ledger>/verdicts/<segment>.parquet``
with ``<segment>.json`` beside it saying what they were computed against:

- the decisions file (inode, size, modification time): a rewritten file is re-decided;
- a fingerprint of every flag state the decisions used (enabled, split, chain hash,
  overrides) and the versions they named that the log did not have: a changed flag log
  re-decides the segments that used a changed version.

A verdict whose keys do not match today's ledger is recomputed, never trusted, so the counts
equal the full audit's on an honest ledger and on one tampered through the files (the tests
compare them). What the keys cannot see is an edit that keeps a file's inode, size and
modification time: that is the Merkle checkpoints' job (``audit --checkpoint``), and
``audit --full`` recomputes everything. The verdicts are derived data, a cache: written by
whichever reader runs first (atomic renames; a reader that cannot write there computes in
memory), named by segment, so a compacted-away segment's verdicts are simply not read.

The window's whole minutes are read from the verdicts; its ragged edges are re-decided from
rows. When anything disagrees, the examples come from a full pass (a failing audit is rare
and must say which decisions failed). The Python sample is drawn by DuckDB's block sampling.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from reports.audit import (
    DECISION_COLUMNS,
    AuditResult,
    _prepare,
    bulk,
    check_chains,
    recompute_sql,
    replay_sample,
)

__all__ = ["incremental_audit", "ledger_root"]

#: Up to this many decisions in the window, the sample is the full audit's own (one hash
#: over the window's ids); beyond, block sampling spares the pass.
_EXACT_SAMPLE_UP_TO = 200_000

_STATE_FINGERPRINTS = """
SELECT s.flag, s.version, md5(concat_ws('|', s.enabled, s.rollout_bp, s.event_hash,
    (SELECT string_agg(o.key || '=' || o.pool, ',' ORDER BY o.key, o.pool)
     FROM audit_session_overrides o WHERE o.flag = s.flag AND o.version = s.version),
    (SELECT string_agg(o.key || '=' || o.pool, ',' ORDER BY o.key, o.pool)
     FROM audit_environment_overrides o WHERE o.flag = s.flag AND o.version = s.version)))
FROM audit_states s
"""


def ledger_root(con: Any) -> Path | None:
    """The ledger folder behind a reader (from its ``segments`` table), None when empty."""
    rows = con.execute("SELECT path FROM segments LIMIT 1").fetchall()
    return Path(rows[0][0]).parent.parent if rows else None


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _quoted(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _verdict(
    con: Any, segment: str, decisions: Path, cache: Path, states: dict[str, str], index: int
) -> str:
    """A relation of the segment's verdict rows: its kept file, or a temp table (read-only)."""
    meta_path = cache / f"{segment}.json"
    data_path = cache / f"{segment}.parquet"
    try:
        meta = json.loads(meta_path.read_text())
        if meta["stat"] == _stat(decisions) and all(
            states.get(key) == value for key, value in meta["states"].items()
        ):
            return f"read_parquet({_quoted(data_path)})"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    body = recompute_sql(source=f"read_parquet({_quoted(decisions)})")
    table = f"verdict_{index}"
    # Stays in DuckDB (a Python round trip of ~10,000 rows a segment would cost seconds).
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
            SELECT epoch_us("at") // 60000000 AS minute, flag, flag_version, count(*) AS n,
                   count(*) FILTER (WHERE disagrees) AS bad
            FROM ({body}) GROUP BY ALL"""
    )
    used = {
        f"{flag}\x00{version}": states.get(f"{flag}\x00{version}")
        for flag, version in con.execute(
            f"SELECT DISTINCT flag, flag_version FROM {table}"
        ).fetchall()
    }
    try:
        cache.mkdir(exist_ok=True)
        tmp = cache / f".{segment}.{uuid.uuid4().hex}"
        con.execute(f"COPY {table} TO {_quoted(str(tmp) + '.parquet')} (FORMAT parquet)")
        os.replace(str(tmp) + ".parquet", data_path)
        Path(str(tmp) + ".json").write_text(
            json.dumps({"stat": _stat(decisions), "states": used}) + "\n"
        )
        os.replace(str(tmp) + ".json", meta_path)
    except OSError:
        pass  # a read-only ledger: the verdict lives as long as this run
    return table


def incremental_audit(
    con: Any,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    sample: int = 200,
    seed: int | None = 0,
    source: str = "scoped_decisions",
) -> AuditResult:
    """The audit of the decisions in ``[since, until)`` from kept verdicts (see module doc).

    ``source`` must be the view of exactly those decisions (``scoped_decisions`` after
    ``reports.queries.scope(con, since, until)``); it is only read for the window's edges,
    the sample and, when something disagrees, the examples.
    """
    result = AuditResult()
    result.chains, result.column_wire_mismatches = check_chains(con)
    started = time.perf_counter()
    _prepare(con)
    states = {
        f"{flag}\x00{version}": digest
        for flag, version, digest in con.execute(_STATE_FINGERPRINTS).fetchall()
    }
    root = ledger_root(con)
    relations: list[str] = []
    if root is not None:
        cache = root / "verdicts"
        segments = con.execute("SELECT path FROM segments ORDER BY path").fetchall()
        for (folder,) in segments:
            decisions = Path(folder) / "decisions.parquet"
            if decisions.exists():
                relations.append(
                    _verdict(con, Path(folder).name, decisions, cache, states, len(relations))
                )
    # Whole minutes from the verdicts, the edges from rows (the rollups' split).
    low = None if since is None else -(-int(since.timestamp() * 1_000_000) // 60_000_000)
    high = None if until is None else int(until.timestamp() * 1_000_000) // 60_000_000
    if low is not None and high is not None and low > high:
        high = low
    where = (
        " AND ".join(
            [f"minute >= {low}"] * (low is not None) + [f"minute < {high}"] * (high is not None)
        )
        or "true"
    )
    kept = (
        " UNION ALL ".join(f"SELECT minute, flag, flag_version, n, bad FROM {r}" for r in relations)
        or "SELECT NULL::BIGINT AS minute, NULL::VARCHAR AS flag, NULL::BIGINT AS flag_version,"
        " 0::BIGINT AS n, 0::BIGINT AS bad WHERE false"
    )
    edge = []
    if low is not None:
        edge.append(f'epoch_us(d."at") < {low * 60_000_000}')
    if high is not None:
        edge.append(f'epoch_us(d."at") >= {high * 60_000_000}')
    edges = "WHERE " + (" OR ".join(edge) or "false")
    # Archived decisions (``--archive``) have no kept verdicts: re-decided, whole minutes only
    # (the edges above already read them through ``source``).
    archived_middle = "WHERE " + (" AND ".join(f"NOT ({e})" for e in edge) if edge else "true")
    rows = con.execute(
        f"""SELECT flag, flag_version, sum(n), sum(bad) FROM (
                SELECT flag, flag_version, n, bad FROM ({kept}) WHERE {where}
                UNION ALL
                SELECT flag, flag_version, count(*), count(*) FILTER (WHERE disagrees)
                FROM ({recompute_sql(source="decisions_archived", where=archived_middle)})
                GROUP BY ALL
                UNION ALL
                SELECT flag, flag_version, count(*), count(*) FILTER (WHERE disagrees)
                FROM ({recompute_sql(source=source, where=edges)})
                GROUP BY ALL
            ) GROUP BY ALL ORDER BY ALL"""
    ).fetchall()
    for flag, version, n, bad in rows:
        if not n:
            continue
        result.by_version[(flag, int(version))] = (int(n), int(bad))
        result.decisions += int(n)
        result.disagreeing += int(bad)
    result.sql_seconds = time.perf_counter() - started
    if result.disagreeing:
        # Which decisions: one full pass over the window (the verdicts keep only counts).
        full = AuditResult()
        bulk(con, full, source)
        result.examples = full.examples
    picked = _sample(con, source, sample, seed)
    replay_sample(con, result, picked)
    return result


def _sample(
    con: Any, source: str, sample: int, seed: int | None
) -> list[tuple[dict[str, Any], bool]]:
    """About ``sample`` decisions of ``source`` with their SQL verdicts."""
    if sample <= 0:
        return []
    total = int(con.execute(f"SELECT count(*) FROM {source}").fetchall()[0][0])
    if total == 0:
        return []
    salt = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
    modulus = max(total // sample, 1)
    columns = ", ".join(f'"{c}"' for c in DECISION_COLUMNS)
    picked = f"hash(event_id || ':{salt}') % {modulus} = 0"
    if total <= _EXACT_SAMPLE_UP_TO:
        # A small window: the very decisions the full audit's pass picks (same hash).
        chosen = f"SELECT {columns} FROM {source} WHERE {picked}"
    else:
        # Block sampling (whole vectors of rows, seeded), not a pass over every row; the
        # decisions' own columns only, never ``wire``.
        percent = min(100.0, 100.0 * 4 * sample / total)
        chosen = f"SELECT {columns} FROM {source} USING SAMPLE {percent!r} PERCENT (system, {salt})"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE audit_sample AS SELECT * FROM ({chosen}) "
        f"ORDER BY event_id LIMIT {int(sample)}"
    )
    rows = con.execute(
        f"SELECT {columns}, disagrees FROM ({recompute_sql(source='audit_sample')}) "
        "ORDER BY event_id"
    ).fetchall()
    return [(dict(zip(DECISION_COLUMNS, row[:-1], strict=True)), bool(row[-1])) for row in rows]
