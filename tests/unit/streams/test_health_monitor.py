"""Health windows without Kafka: per-partition windows closed into partials, partials merged
by one judge, windows judged, rollbacks sent."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.events import FlagChanged, HealthAssessed, RollbackTriggered, decode_event, encode_event
from ledger.health import ALL_OPERATIONS
from ledger.pairing import Decided, Emission, Pending, Position, bare
from ledger.switchover import ControllerCommand, rollback_command_id
from streams.health import HealthJudge, PartitionHealth
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


PARTITIONS = 3


@dataclass
class Worker:
    """The health side of one or more workers: their partitions' windows, and the judge."""

    outbox: Outbox = field(default_factory=Outbox)
    clock: Clock = field(default_factory=Clock)
    windows: PartitionHealth = field(init=False)
    judge: HealthJudge = field(init=False)

    def __post_init__(self) -> None:
        self.windows = self._windows()
        self.judge = HealthJudge(
            flag="v2_migration",
            partitions=PARTITIONS,
            send_health=self.outbox.send_health,
            send_command=self.outbox.send_command,
            size=SIZE,
            wall=self.clock,
        )

    def _windows(self) -> PartitionHealth:
        return PartitionHealth(size=SIZE, grace=GRACE, wall=self.clock)

    def close(self, *, caught_up: bool = False) -> list[HealthAssessed]:
        """Every partition closes what is due and hands its partial to the judge."""
        for partition in range(PARTITIONS):
            partial = self.windows.close(partition, caught_up=caught_up)
            if partial is not None:
                self.judge.on_partial(json.dumps(partial.to_dict()).encode())
        return asyncio.run(self.judge.publish_ready())


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


def _feed(health: PartitionHealth, *, v2_errors: int = 0, count: int = 40) -> None:
    for i in range(count):
        partition = i % PARTITIONS
        at = T0 + timedelta(milliseconds=100 * i)
        health.count_operation(partition, execution(i, pool="v1", at=at))
        error = "python" if i < v2_errors else None
        health.count_operation(partition, execution(i, pool="v2", at=at, error_type=error))
        health.count_comparison(partition, comparison(i, "match", at=at))


def _slots(count: int) -> list[Pending | Decided]:
    """What the pairing table holds after ``_feed(count=count)``: one decided slot per pair."""
    slots: list[Pending | Decided] = []
    for i in range(count):
        at = T0 + timedelta(milliseconds=100 * i)
        v1, v2 = execution(i, pool="v1", at=at), execution(i, pool="v2", at=at)
        where = Position(topic="ops", partition=i % PARTITIONS, offset=i)
        emitted = Emission(position=where, event=comparison(i, "match", at=at))
        slots.append(
            Decided(
                halves={"v1": v1.event_id, "v2": v2.event_id},
                emissions=(emitted,),
                partition=i % PARTITIONS,
                forget_at=1e12,
                executions=(bare(v1), bare(v2)),
            )
        )
    return slots


def test_windows_of_every_partition_are_merged_and_published_once_due() -> None:
    worker = Worker()
    _feed(worker.windows)

    worker.clock.now = T0 + SIZE + GRACE - timedelta(milliseconds=1)
    assert worker.close(caught_up=True) == []
    worker.clock.now = T0 + timedelta(seconds=worker.windows.idle_after_s) + SIZE + GRACE
    published = worker.close(caught_up=True)

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
    assert [key for key, _ in worker.outbox.health] == [b"v1", b"v2", b"v1", b"v2"]
    assert worker.close(caught_up=True) == []


def test_the_judge_waits_until_every_partition_has_closed_the_window() -> None:
    worker = Worker()
    _feed(worker.windows)
    worker.clock.now = T0 + timedelta(seconds=worker.windows.idle_after_s) + SIZE + GRACE
    for partition in range(PARTITIONS - 1):  # the last partition's worker is away
        partial = worker.windows.close(partition, caught_up=True)
        assert partial is not None
        worker.judge.on_partial(json.dumps(partial.to_dict()).encode())
    assert asyncio.run(worker.judge.publish_ready()) == []

    published = worker.close(caught_up=True)  # it comes back with its partition's part

    assert {(e.pool, e.operation): e.count for e in published}[("v2", ALL_OPERATIONS)] == 40


def test_a_v2_error_spike_while_v2_takes_traffic_sends_a_rollback_with_its_evidence() -> None:
    worker = Worker()
    worker.judge.on_flag_event(_flag(3, enabled=True, bp=2500))
    _feed(worker.windows, v2_errors=20)
    worker.clock.now = T0 + timedelta(seconds=worker.windows.idle_after_s) + SIZE + GRACE

    worker.close(caught_up=True)

    outbox = worker.outbox
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
    worker = Worker()
    _feed(worker.windows, v2_errors=20)
    worker.clock.now = T0 + timedelta(seconds=worker.windows.idle_after_s) + SIZE + GRACE

    worker.close(caught_up=True)

    assert any(isinstance(e, HealthAssessed) and e.triggers for e in worker.outbox.events())
    assert worker.outbox.commands == []


def test_open_windows_are_rebuilt_exactly_from_the_pairing_slots() -> None:
    worker = Worker()
    _feed(worker.windows, count=20)
    live = {k: w.to_dict() for p, ws in worker.windows.windows.items() for k, w in ws.open.items()}

    restarted = worker._windows()
    restarted.restore(_slots(20))

    rebuilt = {k: w.to_dict() for p, ws in restarted.windows.items() for k, w in ws.open.items()}
    assert rebuilt == live  # per partition too: each slot knows its partition
    assert {p: len(ws.open) for p, ws in restarted.windows.items()} == {
        p: len(ws.open) for p, ws in worker.windows.windows.items()
    }


def test_a_partial_sent_again_after_its_window_was_published_changes_nothing() -> None:
    worker = Worker()
    _feed(worker.windows, count=20)
    worker.clock.now = T0 + timedelta(seconds=worker.windows.idle_after_s) + SIZE + GRACE
    assert worker.close(caught_up=True)
    sent = len(worker.outbox.health)

    worker.windows = worker._windows()  # a worker takes the partitions over after a crash
    worker.windows.restore(_slots(20))
    assert worker.close(caught_up=True) == []

    assert len(worker.outbox.health) == sent
    assert worker.judge.late > 0


def test_a_merger_taking_over_skips_windows_already_on_the_health_topic() -> None:
    worker = Worker()
    _feed(worker.windows, count=20)
    worker.clock.now = T0 + timedelta(seconds=worker.windows.idle_after_s) + SIZE + GRACE
    partials = [worker.windows.close(p, caught_up=True) for p in range(PARTITIONS)]
    first = Worker(clock=worker.clock)
    for partial in partials:
        assert partial is not None
        first.judge.on_partial(json.dumps(partial.to_dict()).encode())
    assert asyncio.run(first.judge.publish_ready())

    second = Worker(clock=worker.clock)  # re-reads the partials and the health topic
    for _, value in first.outbox.health:
        second.judge.on_health_record(value)
    for partial in partials:
        assert partial is not None
        second.judge.on_partial(json.dumps(partial.to_dict()).encode())
    assert asyncio.run(second.judge.publish_ready()) == []


def test_a_record_that_is_not_a_partial_is_skipped() -> None:
    worker = Worker()
    worker.judge.on_partial(b"{not json")
    worker.judge.on_partial(None)

    assert worker.judge.merger.parts == {}
    assert worker.judge.merger.closed_before == {}


def test_windows_wait_for_a_consumer_that_runs_behind_the_wall_clock() -> None:
    worker = Worker()
    worker.clock.now = T0 + timedelta(seconds=30)  # the wall clock is far ahead of what was read
    _feed(worker.windows)  # executions of T0 .. T0 + 4 s, read just now

    assert worker.close() == []
    for partition in range(PARTITIONS):
        later = execution(500 + partition, pool="v2", at=T0 + SIZE + GRACE)
        worker.windows.count_operation(partition, later)
    assert {e.window_start for e in worker.close()} == {T0}
    assert worker.windows.late == 0


def test_windows_close_on_the_wall_clock_once_executions_stop_coming() -> None:
    worker = Worker()
    _feed(worker.windows)

    worker.clock.now = T0 + timedelta(seconds=worker.windows.idle_after_s) + SIZE + GRACE
    assert worker.close(caught_up=False) == []  # not read to its end: the backlog may hold more

    assert worker.close(caught_up=True)


def test_a_quiet_partition_asks_for_a_tick_to_report_its_progress() -> None:
    worker = Worker()
    assert worker.windows.wants_tick(0)  # never heard of: nothing reported yet
    partial = worker.windows.close(0, caught_up=True)
    assert partial is not None
    assert partial.windows == ()
    assert not worker.windows.wants_tick(0)
    worker.clock.now = T0 + SIZE + GRACE
    assert worker.windows.wants_tick(0)
