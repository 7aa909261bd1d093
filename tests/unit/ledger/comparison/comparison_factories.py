"""Operations as the pools publish them, for the comparison tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ledger.events import OperationRecorded

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def operation(
    pool: str,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    role: str | None = None,
    correlation_id: str = "corr-1",
    operation_name: str = "execute_program",
    duration_ms: float = 10.0,
    construct: bool = False,
) -> OperationRecorded:
    """One execution; ``construct`` skips validation (for results pydantic would refuse)."""
    fields: dict[str, Any] = {
        "event_id": f"{correlation_id}-{pool}",
        "correlation_id": correlation_id,
        "session_id": "session-7",
        "pool": pool,
        "role": role or ("primary" if pool == "v1" else "shadow"),
        "operation": operation_name,
        "outcome": "error" if error is not None else "ok",
        "result": None if error is not None else result,
        "error": error,
        "started_at": AT,
        "duration_ms": duration_ms,
        "environment": "prod",
    }
    if construct:
        return OperationRecorded.model_construct(**fields)
    return OperationRecorded.model_validate(fields)
