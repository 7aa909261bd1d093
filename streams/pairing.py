"""The pairing agent: V1 and V2 halves in, one comparison per correlation id out.

Faust has no stream-stream join, so the first half of each correlation id waits in a table
(``pairing``) whose changelog is co-partitioned with ``pool.operations``; the other half is
compared with it by ``ledger.comparison``. The slot logic itself is pure (``streams.pairs``);
this module feeds it messages, keeps the in-memory indexes it needs (deadlines, emissions by
input position) and publishes what it returns.

Timeouts run on a per-partition stream clock: the broker's append time of the last operation
read, so a backlog is paired exactly as it would have been live. A partition that goes quiet
still times out: a timer puts a *tick* on the internal ``ledger.pairing-ticks`` topic, in the
same partition number; the agent reads it like an operation (so table writes land in the right
changelog partition) and, if that operations partition has been read to its end, moves the
clock to the tick's wall time.

Crash safety (at-least-once): a table write and a comparison are flushed before the input's
offset is committed, but in no order between them. If the worker dies after the slot reached
the changelog and before its comparison reached its topic, the input is read again after the
restart; the slot remembers which input position emitted what, and the agent re-publishes it
(same comparison id, so downstream deduplication drops whichever copy is extra).
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ledger.events import ComparisonRecorded, OperationRecorded, encode_event
from streams.dead_letters import Rejected, dead_letter, decode_or_reject
from streams.metrics import Metrics
from streams.pairs import (
    Classifier,
    Decided,
    Outcome,
    Pending,
    Position,
    Step,
    decode_slot,
    encode_slot,
    expire,
    receive,
)

if TYPE_CHECKING:
    from streams.app import LedgerApp

__all__ = ["DEFAULT_KEEP_FOR_TIMEOUTS", "Message", "PairingAgent", "RuleClassifier", "install"]

log = logging.getLogger(__name__)

#: A decided correlation id is remembered this many pairing timeouts (duplicates, late halves).
DEFAULT_KEEP_FOR_TIMEOUTS = 20
#: A tick moves a quiet partition's clock to its wall time minus this much: a message the
#: consumer has not yet been told about (its high-water mark is a fetch old) is not outrun.
TICK_SLACK_S = 1.0


class RuleClassifier:
    """``streams.pairs.Classifier`` backed by ``ledger.comparison`` and one rule set."""

    def __init__(self, rules_path: Path | None = None) -> None:
        from ledger.comparison import load_rules

        self.rules = load_rules(rules_path)

    def compare(
        self, v1: OperationRecorded, v2: OperationRecorded, *, at: datetime
    ) -> ComparisonRecorded:
        from ledger.comparison import compare_operations

        return compare_operations(v1, v2, self.rules, at=at)

    def missing(
        self, present: OperationRecorded, *, at: datetime, late: bool = False
    ) -> ComparisonRecorded:
        from ledger.comparison import missing_comparison

        return missing_comparison(present, at=at, late=late, rules=self.rules)


class Message(Protocol):
    """The parts of a faust message the agent reads."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None


Send = Callable[..., Awaitable[Any]]


class PairingAgent:
    """The pairing agent's state and per-message logic, independent of faust's plumbing.

    ``table`` is the faust table (or a dict in tests); ``send_comparison``,
    ``send_dead_letter`` and ``send_tick`` publish ``(key, value)`` (ticks also take a
    partition); ``caught_up(partition, next_offset)`` says whether that operations partition
    has been read to its end.
    """

    def __init__(
        self,
        *,
        table: MutableMapping[bytes, bytes],
        classifier: Classifier,
        metrics: Metrics,
        ticks_topic: str,
        timeout: float,
        keep_for: float,
        send_comparison: Send,
        send_dead_letter: Send,
        send_tick: Send,
        caught_up: Callable[[int, int | None], bool],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.classifier = classifier
        self.metrics = metrics
        self.ticks_topic = ticks_topic
        self.timeout = timeout
        self.keep_for = keep_for
        self.send_comparison = send_comparison
        self.send_dead_letter = send_dead_letter
        self.send_tick = send_tick
        self.caught_up = caught_up
        self.wall = wall
        self.clock: dict[int, float] = {}
        self.next_offset: dict[int, int] = {}
        self.deadlines: dict[int, list[tuple[float, bytes]]] = defaultdict(list)
        self.pending: dict[int, set[bytes]] = defaultdict(set)
        self.emitted_at: dict[Position, set[bytes]] = defaultdict(set)
        self.ticks_out: dict[int, float] = {}
        self.indexed = False
        # Labelled children looked up once: ``labels()`` costs more than the increment.
        self._outcomes = {outcome: metrics.pairing.labels(outcome.value) for outcome in Outcome}
        self._events_in: dict[str, Any] = {}

    # --- indexes -------------------------------------------------------------------------

    def rebuild(self) -> None:
        """Rebuild the in-memory indexes from the table (after recovery or a rebalance)."""
        self.deadlines.clear()
        self.pending.clear()
        self.emitted_at.clear()
        self.ticks_out.clear()
        for key, raw in list(self.table.items()):
            self._index(key, decode_slot(raw))
        self.indexed = True
        self._set_pending_gauge()

    def _index(self, key: bytes, slot: Pending | Decided) -> None:
        if isinstance(slot, Pending):
            heapq.heappush(self.deadlines[slot.partition], (slot.due, key))
            self.pending[slot.partition].add(key)
        else:
            heapq.heappush(self.deadlines[slot.partition], (slot.forget_at, key))
            self.pending[slot.partition].discard(key)
            for emission in slot.emissions:
                self.emitted_at[emission.position].add(key)

    def _unindex(self, key: bytes, slot: Pending | Decided) -> None:
        self.pending[slot.partition].discard(key)
        if isinstance(slot, Decided):
            for emission in slot.emissions:
                keys = self.emitted_at.get(emission.position)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self.emitted_at[emission.position]

    def _set_pending_gauge(self) -> None:
        self.metrics.pending_pairs.set(sum(len(keys) for keys in self.pending.values()))

    # --- messages ------------------------------------------------------------------------

    async def handle(self, message: Message) -> None:
        """One message from the operations topic or the ticks topic."""
        if not self.indexed:
            self.rebuild()
        position = Position(topic=message.topic, partition=message.partition, offset=message.offset)
        await self._republish(position)
        if message.topic == self.ticks_topic:
            await self._tick(message, position)
        else:
            await self._operation(message, position)

    async def _operation(self, message: Message, position: Position) -> None:
        partition = message.partition
        counter = self._events_in.get(message.topic)
        if counter is None:
            counter = self._events_in[message.topic] = self.metrics.events_in.labels(message.topic)
        counter.inc()
        self.next_offset[partition] = message.offset + 1
        arrived = message.timestamp
        self.clock[partition] = max(self.clock.get(partition, 0.0), arrived)
        try:
            half = decode_or_reject(
                message.value, OperationRecorded, topic=message.topic, key=message.key
            )
            key = half.correlation_id.encode()  # the contract checked the message key is this
        except Rejected as rejected:
            await self._dead_letter(message, rejected.reason)
        else:
            old = self._slot(key)
            try:
                step = receive(
                    old,
                    half,
                    partition=partition,
                    position=position,
                    arrived=arrived,
                    at=self._now(),
                    timeout=self.timeout,
                    keep_for=self.keep_for,
                    classifier=self.classifier,
                )
            except Exception as exc:
                # A pair the comparison engine cannot handle must not stop the stream: the
                # half is dead-lettered with why, the other one times out as missing.
                log.exception("comparing %s failed", half.correlation_id)
                await self._dead_letter(message, f"comparison failed: {exc!r}")
            else:
                if step.outcome is Outcome.CONFLICT:
                    await self._dead_letter(message, step.reason)
                await self._apply(key, old, step)
        await self._expire_due(partition, position)

    async def _tick(self, message: Message, position: Position) -> None:
        partition = message.partition
        self.ticks_out.pop(partition, None)
        try:
            wall = float(json.loads(message.value or b"{}")["wall"])
        except (ValueError, KeyError, TypeError):
            return  # not one of ours; ticks carry nothing worth dead-lettering
        if self.caught_up(partition, self.next_offset.get(partition)):
            self.clock[partition] = max(self.clock.get(partition, 0.0), wall - TICK_SLACK_S)
            await self._expire_due(partition, position)

    async def _expire_due(self, partition: int, position: Position) -> None:
        heap = self.deadlines.get(partition)
        now = self.clock.get(partition)
        if not heap or now is None:
            return
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            old = self._slot(key)
            if old is None:
                continue
            step = expire(
                old,
                now=now,
                position=position,
                at=self._now(),
                keep_for=self.keep_for,
                classifier=self.classifier,
            )
            if step.outcome is not Outcome.UNCHANGED:
                await self._apply(key, old, step)

    async def _republish(self, position: Position) -> None:
        keys = self.emitted_at.get(position)
        if not keys:
            return
        for key in list(keys):
            slot = self._slot(key)
            if not isinstance(slot, Decided):
                continue
            for emission in slot.emissions:
                if emission.position == position:
                    await self._publish(key, emission.event)
                    self.metrics.replayed.inc()

    async def _apply(self, key: bytes, old: Pending | Decided | None, step: Step) -> None:
        self._outcomes[step.outcome].inc()
        if step.writes:
            if old is not None:
                self._unindex(key, old)
            if step.slot is None:
                del self.table[key]
            else:
                self.table[key] = encode_slot(step.slot)
                self._index(key, step.slot)
            self._set_pending_gauge()
        for event in step.emit:
            await self._publish(key, event)
            self.metrics.comparisons_out.labels(event.category, str(event.late).lower()).inc()

    async def _publish(self, key: bytes, event: ComparisonRecorded) -> None:
        await self.send_comparison(key, encode_event(event))

    async def _dead_letter(self, message: Message, reason: str) -> None:
        letter = dead_letter(
            message.value,
            reason=reason,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            at=self._now(),
        )
        await self.send_dead_letter(message.key, encode_event(letter))
        self.metrics.dead_letters.labels(message.topic).inc()

    def _slot(self, key: bytes) -> Pending | Decided | None:
        raw = self.table.get(key)
        return None if raw is None else decode_slot(raw)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), tz=UTC)

    # --- timer ---------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Tick every partition that holds a deadline already past on the wall clock."""
        if not self.indexed:
            self.rebuild()
        wall = self.wall()
        for partition, heap in self.deadlines.items():
            if not heap or heap[0][0] > wall - TICK_SLACK_S:
                continue
            sent = self.ticks_out.get(partition)
            if sent is not None and wall - sent < max(5.0, self.timeout):
                continue  # one tick in flight is enough; resend only if it got lost
            self.ticks_out[partition] = wall
            await self.send_tick(partition, json.dumps({"wall": wall}).encode())


def install(ledger: LedgerApp) -> None:
    """Add the pairing table, agent and timeout timer to the app."""
    from faust.types import TP

    app = ledger.app
    settings = ledger.settings
    options = ledger.options
    timeout = float(options.get("pairing_timeout") or settings.pairing_timeout)
    keep_for = timeout * int(options.get("keep_for_timeouts", DEFAULT_KEEP_FOR_TIMEOUTS))
    operations = ledger.topic("operations")
    ticks = ledger.topic("pairing_ticks")
    comparisons = ledger.topic("comparisons")
    dead_letters = ledger.topic("dead_letters")
    operations_name = operations.get_topic_name()
    source = app.topic(operations_name, ticks.get_topic_name(), key_type=bytes, value_type=bytes)
    table = app.Table(
        "pairing",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        help="correlation id -> pending half or decided comparison (streams.pairs)",
    )

    def caught_up(partition: int, next_offset: int | None) -> bool:
        consumer = app.consumer
        tp = TP(operations_name, partition)
        highwater = consumer.highwater(tp)
        if highwater is None:
            return False
        if next_offset is None:
            # Nothing read from this partition since the worker started: it is at its end
            # only if the committed offset already is.
            committed = getattr(consumer, "_committed_offset", {}).get(tp)
            next_offset = committed or 0
        return next_offset >= highwater

    async def send_comparison(key: bytes, value: bytes) -> Any:
        return await comparisons.send(key=key, value=value)

    async def send_dead_letter(key: bytes | None, value: bytes) -> Any:
        return await dead_letters.send(key=key, value=value)

    async def send_tick(partition: int, value: bytes) -> Any:
        return await ticks.send(value=value, partition=partition)

    agent_state = PairingAgent(
        table=table,
        classifier=options.get("classifier") or RuleClassifier(options.get("rules_path")),
        metrics=ledger.metrics,
        ticks_topic=ticks.get_topic_name(),
        timeout=timeout,
        keep_for=keep_for,
        send_comparison=send_comparison,
        send_dead_letter=send_dead_letter,
        send_tick=send_tick,
        caught_up=caught_up,
    )

    async def on_assigned(*args: Any, **kwargs: Any) -> None:
        agent_state.indexed = False  # the table's partitions changed: re-read after recovery

    app.on_partitions_assigned.connect(on_assigned)

    @app.agent(source, name="pairing")
    async def pairing(stream: Any) -> Any:
        async for event in stream.events():
            await agent_state.handle(event.message)
            yield None

    async def pairing_timeouts() -> None:
        if app.rebalancing or app.in_recovery:
            return
        await agent_state.sweep()

    app.timer(min(1.0, timeout / 4))(pairing_timeouts)

    ledger.agents["pairing"] = pairing
    ledger.parts["pairing"] = agent_state
    ledger.parts["pairing_table"] = table
