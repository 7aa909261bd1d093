"""Operation halves for the stream processors' unit tests (importable, unlike conftest)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ledger.events import OperationRecorded

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def half(
    correlation_id: str,
    pool: str,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> OperationRecorded:
    """One execution; V1 is the primary and V2 the shadow, as during the parallel run."""
    return OperationRecorded(
        event_id=event_id or f"{correlation_id}-{pool}",
        correlation_id=correlation_id,
        session_id=f"s-{correlation_id}",
        pool=pool,  # type: ignore[arg-type]
        role="primary" if pool == "v1" else "shadow",
        operation="execute_program",
        outcome="error" if error else "ok",
        result=None if error else ({"value": 1} if result is None else result),
        error=error,  # type: ignore[arg-type]
        started_at=T0,
        duration_ms=12.5 if pool == "v1" else 10.0,
    )
