"""``report cleanup``: may V1 be removed? The ledger's figures judged by ``ledger.cleanup``.

Options in ``ReportOptions.extra``: ``now`` (the time of judgement, required: the CLI passes
the clock) and ``min_days`` (default 7). Everything after ``now`` is left out, so a judgement
"as of" a past time reads the ledger as it was then.

Dead letters: the ledger records no resolution of a dead letter, so every dead letter since
V2 reached 100 % (every one, while it is not there) counts as unresolved.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ledger.cleanup import (
    CleanupFacts,
    FlagStep,
    full_since,
    judge_cleanup,
    references,
)
from reports.model import Report, ReportOptions, Section
from reports.queries import fetch

__all__ = ["cleanup", "flag_steps"]

FLAG_STEPS = """
SELECT version, "at", command, v2_pool_enabled, v2_rollout_bp,
       shadow_mode_enabled AND coalesce(shadow_sample_bp, 0) > 0,
       CAST(session_overrides AS VARCHAR), CAST(environment_overrides AS VARCHAR)
FROM flag_events
WHERE type = 'FlagChanged' AND flag = $flag AND "at" < $now
ORDER BY version
"""

V1_DECISIONS = """
SELECT coalesce(session_id, '(none)') AS session, coalesce(environment, '(none)') AS env,
       count(*) AS n
FROM scoped_decisions
WHERE flag = $flag AND pool = 'v1' AND "at" >= $since AND "at" < $now
GROUP BY ALL
"""

V1_OPERATIONS = """
SELECT operation, count(*) FROM scoped_operations
WHERE pool = 'v1' AND started_at >= $since AND started_at < $now
GROUP BY operation
"""

ROLLBACKS_SINCE = """
SELECT count(*), max("at") FROM scoped_rollbacks
WHERE flag = $flag AND "at" >= $since AND "at" < $now
"""

LAST_ROLLBACK = """
SELECT max("at") FROM (
    SELECT "at" FROM scoped_rollbacks WHERE flag = $flag AND "at" < $now
    UNION ALL
    SELECT "at" FROM flag_events
    WHERE type = 'FlagChanged' AND flag = $flag AND command = 'rollback' AND "at" < $now
)
"""

DEAD_LETTERS_SINCE = """
SELECT count(*) FROM scoped_dead_letters WHERE "at" >= $since AND "at" < $now
"""


def flag_steps(con: Any, flag: str, now: datetime) -> list[FlagStep]:
    _, rows = fetch(con, FLAG_STEPS, flag=flag, now=now)
    return [
        FlagStep(
            int(version),
            at,
            command,
            bool(enabled),
            int(bp or 0),
            bool(shadow),
            json.loads(sessions or "{}"),
            json.loads(environments or "{}"),
        )
        for version, at, command, enabled, bp, shadow, sessions, environments in rows
    ]


def cleanup(con: Any, options: ReportOptions) -> Report:
    now = options.extra.get("now")
    if not isinstance(now, datetime):
        raise ValueError("report cleanup needs the time of judgement (--now)")
    min_days = float(options.extra.get("min_days", 7.0))
    flag = options.flag
    steps = flag_steps(con, flag, now)
    since = full_since(steps)
    window = since or datetime.min.replace(tzinfo=now.tzinfo)
    sessions: dict[str, int] = {}
    environments: dict[str, int] = {}
    decisions = 0
    operations: dict[str, int] = {}
    rollbacks = 0
    if since is not None:
        _, rows = fetch(con, V1_DECISIONS, flag=flag, since=since, now=now)
        for session, env, n in rows:
            decisions += n
            sessions[session] = sessions.get(session, 0) + n
            environments[env] = environments.get(env, 0) + n
        _, rows = fetch(con, V1_OPERATIONS, since=since, now=now)
        operations = {op: n for op, n in rows}
        _, rows = fetch(con, ROLLBACKS_SINCE, flag=flag, since=since, now=now)
        rollbacks = int(rows[0][0])
    _, rows = fetch(con, LAST_ROLLBACK, flag=flag, now=now)
    _, dead = fetch(con, DEAD_LETTERS_SINCE, since=window, now=now)
    facts = CleanupFacts(
        now=now,
        min_days=min_days,
        steps=steps,
        since=since,
        v1_decisions=decisions,
        rollbacks=rollbacks,
        last_rollback_at=rows[0][0],
        dead_letters=int(dead[0][0]),
        v1_sessions=sessions,
        v1_environments=environments,
        v1_operations=operations,
    )
    checks = judge_cleanup(facts)
    refs = references(facts)
    return Report(
        "cleanup",
        "Cleanup readiness (may V1 be removed?)",
        (
            Section(
                "checklist",
                "Cleanup checklist",
                ("check", "status", "figure", "threshold"),
                tuple(
                    (c.name, "PASS" if c.passed else "FAIL", c.figure, c.threshold) for c in checks
                ),
                note=f"judged as of {now.isoformat()}",
            ),
            Section(
                "references",
                "What still references V1",
                ("kind", "name", "detail", "count"),
                tuple((r.kind, r.name, r.detail, r.count) for r in refs),
            ),
        ),
        passed=all(c.passed for c in checks),
        meta={"flag": flag, "now": now.isoformat(), "min_days": min_days},
    )
