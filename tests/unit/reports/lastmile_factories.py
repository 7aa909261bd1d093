"""Small ledgers with known figures for the compatibility, cleanup and post-migration reports.

Operations come from ``report_factories.operation``, comparisons from the real comparison
engine, and everything is stored through the real ``LedgerWriter``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from report_factories import T0, Ledger, operation, write

from ledger.comparison import compare_operations, load_rules


def compatibility_ledger(path: Path) -> tuple[Path, Ledger]:
    """``get_user`` over 13 pairs with a rename, a removal, a type change and error names.

    - pairs 0-9: V1 ``{user_name, age, legacy}``, V2 ``{username, age}``; ``age`` is a
      string in V2 for pairs 7, 8, 9 (30 % of V2 answers);
    - pairs 10, 11: V1 fails with ``db_gone`` (no rule maps it), V2 with ``connection_error``;
    - pair 12: V1 fails with ``weird_fail`` (unmapped), V2 answers.
    """
    rules = load_rules()
    ledger = Ledger()
    for i in range(13):
        at = T0 + timedelta(seconds=i)
        cid = f"c{i:02d}"
        v1_result = {"user_name": f"u{i}", "age": i, "legacy": True}
        v2_result = {"username": f"u{i}", "age": str(i) if 7 <= i <= 9 else i}
        v1_error = v2_error = None
        if i in (10, 11):
            v1_error = {"type": "db_gone", "message": "gone"}
            v2_error = {"type": "connection_error", "message": "refused"}
        if i == 12:
            v1_error = {"type": "weird_fail", "message": "?"}
        v1 = operation(cid, "v1", at, op="get_user", result=v1_result, error=v1_error)
        v2 = operation(cid, "v2", at, op="get_user", result=v2_result, error=v2_error)
        ledger.operations += [v1, v2]
        ledger.comparisons.append(compare_operations(v1, v2, rules, at=at + timedelta(seconds=1)))
    return write(path, ledger), ledger


DAY = timedelta(days=1)

#: (day, command fields): a ramp, a rollback, the ramp to 100 % on day 4, shadow off on day 5.
CLEANUP_SCRIPT: tuple[tuple[float, dict[str, Any]], ...] = (
    (0.0, {"command": "enable", "reason": "start"}),
    (1.0, {"command": "set_percentage", "percentage_bp": 5000, "reason": "half"}),
    (2.0, {"command": "rollback", "reason": "p99 doubled", "actor": "health-monitor"}),
    (3.0, {"command": "enable", "reason": "fixed"}),
    (4.0, {"command": "set_percentage", "percentage_bp": 10000, "reason": "all of it"}),
    (5.0, {"command": "set_shadow_mode", "enabled": False, "reason": "V1 retired from shadow"}),
)

#: The same, and on day 6 one session pinned back to V1.
PINNED_SCRIPT = (
    *CLEANUP_SCRIPT,
    (6.0, {"command": "set_session_override", "session_id": "s003", "pool": "v1",
           "reason": "customer asked"}),
)  # fmt: skip


def migration_ledger(
    path: Path,
    script: tuple[tuple[float, dict[str, Any]], ...] = CLEANUP_SCRIPT,
    *,
    days: int = 20,
    per_day: int = 4,
    dead_letter_day: float | None = None,
    latency: Callable[[int, str], float] = lambda i, pool: 10.0,
    fails: Callable[[int, str], bool] = lambda i, pool: False,
) -> tuple[Path, Ledger]:
    """``per_day`` operations a day (evenly spaced) for ``days`` days, routed by the real
    rollout code; operation ``i`` of pool ``pool`` lasts ``latency(i, pool)`` ms (CPU half of
    that) and fails when ``fails(i, pool)``.

    The primary is the pool the decision chose; the other pool runs as shadow while the
    flag's shadow mode is on. Day d of the script is ``T0 + d days``.
    """
    from report_flags import flag_log

    from ledger import flags, rollout
    from ledger.events import DeadLettered

    span = timedelta(days=1)  # flag_log places each step at t0 + span * fraction
    ledger = Ledger()
    ledger.flag_changes = flag_log(T0, span, script)
    for i in range(days * per_day):
        at = T0 + timedelta(days=i / per_day, minutes=1)
        cid = f"m{i:04d}"
        session = f"s{i % 5:03d}"
        state = flags.state_at(ledger.flag_changes, at=at) or flags.initial_state("v2_migration")
        decided = rollout.decide(
            state, rollout.DecisionContext(session, cid), at=at, event_id=f"d-{cid}"
        )
        ledger.decisions.append(decided)
        primary = decided.pool
        other = "v2" if primary == "v1" else "v1"
        for pool, role in ((primary, "primary"), (other, "shadow")):
            if role == "shadow" and not state.shadow_mode_enabled:
                continue
            error = {"type": "timeout_error", "message": "slow"} if fails(i, pool) else None
            made = operation(
                cid, pool, at, session_id=session, result={"n": i},
                duration_ms=latency(i, pool), error=error,
            )  # fmt: skip
            ledger.operations.append(made.model_copy(update={"role": role}))
    write(path, ledger)
    if dead_letter_day is not None:
        from ledger.events import encode_event
        from ledger.store import LedgerWriter, SourceRecord

        letter = DeadLettered(
            event_id="dl-1",
            source_topic="pool.operations",
            source_partition=0,
            source_offset=7,
            reason="undecodable",
            original_b64="eA==",
            at=T0 + timedelta(days=dead_letter_day),
        )
        with LedgerWriter(path, fsync=False) as writer:
            writer.write_batch([SourceRecord("_ingest", 1, 0, None, encode_event(letter))])
    return path, ledger
