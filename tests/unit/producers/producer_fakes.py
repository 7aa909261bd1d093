"""Fakes for the producers' unit tests: a Kafka producer that can be made unreachable."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledger.events import DecisionReason, OperationRecorded, RolloutDecided


class KafkaTimeoutError(Exception):
    """Stands for kafka-python's error of the same name (metadata or delivery timed out)."""

    retriable = True


class FakeRetriableError(Exception):
    """Stands for a transient Kafka error (e.g. a leader moving)."""

    retriable = True


class FakeRefusedError(Exception):
    """Stands for a Kafka error that retrying cannot cure (e.g. a record too large)."""

    retriable = False


class FakeFuture:
    def __init__(self) -> None:
        self.is_done = False
        self.exception: BaseException | None = None

    def resolve(self, exception: BaseException | None = None) -> None:
        self.exception = exception
        self.is_done = True


@dataclass
class FakeBroker:
    """What 'Kafka' holds, shared by every FakeProducer made from it (survives restarts)."""

    reachable: bool = True
    records: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    #: Values for which the broker answers with a permanent refusal.
    refuse: set[bytes] = field(default_factory=set)
    #: When set, the next N deliveries fail with a retriable error (then succeed).
    flaky: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    producers_created: int = 0

    def values(self, topic: str | None = None) -> list[bytes]:
        with self.lock:
            return [v for t, _, v in self.records if topic is None or t == topic]


class FakeProducer:
    """Sends land in ``broker.records`` on flush; while unreachable, futures stay pending.

    Like kafka-python's idempotent producer, a pending batch is delivered once (no duplicate)
    when the broker is reachable again.
    """

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.pending: list[tuple[str, bytes | None, bytes, FakeFuture]] = []
        self.closed = False

    def send(self, topic: str, value: bytes, key: bytes | None) -> FakeFuture:
        future = FakeFuture()
        self.pending.append((topic, key, value, future))
        return future

    def flush(self, timeout: float | None = None) -> None:
        with self.broker.lock:
            if not self.broker.reachable:
                return
            pending, self.pending = self.pending, []
            for topic, key, value, future in pending:
                if value in self.broker.refuse:
                    future.resolve(FakeRefusedError("record too large"))
                elif self.broker.flaky > 0:
                    self.broker.flaky -= 1
                    future.resolve(FakeRetriableError("leader moved"))
                else:
                    self.broker.records.append((topic, key, value))
                    future.resolve()

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def producer_factory(broker: FakeBroker) -> Any:
    def create() -> FakeProducer:
        with broker.lock:
            broker.producers_created += 1
            if not broker.reachable:
                raise ConnectionRefusedError("no brokers available")
        return FakeProducer(broker)

    return create


AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def operation(n: int, *, correlation_id: str | None = None) -> OperationRecorded:
    return OperationRecorded(
        event_id=f"op-{n}-{uuid.uuid4().hex[:6]}",
        correlation_id=correlation_id or f"c-{n}",
        session_id=f"s-{n % 7}",
        pool="v1",
        role="primary",
        operation="execute_program",
        outcome="ok",
        result={"n": n},
        started_at=AT,
        duration_ms=1.5,
    )


def decision(n: int) -> RolloutDecided:
    return RolloutDecided(
        event_id=f"d-{n}",
        flag="v2_migration",
        session_id=None if n % 2 else f"s-{n}",
        correlation_id=f"c-{n}",
        pool="v1",
        reason=DecisionReason.DISABLED,
        bucket=n % 10_000,
        threshold_bp=0,
        flag_version=0,
        at=AT,
    )


class ListSink:
    """An EventSink that keeps what it is given (thread-safe enough: list.append is atomic)."""

    def __init__(self) -> None:
        self.events: list[OperationRecorded | RolloutDecided] = []

    def publish(self, event: OperationRecorded | RolloutDecided) -> None:
        self.events.append(event)

    def operations(self) -> list[OperationRecorded]:
        return [e for e in self.events if isinstance(e, OperationRecorded)]

    def decisions(self) -> list[RolloutDecided]:
        return [e for e in self.events if isinstance(e, RolloutDecided)]


class FixedRouter:
    """A router that always answers the same pool and shadow choice (for runner tests)."""

    def __init__(self, pool: str = "v1", *, shadow: bool = True) -> None:
        self.pool = pool
        self.shadow = shadow

    def route(
        self,
        session_id: str | None,
        *,
        correlation_id: str,
        environment: str | None = None,
        breaker_open: bool = False,
    ) -> Any:
        from producers.shadow import Route

        # Like the rollout: an open V2 breaker turns a V2 answer into V1, reason CIRCUIT_OPEN.
        circuit_open = self.pool == "v2" and breaker_open
        return Route(
            RolloutDecided(
                event_id=f"d-{correlation_id}",
                flag="v2_migration",
                session_id=session_id,
                correlation_id=correlation_id,
                environment=environment,
                pool="v1" if circuit_open else self.pool,  # type: ignore[arg-type]
                reason=DecisionReason.CIRCUIT_OPEN if circuit_open else DecisionReason.SPLIT,
                bucket=1234,
                threshold_bp=0,
                flag_version=3,
                at=AT,
            ),
            shadow=self.shadow,
        )


def unreachable_kafka() -> Any:
    """A producer factory (module-level, so a child process can be given it): Kafka is away."""
    raise ConnectionRefusedError("no brokers available")
