"""``replay``: find one recorded decision in the ledger and explain it from the flag log.

The decision is looked up by session (the one in effect at ``--at``, or the latest), or by
correlation id; the flag log is read back from its stored wire form and handed, with the
decision, to ``ledger.replay.replay`` — the same code the routers decide with. The answer
adds what the ledger knows around it: which change made that flag version (who, why, when)
and whether the log's hash chain verifies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ledger.errors import LedgerError
from ledger.events import (
    CommandRejected,
    FlagChanged,
    RolloutDecided,
    decode_event,
    decode_event_object,
)
from ledger.replay import chain_report, replay
from reports.audit import DECISION_COLUMNS

__all__ = ["DecisionNotFoundError", "Explained", "explain", "find_decision", "render_explanation"]


class DecisionNotFoundError(LedgerError, LookupError):
    """No recorded decision fits what was asked."""


@dataclass(frozen=True)
class Explained:
    """``ledger.replay``'s explanation with its ledger context."""

    decision: RolloutDecided
    #: ``ledger.replay.Explanation``.
    explanation: Any
    #: The FlagChanged that created the decision's flag version (None for version 0).
    change: FlagChanged | None
    chain: str
    chain_ok: bool
    seconds: float

    @property
    def matches(self) -> bool:
        return bool(self.explanation.matches)


#: The decision's own columns: small, unlike ``wire`` (whose pages are large to decompress
#: for one row); the writer stores both from the same event, and ``audit`` checks that.
_COLUMNS = DECISION_COLUMNS
_SELECT = "SELECT " + ", ".join(f'"{c}"' for c in _COLUMNS) + " FROM decisions"
# No ORDER BY: the latest of the few rows found is picked here, which spares DuckDB a
# second pass over the row groups to fetch the winner's columns (half the time).
_BY_CORRELATION = _SELECT + " WHERE correlation_id = $correlation_id {session}"
_BY_SESSION = _SELECT + " WHERE session_id = $session_id {bounds}"
#: A session's latest decision: each rolled segment keeps its newest decision per session
#: (``rollup_latest``, sorted by session id: one small row group per segment is read); the
#: segments without that table are searched the old way (``decisions_unrolled``).
_LATEST = (
    "SELECT " + ", ".join(f'"{c}"' for c in _COLUMNS) + " FROM rollup_latest "
    "WHERE session_id = $session_id"
)
_NEWEST = 'SELECT max("at") FROM decisions_unrolled WHERE session_id = $session_id'
_AT = _COLUMNS.index("at")
_ID = _COLUMNS.index("event_id")
_FLAG_LOG = """
SELECT wire FROM flag_events WHERE flag = $flag ORDER BY _topic, _partition, _offset
"""
#: Look-behind windows tried in turn for a session's decision: segments are in time order,
#: so a narrow window lets DuckDB skip every row group outside it (min/max statistics);
#: ``None`` is the whole history.
WINDOWS: tuple[timedelta | None, ...] = (timedelta(minutes=10), timedelta(days=1), None)


def _decision(row: Sequence[Any]) -> RolloutDecided:
    event = decode_event_object(dict(zip(_COLUMNS, row, strict=True)), RolloutDecided)
    assert isinstance(event, RolloutDecided)
    return event


def find_decision(
    con: Any,
    *,
    session_id: str | None = None,
    at: datetime | None = None,
    correlation_id: str | None = None,
) -> RolloutDecided:
    """The decision asked for: by correlation id, else the session's at ``at`` (or latest)."""
    if correlation_id is not None:
        params: dict[str, Any] = {"correlation_id": correlation_id}
        session = ""
        if session_id is not None:
            session, params["session_id"] = "AND session_id = $session_id", session_id
        rows = con.execute(_BY_CORRELATION.format(session=session), params).fetchall()
        wanted = f"correlation id {correlation_id!r}" + (
            f" of session {session_id!r}" if session_id is not None else ""
        )
    elif session_id is not None:
        rows = []
        if at is None:
            rows = con.execute(_LATEST, {"session_id": session_id}).fetchall()
            # Segments without rollups: the session's newest time first (two narrow
            # columns), then its row(s) at that time, which the "at" statistics find.
            newest = con.execute(_NEWEST, {"session_id": session_id}).fetchall()[0][0]
            if newest is not None:
                params = {"session_id": session_id, "at": newest}
                rows += con.execute(_BY_SESSION.format(bounds='AND "at" = $at'), params).fetchall()
        for window in WINDOWS:
            if at is None:
                break
            params = {"session_id": session_id, "until": at}
            bounds = 'AND "at" <= $until'
            if window is not None:
                bounds += ' AND "at" >= $since'
                params["since"] = at - window
            rows = con.execute(_BY_SESSION.format(bounds=bounds), params).fetchall()
            if rows:
                break
        wanted = f"session {session_id!r}" + (f" at or before {at.isoformat()}" if at else "")
    else:
        raise ValueError("find_decision needs a session id or a correlation id")
    if not rows:
        raise DecisionNotFoundError(f"no recorded decision for {wanted}")
    return _decision(max(rows, key=lambda row: (row[_AT], row[_ID])))


def flag_log(con: Any, flag: str) -> list[FlagChanged | CommandRejected]:
    """One flag's events in log order, decoded from their stored wire form."""
    events: list[FlagChanged | CommandRejected] = []
    for (wire,) in con.execute(_FLAG_LOG, {"flag": flag}).fetchall():
        event = decode_event(wire)
        if isinstance(event, FlagChanged | CommandRejected):
            events.append(event)
    return events


def explain(
    con: Any,
    *,
    session_id: str | None = None,
    at: datetime | None = None,
    correlation_id: str | None = None,
) -> Explained:
    """Find the decision and replay it against the flag log stored in the ledger."""
    started = time.perf_counter()
    decision = find_decision(con, session_id=session_id, at=at, correlation_id=correlation_id)
    events = flag_log(con, decision.flag)
    explanation = replay(events, decision)
    report = chain_report(events, flag=decision.flag)
    change = next(
        (e for e in events if isinstance(e, FlagChanged) and e.version == decision.flag_version),
        None,
    )
    return Explained(
        decision,
        explanation,
        change,
        report.describe(),
        report.ok,
        time.perf_counter() - started,
    )


def _as_json(explained: Explained) -> dict[str, Any]:
    e = explained.explanation
    change = explained.change
    return {
        "matches": explained.matches,
        "decision": json.loads(explained.decision.model_dump_json()),
        "flag_version": e.flag_version,
        "state": e.state,
        "changed_by": None
        if change is None
        else {
            "command": change.command,
            "actor": change.actor,
            "reason": change.reason,
            "at": change.at.isoformat(),
            "cause_id": change.cause_id,
        },
        "rule": None if e.rule is None else str(e.rule),
        "breaker_open": e.breaker_open,
        "sticky_key": e.sticky_key,
        "bucket": e.bucket,
        "threshold_bp": e.threshold_bp,
        "recomputed": {"pool": e.pool, "reason": None if e.reason is None else str(e.reason)},
        "recorded": {
            "pool": e.recorded_pool,
            "reason": str(e.recorded_reason),
            "bucket": e.recorded_bucket,
            "threshold_bp": e.recorded_threshold_bp,
        },
        "differences": list(e.differences),
        "problem": e.problem,
        "chain": explained.chain,
        "chain_ok": explained.chain_ok,
        "milliseconds": round(explained.seconds * 1000, 3),
    }


def render_explanation(explained: Explained, fmt: str = "table") -> str:
    if fmt == "json":
        return json.dumps(_as_json(explained), indent=2, ensure_ascii=False)
    d = explained.decision
    lines = [
        f"{d.at.isoformat()}: session {d.session_id or '(anonymous)'}, correlation id "
        f"{d.correlation_id}"
        + (f", environment {d.environment}" if d.environment else "")
        + f" -> {d.pool}",
        explained.explanation.describe(),
    ]
    change = explained.change
    if change is not None:
        lines.append(
            f"  version {change.version} was made by {change.command} from {change.actor} "
            f"at {change.at.isoformat()}: {change.reason}"
            + (f" (cause {change.cause_id})" if change.cause_id else "")
        )
    elif d.flag_version == 0:
        lines.append("  version 0 is the initial state (no change recorded yet)")
    lines.append(f"  chain: {explained.chain}")
    return "\n".join(lines)
