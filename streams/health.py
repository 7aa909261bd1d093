"""The health monitor: executions and comparisons in, judged health windows out, rollbacks.

Each partition of ``pool.operations`` and ``ledger.comparisons`` (co-partitioned) feeds its own
``ledger.health.HealthWindows``; a timer closes the windows whose end plus a grace period has
passed on the wall clock, merges the partial windows of every partition (the accumulators are
mergeable), judges V2's window against V1's with ``ledger.policy.assess`` and publishes both
as ``HealthAssessed`` on ``ledger.health`` (key: the pool). When a rollback trigger is
announced (outside its cooldown) while V2 takes traffic, it publishes a ``RollbackTriggered``
snapshot and a rollback command whose ``cause_id`` is the V2 window that fired; its command id
is derived from that window, so the controller sending the same rollback changes nothing.

Open windows are kept in a table (``health-windows``) written at most every
``flush_interval`` seconds per partition, in the context of that partition's events (faust
writes a table's changelog to the partition of the event being processed). After a crash, at
most one flush interval (10 s) of executions is missing from the windows then open; a window that
was already due when it is loaded back is dropped, never published a second time with other
figures under the same id.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ledger import wire
from ledger.errors import EventDecodeError
from ledger.events import (
    CommandRejected,
    ComparisonRecorded,
    FlagChanged,
    HealthAssessed,
    OperationRecorded,
    encode_event,
)
from ledger.health import DEFAULT_WINDOW, HealthWindow, HealthWindows, merge_windows
from ledger.policy import HealthPolicy, HealthVerdict, assess, judged, load_policy
from ledger.switchover import (
    HEALTH_ACTOR,
    ControllerCommand,
    rollback_command_id,
    rollback_snapshot,
)

if TYPE_CHECKING:
    from streams.app import LedgerApp

__all__ = ["DEFAULT_GRACE", "HealthMonitor", "install"]

log = logging.getLogger(__name__)

#: How long after a window's end executions may still arrive (publishing is asynchronous).
DEFAULT_GRACE = timedelta(seconds=5)
#: Open windows are written to the table at most this often per partition. More often costs
#: faust's commit dearly: it flushes the producer until the buffer runs dry, and windows of
#: ~13 kB every second kept it from doing so for tens of seconds under load.
FLUSH_INTERVAL_S = 10.0

Send = Callable[[bytes | None, bytes], Awaitable[Any]]
SendCommand = Callable[[ControllerCommand], Awaitable[Any]]
CanonicalError = Callable[[OperationRecorded], str | None]


def _table_key(partition: int, window: HealthWindow) -> bytes:
    start_us = (window.start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return f"{partition}|{window.pool}|{start_us}|{window.operation}".encode()


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
class HealthMonitor:
    """The monitor's state and logic, independent of faust's plumbing (tests drive it)."""

    flag: str
    send_health: Send
    send_command: SendCommand
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    size: timedelta = DEFAULT_WINDOW
    grace: timedelta = DEFAULT_GRACE
    canonical_error: CanonicalError | None = None
    table: MutableMapping[bytes, bytes] | None = None
    flush_interval: float = FLUSH_INTERVAL_S
    wall: Callable[[], float] = time.time
    windows: dict[int, HealthWindows] = field(default_factory=dict)
    cooldowns: dict[str, datetime] = field(default_factory=dict)
    ramp: FlagRamp = field(default_factory=FlagRamp)
    #: With no execution newer than this many seconds, windows close on the wall clock alone.
    idle_after_s: float = 10.0
    #: The latest execution time seen (event time) and when it was seen (wall clock).
    watermark: datetime | None = None
    watermark_seen_at: float = 0.0
    published: int = 0
    rollbacks: int = 0
    loaded: bool = False
    _dirty: dict[int, set[tuple[str, str, datetime]]] = field(
        default_factory=lambda: defaultdict(set)
    )
    _deleted: dict[int, set[bytes]] = field(default_factory=lambda: defaultdict(set))
    _flushed_at: dict[int, float] = field(default_factory=dict)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), tz=UTC)

    def _partition(self, partition: int) -> HealthWindows:
        windows = self.windows.get(partition)
        if windows is None:
            windows = HealthWindows(size=self.size)
            self.windows[partition] = windows
        return windows

    # --- the table -----------------------------------------------------------------------

    def load(self) -> None:
        """Read open windows back from the table (after a restart or a rebalance)."""
        self.loaded = True
        if self.table is None:
            return
        horizon = self._now() - self.grace
        for key, raw in list(self.table.items()):
            try:
                partition = int(key.split(b"|", 1)[0])
                window = HealthWindow.from_dict(json.loads(raw))
            except (ValueError, KeyError, TypeError):
                continue
            windows = self._partition(partition)
            if window.end <= horizon:
                self._deleted[partition].add(key)  # due while we were away: drop, never re-send
                continue
            windows.open.setdefault(window.key, window)

    def _persist(self, partition: int) -> None:
        """Write this partition's dirty windows (call only while handling its events)."""
        if self.table is None:
            return
        for key in self._deleted.pop(partition, set()):
            self.table.pop(key, None)
        wall = self.wall()
        if wall - self._flushed_at.get(partition, 0.0) < self.flush_interval:
            return
        self._flushed_at[partition] = wall
        windows = self._partition(partition)
        for window_key in self._dirty.pop(partition, set()):
            window = windows.open.get(window_key)
            if window is not None:
                self.table[_table_key(partition, window)] = json.dumps(window.to_dict()).encode()

    # --- input ---------------------------------------------------------------------------

    def on_operation(self, partition: int, raw: bytes | None) -> None:
        """Count one execution (input that is not a valid one is the pairing agent's to
        dead-letter; it is skipped here)."""
        if not self.loaded:
            self.load()
        try:
            operation = wire.decode(raw, "operations")
        except EventDecodeError:
            return
        assert isinstance(operation, OperationRecorded)
        error_type = None
        if operation.error is not None and self.canonical_error is not None:
            error_type = self.canonical_error(operation)
        windows = self._partition(partition)
        windows.add_operation(operation, error_type=error_type)
        self._mark(partition, windows, operation.pool, operation.operation, operation.started_at)
        if self.watermark is None or operation.started_at > self.watermark:
            self.watermark = operation.started_at
            self.watermark_seen_at = self.wall()
        self._persist(partition)

    def on_comparison(self, partition: int, raw: bytes | None) -> None:
        if not self.loaded:
            self.load()
        try:
            comparison = wire.decode(raw, "comparisons")
        except EventDecodeError:
            return
        assert isinstance(comparison, ComparisonRecorded)
        if comparison.late:
            return  # its pair was already counted as missing
        windows = self._partition(partition)
        windows.add_comparison(comparison)
        self._mark(partition, windows, "v2", comparison.operation, comparison.at)
        self._persist(partition)

    def _mark(
        self,
        partition: int,
        windows: HealthWindows,
        pool: str,
        operation: str | None,
        at: datetime,
    ) -> None:
        from ledger.health import ALL_OPERATIONS, window_start

        start = window_start(at, windows.size)
        for name in (operation, ALL_OPERATIONS):
            if name is not None and (pool, name, start) in windows.open:
                self._dirty[partition].add((pool, name, start))

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

    # --- closing -------------------------------------------------------------------------

    def _horizon(self, now: datetime) -> datetime:
        """How far event time has surely come: the wall clock, held back to the newest
        execution read while executions keep coming (a consumer running behind must not
        close windows it has not read yet)."""
        if self.watermark is None or self.wall() - self.watermark_seen_at >= self.idle_after_s:
            return now
        return min(now, self.watermark)

    @property
    def late(self) -> int:
        """Executions and comparisons that arrived after their window had closed."""
        return sum(windows.late for windows in self.windows.values())

    async def close_due(self) -> list[HealthAssessed]:
        """Close, merge, judge and publish every window whose end + grace has passed."""
        if not self.loaded:
            self.load()
        now = self._now()
        closed: dict[tuple[str, str, datetime], list[HealthWindow]] = defaultdict(list)
        horizon = self._horizon(now)
        for partition, windows in self.windows.items():
            for window in windows.close_due(horizon, grace=self.grace):
                closed[window.key].append(window)
                self._deleted[partition].add(_table_key(partition, window))
                self._dirty[partition].discard(window.key)
        groups: dict[tuple[str, datetime], dict[str, HealthWindow]] = defaultdict(dict)
        for (pool, operation, start), parts in closed.items():
            groups[(operation, start)][pool] = merge_windows(parts)
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


def install(ledger: LedgerApp) -> None:
    """Add the health windows agent, its table and the closing timer.

    The flag log reaches the monitor through ``streams.switchover``'s tail, which reads it
    from the beginning at every start (a group offset would hide the current ramp).
    """
    from ledger.switchover import encode_controller_command

    app = ledger.app
    settings = ledger.settings
    options = ledger.options
    size = timedelta(seconds=float(options.get("health_window") or settings.health_window))
    grace = timedelta(seconds=float(options.get("health_grace", settings.health_grace)))
    policy = options.get("health_policy") or load_policy(settings.health_policy)
    operations = ledger.topic("operations")
    comparisons = ledger.topic("comparisons")
    health = ledger.topic("health")
    flag_commands = ledger.topic("flag_commands")
    operations_name = operations.get_topic_name()
    source = app.topic(
        operations_name, comparisons.get_topic_name(), key_type=bytes, value_type=bytes
    )
    table = app.Table(
        "health-windows",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        help="partition|pool|start|operation -> open health window (ledger.health)",
    )
    from prometheus_client import Counter, Gauge

    from ledger.comparison import RuleSet, load_rules
    from ledger.errors import RulesError

    rules: RuleSet | None
    try:
        rules = load_rules(options.get("rules_path"))
    except RulesError:
        rules = None  # the pairing agent reports bad rules; native error types will do here

    def canonical_error(operation: OperationRecorded) -> str | None:
        if rules is None or operation.error is None:
            return None
        return rules.canonical_error(operation.pool, operation.error)

    async def send_health(key: bytes | None, value: bytes) -> Any:
        return await health.send(key=key, value=value)

    async def send_command(command: ControllerCommand) -> Any:
        return await flag_commands.send(
            key=command.flag.encode(), value=encode_controller_command(command)
        )

    monitor = HealthMonitor(
        flag=settings.flag,
        send_health=send_health,
        send_command=send_command,
        policy=policy,
        size=size,
        grace=grace,
        canonical_error=canonical_error,
        table=table if options.get("health_table", True) else None,
        flush_interval=float(options.get("health_flush_interval", FLUSH_INTERVAL_S)),
        idle_after_s=max(10.0, 2 * (size + grace).total_seconds()),
    )
    ledger.parts["health"] = monitor
    import scipy.stats  # noqa: F401 - the judge's first use must not stall the event loop

    registry = ledger.metrics.registry
    published = Counter(
        "ledger_health_windows", "Health windows published", ["pool", "verdict"], registry=registry
    )
    rollbacks = Counter(
        "ledger_health_rollbacks", "Rollback commands sent by the health monitor", registry=registry
    )
    late = Gauge(
        "ledger_health_late_events",
        "Executions and comparisons that arrived after their window closed",
        registry=registry,
    )

    async def on_assigned(*args: Any, **kwargs: Any) -> None:
        monitor.loaded = False

    app.on_partitions_assigned.connect(on_assigned)

    @app.agent(source, name="health")
    async def health_windows(stream: Any) -> Any:
        async for event in stream.events():
            message = event.message
            if message.topic == operations_name:
                monitor.on_operation(message.partition, message.value)
            else:
                monitor.on_comparison(message.partition, message.value)
            yield None

    async def close_health_windows() -> None:
        if app.rebalancing or app.in_recovery:
            return
        sent_before = monitor.rollbacks
        for window in await monitor.close_due():
            published.labels(window.pool, window.verdict).inc()
        rollbacks.inc(monitor.rollbacks - sent_before)
        late.set(monitor.late)

    # Registered by call: faust's decorators are untyped.
    app.timer(min(1.0, size.total_seconds() / 4))(close_health_windows)
