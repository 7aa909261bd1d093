"""Synthetic events of every type, and Kafka-like records of them, for the store's tests."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from ledger.events import (
    BreakerStateChanged,
    CommandRejected,
    ComparisonRecorded,
    DeadLettered,
    DecisionReason,
    Difference,
    Event,
    FlagChanged,
    GateVerdict,
    HealthAssessed,
    OperationError,
    OperationRecorded,
    Resources,
    RollbackTriggered,
    RolloutDecided,
    SwitchoverRecorded,
    encode_event,
)
from ledger.store.writer import SourceRecord

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def operation(i: int, pool: str = "v1", *, error: bool = False) -> OperationRecorded:
    return OperationRecorded(
        event_id=f"op-{i}-{pool}",
        correlation_id=f"c-{i}",
        session_id=f"s-{i % 7}",
        pool=pool,  # type: ignore[arg-type]
        role="primary" if pool == "v1" else "shadow",
        operation="quote" if i % 2 else "execute_program",
        outcome="error" if error else "ok",
        result=None if error else {"price": i * 1.5, "items": [{"sku": f"k{i}", "qty": i % 3}]},
        error=OperationError(type="Timeout", message="slow") if error else None,
        started_at=T0 + timedelta(milliseconds=i),
        duration_ms=10.0 + i % 13,
        environment="prod",
        resources=Resources(cpu_ms=1.5, memory_bytes=1024 * i, worker_id=f"w{i % 3}"),
    )


def comparison(i: int) -> ComparisonRecorded:
    return ComparisonRecorded(
        event_id=f"cmp-{i}",
        comparison_id=f"cmp-{i}",
        correlation_id=f"c-{i}",
        session_id=f"s-{i % 7}",
        operation="quote",
        category="match" if i % 3 else "value_mismatch",
        differences=()
        if i % 3
        else (Difference(path="$.price", kind="value", v1=i * 1.5, v2=i * 1.5 + 1),),
        difference_count=0 if i % 3 else 1,
        fingerprint=f"fp-{i % 3}",
        rules_version="r1",
        primary_pool="v1",
        v1_event_id=f"op-{i}-v1",
        v2_event_id=f"op-{i}-v2",
        v1_duration_ms=10.0,
        v2_duration_ms=12.0,
        latency_ratio=1.2,
        at=T0 + timedelta(seconds=1, milliseconds=i),
    )


def flag_changed(version: int) -> FlagChanged:
    return FlagChanged(
        event_id=f"flag-{version}",
        flag="v2_migration",
        version=version,
        command="set_percentage",
        command_id=f"cmd-{version}",
        v2_pool_enabled=True,
        v2_rollout_bp=version * 100,
        shadow_mode_enabled=True,
        shadow_sample_bp=10_000,
        session_overrides={"s-1": "v2"},
        environment_overrides={},
        frozen=False,
        actor="alice",
        reason=f"ramp to {version} %",
        at=T0 + timedelta(minutes=version),
        prev_hash=f"h{version - 1}",
        hash=f"h{version}",
    )


def rejected(i: int) -> CommandRejected:
    return CommandRejected(
        event_id=f"rej-{i}",
        flag="v2_migration",
        command="set_percentage",
        command_id=f"cmd-r{i}",
        current_version=3,
        actor="bob",
        reason="try",
        rejection="frozen",
        at=T0 + timedelta(minutes=10 + i),
    )


def decision(i: int) -> RolloutDecided:
    return RolloutDecided(
        event_id=f"dec-{i}",
        flag="v2_migration",
        session_id=f"s-{i % 7}",
        correlation_id=f"c-{i}",
        pool="v2" if i % 4 == 0 else "v1",
        reason=DecisionReason.SPLIT,
        bucket=(i * 37) % 10_000,
        threshold_bp=2_500,
        flag_version=3,
        at=T0 + timedelta(milliseconds=i),
    )


def health(i: int) -> HealthAssessed:
    return HealthAssessed(
        event_id=f"health-{i}",
        pool="v2",
        operation="*",
        window_start=T0 + timedelta(minutes=i),
        window_end=T0 + timedelta(minutes=i + 1),
        count=100,
        error_count=i,
        errors_by_type={"Timeout": i},
        p50_ms=10.0,
        p95_ms=20.0,
        p99_ms=30.0,
        verdict="ok",
        triggers=("error_rate",) if i % 2 else (),
        latency_sample_ms=(1.0, 2.5),
        latency_sketch={"bins": [1, 2]},
        at=T0 + timedelta(minutes=i + 1),
    )


def others(i: int) -> list[Event]:
    return [
        RollbackTriggered(
            event_id=f"rb-{i}",
            flag="v2_migration",
            command_id=f"cmd-rb-{i}",
            actor="controller",
            reason="errors",
            triggers=("error_rate",),
            metrics={"v1.error_rate": 0.01, "v2.error_rate": None},
            at=T0 + timedelta(minutes=20 + i),
        ),
        SwitchoverRecorded(
            event_id=f"sw-{i}",
            flag="v2_migration",
            action="advanced",
            stage=i,
            percentage_bp=500,
            actor="controller",
            reason="gates passed",
            gates={"error_rate": {"value": 0.01, "ok": True}},
            at=T0 + timedelta(minutes=30 + i),
        ),
        GateVerdict(
            event_id=f"gv-{i}",
            flag="v2_migration",
            gate="sequential_error_rate",
            passed=i != 1,
            test="mixture_sprt",
            estimate=1.5,
            p_value=0.25,
            e_value=4.0,
            threshold=200.0,
            v1_n=1000,
            v1_events=10,
            v2_n=1000,
            v2_events=15,
            windows=(T0, T0 + timedelta(minutes=1)),
            stage=i,
            details={"figure": "e 4 < 200"},
            at=T0 + timedelta(minutes=35 + i),
        ),
        BreakerStateChanged(
            event_id=f"br-{i}",
            breaker="v2",
            previous="closed",
            current="open",
            reason="5 failures",
            consecutive_failures=5,
            retry_at=T0 + timedelta(minutes=41),
            at=T0 + timedelta(minutes=40 + i),
        ),
        DeadLettered(
            event_id=f"dl-{i}",
            source_topic="pool.operations",
            source_partition=0,
            source_offset=i,
            reason="bad",
            original_b64="eA==",
            at=T0,
        ),
    ]


def every_type(n: int = 3) -> list[Event]:
    """A few events of every type the ledger stores."""
    events: list[Event] = []
    for i in range(n):
        events += [operation(i, "v1"), operation(i, "v2", error=i == 1), comparison(i)]
        events += [flag_changed(i + 1), rejected(i), decision(i), health(i), *others(i)]
    return events


def records(
    events: list[Event], *, topic: str = "t.events", partitions: int = 2, start: int = 0
) -> Iterator[SourceRecord]:
    """Kafka-like records: round robin over partitions, offsets counting per partition."""
    next_offset = dict.fromkeys(range(partitions), start)
    for i, event in enumerate(events):
        partition = i % partitions
        yield SourceRecord(
            topic,
            partition,
            next_offset[partition],
            event.event_id.encode(),
            encode_event(event),
        )
        next_offset[partition] += 1
