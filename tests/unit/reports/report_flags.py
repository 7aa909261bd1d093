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


#: Every rule gets its turn: environment and session overrides both ways, a disabled spell,
#: a frozen flag, ramps and a rollback (which drops overrides to V2).
RICH_SCRIPT: tuple[tuple[float, dict[str, Any]], ...] = (
    (0.00, {"command": "set_environment_override", "environment": "staging", "pool": "v2",
            "reason": "staging first"}),
    (0.05, {"command": "enable", "reason": "go"}),
    (0.10, {"command": "set_percentage", "percentage_bp": 1234, "reason": "12.34 %"}),
    (0.15, {"command": "set_session_override", "session_id": "s7", "pool": "v1",
            "reason": "customer asked to stay"}),
    (0.20, {"command": "set_session_override", "session_id": "s9", "pool": "v2",
            "reason": "pilot"}),
    (0.30, {"command": "set_environment_override", "environment": "prod-eu", "pool": "v1",
            "reason": "data residency review"}),
    (0.40, {"command": "freeze", "reason": "holiday"}),
    (0.45, {"command": "unfreeze", "reason": "back"}),
    (0.50, {"command": "set_percentage", "percentage_bp": 5000, "reason": "half"}),
    (0.60, {"command": "disable", "reason": "incident"}),
    (0.65, {"command": "enable", "reason": "fixed"}),
    (0.75, {"command": "rollback", "reason": "p99", "actor": "health-monitor"}),
    (0.85, {"command": "enable", "reason": "again"}),
    (0.90, {"command": "set_percentage", "percentage_bp": 9999, "reason": "nearly all"}),
)  # fmt: skip


def random_decisions(
    changes: Sequence[FlagChanged], t0: datetime, span: timedelta, n: int, seed: int = 3
) -> list[RolloutDecided]:
    """``n`` decisions at random times and contexts: anonymous callers, environments,
    sessions with overrides, an open circuit breaker now and then."""
    import random

    from ledger import flags, rollout

    rng = random.Random(seed)
    # The state after each change, folded once: the one in force at ``at`` is the last
    # change at or before it.
    states = [flags.initial_state(FLAG)]
    for change in changes:
        states.append(flags.apply(states[-1], change))
    out = []
    for i in range(n):
        at = t0 + span * rng.random()
        state = states[sum(1 for c in changes if c.at <= at)]
        session = None if rng.random() < 0.1 else f"s{rng.randrange(40)}"
        environment = rng.choice([None, None, "staging", "prod-eu", "prod-us"])
        context = rollout.DecisionContext(
            session, f"r{i:05d}", environment, breaker_open=rng.random() < 0.1
        )
        out.append(rollout.decide(state, context, at=at, event_id=f"rd-{i:05d}"))
    return out
