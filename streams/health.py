"""Health windows across workers: per-partition partial windows, one merger, judged windows out.

Counting happens in the pairing agent's pass (``streams.pairing``): each execution is counted
when its half first reaches a pairing slot (a duplicate, same ``event_id``, never does) and
each comparison when it is emitted, into the ``ledger.health.HealthWindows`` of its input
partition (``PartitionHealth``). So the windows of a partition are the fold of its pairing
slots (``ledger.pairing.counted``): after a crash or a rebalance the worker that takes the
partition over rebuilds them exactly from the recovered slots, and nothing is counted twice
however often it was delivered.

When a partition's event time has passed a window's end plus the grace period, the worker
reading it publishes a ``PartialWindows`` record on ``ledger.health-partials``: the partition's
closed windows and how far it has closed (also when it had nothing, so a partition without
traffic still reports progress). One merger (``HealthJudge``) runs in the whole consumer
group, on the worker that owns partition 0 of ``ledger.flag-commands`` (see
``LedgerApp.runs_singletons``): it merges a window once every partition has closed past it
(DDSketch bins and the other accumulators merge exactly), judges V2's window against V1's
with ``ledger.policy.assess`` and publishes both as ``HealthAssessed`` on ``ledger.health``
(key: the pool). When a rollback trigger fires while V2 takes traffic, it publishes a
``RollbackTriggered`` snapshot and a rollback command whose ``cause_id`` is the V2 window that
fired; ids are derived from the window, so a merger that re-reads recent partials after
taking over (it skips windows already on ``ledger.health``) changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ledger import wire
from ledger.comparison import RuleSet, load_rules
from ledger.errors import EventDecodeError, RulesError
from ledger.events import (
    CommandRejected,
    ComparisonRecorded,
    FlagChanged,
    HealthAssessed,
    OperationRecorded,
    encode_event,
)
from ledger.health import (
    DEFAULT_WINDOW,
    HealthWindow,
    HealthWindows,
    PartialWindows,
    WindowMerger,
    assessment_id_for,
    window_start,
)
from ledger.kafka.clients import aiokafka_consumer
from ledger.kafka.topics import topic_name
from ledger.pairing import Decided, Pending, counted
from ledger.policy import HealthPolicy, HealthVerdict, assess, judged, load_policy
from ledger.switchover import (
    HEALTH_ACTOR,
    ControllerCommand,
    encode_controller_command,
    rollback_command_id,
    rollback_snapshot,
)

if TYPE_CHECKING:
    from streams.app import LedgerApp

__all__ = ["DEFAULT_GRACE", "HealthJudge", "PartitionHealth", "install"]

log = logging.getLogger(__name__)

#: How long after a window's end executions may still arrive (publishing is asynchronous).
DEFAULT_GRACE = timedelta(seconds=5)
#: A merger taking over re-reads this many windows of partials (and of ``ledger.health``).
LOOKBACK_WINDOWS = 10

Send = Callable[[bytes | None, bytes], Awaitable[Any]]
SendCommand = Callable[[ControllerCommand], Awaitable[Any]]
CanonicalError = Callable[[OperationRecorded], str | None]


@dataclass
class FlagRamp:
    """Whether V2 takes traffic now (a rollback is pointless when it does not)."""

    version: int = 0
    v2_pool_enabled: bool = False
    v2_rollout_bp: int = 0

    @property
    def v2_live(self) -> bool:
        return self.v2_pool_enabled or self.v2_rollout_bp > 0


@dataclass
class PartitionHealth:
    """The open windows of the input partitions one worker reads, closed per partition.

    A partition's event time is the newest ``started_at`` read from it; once nothing new has
    come for ``idle_after_s`` and the partition is read to its end, the wall clock (a consumer
    running behind must not close windows it has not read yet).
    """

    size: timedelta = DEFAULT_WINDOW
    grace: timedelta = DEFAULT_GRACE
    canonical_error: CanonicalError | None = None
    idle_after_s: float = 10.0
    wall: Callable[[], float] = time.time
    windows: dict[int, HealthWindows] = field(default_factory=dict)
    watermark: dict[int, datetime] = field(default_factory=dict)
    seen_at: dict[int, float] = field(default_factory=dict)
    #: partition -> the ``closed_before`` last published for it.
    reported: dict[int, datetime] = field(default_factory=dict)

    def _partition(self, partition: int) -> HealthWindows:
        windows = self.windows.get(partition)
        if windows is None:
            windows = self.windows[partition] = HealthWindows(size=self.size)
        return windows

    def count_operation(self, partition: int, operation: OperationRecorded) -> None:
        error_type = None
        if operation.error is not None and self.canonical_error is not None:
            error_type = self.canonical_error(operation)
        self._partition(partition).add_operation(operation, error_type=error_type)
        mark = self.watermark.get(partition)
        if mark is None or operation.started_at > mark:
            self.watermark[partition] = operation.started_at
            self.seen_at[partition] = self.wall()

    def count_comparison(self, partition: int, comparison: ComparisonRecorded) -> None:
        if not comparison.late:  # a late half's marker: its pair was counted as missing
            self._partition(partition).add_comparison(comparison)

    def restore(self, slots: Iterable[Pending | Decided]) -> None:
        """Rebuild every partition's windows from its pairing slots (after recovery)."""
        self.windows.clear()
        self.watermark.clear()
        self.seen_at.clear()
        for slot in slots:
            executions, comparisons = counted(slot)
            for operation in executions:
                self.count_operation(slot.partition, operation)
            for comparison in comparisons:
                self.count_comparison(slot.partition, comparison)
        # Rebuilt, not read: only executions read from now on say a partition is still busy.
        self.seen_at.clear()

    @property
    def late(self) -> int:
        return sum(windows.late for windows in self.windows.values())

    def _horizon(self, partition: int, *, caught_up: bool) -> datetime | None:
        now = datetime.fromtimestamp(self.wall(), tz=UTC)
        mark = self.watermark.get(partition)
        idle = self.wall() - self.seen_at.get(partition, 0.0) >= self.idle_after_s
        if caught_up and (mark is None or idle):
            return now
        return None if mark is None else min(now, mark)

    def close(self, partition: int, *, caught_up: bool = False) -> PartialWindows | None:
        """The partition's windows now due and its progress, if there is anything new."""
        horizon = self._horizon(partition, caught_up=caught_up)
        if horizon is None:
            return None
        windows = self._partition(partition)
        closed = windows.close_due(horizon, grace=self.grace)
        progress = windows.closed_before
        if progress is None or (not closed and self.reported.get(partition) == progress):
            return None
        self.reported[partition] = progress
        return PartialWindows(partition, progress, tuple(closed))

    def wants_tick(self, partition: int) -> bool:
        """Whether a quiet partition has progress to report (only a tick can close it)."""
        if self.wall() - self.seen_at.get(partition, 0.0) < self.idle_after_s:
            return False
        now = datetime.fromtimestamp(self.wall(), tz=UTC)
        due = window_start(now - self.grace, self.size)
        reported = self.reported.get(partition)
        return reported is None or due > reported


@dataclass
class HealthJudge:
    """The merger: partial windows of every partition in, judged whole windows out."""

    flag: str
    partitions: int
    send_health: Send
    send_command: SendCommand
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    size: timedelta = DEFAULT_WINDOW
    wall: Callable[[], float] = time.time
    merger: WindowMerger = field(init=False)
    cooldowns: dict[str, datetime] = field(default_factory=dict)
    ramp: FlagRamp = field(default_factory=FlagRamp)
    #: Ids of the assessments already on ``ledger.health`` (read back, or sent here).
    assessed: set[str] = field(default_factory=set)
    published: int = 0
    rollbacks: int = 0

    def __post_init__(self) -> None:
        self.merger = WindowMerger(self.partitions)

    def reset(self) -> None:
        """Forget the partials (another worker merges now; a taker-over re-reads them)."""
        self.merger = WindowMerger(self.partitions)
        self.assessed.clear()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), tz=UTC)

    def on_partial(self, raw: bytes | None) -> None:
        try:
            partial = PartialWindows.from_dict(json.loads(raw or b""))
        except (ValueError, KeyError, TypeError):
            log.warning("skipping a health-partials record that is not one")
            return
        self.merger.add(partial)

    def on_health_record(self, raw: bytes | None) -> None:
        try:
            event = wire.decode(raw, "health")
        except EventDecodeError:
            return
        if isinstance(event, HealthAssessed):
            self.assessed.add(event.event_id)

    def on_flag_event(self, raw: bytes | None) -> None:
        try:
            event = wire.decode(raw, "flag_events")
        except EventDecodeError:
            return
        if isinstance(event, FlagChanged) and event.flag == self.flag:
            if event.version > self.ramp.version:
                self.ramp = FlagRamp(event.version, event.v2_pool_enabled, event.v2_rollout_bp)
        elif isinstance(event, CommandRejected):
            return

    @property
    def late(self) -> int:
        return self.merger.late

    async def publish_ready(self) -> list[HealthAssessed]:
        """Merge, judge and publish every window that every partition has closed."""
        now = self._now()
        groups: dict[tuple[str, datetime], dict[str, HealthWindow]] = defaultdict(dict)
        for window in self.merger.ready():
            if assessment_id_for(window.pool, window.operation, window.start, window.size) in (
                self.assessed
            ):
                continue  # published before this merger took over
            groups[(window.operation, window.start)][window.pool] = window
        published: list[HealthAssessed] = []
        for operation, start in sorted(groups, key=lambda k: (k[1], k[0])):
            pools = groups[(operation, start)]
            published += await self._judge_and_publish(pools.get("v1"), pools.get("v2"), now)
        return published

    async def _judge_and_publish(
        self, v1_window: HealthWindow | None, v2_window: HealthWindow | None, now: datetime
    ) -> list[HealthAssessed]:
        v1 = v1_window.assessed(at=now) if v1_window is not None else None
        if v2_window is None:
            assert v1_window is not None
            empty = HealthWindow(
                pool="v2", operation=v1_window.operation, start=v1_window.start, size=self.size
            )
            verdict = assess(v1, empty.assessed(at=now), self.policy, self.cooldowns, now)
            self.cooldowns = verdict.cooldowns
            assert v1 is not None
            out = [judged(v1, verdict)]
        else:
            v2 = v2_window.assessed(at=now)
            verdict = assess(v1, v2, self.policy, self.cooldowns, now)
            self.cooldowns = verdict.cooldowns
            v2 = judged(v2, verdict, v1)
            out = [judged(v1, verdict), v2] if v1 is not None else [v2]
            if verdict.triggers:
                # Not only announced triggers: the alert cooldown quiets messages, but V2
                # taking traffic again while still failing must be rolled back again.
                await self._roll_back(v2, verdict, now)
        for event in out:
            await self.send_health(event.pool.encode(), encode_event(event))
            self.assessed.add(event.event_id)
            self.published += 1
        return out

    async def _roll_back(
        self, cause: HealthAssessed, verdict: HealthVerdict, now: datetime
    ) -> None:
        if not self.ramp.v2_live:
            log.info("trigger %s while V2 takes no traffic: no rollback", cause.triggers)
            return
        command_id = rollback_command_id(self.flag, cause.event_id)
        snapshot = rollback_snapshot(
            self.flag, cause, command_id=command_id, actor=HEALTH_ACTOR, at=now
        )
        await self.send_health(self.flag.encode(), encode_event(snapshot))
        reason = "; ".join(a.message for a in verdict.triggers)
        await self.send_command(
            ControllerCommand(
                command="rollback",
                command_id=command_id,
                flag=self.flag,
                actor=HEALTH_ACTOR,
                reason=reason or "health trigger",
                cause_id=cause.event_id,
            )
        )
        self.rollbacks += 1
        # V2 takes no traffic once the writer applies it (a rollback is never refused): do
        # not send another for the next window before its FlagChanged is read back.
        self.ramp = FlagRamp(self.ramp.version, False, 0)


def partition_health(ledger: LedgerApp) -> PartitionHealth:
    """The worker's per-partition windows (one object, shared by the pairing agent)."""
    existing = ledger.parts.get("partition_health")
    if isinstance(existing, PartitionHealth):
        return existing

    settings = ledger.settings
    options = ledger.options
    size = timedelta(seconds=float(options.get("health_window") or settings.health_window))
    grace = timedelta(seconds=float(options.get("health_grace", settings.health_grace)))
    rules: RuleSet | None
    try:
        rules = load_rules(options.get("rules_path"))
    except RulesError:
        rules = None  # the pairing agent reports bad rules; native error types will do here

    def canonical_error(operation: OperationRecorded) -> str | None:
        if rules is None or operation.error is None:
            return None
        return rules.canonical_error(operation.pool, operation.error)

    health = PartitionHealth(
        size=size,
        grace=grace,
        canonical_error=canonical_error,
        idle_after_s=max(10.0, 2 * (size + grace).total_seconds()),
    )
    ledger.parts["partition_health"] = health
    return health


def install(ledger_app: LedgerApp) -> None:
    """Add the merger: a task that merges partials while this worker runs the singletons.

    The flag log reaches the judge through ``streams.switchover``'s tail, which reads it from
    the beginning at every start (a group offset would hide the current ramp).
    """
    app = ledger_app.app
    settings = ledger_app.settings
    options = ledger_app.options
    partitions = partition_health(ledger_app)
    policy = options.get("health_policy") or load_policy(settings.health_policy)
    health = ledger_app.topic("health")
    flag_commands = ledger_app.topic("flag_commands")

    partials_name = topic_name(settings, "health_partials")
    health_name = health.get_topic_name()
    interval = min(1.0, partitions.size.total_seconds() / 4)
    lookback = LOOKBACK_WINDOWS * (partitions.size + partitions.grace).total_seconds()

    async def send_health(key: bytes | None, value: bytes) -> Any:
        return await health.send(key=key, value=value)

    async def send_command(command: ControllerCommand) -> Any:
        return await flag_commands.send(
            key=command.flag.encode(), value=encode_controller_command(command)
        )

    judge = HealthJudge(
        flag=settings.flag,
        partitions=settings.partitions,
        send_health=send_health,
        send_command=send_command,
        policy=policy,
        size=partitions.size,
    )
    ledger_app.parts["health"] = judge
    import scipy.stats  # noqa: F401 - the judge's first use must not stall the event loop
    from prometheus_client import Counter, Gauge

    registry = ledger_app.metrics.registry
    published = Counter(
        "ledger_health_windows", "Health windows published", ["pool", "verdict"], registry=registry
    )
    rollbacks = Counter(
        "ledger_health_rollbacks", "Rollback commands sent by the health monitor", registry=registry
    )
    late = Gauge(
        "ledger_health_late_events",
        "Executions, comparisons and partial windows that arrived after their window closed",
        registry=registry,
    )

    async def merge(consumer: Any) -> None:
        # Deferred: aiokafka loads only where a client is built.
        from aiokafka import TopicPartition

        tps = [TopicPartition(partials_name, 0)] + [
            TopicPartition(health_name, p) for p in range(settings.partitions)
        ]
        consumer.assign(tps)
        since = int((time.time() - lookback) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since))
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            at = found.get(tp)
            consumer.seek(tp, at.offset if at is not None else ends[tp])
        caught_up = False
        while not app.should_stop and ledger_app.runs_singletons():
            batches = await consumer.getmany(timeout_ms=int(interval * 1000), max_records=5000)
            for tp, records in batches.items():
                for record in records:
                    if tp.topic == partials_name:
                        judge.on_partial(record.value)
                    else:
                        judge.on_health_record(record.value)
            if not caught_up:
                positions = [await consumer.position(tp) for tp in tps]
                caught_up = all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True))
                if not caught_up:
                    continue
            sent_before = judge.rollbacks
            for window in await judge.publish_ready():
                published.labels(window.pool, window.verdict).inc()
            rollbacks.inc(judge.rollbacks - sent_before)
            late.set(partitions.late + judge.late)

    async def health_merger() -> None:
        while not app.should_stop:
            if not ledger_app.runs_singletons():
                await asyncio.sleep(interval)
                continue
            judge.reset()
            # Built where every client is, so it connects with the settings' TLS and SASL.
            consumer = aiokafka_consumer(settings, fetch_max_wait_ms=int(interval * 500))
            try:
                await consumer.start()
                log.info("health merger runs on this worker")
                await merge(consumer)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health merger failed; starting over in 5 s")
                await asyncio.sleep(5.0)
            finally:
                await consumer.stop()

    app.task(health_merger)  # registered by call: faust's decorators are untyped
