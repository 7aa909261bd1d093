"""Rollout decisions: where one request goes, as a pure function of (flag state, context).

Precedence, first match wins:

1. ``ENVIRONMENT_OVERRIDE`` — the request's environment has an override;
2. ``SESSION_OVERRIDE`` — the session has an override;
3. ``DISABLED`` — V2 is off: V1;
4. ``SPLIT`` — ``bucket(flag, sticky key) < v2_rollout_bp``: V2, else V1, where the sticky
   key is ``session_id`` unless it is null (``""`` is a session id like any other), else
   ``correlation_id`` (SQL: ``coalesce(session_id, correlation_id)``).

Then, if the result is V2 and the caller's circuit breaker for V2 is open, the request goes to
V1 with reason ``CIRCUIT_OPEN``. The bucket and the threshold are recorded in every decision
(whatever rule fired), so bulk audit and replay can recompute it.

Bucketing: the MD5 of a UTF-8 text, its first 15 hex digits read as an integer (60 bits),
modulo 10 000. The text is, under ``hash_version``

- 2 (current): ``"{n}:{salt}:{key}"`` with ``n`` the salt's length in UTF-8 bytes, so the
  split between salt and key is unambiguous (``("a:b", "c")`` and ``("a", "b:c")`` differ);
- 1 (decisions recorded before): ``"{salt}:{key}"``, where they did not.

Every decision records its hash version and is replayed (and audited) under it, bit for bit.
The salt is the flag (migration) name, so two migrations split sessions independently. A
session keeps its bucket for ever, so raising the percentage only ever adds sessions to V2
(sticky ramp). The same arithmetic in
DuckDB SQL with built-in functions is :func:`bucket_sql`; both agree bit for bit.
MD5 is no security measure here, only a fast, everywhere-available, well-mixed hash (it is
twice as fast as SHA-256 in DuckDB, which matters for bulk audit).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from ledger.events import DecisionReason, Pool, RolloutDecided
from ledger.flags import FlagState

__all__ = [
    "BUCKETS",
    "HASH_VERSION",
    "HASH_VERSIONS",
    "DecisionContext",
    "bucket",
    "bucket_sql",
    "decide",
    "route",
    "sql_literal",
]

#: The algorithm of :func:`bucket` for new decisions; stored in every decision so that replay
#: survives a change.
HASH_VERSION = 2
#: Every version this build can recompute (old decisions keep theirs).
HASH_VERSIONS = (1, 2)
#: Buckets 0..9999: one per basis point.
BUCKETS = 10_000


def _hashed_text(salt: str, key: str, version: int) -> bytes:
    if version == 2:
        salted = salt.encode()
        return b"%d:%s:%s" % (len(salted), salted, key.encode())
    if version == 1:
        return f"{salt}:{key}".encode()
    raise ValueError(f"hash version {version} is unknown (this build knows {HASH_VERSIONS})")


def bucket(salt: str, key: str, version: int = HASH_VERSION) -> int:
    """The stable bucket (0..9999) of ``key`` under ``salt`` and hash ``version``."""
    digest = hashlib.md5(_hashed_text(salt, key, version), usedforsecurity=False).hexdigest()
    return int(digest[:15], 16) % BUCKETS


def bucket_sql(salt: str, key: str, version: int | str = HASH_VERSION) -> str:
    """The DuckDB SQL expression of :func:`bucket` over two SQL expressions (BIGINT 0..9999).

    ``salt`` and ``key`` are SQL, not values: pass ``"flag"`` and
    ``"coalesce(session_id, correlation_id)"`` for columns, or a quoted literal. ``version``
    is a hash version, or SQL naming one per row (e.g. ``"d.hash_version"``): then the
    expression is NULL for a version this build does not know.
    """
    texts = {
        1: f"({salt}) || ':' || ({key})",
        # strlen: bytes, as in Python's len(salt.encode()).
        2: f"CAST(strlen({salt}) AS VARCHAR) || ':' || ({salt}) || ':' || ({key})",
    }
    if isinstance(version, int):
        text = texts[version]
    else:
        cases = " ".join(f"WHEN {v} THEN {t}" for v, t in texts.items())
        text = f"CASE {version} {cases} END"
    return f"(('0x' || left(md5({text}), 15))::BIGINT % {BUCKETS})"


def sql_literal(text: str) -> str:
    """A SQL string literal (single quotes doubled), for a salt given as a value."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """What is known about one request when it is routed.

    ``breaker_open``: the caller's circuit breaker for V2 is open (V2 is not to be called).
    """

    session_id: str | None
    correlation_id: str
    environment: str | None = None
    breaker_open: bool = False

    @property
    def sticky_key(self) -> str:
        """What is bucketed: the session, or the operation itself when anonymous."""
        return self.session_id if self.session_id is not None else self.correlation_id


def route(
    state: FlagState, context: DecisionContext, hash_version: int = HASH_VERSION
) -> tuple[Pool, DecisionReason, int]:
    """The pool, the reason and the bucket, without building an event (the hot path)."""
    values = state.values
    slot = bucket(state.flag, context.sticky_key, hash_version)
    pool: Pool
    environment_pool = (
        values.environment_overrides.get(context.environment)
        if context.environment is not None
        else None
    )
    if environment_pool is not None:
        pool, reason = environment_pool, DecisionReason.ENVIRONMENT_OVERRIDE
    elif context.session_id is not None and context.session_id in values.session_overrides:
        pool, reason = values.session_overrides[context.session_id], DecisionReason.SESSION_OVERRIDE
    elif not values.v2_pool_enabled:
        pool, reason = "v1", DecisionReason.DISABLED
    else:
        pool = "v2" if slot < values.v2_rollout_bp else "v1"
        reason = DecisionReason.SPLIT
    if pool == "v2" and context.breaker_open:
        pool, reason = "v1", DecisionReason.CIRCUIT_OPEN
    return pool, reason, slot


def decide(
    state: FlagState,
    context: DecisionContext,
    *,
    at: datetime,
    event_id: str,
    hash_version: int = HASH_VERSION,
) -> RolloutDecided:
    """The recorded decision for one request under ``state`` (see the module's precedence).

    ``hash_version`` other than the current one only to recompute an old decision.
    """
    pool, reason, slot = route(state, context, hash_version)
    return RolloutDecided(
        event_id=event_id,
        flag=state.flag,
        session_id=context.session_id,
        correlation_id=context.correlation_id,
        environment=context.environment,
        pool=pool,
        reason=reason,
        bucket=slot,
        threshold_bp=state.values.v2_rollout_bp,
        flag_version=state.version,
        hash_version=hash_version,
        at=at,
        # The evidence: the chain hash of the FlagChanged that made this state (issue 13).
        flag_event_hash=state.last_hash if state.version > 0 else None,
    )
