"""The pairing agent's message handling (streams.pairing.PairingAgent) with a dict as table.

These tests play the role of Kafka: messages with offsets and broker timestamps in, the
table's writes and the published comparisons out, and crashes at any point in between.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from stream_factories import half

from ledger.events import ComparisonRecorded, DeadLettered, decode_event, encode_event
from streams.metrics import Metrics
from streams.pairing import PairingAgent

OPS = "pool.operations"
TICKS = "ledger.pairing-ticks"
TIMEOUT = 0.5


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None


class Harness:
    """One agent plus what it published; ``table`` may be shared to model a restart."""

    def __init__(self, classifier: Any, table: dict[bytes, bytes] | None = None) -> None:
        self.table: dict[bytes, bytes] = {} if table is None else table
        self.comparisons: list[ComparisonRecorded] = []
        self.dead: list[DeadLettered] = []
        self.ticks: list[tuple[int, bytes]] = []
        self.wall = 2_000.0
        self.agent = PairingAgent(
            table=self.table,
            classifier=classifier,
            metrics=Metrics(),
            ticks_topic=TICKS,
            timeout=TIMEOUT,
            keep_for=TIMEOUT * 20,
            send_comparison=self._comparison,
            send_dead_letter=self._dead,
            send_tick=self._tick,
            caught_up=lambda partition, next_offset: True,
            wall=lambda: self.wall,
        )

    async def _comparison(self, key: bytes, value: bytes, *, partition: int) -> None:
        event = decode_event(value)
        assert isinstance(event, ComparisonRecorded)
        assert key == event.correlation_id.encode()
        self.comparisons.append(event)

    async def _dead(self, key: bytes | None, value: bytes) -> None:
        event = decode_event(value)
        assert isinstance(event, DeadLettered)
        self.dead.append(event)

    async def _tick(self, partition: int, value: bytes) -> None:
        self.ticks.append((partition, value))

    def feed(self, *messages: Msg) -> None:
        async def run() -> None:
            for message in messages:
                await self.agent.handle(message)

        asyncio.run(run())


def operation(offset: int, cid: str, pool: str, *, ts: float | None = None, **kw: Any) -> Msg:
    value = encode_event(half(cid, pool, **kw))
    return Msg(OPS, 0, offset, 1_000.0 + offset * 0.01 if ts is None else ts, cid.encode(), value)


def test_pairs_both_halves_and_dead_letters_garbage(classifier: Any) -> None:
    h = Harness(classifier)
    h.feed(
        operation(0, "a", "v2"),
        Msg(OPS, 0, 1, 1_000.01, b"x", b"{not json"),
        operation(2, "a", "v1"),
    )
    assert [c.correlation_id for c in h.comparisons] == ["a"]
    (letter,) = h.dead
    assert letter.source_topic == OPS
    assert letter.source_offset == 1
    assert base64.b64decode(letter.original_b64) == b"{not json"
    assert "OperationRecorded" in letter.reason


def test_wrongly_keyed_operation_is_dead_lettered_naming_the_key(classifier: Any) -> None:
    h = Harness(classifier)
    message = operation(0, "a", "v1")
    message.key = b"session-7"
    h.feed(message)
    (letter,) = h.dead
    assert "session-7" in letter.reason
    assert h.table == {}


def test_a_pair_the_engine_cannot_compare_is_dead_lettered_not_fatal(classifier: Any) -> None:
    class Exploding:
        def compare(self, v1: Any, v2: Any, *, at: Any) -> Any:
            raise ValueError("cannot compare these")

        def missing(self, present: Any, *, at: Any, late: bool = False) -> Any:
            return classifier.missing(present, at=at, late=late)

    h = Harness(Exploding())
    h.feed(operation(0, "a", "v1"), operation(1, "a", "v2"), operation(2, "b", "v1"))
    (letter,) = h.dead
    assert "cannot compare these" in letter.reason
    assert letter.source_offset == 1
    h.feed(operation(3, "z", "v1", ts=1_000.0 + 10 * TIMEOUT))
    assert sorted(c.correlation_id for c in h.comparisons) == ["a", "b"]  # both timed out


def test_stream_time_passing_the_deadline_times_out_the_half(classifier: Any) -> None:
    h = Harness(classifier)
    h.feed(operation(0, "a", "v1", ts=1_000.0), operation(1, "b", "v1", ts=1_000.0 + TIMEOUT))
    assert [(c.correlation_id, c.category) for c in h.comparisons] == [("a", "shadow_missing")]


def test_a_quiet_partition_times_out_through_a_tick(classifier: Any) -> None:
    h = Harness(classifier)
    h.wall = 1_000.0
    h.feed(operation(0, "a", "v1", ts=1_000.0))
    asyncio.run(h.agent.sweep())
    assert h.ticks == []  # not due yet
    h.wall = 1_000.0 + TIMEOUT + 2.0
    asyncio.run(h.agent.sweep())
    asyncio.run(h.agent.sweep())
    assert len(h.ticks) == 1  # one tick in flight per partition is enough
    partition, value = h.ticks[0]
    h.feed(Msg(TICKS, partition, 0, h.wall, None, value))
    assert [c.category for c in h.comparisons] == ["shadow_missing"]


def test_a_tick_does_not_time_out_a_partition_still_being_read(classifier: Any) -> None:
    h = Harness(classifier)
    h.agent.caught_up = lambda partition, next_offset: False
    h.feed(operation(0, "a", "v1", ts=1_000.0))
    tick = json.dumps({"wall": 1_000.0 + 10 * TIMEOUT}).encode()
    h.feed(Msg(TICKS, 0, 0, 0.0, None, tick))
    assert h.comparisons == []
    h.feed(operation(1, "a", "v2", ts=1_000.1))  # the backlog still held the other half
    assert [c.category for c in h.comparisons] == ["match"]


def test_restarted_agent_rebuilds_deadlines_from_the_table(classifier: Any) -> None:
    first = Harness(classifier)
    first.feed(operation(0, "a", "v1", ts=1_000.0))
    second = Harness(classifier, table=dict(first.table))
    second.feed(operation(1, "z", "v1", ts=1_000.0 + TIMEOUT))
    assert [c.correlation_id for c in second.comparisons] == ["a"]
    assert second.agent.metrics.pending_pairs._value.get() == 1  # only z waits now


@st.composite
def stream_and_crash(draw: st.DrawFn) -> tuple[list[Msg], int, int, int, int]:
    """Operations out of order, and a crash: committed offset <= landed prefixes <= read."""
    halves = []
    for n in range(draw(st.integers(1, 12))):
        pools = draw(st.sampled_from([("v1", "v2"), ("v1", "v2"), ("v1",), ("v2",)]))
        halves.extend((f"c{n}", pool) for pool in pools)
    halves.extend(draw(st.lists(st.sampled_from(halves), max_size=4)))  # producer retries
    order = draw(st.permutations(halves))
    messages = [operation(i, cid, pool) for i, (cid, pool) in enumerate(order)]
    read = draw(st.integers(0, len(messages)))
    committed = draw(st.integers(0, read))
    changelog = draw(st.integers(committed, read))
    published = draw(st.integers(committed, read))
    return messages, read, committed, changelog, published


@settings(max_examples=80, deadline=None)
@given(stream_and_crash())
def test_a_crash_anywhere_still_gives_one_comparison_per_correlation_id(
    case: tuple[list[Msg], int, int, int, int],
) -> None:
    """Before the crash, the writes of the first ``changelog`` messages reached the table's
    changelog and the comparisons of the first ``published`` messages reached their topic;
    the restarted agent re-reads from ``committed``."""
    from streams.pairing import RuleClassifier

    classifier = RuleClassifier()
    messages, read, committed, changelog, published = case
    before = Harness(classifier)
    recovered: dict[bytes, bytes] = {}
    survived: list[ComparisonRecorded] = []
    for index, message in enumerate(messages[:read]):
        sent = len(before.comparisons)
        before.feed(message)
        if index < changelog:
            recovered = dict(before.table)
        if index < published:
            survived.extend(before.comparisons[sent:])
    after = Harness(classifier, table=recovered)
    after.feed(*messages[committed:])
    after.wall = 1e9
    after.feed(Msg(TICKS, 0, 0, 0.0, None, json.dumps({"wall": after.wall}).encode()))

    out = survived + after.comparisons
    by_id: dict[str, set[tuple[str, str]]] = {}
    for event in out:
        by_id.setdefault(event.comparison_id, set()).add((event.correlation_id, event.category))
    pools: dict[str, set[str]] = {}
    for message in messages:
        event = decode_event(message.value or b"")
        pools.setdefault(event.correlation_id, set()).add(event.pool)  # type: ignore[attr-defined]
    expected = {
        cid: "match"
        if len(seen) == 2
        else ("shadow_missing" if "v1" in seen else "primary_missing")
        for cid, seen in pools.items()
    }
    got = {cid: category for copies in by_id.values() for cid, category in copies}
    assert all(len(copies) == 1 for copies in by_id.values())  # copies agree
    assert got == expected
