"""Executions, comparisons and windows for the health, policy and switchover unit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from ledger.events import ComparisonRecorded, HealthAssessed, OperationRecorded, Resources
from ledger.health import HealthWindow

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
CATEGORIES = (
    "match",
    "value_mismatch",
    "shape_mismatch",
    "error_match",
    "error_mismatch",
    "v2_error",
    "v1_error",
    "shadow_missing",
    "primary_missing",
)
ERROR_TYPES = ("timeout", "python", "connection", "initialization", "system")


def execution(
    index: int,
    *,
    pool: str = "v2",
    operation: str = "execute_program",
    duration_ms: float = 10.0,
    error_type: str | None = None,
    at: datetime = T0,
    cpu_ms: float | None = None,
    memory_bytes: int | None = None,
) -> OperationRecorded:
    resources = None
    if cpu_ms is not None or memory_bytes is not None:
        resources = Resources(cpu_ms=cpu_ms, memory_bytes=memory_bytes)
    return OperationRecorded(
        event_id=f"op-{pool}-{index}",
        correlation_id=f"c-{index}",
        session_id=f"s-{index % 7}",
        pool=pool,  # type: ignore[arg-type]
        role="primary" if pool == "v1" else "shadow",
        operation=operation,
        outcome="error" if error_type else "ok",
        result=None if error_type else {"n": index},
        error={"type": error_type, "message": "boom"} if error_type else None,  # type: ignore[arg-type]
        started_at=at,
        duration_ms=duration_ms,
        resources=resources,
    )


def comparison(
    index: int, category: str, *, operation: str = "execute_program", at: datetime = T0
) -> ComparisonRecorded:
    return ComparisonRecorded(
        event_id=f"cmp-{index}",
        comparison_id=f"cmp-{index}",
        correlation_id=f"c-{index}",
        operation=operation,
        category=category,
        fingerprint="f",
        rules_version="r1",
        at=at,
    )


def window_of(
    pool: str,
    *,
    count: int,
    errors: int = 0,
    latencies: list[float] | None = None,
    worker_failures: int = 0,
    comparisons: int = 0,
    mismatches: int = 0,
    operation: str = "execute_program",
    start: datetime = T0,
    size: timedelta = timedelta(seconds=60),
) -> HealthAssessed:
    """A closed window built through the real accumulator, with exactly these figures."""
    window = HealthWindow(pool=pool, operation=operation, start=start, size=size)  # type: ignore[arg-type]
    values = latencies or [10.0]
    for i in range(count):
        if i < worker_failures:
            error_type: str | None = "connection"
        elif i < errors:
            error_type = "python"
        else:
            error_type = None
        window.add_operation(
            execution(
                i,
                pool=pool,
                operation=operation,
                duration_ms=values[i % len(values)],
                error_type=error_type,
                at=start,
            )
        )
    for i in range(comparisons):
        window.add_comparison(
            comparison(i, "value_mismatch" if i < mismatches else "match", operation=operation)
        )
    return window.assessed(at=start + size)


executions = st.builds(
    lambda index, pool, op, duration, err, offset, cpu, mem: execution(
        index,
        pool=pool,
        operation=op,
        duration_ms=duration,
        error_type=err,
        at=T0 + timedelta(milliseconds=offset),
        cpu_ms=cpu,
        memory_bytes=mem,
    ),
    st.integers(0, 10_000),
    st.sampled_from(["v1", "v2"]),
    st.sampled_from(["execute_program", "open_session"]),
    st.floats(0, 60_000, allow_nan=False, allow_infinity=False),
    st.none() | st.sampled_from(ERROR_TYPES),
    st.integers(0, 59_999),
    st.none() | st.floats(0, 5_000, allow_nan=False, allow_infinity=False),
    st.none() | st.integers(0, 2**40),
)
