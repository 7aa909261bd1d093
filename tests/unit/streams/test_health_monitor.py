"""The health monitor without Kafka: partitions merged, windows judged, rollbacks sent."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.events import FlagChanged, HealthAssessed, RollbackTriggered, decode_event, encode_event
from ledger.health import ALL_OPERATIONS
from ledger.switchover import ControllerCommand, rollback_command_id
from streams.health import HealthMonitor
from tests.unit.health_factories import comparison, execution

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
SIZE = timedelta(seconds=10)
GRACE = timedelta(seconds=2)


@dataclass
class Outbox:
    health: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    commands: list[ControllerCommand] = field(default_factory=list)

    async def send_health(self, key: bytes | None, value: bytes) -> None:
        self.health.append((key, value))

    async def send_command(self, command: ControllerCommand) -> None:
        self.commands.append(command)

    def events(self) -> list[Any]:
        return [decode_event(value) for _, value in self.health]


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> float:
        return self.now.timestamp()


def _monitor(
    outbox: Outbox, clock: Clock, table: dict[bytes, bytes] | None = None
) -> HealthMonitor:
    return HealthMonitor(
        flag="v2_migration",
        send_health=outbox.send_health,
        send_command=outbox.send_command,
        size=SIZE,
        grace=GRACE,
        table=table,
        flush_interval=0.0,
        wall=clock,
    )


def _flag(version: int, *, enabled: bool, bp: int) -> bytes:
    return encode_event(
        FlagChanged(
            event_id=f"f{version}",
            flag="v2_migration",
            version=version,
            command="set_percentage",
            command_id=f"c{version}",
            v2_pool_enabled=enabled,
            v2_rollout_bp=bp,
            shadow_mode_enabled=True,
            shadow_sample_bp=10000,
            session_overrides={},
            environment_overrides={},
            frozen=False,
            actor="alice",
            reason="r",
            at=T0,
            prev_hash="",
            hash="h",
        )
    )


def _feed(monitor: HealthMonitor, *, v2_errors: int = 0, count: int = 40) -> None:
    for i in range(count):
        partition = i % 3
        at = T0 + timedelta(milliseconds=100 * i)
        monitor.on_operation(partition, encode_event(execution(i, pool="v1", at=at)))
        error = "python" if i < v2_errors else None
        monitor.on_operation(
            partition, encode_event(execution(i, pool="v2", at=at, error_type=error))
        )
        monitor.on_comparison(partition, encode_event(comparison(i, "match", at=at)))


def test_windows_of_every_partition_are_merged_and_published_once_due() -> None:
    outbox, clock = Outbox(), Clock()
    monitor = _monitor(outbox, clock)
    _feed(monitor)

    clock.now = T0 + SIZE + GRACE - timedelta(milliseconds=1)
    assert asyncio.run(monitor.close_due()) == []
    clock.now = T0 + SIZE + GRACE
    published = asyncio.run(monitor.close_due())

    totals = {(e.pool, e.operation): e.count for e in published}
    assert totals == {
        ("v1", "execute_program"): 40,
        ("v2", "execute_program"): 40,
        ("v1", ALL_OPERATIONS): 40,
        ("v2", ALL_OPERATIONS): 40,
    }
    v2 = next(e for e in published if e.pool == "v2" and e.operation == ALL_OPERATIONS)
    assert v2.comparisons == 40
    assert v2.verdict == "ok"
    assert v2.compared_with is not None
    assert [key for key, _ in outbox.health] == [b"v1", b"v2", b"v1", b"v2"]
    assert asyncio.run(monitor.close_due()) == []


def test_a_v2_error_spike_while_v2_takes_traffic_sends_a_rollback_with_its_evidence() -> None:
    outbox, clock = Outbox(), Clock()
    monitor = _monitor(outbox, clock)
    monitor.on_flag_event(_flag(3, enabled=True, bp=2500))
    _feed(monitor, v2_errors=20)
    clock.now = T0 + SIZE + GRACE

    asyncio.run(monitor.close_due())

    fired = [e for e in outbox.events() if isinstance(e, HealthAssessed) and e.triggers]
    snapshots = [e for e in outbox.events() if isinstance(e, RollbackTriggered)]
    assert {e.operation for e in fired} == {"execute_program", ALL_OPERATIONS}
    first = fired[0]
    assert outbox.commands[0].command == "rollback"
    assert outbox.commands[0].cause_id == first.event_id
    assert outbox.commands[0].command_id == rollback_command_id("v2_migration", first.event_id)
    assert snapshots[0].cause_id == first.event_id
    assert snapshots[0].metrics["v2.error_rate"] == 0.5
    assert len(outbox.commands) == 1  # one rollback, not one per operation window


def test_no_rollback_is_sent_while_v2_takes_no_traffic() -> None:
    outbox, clock = Outbox(), Clock()
    monitor = _monitor(outbox, clock)
    _feed(monitor, v2_errors=20)
    clock.now = T0 + SIZE + GRACE

    asyncio.run(monitor.close_due())

    assert any(isinstance(e, HealthAssessed) and e.triggers for e in outbox.events())
    assert outbox.commands == []


def test_open_windows_survive_a_restart_through_the_table() -> None:
    table: dict[bytes, bytes] = {}
    outbox, clock = Outbox(), Clock()
    first = _monitor(outbox, clock, table)
    _feed(first, count=20)

    second = _monitor(outbox, clock, table)
    second.on_operation(0, encode_event(execution(99, pool="v2", at=T0)))
    clock.now = T0 + SIZE + GRACE
    published = asyncio.run(second.close_due())

    v2 = next(e for e in published if e.pool == "v2" and e.operation == ALL_OPERATIONS)
    assert v2.count == 21
    second.on_operation(1, encode_event(execution(100, pool="v2", at=clock.now)))
    assert all(
        json.loads(raw)["start"] != T0.isoformat()
        for key, raw in table.items()
        if key.startswith(b"1|")
    )


def test_a_window_already_due_when_loaded_back_is_dropped_not_sent_again() -> None:
    table: dict[bytes, bytes] = {}
    outbox, clock = Outbox(), Clock()
    _feed(_monitor(outbox, clock, table), count=20)

    clock.now = T0 + SIZE + GRACE + timedelta(minutes=5)
    restarted = _monitor(outbox, clock, table)

    assert asyncio.run(restarted.close_due()) == []


def test_input_that_is_not_an_event_is_skipped() -> None:
    outbox, clock = Outbox(), Clock()
    monitor = _monitor(outbox, clock)
    monitor.on_operation(0, b"{not json")
    monitor.on_comparison(0, None)

    assert all(not windows.open for windows in monitor.windows.values())


def test_windows_wait_for_a_consumer_that_runs_behind_the_wall_clock() -> None:
    outbox, clock = Outbox(), Clock()
    monitor = _monitor(outbox, clock)
    clock.now = T0 + timedelta(seconds=30)  # the wall clock is far ahead of what was read
    _feed(monitor)  # executions of T0 .. T0 + 4 s, read just now

    assert asyncio.run(monitor.close_due()) == []
    monitor.on_operation(0, encode_event(execution(500, pool="v2", at=T0 + SIZE + GRACE)))
    assert {e.window_start for e in asyncio.run(monitor.close_due())} == {T0}
    assert monitor.late == 0


def test_windows_close_on_the_wall_clock_once_executions_stop_coming() -> None:
    outbox, clock = Outbox(), Clock()
    monitor = _monitor(outbox, clock)
    _feed(monitor)

    clock.now = T0 + timedelta(seconds=monitor.idle_after_s) + SIZE + GRACE

    assert asyncio.run(monitor.close_due())
