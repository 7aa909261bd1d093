"""The sink's loop on a fake consumer: seeks to stored offsets, batches, idles out, stops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from ledger.events import encode_event
from ledger.settings import Settings
from ledger.store import LedgerWriter, SourceRecord, open_reader
from streams.sink import LedgerSink, SinkOptions
from tests.unit.store_factories import comparison, operation


@dataclass(frozen=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


def key_of(value: bytes) -> bytes:
    """Keyed as the publisher keys: by correlation id (the operations topic's key rule)."""
    try:
        return str(json.loads(value)["correlation_id"]).encode()
    except (ValueError, KeyError, TypeError):
        return b"k"


class FakeConsumer:
    """Enough of aiokafka's consumer for the sink: partitions, seeks, fetches, end offsets."""

    def __init__(self, logs: dict[TopicPartition, list[bytes]]) -> None:
        self.logs = logs
        self.positions: dict[TopicPartition, int] = {}
        self.seeks: dict[TopicPartition, int] = {}
        self.fetched = 0
        self.stopped = False
        self._client = self

    async def fetch_all_metadata(self) -> FakeConsumer:
        return self

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.logs if tp.topic == topic}

    def assign(self, tps: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(tps, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = self.seeks[tp] = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.positions[tp] = self.seeks[tp] = 0

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Record]]:
        room = max_records or 1_000_000
        out: dict[TopicPartition, list[Record]] = {}
        for tp, log in self.logs.items():
            start = self.positions[tp]
            taken = log[start : start + room]
            if taken:
                out[tp] = [
                    Record(start + i, key_of(v), v, 1_700_000_000_000) for i, v in enumerate(taken)
                ]
                self.positions[tp] += len(taken)
                room -= len(taken)
                self.fetched += len(taken)
        if not out:
            await asyncio.sleep(timeout_ms / 1000)
        return out

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs[tp]) for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    async def stop(self) -> None:
        self.stopped = True


def logs_for(settings: Settings, n: int) -> dict[TopicPartition, list[bytes]]:
    ops, cmps = settings.topic("operations"), settings.topic("comparisons")
    return {
        TopicPartition(ops, 0): [encode_event(operation(i)) for i in range(0, n, 2)],
        TopicPartition(ops, 1): [encode_event(operation(i)) for i in range(1, n, 2)] + [b"{bad"],
        TopicPartition(cmps, 0): [encode_event(comparison(i)) for i in range(n)],
    }


def run(sink: LedgerSink) -> Any:
    return asyncio.run(sink.run())


FAST = SinkOptions(
    batch_size=7, batch_seconds=0.05, until_idle_s=0.2, lag_every_s=0.0, compact_every_s=0.0
)


@pytest.fixture
def writer(settings: Settings) -> Iterator[LedgerWriter]:
    with LedgerWriter(settings.duckdb, fsync=False) as w:
        yield w


def counts(path: Path) -> tuple[int, int, int]:
    con = open_reader(path)
    return tuple(  # type: ignore[return-value]
        con.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]
        for t in ("operations", "comparisons", "dead_letters")
    )


def test_the_sink_stores_every_record_in_batches_then_stops_once_idle(
    settings: Settings, writer: LedgerWriter
) -> None:
    fake = FakeConsumer(logs_for(settings, 30))

    async def connect() -> FakeConsumer:
        return fake

    stats = run(LedgerSink(settings, writer, FAST, connect=connect))
    assert (stats.records, stats.dead_lettered, stats.batches >= 61 // 7) == (61, 1, True)
    assert counts(settings.duckdb) == (30, 30, 1)
    assert fake.stopped


def test_a_restarted_sink_seeks_each_partition_just_after_its_stored_offset(
    settings: Settings, writer: LedgerWriter
) -> None:
    logs = logs_for(settings, 20)
    ops0 = TopicPartition(settings.topic("operations"), 0)
    writer.write_batch(
        SourceRecord(ops0.topic, 0, i, key_of(v), v) for i, v in enumerate(logs[ops0][:4])
    )
    fake = FakeConsumer(logs)

    async def connect() -> FakeConsumer:
        return fake

    stats = run(LedgerSink(settings, writer, FAST, connect=connect))
    assert fake.seeks[ops0] == 4
    assert fake.seeks[TopicPartition(settings.topic("comparisons"), 0)] == 0
    assert (stats.records, stats.skipped, stats.duplicates) == (41 - 4, 0, 0)
    assert counts(settings.duckdb) == (20, 20, 1)


def test_stop_stores_the_batch_in_hand_before_returning(
    settings: Settings, writer: LedgerWriter
) -> None:
    fake = FakeConsumer(logs_for(settings, 10))
    options = SinkOptions(batch_size=10_000, batch_seconds=3600, lag_every_s=0.0)
    sink: LedgerSink

    async def connect() -> FakeConsumer:
        asyncio.get_running_loop().call_later(0.3, sink.stop)
        return fake

    sink = LedgerSink(settings, writer, options, connect=connect)
    stats = run(sink)
    assert (stats.batches, stats.records) == (1, 21)
    assert writer.committed_offsets()[(settings.topic("comparisons"), 0)] == 9


def test_an_unreachable_broker_is_retried_with_backoff_until_stopped(
    settings: Settings, writer: LedgerWriter
) -> None:
    sink = LedgerSink(settings, writer, SinkOptions(kafka_timeout_s=1.0))

    async def main() -> Any:
        asyncio.get_running_loop().call_later(1.5, sink.stop)
        return await sink.run()

    stats = asyncio.run(main())
    assert stats.reconnects >= 1
    assert (stats.connected, stats.records) == (False, 0)
