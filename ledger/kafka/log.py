"""Read whole topics outside any consumer group: from the beginning to an end, or tailing on.

Everything that reads a log rather than consuming a share of it goes through here: the flag
log writer rebuilding its state, routers' flag clients, the switchover controller, the
``flags`` and ``switchover`` commands, ``check``. Nothing is committed and no group is joined,
so any number of readers follow the same log independently.

``LogReader`` is synchronous (kafka-python), for threads and command lines; ``AsyncLogReader``
is the same reader on an event loop (aiokafka). Both hand out ``Record``s and raise only
``ledger.errors.BrokerError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from ledger.errors import BrokerError
from ledger.kafka.clients import aiokafka_consumer, broker_errors, consumer
from ledger.settings import Settings

__all__ = ["AsyncLogReader", "LogReader", "Partition", "Record", "read_topics"]

#: (topic, partition)
Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Record:
    """One stored record, whichever client read it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int

    @classmethod
    def of(cls, record: Any) -> Record:
        """From a kafka-python or aiokafka consumer record (they share these attributes)."""
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            record.timestamp,
        )


class LogReader:
    """Every partition of some topics, read with kafka-python; a context manager.

    ``partitions()`` waits (up to ``wait_s``) for topics created a moment ago; a topic that
    does not exist by then is read as empty.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        *,
        client_id: str = "migration-ledger-log-reader",
        timeout_s: float = 15.0,
    ) -> None:
        self.settings = settings
        self.topics = list(topics)
        self.timeout_s = timeout_s
        self._consumer = consumer(
            settings,
            client_id=client_id,
            request_timeout_ms=int(timeout_s * 1000) + 500,
            bootstrap_timeout_ms=int(min(timeout_s, 5.0) * 1000),
        )
        self._assigned: list[Any] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._consumer.close()

    def partitions(self, *, wait_s: float = 0.0) -> list[Partition]:
        """Assign every partition of the topics (the ones known now, or within ``wait_s``)."""
        # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it.
        from kafka import TopicPartition

        deadline = time.monotonic() + wait_s
        with broker_errors(f"read the partitions of {', '.join(self.topics)}"):
            while True:
                found = {
                    topic: sorted(self._consumer.partitions_for_topic(topic) or ())
                    for topic in self.topics
                }
                if all(found.values()) or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
            self._assigned = [TopicPartition(t, p) for t, ps in found.items() for p in ps]
            self._consumer.assign(self._assigned)
        return [(tp.topic, tp.partition) for tp in self._assigned]

    def _tps(self) -> list[Any]:
        """The assigned partitions; while there are none, ask again (a topic may appear)."""
        if not self._assigned:
            self.partitions()
        return self._assigned

    def end_offsets(self) -> dict[Partition, int]:
        """The offset after the last record of each partition, as of now."""
        tps = self._tps()
        if not tps:
            return {}
        with broker_errors("read the end of the log"):
            ends = self._consumer.end_offsets(tps)
        return {(tp.topic, tp.partition): int(end) for tp, end in ends.items()}

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Go to these offsets; partitions not named go to their beginning."""
        tps = self._tps()
        with broker_errors("seek in the log"):
            starts = self._consumer.beginning_offsets(tps) if tps else {}
            for tp in tps:
                self._consumer.seek(tp, offsets.get((tp.topic, tp.partition), starts[tp]))

    def seek_to_beginning(self) -> None:
        self.seek({})

    def seek_to_end(self) -> None:
        self.seek(self.end_offsets())

    def position(self) -> dict[Partition, int]:
        with broker_errors("read the log's position"):
            return {(tp.topic, tp.partition): self._consumer.position(tp) for tp in self._tps()}

    def poll(self, timeout_s: float = 0.5, max_records: int = 10_000) -> list[Record]:
        """The next records of any partition (in offset order within each), maybe none."""
        if not self._tps():
            time.sleep(timeout_s)
            return []
        with broker_errors("read the log"):
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [Record.of(r) for records in batches.values() for r in records]

    def read_to_end(self, *, timeout_s: float | None = None) -> list[Record]:
        """From the current positions at least up to the ends seen now; ``BrokerError`` past the
        time.

        A record that arrived past those ends in the same fetch is kept too: it has been
        consumed (the position is past it), so dropping it would lose it for the next call.
        """
        ends = self.end_offsets()
        budget = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + budget
        records: list[Record] = []
        position = self.position()
        while any(position[tp] < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                read = sum(position.values())
                raise BrokerError(
                    f"read only {read} of {sum(ends.values())} records of "
                    f"{', '.join(self.topics)} in {budget:g} s"
                )
            records.extend(self.poll())
            position = self.position()
        return records

    def tail(self, until: Callable[[Sequence[Record]], bool], *, timeout_s: float) -> list[Record]:
        """Read on from the current positions until ``until(records so far)`` or the time."""
        deadline = time.monotonic() + timeout_s
        records: list[Record] = []
        while not until(records) and time.monotonic() < deadline:
            records.extend(self.poll(timeout_s=min(0.5, max(deadline - time.monotonic(), 0.01))))
        return records


def read_topics(
    settings: Settings, topics: Iterable[str], *, timeout_s: float = 15.0, wait_s: float = 0.0
) -> list[Record]:
    """Every record of these topics, from the beginning to the end seen at the start."""
    with LogReader(settings, topics, timeout_s=timeout_s) as reader:
        if not reader.partitions(wait_s=wait_s):
            return []
        reader.seek_to_beginning()
        return reader.read_to_end()


class AsyncLogReader:
    """``LogReader`` on an event loop (aiokafka): every partition of some topics, from offset 0."""

    def __init__(
        self, settings: Settings, topics: Iterable[str], *, partitions: Sequence[int] | None = None
    ) -> None:
        self.settings = settings
        self.topics = list(topics)
        #: Partitions known in advance (the one-partition flag log): assigned directly, so no
        #: metadata refresh can re-assign them and move the position.
        self.partitions = None if partitions is None else list(partitions)
        self._consumer: Any = None
        #: The end offsets seen when the reader started: ``caught_up`` compares with these.
        self.start_ends: dict[Partition, int] = {}

    async def start(self, *, wait_s: float = 30.0) -> None:
        """Every partition of the topics (waiting for new ones), from the beginning.

        Subscribed without a group, aiokafka assigns every partition it learns of itself.
        """
        if self.partitions is not None:
            await self._start_assigned(self.partitions)
            return
        self._consumer = aiokafka_consumer(
            self.settings, *self.topics, auto_offset_reset="earliest"
        )
        try:
            with broker_errors(f"reach Kafka at {self.settings.bootstrap_servers}"):
                await self._consumer.start()
                deadline = time.monotonic() + wait_s
                while {tp.topic for tp in self._consumer.assignment()} != set(self.topics):
                    if time.monotonic() > deadline:
                        found = {tp.topic for tp in self._consumer.assignment()}
                        raise BrokerError(f"topics not found: {sorted(set(self.topics) - found)}")
                    await asyncio.sleep(0.2)  # the metadata of a topic created a moment ago
                tps = list(self._consumer.assignment())
                await self._consumer.seek_to_beginning(*tps)
                ends = await self._consumer.end_offsets(tps)
        except BaseException:
            await self.stop()
            raise
        self.start_ends = {(tp.topic, tp.partition): int(end) for tp, end in ends.items()}

    async def _start_assigned(self, partitions: Sequence[int]) -> None:
        from aiokafka import TopicPartition

        self._consumer = aiokafka_consumer(self.settings, auto_offset_reset="earliest")
        try:
            with broker_errors(f"reach Kafka at {self.settings.bootstrap_servers}"):
                await self._consumer.start()
                tps = [TopicPartition(t, p) for t in self.topics for p in partitions]
                self._consumer.assign(tps)
                await self._consumer.seek_to_beginning(*tps)
                ends = await self._consumer.end_offsets(tps)
        except BaseException:
            await self.stop()
            raise
        self.start_ends = {(tp.topic, tp.partition): int(end) for tp, end in ends.items()}

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def read(self, timeout_ms: int = 500, max_records: int = 5000) -> list[Record]:
        """The next records of any partition, maybe none."""
        with broker_errors("read the log"):
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [Record.of(r) for records in batches.values() for r in records]

    async def caught_up(self) -> bool:
        """Whether every partition was read up to the end seen at the start."""
        with broker_errors("read the log's position"):
            for tp in self._consumer.assignment():
                if await self._consumer.position(tp) < self.start_ends[(tp.topic, tp.partition)]:
                    return False
        return True

    async def read_to_end(self) -> list[Record]:
        """From the current positions at least up to the ends seen now.

        Records fetched past those ends are returned too, never dropped: they are consumed,
        and the next call starts after them.
        """
        with broker_errors("read the end of the log"):
            tps = list(self._consumer.assignment())
            ends = await self._consumer.end_offsets(tps)
        records: list[Record] = []
        while True:
            with broker_errors("read the log's position"):
                behind = [tp for tp in tps if await self._consumer.position(tp) < ends[tp]]
            if not behind:
                return records
            records.extend(await self.read(timeout_ms=1000, max_records=10_000))
