"""The pairing agent: V1 and V2 halves in, one comparison per correlation id out, and the
health windows counted in the same pass.

Faust has no stream-stream join, so the first half of each correlation id waits in a table
(``pairing``) whose changelog is co-partitioned with ``pool.operations``; the other half is
compared with it by ``ledger.comparison``. The slot logic itself is pure (``ledger.pairing``);
this module feeds it messages, keeps the decoded slots and the indexes it needs (deadlines,
emissions by input position) in memory and publishes what it returns.

The agent takes the stream in batches (``stream.take_events``): every message is decoded
once, slots live decoded in memory (the table is read back only after a rebalance), and the
table is written once per batch per correlation id changed, with the slot as it stands at the
batch's end. Two halves meeting within one batch cost one changelog write (the decided slot),
not three. Each execution that reaches a slot, and each comparison emitted, is counted at once
into the health windows of its partition (``streams.health.PartitionHealth``), which are
closed and published as partial windows from here too.

Timeouts run on a per-partition stream clock: the broker's append time of the last operation
read, so a backlog is paired exactly as it would have been live. A partition that goes quiet
still times out: a timer puts a *tick* on the internal ``ledger.pairing-ticks`` topic, in the
same partition number; the agent reads it like an operation (so table writes land in the right
changelog partition) and, if that operations partition has been read to its end, moves the
clock to the tick's wall time.

Crash safety (at-least-once): a batch's table writes and comparisons are flushed before the
offsets of its inputs are committed (faust flushes the producer before it commits), but in
no order between them. If the worker dies after the slot reached
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
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.comparison import compare_operations, load_rules, missing_comparison
from ledger.events import ComparisonRecorded, OperationRecorded, encode_event
from ledger.kafka.topics import topic_name
from ledger.pairing import (
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
from streams.dead_letters import Rejected, dead_letter, decode_or_reject
from streams.health import partition_health
from streams.message import Message
from streams.metrics import Metrics

if TYPE_CHECKING:
    from streams.app import LedgerApp
    from streams.health import PartitionHealth

__all__ = ["DEFAULT_KEEP_FOR_TIMEOUTS", "Message", "PairingAgent", "RuleClassifier", "install"]

log = logging.getLogger(__name__)

#: A decided correlation id is remembered this many pairing timeouts (duplicates, late halves).
DEFAULT_KEEP_FOR_TIMEOUTS = 20
#: A tick moves a quiet partition's clock to its wall time minus this much: a message the
#: consumer has not yet been told about (its high-water mark is a fetch old) is not outrun.
TICK_SLACK_S = 1.0

#: A batch is at most this many messages, taken within this many seconds: small enough that a
#: lone pair at a low rate waits a few milliseconds, large enough that a backlog is read in
#: batches that share one table write per correlation id.
BATCH_MAX = 2_000
BATCH_WITHIN_S = 0.005


class RuleClassifier:
    """``ledger.pairing.Classifier`` backed by ``ledger.comparison`` and one rule set."""

    def __init__(self, rules_path: Path | None = None) -> None:

        self.rules = load_rules(rules_path)

    def compare(
        self, v1: OperationRecorded, v2: OperationRecorded, *, at: datetime
    ) -> ComparisonRecorded:

        return compare_operations(v1, v2, self.rules, at=at)

    def missing(
        self, present: OperationRecorded, *, at: datetime, late: bool = False
    ) -> ComparisonRecorded:

        return missing_comparison(present, at=at, late=late, rules=self.rules)


Send = Callable[..., Awaitable[Any]]
#: (partition, key, value or None to delete): one table write, in the partition's changelog.
Write = Callable[[int, bytes, bytes | None], Awaitable[Any]]
#: An input position (topic, partition, offset) as a plain tuple: hashed per message.
PositionKey = tuple[str, int, int]
_COUNTED = frozenset({Outcome.STORED, Outcome.PAIRED, Outcome.LATE})
_NOWHERE = Position(topic="", partition=-1, offset=-1)


class PairingAgent:
    """The pairing agent's state and per-batch logic, independent of faust's plumbing.

    ``table`` is the faust table (or a dict in tests), read only by ``rebuild``; ``write``
    changes it (by default ``table[key] = value``). ``send_comparison``, ``send_dead_letter``,
    ``send_tick`` and ``send_partial`` publish ``(key, value)`` (ticks take a partition
    instead of a key); ``caught_up(partition, next_offset)`` says whether that operations
    partition has been read to its end; ``assigned()`` lists the operations partitions this
    worker reads (for the health windows' progress of a partition without traffic).
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
        write: Write | None = None,
        health: PartitionHealth | None = None,
        send_partial: Send | None = None,
        assigned: Callable[[], Iterable[int]] | None = None,
        after_batch: Callable[[], Awaitable[Any]] | None = None,
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
        self.write = write or self._write_table
        self.health = health
        self.send_partial = send_partial
        self.assigned = assigned or self._partitions_seen
        self._owned_only = assigned is not None
        self.after_batch = after_batch
        #: Pending slots decoded; decided ones as the bytes the table holds (the same object),
        #: decoded again only if a duplicate or a late half needs them.
        self.slots: dict[bytes, Pending | Decided | bytes] = {}
        self._forget_at: dict[bytes, float] = {}
        self.clock: dict[int, float] = {}
        self.next_offset: dict[int, int] = {}
        self.deadlines: dict[int, list[tuple[float, bytes]]] = defaultdict(list)
        self.pending: dict[int, set[bytes]] = defaultdict(set)
        self.emitted_at: dict[PositionKey, set[bytes]] = defaultdict(set)
        self.ticks_out: dict[int, float] = {}
        self.indexed = False
        self._dirty: dict[bytes, int] = {}
        # Labelled children looked up once: ``labels()`` costs more than the increment.
        self._outcomes = {outcome: metrics.pairing.labels(outcome.value) for outcome in Outcome}
        self._events_in: dict[str, Any] = {}
        #: Counted per batch, added to the metrics at its end (an ``inc`` takes a lock).
        self._tally: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self._comparisons_out: dict[tuple[str, bool], Any] = {}

    async def _write_table(self, partition: int, key: bytes, value: bytes | None) -> None:
        if value is None:
            self.table.pop(key, None)
        else:
            self.table[key] = value

    def _partitions_seen(self) -> Iterable[int]:
        return self.clock.keys()

    # --- indexes -------------------------------------------------------------------------

    def rebuild(self) -> None:
        """Decode the table and rebuild the indexes and health windows (after a rebalance)."""
        decoded = {key: (raw, decode_slot(raw)) for key, raw in list(self.table.items())}
        if self._owned_only:
            owned = set(self.assigned())
            decoded = {k: v for k, v in decoded.items() if v[1].partition in owned}
        self.slots = {}
        self._forget_at.clear()
        self.deadlines.clear()
        self.pending.clear()
        self.emitted_at.clear()
        self.ticks_out.clear()
        self._dirty.clear()
        for key, (raw, slot) in decoded.items():
            # Emissions are indexed here only: a position is read again only after a restart
            # or a rebalance, and both come through here.
            self._index(key, slot, emissions=True)
            self._keep(key, slot, raw)
        if self.health is not None:
            self.health.restore(slot for _, slot in decoded.values())
        self.indexed = True
        self._set_pending_gauge()

    def _keep(self, key: bytes, slot: Pending | Decided, raw: bytes) -> None:
        if isinstance(slot, Decided):
            self.slots[key] = raw
            self._forget_at[key] = slot.forget_at
        else:
            self.slots[key] = slot
            self._forget_at.pop(key, None)

    def _slot(self, key: bytes) -> Pending | Decided | None:
        slot = self.slots.get(key)
        return decode_slot(slot) if isinstance(slot, bytes) else slot

    def _index(self, key: bytes, slot: Pending | Decided, *, emissions: bool = False) -> None:
        if isinstance(slot, Pending):
            heapq.heappush(self.deadlines[slot.partition], (slot.due, key))
            self.pending[slot.partition].add(key)
        else:
            heapq.heappush(self.deadlines[slot.partition], (slot.forget_at, key))
            self.pending[slot.partition].discard(key)
            if not emissions:
                return
            for emission in slot.emissions:
                at = emission.position
                self.emitted_at[(at.topic, at.partition, at.offset)].add(key)

    def _unindex(self, key: bytes, slot: Pending | Decided) -> None:
        self.pending[slot.partition].discard(key)
        if isinstance(slot, Decided):
            for emission in slot.emissions:
                at = emission.position
                position = (at.topic, at.partition, at.offset)
                keys = self.emitted_at.get(position)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self.emitted_at[position]

    def _set_pending_gauge(self) -> None:
        self.metrics.pending_pairs.set(sum(len(keys) for keys in self.pending.values()))

    # --- messages ------------------------------------------------------------------------

    async def handle(self, message: Message) -> None:
        """One message from the operations topic or the ticks topic (a batch of one)."""
        await self.handle_batch((message,))

    async def handle_batch(self, messages: Iterable[Message]) -> None:
        """A batch of messages, in the order read; the table is written once at its end."""
        if not self.indexed:
            self.rebuild()
        read: set[int] = set()
        operations = 0
        topic = ""
        for message in messages:
            position = (message.topic, message.partition, message.offset)
            if position in self.emitted_at:
                await self._republish(position)
            if message.topic == self.ticks_topic:
                await self._tick(message, position)
            else:
                await self._operation(message, position)
                read.add(message.partition)
                operations += 1
                topic = message.topic
        if operations:
            counter = self._events_in.get(topic)
            if counter is None:
                counter = self._events_in[topic] = self.metrics.events_in.labels(topic)
            counter.inc(operations)
        await self._flush()
        for partition in read:
            await self._close_health(partition, caught_up=False)
        self._count()
        if self.after_batch is not None:
            await self.after_batch()

    def _count(self) -> None:
        tally = self._tally
        for outcome, count in tally.items():
            if count:
                self._outcomes[outcome].inc(count)
                tally[outcome] = 0

    async def _flush(self) -> None:
        if not self._dirty:
            return
        slots = self.slots
        for key, partition in self._dirty.items():
            slot = slots.get(key)
            if slot is None:
                await self.write(partition, key, None)
                continue
            assert not isinstance(slot, bytes)  # written since the last flush: an object
            raw = encode_slot(slot)
            await self.write(partition, key, raw)
            self._keep(key, slot, raw)
        self._dirty.clear()
        self._set_pending_gauge()

    async def _operation(self, message: Message, position: PositionKey) -> None:
        partition = message.partition
        self.next_offset[partition] = message.offset + 1
        arrived = message.timestamp
        if arrived > self.clock.get(partition, 0.0):
            self.clock[partition] = arrived
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
                    # A first half emits nothing, so records no position.
                    position=_NOWHERE
                    if old is None
                    else Position(topic=position[0], partition=position[1], offset=position[2]),
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
                await self._apply(key, partition, old, step, half)
        await self._expire_due(partition, position)

    async def _tick(self, message: Message, position: PositionKey) -> None:
        partition = message.partition
        self.ticks_out.pop(partition, None)
        try:
            wall = float(json.loads(message.value or b"{}")["wall"])
        except (ValueError, KeyError, TypeError):
            return  # not one of ours; ticks carry nothing worth dead-lettering
        caught_up = self.caught_up(partition, self.next_offset.get(partition))
        if caught_up:
            self.clock[partition] = max(self.clock.get(partition, 0.0), wall - TICK_SLACK_S)
            await self._expire_due(partition, position)
        await self._flush()
        await self._close_health(partition, caught_up=caught_up)

    async def _expire_due(self, partition: int, position: PositionKey) -> None:
        heap = self.deadlines.get(partition)
        now = self.clock.get(partition)
        if not heap or now is None or heap[0][0] > now:
            return
        at = Position(topic=position[0], partition=position[1], offset=position[2])
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            kept = self.slots.get(key)
            if kept is None:
                continue
            if isinstance(kept, bytes):
                forget_at = self._forget_at.get(key)
                if forget_at is not None and forget_at <= now:
                    # A decided slot past its memory: forgotten without decoding it.
                    self._tally[Outcome.FORGOTTEN] += 1
                    self._forget(key, partition)
                continue  # a stale deadline: the slot was decided again since
            old = kept
            step = expire(
                old,
                now=now,
                position=at,
                at=self._now(),
                keep_for=self.keep_for,
                classifier=self.classifier,
            )
            if step.outcome is not Outcome.UNCHANGED:
                await self._apply(key, partition, old, step, None)

    def _forget(self, key: bytes, partition: int) -> None:
        self.slots.pop(key, None)
        self._forget_at.pop(key, None)
        keys = self.pending.get(partition)
        if keys is not None:
            keys.discard(key)
        self._dirty[key] = partition

    async def _republish(self, position: PositionKey) -> None:
        for key in list(self.emitted_at.get(position, ())):
            slot = self._slot(key)
            if not isinstance(slot, Decided):
                continue
            for emission in slot.emissions:
                at = emission.position
                if (at.topic, at.partition, at.offset) == position:
                    await self._publish(key, emission.event, partition=at.partition)
                    self.metrics.replayed.inc()

    async def _apply(
        self,
        key: bytes,
        partition: int,
        old: Pending | Decided | None,
        step: Step,
        half: OperationRecorded | None,
    ) -> None:
        self._tally[step.outcome] += 1
        if step.writes:
            if old is not None:
                self._unindex(key, old)
            if step.slot is None:
                self.slots.pop(key, None)
                self._forget_at.pop(key, None)
            else:
                self.slots[key] = step.slot
                self._forget_at.pop(key, None)
                self._index(key, step.slot)
            self._dirty[key] = partition
        health = self.health
        if health is not None:
            if half is not None and step.outcome in _COUNTED:
                health.count_operation(partition, half)
            for event in step.emit:
                health.count_comparison(partition, event)
        for event in step.emit:
            await self._publish(key, event, partition=partition)
            label = (event.category, event.late)
            counter = self._comparisons_out.get(label)
            if counter is None:
                counter = self._comparisons_out[label] = self.metrics.comparisons_out.labels(
                    event.category, str(event.late).lower()
                )
            counter.inc()

    async def _publish(self, key: bytes, event: ComparisonRecorded, *, partition: int) -> None:
        # The comparison goes to the partition of its input: co-partitioned by construction.
        await self.send_comparison(key, encode_event(event), partition=partition)

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

    async def _close_health(self, partition: int, *, caught_up: bool) -> None:
        if self.health is None:
            return
        partial = self.health.close(partition, caught_up=caught_up)
        if partial is not None and self.send_partial is not None:
            await self.send_partial(str(partition).encode(), json.dumps(partial.to_dict()).encode())

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.wall(), tz=UTC)

    # --- timer ---------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Tick every partition holding a deadline already past on the wall clock, and every
        quiet partition whose health windows have progress to report."""
        if not self.indexed:
            self.rebuild()
        wall = self.wall()
        wanted = {
            partition
            for partition, heap in self.deadlines.items()
            if heap and heap[0][0] <= wall - TICK_SLACK_S
        }
        if self.health is not None:
            wanted.update(p for p in self.assigned() if self.health.wants_tick(p))
        for partition in sorted(wanted):
            sent = self.ticks_out.get(partition)
            if sent is not None and wall - sent < max(5.0, self.timeout):
                continue  # one tick in flight is enough; resend only if it got lost
            self.ticks_out[partition] = wall
            await self.send_tick(partition, json.dumps({"wall": wall}).encode())


def install(ledger_app: LedgerApp) -> None:
    """Add the pairing table, agent and timeout timer to the app."""
    # Deferred: faust loads only in the worker; the faust app loads only when the worker or the sink
    # runs.
    from faust.types import TP

    app = ledger_app.app
    settings = ledger_app.settings
    options = ledger_app.options
    timeout = float(options.get("pairing_timeout") or settings.pairing_timeout)
    keep_for = timeout * int(options.get("keep_for_timeouts", DEFAULT_KEEP_FOR_TIMEOUTS))
    operations = ledger_app.topic("operations")
    ticks = ledger_app.topic("pairing_ticks")
    dead_letters = ledger_app.topic("dead_letters")
    operations_name = operations.get_topic_name()
    ticks_name = ticks.get_topic_name()
    comparisons_name = topic_name(settings, "comparisons")
    partials_name = topic_name(settings, "health_partials")
    source = app.topic(operations_name, ticks_name, key_type=bytes, value_type=bytes)
    table = app.Table(
        "pairing",
        default=None,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        help="correlation id -> pending half or decided comparison (ledger.pairing)",
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

    def assigned() -> list[int]:
        try:
            tps = app.consumer.assignment()
        except Exception:
            return []
        return [tp.partition for tp in tps if tp.topic == operations_name]

    changelog_name = table.changelog_topic.get_topic_name()

    async def write(partition: int, key: bytes, value: bytes | None) -> Any:
        # The store directly, and the changelog of the partition the slot belongs to (in a
        # batch the "current event" faust would take the partition from is another one),
        # through the producer itself: faust's table path queues each write in a buffer that
        # it drains one message at a time, and every commit waits for it to run dry.
        store = table.data
        # faust's memory store drops the keys of revoked partitions after a rebalance only
        # for keys whose partition it knows (those it recovered): tell it ours.
        owners = getattr(store, "_key_partition", None)
        if value is None:
            if key in store:
                del store[key]
            if owners is not None:
                owners.pop(key, None)
        else:
            store[key] = value
            if owners is not None:
                owners[key] = partition
        outbox.append((changelog_name, partition, key, value))

    # A batch's comparisons and changelog writes, sent at its end in one aiokafka batch per
    # partition, through the producer faust flushes before every commit.
    outbox: list[tuple[str, int, bytes, bytes | None]] = []

    async def send_comparison(key: bytes, value: bytes, *, partition: int) -> Any:
        outbox.append((comparisons_name, partition, key, value))

    async def send_outbox() -> None:
        if not outbox:
            return
        records = list(outbox)
        outbox.clear()
        producer = getattr(app.producer, "_ensure_producer", None)
        if producer is None:  # a stand-in producer (tests): one send per record
            for topic, partition, key, value in records:
                await app.producer.send(topic, key, value, partition, None, None)
            return
        kafka = producer()
        batches: dict[tuple[str, int], Any] = {}
        for topic, partition, key, value in records:
            batch = batches.get((topic, partition))
            if batch is None:
                batch = batches[(topic, partition)] = kafka.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # full
                await kafka.send_batch(batch, topic, partition=partition)
                batch = batches[(topic, partition)] = kafka.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for (topic, partition), batch in batches.items():
            await kafka.send_batch(batch, topic, partition=partition)

    async def send_dead_letter(key: bytes | None, value: bytes) -> Any:
        return await dead_letters.send(key=key, value=value)

    async def send_tick(partition: int, value: bytes) -> Any:
        return await app.producer.send(ticks_name, None, value, partition, None, None)

    async def send_partial(key: bytes, value: bytes) -> Any:
        return await app.producer.send(partials_name, key, value, 0, None, None)

    agent_state = PairingAgent(
        table=table,
        classifier=options.get("classifier") or RuleClassifier(options.get("rules_path")),
        metrics=ledger_app.metrics,
        ticks_topic=ticks_name,
        timeout=timeout,
        keep_for=keep_for,
        send_comparison=send_comparison,
        send_dead_letter=send_dead_letter,
        send_tick=send_tick,
        caught_up=caught_up,
        write=write,
        health=partition_health(ledger_app),
        send_partial=send_partial,
        assigned=assigned,
        after_batch=send_outbox,
    )

    async def on_assigned(*args: Any, **kwargs: Any) -> None:
        agent_state.indexed = False  # the table's partitions changed: re-read after recovery

    app.on_partitions_assigned.connect(on_assigned)

    @app.agent(source, name="pairing")
    async def pairing(stream: Any) -> Any:
        async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
            await agent_state.handle_batch([event.message for event in events])
            yield None

    async def pairing_timeouts() -> None:
        if app.rebalancing or app.in_recovery:
            return
        await agent_state.sweep()

    app.timer(min(1.0, timeout / 4))(pairing_timeouts)

    ledger_app.agents["pairing"] = pairing
    ledger_app.parts["pairing"] = agent_state
    ledger_app.parts["pairing_table"] = table
