"""A flag log and the decisions made under it, built by the real flag and rollout code."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ledger.events import FlagChanged, OperationRecorded, RolloutDecided

FLAG = "v2_migration"

#: (fraction of the span, command fields): a ramp, a rollback, a second ramp, an override.
SCRIPT: tuple[tuple[float, dict[str, Any]], ...] = (
    (0.0, {"command": "enable", "reason": "start the shadow run"}),
    (0.05, {"command": "set_percentage", "percentage_bp": 1000, "reason": "first step"}),
    (0.30, {"command": "set_percentage", "percentage_bp": 2500, "reason": "soak passed"}),
    (0.50, {"command": "rollback", "reason": "p99 doubled", "actor": "health-monitor"}),
    (0.60, {"command": "enable", "reason": "fixed the pool sizing"}),
    (0.65, {"command": "set_percentage", "percentage_bp": 5000, "reason": "half"}),
)


def command(index: int, fields: dict[str, Any], flag: str = FLAG) -> Any:
    from ledger import flags

    data = {"command_id": f"cmd-{index}", "flag": flag, "actor": "alice", **fields}
    return flags.decode_command(json.dumps(data).encode())


def flag_log(
    t0: datetime,
    span: timedelta,
    script: Sequence[tuple[float, dict[str, Any]]] = SCRIPT,
    flag: str = FLAG,
) -> list[FlagChanged]:
    """The FlagChanged events the flag log writer would append for ``script``."""
    from ledger import flags

    state = flags.initial_state(flag)
    changes: list[FlagChanged] = []
    for index, (fraction, fields) in enumerate(script):
        event = flags.decide_command(
            state, command(index, fields, flag), at=t0 + span * fraction, event_id=f"fe-{index}"
        )
        if isinstance(event, FlagChanged):
            state = flags.apply(state, event)
            changes.append(event)
    return changes


def decisions_for(
    changes: Sequence[FlagChanged], operations: Sequence[OperationRecorded], flag: str = FLAG
) -> list[RolloutDecided]:
    """One decision per V1 execution, by the state in force when it started."""
    from ledger import flags, rollout

    out = []
    for op in operations:
        if op.pool != "v1":
            continue
        state = flags.state_at(changes, at=op.started_at) if changes else None
        if state is None:
            state = flags.initial_state(flag)
        context = rollout.DecisionContext(op.session_id, op.correlation_id)
        out.append(
            rollout.decide(state, context, at=op.started_at, event_id=f"d-{op.correlation_id}")
        )
    return out
