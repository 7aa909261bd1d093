"""A small realistic ledger for the report tests: a parallel run over two days.

Operations come in V1/V2 pairs, their comparisons are made by the real comparison engine,
the flag log is built by the real flag state machine, decisions by the real rollout
function, and everything is stored through the real ``LedgerWriter``: the reports read what
the sink would have written.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ledger.comparison import compare_operations, load_rules, missing_comparison
from ledger.events import (
    ComparisonRecorded,
    Event,
    FlagChanged,
    OperationRecorded,
    RolloutDecided,
    encode_event,
)

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
OPERATIONS = ("execute_program", "list_sessions")
FLAG = "v2_migration"


@dataclass
class Ledger:
    """The events written, kept so tests compute expected figures from them independently."""

    operations: list[OperationRecorded] = field(default_factory=list)
    comparisons: list[ComparisonRecorded] = field(default_factory=list)
    flag_changes: list[FlagChanged] = field(default_factory=list)
    decisions: list[RolloutDecided] = field(default_factory=list)
    garbage: list[bytes] = field(default_factory=list)

    def events(self) -> list[Event]:
        return [*self.flag_changes, *self.decisions, *self.operations, *self.comparisons]


def operation(
    correlation_id: str,
    pool: str,
    at: datetime,
    *,
    op: str = "execute_program",
    duration_ms: float = 10.0,
    result: Any = None,
    error: dict[str, Any] | None = None,
    session_id: str | None = None,
) -> OperationRecorded:
    return OperationRecorded.model_validate(
        {
            "event_id": f"{correlation_id}-{pool}",
            "correlation_id": correlation_id,
            "session_id": session_id,
            "pool": pool,
            "role": "primary" if pool == "v1" else "shadow",
            "operation": op,
            "outcome": "error" if error else "ok",
            "result": None if error else result,
            "error": error,
            "started_at": at,
            "duration_ms": duration_ms,
            "resources": {"cpu_ms": duration_ms / 2, "memory_bytes": 1000, "worker_id": pool},
        },
        strict=False,
    )


def build(seed: int = 7, pairs: int = 400, days: int = 2) -> Ledger:
    """Pairs spread over ``days`` days with value/shape mismatches, errors and missing halves."""
    from report_flags import flag_log  # the flag log needs the flag state machine

    rng = random.Random(seed)
    rules = load_rules()
    ledger = Ledger()
    span = timedelta(days=days)
    ledger.flag_changes = flag_log(T0, span)
    for i in range(pairs):
        at = T0 + span * (i / pairs)
        cid = f"c{i:05d}"
        session = f"s{i % 37:03d}"
        op = OPERATIONS[i % 2]
        base = {"value": i, "items": [1, 2, 3], "name": "ok"}
        v2_result = dict(base)
        v2_error = None
        v1_error = None
        kind = rng.random()
        if kind < 0.08:
            v2_result["value"] = i + 1
        elif kind < 0.12:
            del v2_result["name"]
        elif kind < 0.15:
            v2_error = {"type": "timeout_error", "message": "took too long"}
        elif kind < 0.17:
            v1_error = {"type": "pool_timeout", "message": "slow"}
            v2_error = {"type": "timeout_error", "message": "slow too"}
        v1 = operation(
            cid, "v1", at, op=op, duration_ms=rng.lognormvariate(2.3, 0.4),
            result=base, error=v1_error, session_id=session,
        )  # fmt: skip
        v2 = operation(
            cid, "v2", at + timedelta(milliseconds=3), op=op,
            duration_ms=rng.lognormvariate(2.1, 0.5), result=v2_result, error=v2_error,
            session_id=session,
        )  # fmt: skip
        compared_at = at + timedelta(seconds=1)
        if i % 50 == 49:  # the shadow never arrived
            ledger.operations.append(v1)
            ledger.comparisons.append(missing_comparison(v1, at=compared_at))
        else:
            ledger.operations += [v1, v2]
            ledger.comparisons.append(compare_operations(v1, v2, rules, at=compared_at))
    from report_flags import decisions_for

    ledger.decisions = decisions_for(ledger.flag_changes, ledger.operations)
    ledger.garbage = [b"not json at all", b'{"type": "OperationRecorded"}']
    return ledger


def records(events: Iterable[Event], garbage: Sequence[bytes] = ()) -> list[Any]:
    from ledger.store import SourceRecord

    out = [
        SourceRecord("_ingest", 0, offset, None, encode_event(event))
        for offset, event in enumerate(events)
    ]
    start = len(out)
    out += [
        SourceRecord("_ingest", 0, start + i, None, value, int(T0.timestamp() * 1000))
        for i, value in enumerate(garbage)
    ]
    return out


def write(path: Path, ledger: Ledger) -> Path:
    """Store the ledger's events (and its garbage) through the real writer, as the sink would."""
    from ledger.store import LedgerWriter

    with LedgerWriter(path, fsync=False) as writer:
        writer.write_batch(records(ledger.events(), ledger.garbage))
    return path


def rewrite(ledger: Path, table: str, select: str) -> int:
    """Tamper with storage: rewrite every segment file of ``table`` through ``select``.

    ``select`` is a SELECT over ``t`` (the file's rows), e.g.
    ``"SELECT * REPLACE (3000 AS v2_rollout_bp) FROM t"``; the file keeps its name, so
    readers see the changed rows as if the sink had written them. Returns files rewritten.
    """
    import duckdb

    files = sorted(ledger.glob(f"segments/*+*/{table}.parquet"))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    for path in files:
        changed = path.with_name(path.name + ".tampered")
        con.execute(f"CREATE OR REPLACE VIEW t AS SELECT * FROM read_parquet('{path}')")
        con.execute(f"COPY ({select}) TO '{changed}' (FORMAT parquet)")
        changed.replace(path)
    con.close()
    return len(files)
