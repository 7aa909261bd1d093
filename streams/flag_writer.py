"""The flag log writer: the only writer of ``ledger.flag-events``.

It reads ``ledger.flag-commands`` (one partition: one total order), decides each command with
``ledger.flags.decide_command`` against the state folded from the flag event log, and appends
the ``FlagChanged`` or ``CommandRejected`` it returns.

The state is never kept apart from the log: before deciding, the writer reads the log to its
end (from the beginning on the first command after a start), and after appending it reads its
own event back before taking the next command. So the version it gives is always last + 1 of
what is in the log (no gap), and a command replayed after a crash, whose answer reached the
log before its offset was committed, is recognised (``decide_command`` returns ``None`` for an
already decided command id) and not appended twice (no duplicate).

It relies on being alone: run the worker as one instance (or accept that during a consumer
group rebalance a fenced-out writer could race the new one; a doubled version would then show
up as a chain error, which stops the writer rather than building on it).

It also keeps the flag log as a Merkle log (issue 13): an RFC 6962 tree over every flag event
in the log, ``FlagChanged`` and ``CommandRejected`` alike (leaf: the record's bytes), folded
with the state (so rebuilt from the log at start), and after each append it publishes the
tree's checkpoint (``CheckpointPublished``, signed when it has a key) on its own topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from ledger import flags, wire
from ledger.checkpoint import Signer, flag_log_origin
from ledger.errors import CommandError, EventDecodeError
from ledger.events import CommandRejected, FlagChanged, encode_event
from ledger.evidence import flag_log_checkpoint
from ledger.kafka.log import AsyncLogReader
from ledger.merkle import CompactTree, leaf_hash
from ledger.settings import Settings
from ledger.store.keys import load_signer
from streams.dead_letters import dead_letter
from streams.metrics import Metrics

if TYPE_CHECKING:
    from streams.app import LedgerApp

__all__ = ["FlagLogReader", "FlagWriter", "build_writer", "install"]

log = logging.getLogger(__name__)

RETRY_S = 1.0
#: How long the writer waits for a command before it checks it still runs the singletons.
POLL_S = 0.5
#: Pause before the writer starts over after a failure.
RESTART_S = 5.0


class CommandMessage(Protocol):
    """A record of ``ledger.flag-commands``: where it sat, and its bytes."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


class LogSource(Protocol):
    async def read_to_end(self) -> list[tuple[int, bytes | None]]:
        """Every record after the last one returned, up to the log's current end."""
        ...


class FlagWriter:
    """Decides commands against the flag log's folded state and appends the answers.

    ``append(flag, value)`` publishes to the flag log and returns the record's offset once the
    broker has it; ``source`` reads the log back.
    """

    def __init__(
        self,
        *,
        source: LogSource,
        append: Callable[[str, bytes], Awaitable[int]],
        send_dead_letter: Callable[[bytes | None, bytes], Awaitable[Any]],
        metrics: Metrics,
        wall: Callable[[], float] = time.time,
        publish_checkpoint: Callable[[bytes, bytes], Awaitable[Any]] | None = None,
        signer: Signer | None = None,
        origin: str = flag_log_origin("ledger.flag-events"),
    ) -> None:
        self.source = source
        self.append = append
        self.send_dead_letter = send_dead_letter
        self.metrics = metrics
        self.wall = wall
        self.states: dict[str, Any] = {}
        self.read_through = -1  # offset of the last log record folded
        self.publish_checkpoint = publish_checkpoint
        self.signer = signer
        self.origin = origin
        self.tree = CompactTree()
        self._tree_offset: int | None = None
        self._tree_at: datetime | None = None

    async def catch_up(self) -> None:
        """Fold every log record not folded yet.

        Each offset is folded at most once, whatever the reader hands back: a reader whose
        position was reset to the beginning must not apply a change twice (a doubled version
        would stop the writer as a broken chain).
        """
        for offset, raw in await self.source.read_to_end():
            if offset <= self.read_through:
                continue
            self.read_through = offset
            try:
                event = wire.decode(raw, "flag_events")
            except EventDecodeError as exc:
                log.warning("flag log record %s is not an event, skipped: %s", offset, exc)
                continue
            if not isinstance(event, FlagChanged | CommandRejected):
                log.warning("flag log record %s is a %s, skipped", offset, type(event).__name__)
                continue
            state = self.states.get(event.flag) or flags.initial_state(event.flag)
            self.states[event.flag] = flags.apply(state, event)
            self.tree.append(leaf_hash(raw or b""))
            self._tree_offset, self._tree_at = offset, event.at

    async def handle(self, message: CommandMessage) -> FlagChanged | CommandRejected | None:
        """Decide one command message; returns what was appended (None: nothing)."""
        try:
            command = wire.decode_command(message.value)
        except (CommandError, EventDecodeError, ValueError) as exc:
            await self._dead_letter(message, f"not a valid flag command: {exc}")
            return None
        log.info("flag command %s (offset %s) taken", command.command_id, message.offset)
        while True:
            await self.catch_up()
            state = self.states.get(command.flag) or flags.initial_state(command.flag)
            # Event ids default to ones derived from (flag, version) or (flag, command id).
            answer = flags.decide_command(
                state, command, at=datetime.fromtimestamp(self.wall(), tz=UTC)
            )
            if answer is None:
                log.info("flag command %s was answered before", command.command_id)
                self.metrics.flag_commands.labels("already_decided").inc()
                return None
            try:
                offset = await self.append(command.flag, encode_event(answer))
            except Exception as exc:
                # The answer may have reached the log anyway; deciding again after reading
                # the log either finds it (None above) or appends it now: never twice.
                log.warning("appending to the flag log failed (%s); retrying", exc)
                await asyncio.sleep(RETRY_S)
                continue
            await self._read_back(offset)
            await self._checkpoint()
            result = "accepted" if isinstance(answer, FlagChanged) else "rejected"
            self.metrics.flag_commands.labels(result).inc()
            log.info("flag command %s %s at log offset %d", command.command_id, result, offset)
            return answer

    async def _checkpoint(self) -> None:
        """Publish the tree head; a lost one is superseded by the next append's."""
        if self.publish_checkpoint is None or self._tree_at is None:
            return
        event = flag_log_checkpoint(
            self.tree, self.origin, self.signer, last_offset=self._tree_offset, at=self._tree_at
        )
        try:
            await self.publish_checkpoint(self.origin.encode(), encode_event(event))
        except Exception as exc:
            log.warning("publishing the flag log checkpoint %d failed: %s", self.tree.size, exc)

    async def _read_back(self, offset: int) -> None:
        """Fold the log through our own answer: from now on the state is the log's."""
        for _ in range(600):
            await self.catch_up()
            if self.read_through >= offset:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"flag log record {offset} was acknowledged but cannot be read back")

    async def _dead_letter(self, message: CommandMessage, reason: str) -> None:
        letter = dead_letter(
            message.value,
            reason=reason,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            at=datetime.fromtimestamp(self.wall(), tz=UTC),
        )
        await self.send_dead_letter(message.key, encode_event(letter))
        self.metrics.dead_letters.labels(message.topic).inc()
        self.metrics.flag_commands.labels("dead_lettered").inc()


class FlagLogReader:
    """The flag log from its beginning, as ``(offset, value)`` pairs (``ledger.kafka.log``)."""

    def __init__(self, settings: Settings) -> None:
        # One partition (the topic table says so): one total order, read from offset 0.
        self._log = AsyncLogReader(settings, [settings.topic("flag_events")], partitions=[0])
        self._started = False

    async def read_to_end(self) -> list[tuple[int, bytes | None]]:
        if not self._started:
            await self._log.start()
            self._started = True
        return [(record.offset, record.value) for record in await self._log.read_to_end()]

    async def stop(self) -> None:
        await self._log.stop()
        self._started = False


def build_writer(ledger_app: LedgerApp, source: LogSource) -> FlagWriter:
    """A writer that appends through the app's producer (tests may swap the log's ends)."""
    settings = ledger_app.settings
    events = ledger_app.topic("flag_events")
    dead_letters = ledger_app.topic("dead_letters")
    checkpoints = ledger_app.topic("checkpoints")

    async def append(flag: str, value: bytes) -> int:
        delivered = await events.send(key=flag.encode(), value=value)
        metadata = await delivered  # in the log before the next command is decided
        return int(metadata.offset)

    async def send_dead_letter(key: bytes | None, value: bytes) -> Any:
        return await dead_letters.send(key=key, value=value)

    async def publish_checkpoint(key: bytes, value: bytes) -> Any:
        return await checkpoints.send(key=key, value=value)

    return FlagWriter(
        source=ledger_app.options.get("flag_log_source") or source,
        append=ledger_app.options.get("flag_log_append") or append,
        send_dead_letter=send_dead_letter,
        metrics=ledger_app.metrics,
        publish_checkpoint=ledger_app.options.get("checkpoint_publish") or publish_checkpoint,
        signer=load_signer(settings.signing_key),
        origin=flag_log_origin(settings.topic("flag_events")),
    )


def install(ledger_app: LedgerApp) -> None:
    """Add the flag log writer to the app: a task that runs on the singletons' worker.

    The writer reads ``ledger.flag-commands`` itself, from the beginning, instead of taking
    the commands from a faust stream. faust can drop messages it fetched while a partition
    was being recovered after a rebalance (its stream buffers are cleared, its read offset
    has moved on), and a dropped command would never be answered: seen after a SIGKILL, when
    the restarted worker answered the first command and none after it. Read from offset 0,
    a command already answered is recognised from the flag log (``decide_command`` returns
    ``None``) and costs a lookup; one not answered yet is answered, whoever took it before.

    The faust agent on ``ledger.flag-commands`` only drains it: its assignment is the token
    that makes one worker of the group the singletons' worker
    (``LedgerApp.runs_singletons``).
    """
    app = ledger_app.app
    settings = ledger_app.settings
    commands = ledger_app.topic("flag_commands")
    poll_s = float(ledger_app.options.get("flag_writer_poll") or POLL_S)

    async def answer_commands() -> None:
        """While this worker runs the singletons: every command, from the first, answered."""
        reader = FlagLogReader(settings)
        writer = build_writer(
            ledger_app, reader
        )  # a fresh state each time: folded from the log, not kept
        ledger_app.parts["flag_writer"] = writer
        tail = AsyncLogReader(settings, [settings.topic("flag_commands")], partitions=[0])
        await tail.start()
        try:
            log.info("flag log writer runs on this worker")
            while not app.should_stop and ledger_app.runs_singletons():
                for record in await tail.read(timeout_ms=int(poll_s * 1000)):
                    await writer.handle(record)
        finally:
            await tail.stop()
            await reader.stop()

    async def flag_writer_service() -> None:
        # Whatever goes wrong (broker away, a broken chain), start over from the log: the
        # state is rebuilt, never patched, and the worker's other agents keep running.
        while not app.should_stop:
            if not ledger_app.runs_singletons():
                await asyncio.sleep(poll_s)
                continue
            try:
                await answer_commands()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("flag log writer failed; starting over from the log in 5 s")
                await asyncio.sleep(RESTART_S)

    @ledger_app.app.agent(commands, name="flag_commands_token")
    async def flag_commands_token(stream: Any) -> None:
        async for _ in stream:  # drained: the assignment is what matters, see above
            pass

    app.task(flag_writer_service)  # registered by call: faust's decorators are untyped
    ledger_app.agents["flag_commands_token"] = flag_commands_token
