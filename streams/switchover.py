"""The switchover controller in the worker: its state rebuilt from the log at every start.

An ``AsyncLogReader`` (``ledger.kafka.log``) reads ``ledger.health`` and ``ledger.flag-events``
from their beginning outside any consumer group (no committed offset can make it skip history)
and keeps following them. Every event is folded into ``SwitchoverService``; once the tail has
reached the end offsets it saw at start, a timer lets the controller ``step``: records go to
``ledger.health`` (key: the flag) and are delivered before the flag commands they announce go
to ``ledger.flag-commands``, so a controller that dies in between finds the record and re-sends
the command under the same id.

The tail also hands flag events to the health judge (``streams.health``), which needs to know
whether V2 takes traffic before it sends a rollback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ledger import wire
from ledger.errors import EventDecodeError
from ledger.events import (
    CommandRejected,
    Event,
    FlagChanged,
    HealthAssessed,
    SwitchoverRecorded,
    encode_event,
)
from ledger.health import ALL_OPERATIONS
from ledger.kafka.log import AsyncLogReader
from ledger.switchover import (
    KEEP_WINDOWS,
    ControllerCommand,
    ControllerState,
    StepResult,
    apply,
    encode_controller_command,
    step,
)

if TYPE_CHECKING:
    from streams.app import LedgerApp

__all__ = [
    "SwitchoverService",
    "install",
]

log = logging.getLogger(__name__)

STEP_INTERVAL_S = 1.0
#: Health windows older than the current soak by more than this are forgotten.
KEEP_BEFORE_SOAK = timedelta(minutes=10)


Publish = Callable[[bytes | None, bytes], Awaitable[Any]]
PublishCommand = Callable[[ControllerCommand], Awaitable[Any]]


@dataclass
class SwitchoverService:
    """The controller's folded state, the health windows it gates on, and its steps."""

    flag: str
    publish_record: Publish
    publish_command: PublishCommand
    wall: Callable[[], float] = time.time
    state: ControllerState = field(init=False)
    assessments: list[HealthAssessed] = field(default_factory=list)
    caught_up: bool = False
    applied_records: set[str] = field(default_factory=set)
    resent_at: dict[str, float] = field(default_factory=dict)
    on_flag_event: Callable[[bytes | None], None] | None = None
    #: Health windows older than this are not even decoded when the log is re-read.
    keep_windows: timedelta = KEEP_WINDOWS

    def __post_init__(self) -> None:
        self.state = ControllerState(flag=self.flag)

    def reset(self) -> None:
        """Forget everything before reading the log again from its beginning."""
        self.state = ControllerState(flag=self.flag)
        self.assessments = []
        self.caught_up = False
        self.applied_records = set()

    def fold(self, event: Event) -> None:
        """Take one event read from the log."""
        if isinstance(event, SwitchoverRecorded):
            if event.event_id in self.applied_records or event.flag != self.flag:
                return
            self.applied_records.add(event.event_id)
            self.state = apply(self.state, event)
        elif isinstance(event, FlagChanged | CommandRejected):
            self.state = apply(self.state, event)
        elif isinstance(event, HealthAssessed) and (
            event.operation == ALL_OPERATIONS or event.triggers
        ):
            self.assessments.append(event)

    def fold_raw(
        self,
        topic_is_flag_log: bool,
        raw: bytes | None,
        *,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Take one message. On ``ledger.health`` only the flag's own records (key = flag)
        are always decoded; health windows older than ``keep_windows`` are skipped unread,
        so a restart does not parse a week of windows to find the last few hours."""
        if topic_is_flag_log and self.on_flag_event is not None:
            self.on_flag_event(raw)
        if (
            not topic_is_flag_log
            and key != self.flag.encode()
            and timestamp_ms is not None
            and self.wall() - timestamp_ms / 1000 > self.keep_windows.total_seconds()
        ):
            return
        try:
            event = wire.decode(raw, "flag_events" if topic_is_flag_log else "health")
        except EventDecodeError:
            return
        self.fold(event)

    def _forget_old_windows(self) -> None:
        since = self.state.soak_started_at or self.state.last_record_at
        if since is None:
            return
        horizon = since - KEEP_BEFORE_SOAK
        self.assessments = [a for a in self.assessments if a.window_end > horizon]

    async def tick(self) -> StepResult | None:
        """One controller step, once the log has been read to its end."""
        if not self.caught_up:
            return None
        self._forget_old_windows()
        now = datetime.fromtimestamp(self.wall(), tz=UTC)
        result = step(self.state, self.assessments, now)
        await self.publish(result)
        return result

    async def publish(self, result: StepResult) -> None:
        """Records (delivered, then folded), snapshots, then commands."""
        for record in result.records:
            await self.publish_record(self.flag.encode(), encode_event(record))
            self.applied_records.add(record.event_id)
            self.state = apply(self.state, record)
        for snapshot in result.snapshots:
            await self.publish_record(self.flag.encode(), encode_event(snapshot))
        wall = self.wall()
        timeout = self.state.plan.command_timeout_s if self.state.plan else 30.0
        for command in result.commands:
            if not result.records:
                # A re-send: at most one per command timeout, however often we step.
                last = self.resent_at.get(command.command_id)
                if last is not None and wall - last < timeout:
                    continue
                self.resent_at[command.command_id] = wall
            await self.publish_command(command)


def install(ledger_app: LedgerApp) -> None:
    """Run the controller as a task of the app: tail the log, fold it, step every second.

    Every worker tails and folds; only the worker that runs the singletons (the one assigned
    ``ledger.flag-commands``, see ``LedgerApp.runs_singletons``) steps it, so one controller
    acts in the whole consumer group.
    """
    app = ledger_app.app
    settings = ledger_app.settings
    health = ledger_app.topic("health")
    flag_commands = ledger_app.topic("flag_commands")
    flag_events_name = settings.topic("flag_events")
    interval = float(ledger_app.options.get("switchover_interval") or STEP_INTERVAL_S)

    async def publish_record(key: bytes | None, value: bytes) -> Any:
        delivered = await health.send(key=key, value=value)
        return await delivered  # the record is in the log before its command is sent

    async def publish_command(command: ControllerCommand) -> Any:
        return await flag_commands.send(
            key=command.flag.encode(), value=encode_controller_command(command)
        )

    def on_flag_event(raw: bytes | None) -> None:
        monitor = ledger_app.parts.get("health")
        if monitor is not None:
            monitor.on_flag_event(raw)

    service = SwitchoverService(
        flag=settings.flag,
        publish_record=publish_record,
        publish_command=publish_command,
        on_flag_event=on_flag_event,
    )
    ledger_app.parts["switchover"] = service

    async def follow() -> None:
        tail = AsyncLogReader(settings, [settings.topic("health"), flag_events_name])
        await tail.start()
        try:
            last_step = 0.0
            while not app.should_stop:
                for record in await tail.read(timeout_ms=int(interval * 500)):
                    service.fold_raw(
                        record.topic == flag_events_name,
                        record.value,
                        key=record.key,
                        timestamp_ms=record.timestamp_ms,
                    )
                if not service.caught_up and await tail.caught_up():
                    service.caught_up = True
                    log.info("switchover state rebuilt: %s", service.state.display_status)
                # Every worker folds the log (the health judge reads the ramp from it); only
                # the one running the singletons steps the controller.
                if (
                    service.caught_up
                    and ledger_app.runs_singletons()
                    and time.monotonic() - last_step >= interval
                ):
                    last_step = time.monotonic()
                    await service.tick()
        finally:
            await tail.stop()

    async def switchover_controller() -> None:
        # Whatever goes wrong (broker away, a bad step), start over from the log: the
        # state is rebuilt, never patched; and the worker's other agents keep running.
        while not app.should_stop:
            service.reset()
            try:
                await follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("switchover controller failed; rebuilding from the log in 5 s")
                await asyncio.sleep(5.0)

    app.task(switchover_controller)  # registered by call: faust's decorators are untyped
