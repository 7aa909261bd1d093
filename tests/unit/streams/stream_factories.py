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


def recording_producer(app: Any) -> Any:
    """A stand-in for faust's Kafka producer in ``Agent.test_context``: records every send.

    Table changelog writes come through ``send_soon``, agents' sends through ``send``.
    """
    import asyncio

    from aiokafka.structs import RecordMetadata
    from faust.transport.producer import Producer
    from faust.types import TP

    class Recording(Producer):  # type: ignore[misc]
        def __init__(self, transport: Any) -> None:
            super().__init__(transport)
            self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

        async def send(
            self,
            topic: str,
            key: bytes | None,
            value: bytes | None,
            partition: int | None,
            timestamp: float | None,
            headers: Any,
            *,
            transactional_id: str | None = None,
        ) -> Any:
            self.sent.append((topic, key, value, partition))
            done = asyncio.get_running_loop().create_future()
            tp = TP(topic, partition or 0)
            done.set_result(RecordMetadata(topic, tp.partition, tp, len(self.sent), -1, 0, None))
            return done

        def send_soon(self, fut: Any) -> None:
            message = fut.message
            self.sent.append(
                (message.channel.get_topic_name(), message.key, message.value, message.partition)
            )

        def of(self, topic: str) -> list[tuple[bytes | None, bytes | None, int | None]]:
            return [(k, v, p) for t, k, v, p in self.sent if t == topic]

    return Recording(app.transport)
