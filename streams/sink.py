"""The ledger sink: every ledger topic into the ledger folder, exactly once, all day.

Correctness never rests on Kafka's consumer-group offsets: the sink assigns itself every
partition (no group), seeks each to the last offset stored in the ledger's segment names plus
one, and commits a batch by renaming its segments into place (``ledger.store``). A crash at
any point loses nothing (the records after the last rename are read again) and duplicates
nothing (the rename is the commit; a half-written segment never becomes visible).

A broker restart costs a pause: every Kafka call has a timeout, failures are logged and the
consumer is rebuilt with exponential backoff, then resumes from the ledger's own offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ledger.kafka.clients import aiokafka_consumer
from ledger.settings import Settings
from ledger.store.keys import load_signer
from ledger.store.writer import LedgerWriter, SourceRecord, WriteResult
from ledger.wire import STORED_TOPICS

__all__ = ["LEDGER_TOPICS", "LedgerSink", "SinkOptions", "SinkStats", "run_sink"]

#: Logical topics the sink stores (flag commands are requests, not facts: not stored).
LEDGER_TOPICS = STORED_TOPICS

log = logging.getLogger("migration_ledger.sink")


class _Reconnect(Exception):
    """The consumer looks stuck (broker gone too long): rebuild it."""


@dataclass(frozen=True)
class SinkOptions:
    batch_size: int = 5_000
    batch_seconds: float = 1.0
    #: Merge small segments this often (0 = never).
    compact_every_s: float = 15.0
    #: Exit after being caught up (nothing to read, nothing pending) this long.
    until_idle_s: float | None = None
    metadata_every_s: float = 5.0
    lag_every_s: float = 1.0
    kafka_timeout_s: float = 10.0
    #: Rebuild the consumer after Kafka calls have failed for this long.
    stuck_after_s: float = 30.0
    max_backoff_s: float = 10.0
    fsync: bool = True


@dataclass
class SinkStats:
    """What the sink has done since it started (shown as progress, returned at the end)."""

    started: float = field(default_factory=time.monotonic)
    batches: int = 0
    records: int = 0
    stored: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    duplicates: int = 0
    skipped: int = 0
    partitions: int = 0
    lag: int | None = None
    connected: bool = False
    reconnects: int = 0
    compactions: int = 0
    last_commit: float | None = None

    def add(self, result: WriteResult) -> None:
        self.batches += 1
        self.records += result.records
        for table, rows in result.stored.items():
            self.stored[table] = self.stored.get(table, 0) + rows
        self.dead_lettered += result.dead_lettered
        self.duplicates += result.duplicates
        self.skipped += result.skipped
        self.last_commit = time.monotonic()

    @property
    def rows(self) -> int:
        return sum(self.stored.values())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        lag = "?" if self.lag is None else str(self.lag)
        state = "connected" if self.connected else "reconnecting"
        return (
            f"{state}: {self.records} records in {self.batches} batches "
            f"({self.records / elapsed:,.0f}/s), {self.rows} rows stored, "
            f"{self.duplicates} duplicates, {self.dead_lettered} dead-lettered, "
            f"lag {lag} over {self.partitions} partitions"
        )


class LedgerSink:
    """Consumes the ledger topics into a :class:`LedgerWriter` until stopped or idle."""

    def __init__(
        self,
        settings: Settings,
        writer: LedgerWriter,
        options: SinkOptions | None = None,
        *,
        on_progress: Callable[[SinkStats], None] | None = None,
        connect: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """``connect`` makes a started consumer (default: aiokafka's); tests pass a fake."""
        self.settings = settings
        self.writer = writer
        self.options = options or SinkOptions()
        self.stats = SinkStats()
        self._on_progress = on_progress
        self._stop = asyncio.Event()
        self._topics = [settings.topic(logical) for logical in LEDGER_TOPICS]
        self._make_consumer = connect or self._connect

    def stop(self) -> None:
        """Finish the batch in hand, store it, and return from :meth:`run`."""
        self._stop.set()

    async def run(self) -> SinkStats:
        backoff = 0.5
        while not self._stop.is_set():
            consumer = None
            try:
                consumer = await self._make_consumer()
                self.stats.connected = True
                backoff = 0.5
                await self._consume(consumer)
            except (TimeoutError, _Reconnect, OSError) as exc:
                self._lost(exc)
            except Exception as exc:
                if not _is_kafka_error(exc):
                    raise
                self._lost(exc)
            finally:
                if consumer is not None:
                    await self._close(consumer)
            if not self._stop.is_set():
                self.stats.reconnects += 1
                log.warning("reconnecting to Kafka in %.1f s", backoff)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(backoff * 2, self.options.max_backoff_s)
        return self.stats

    def _lost(self, exc: BaseException) -> None:
        self.stats.connected = False
        self.stats.lag = None
        log.warning(
            "Kafka at %s unavailable: %s",
            self.settings.bootstrap_servers,
            str(exc) or type(exc).__name__,
        )
        self._progress()

    async def _connect(self) -> Any:
        consumer = aiokafka_consumer(
            self.settings,
            client_id="migration-ledger-sink",
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=200,
            request_timeout_ms=int(self.options.kafka_timeout_s * 1000),
            metadata_max_age_ms=int(self.options.metadata_every_s * 1000),
        )
        try:
            await asyncio.wait_for(consumer.start(), self.options.kafka_timeout_s)
        except BaseException:
            await self._close(consumer)
            raise
        log.info("connected to Kafka at %s", self.settings.bootstrap_servers)
        return consumer

    async def _close(self, consumer: Any) -> None:
        """Stop a consumer whatever state it is in; a broken one must not stop the sink."""
        try:
            await asyncio.wait_for(consumer.stop(), self.options.kafka_timeout_s)
        except asyncio.CancelledError:
            # aiokafka's fetcher lets the cancellation of its own task escape ``stop``;
            # only a cancellation of this task is ours to pass on.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception as exc:
            log.debug("closing the Kafka consumer failed: %s", exc)

    async def _assign(self, consumer: Any, known: set[Any]) -> set[Any]:
        """Assign every partition of the ledger topics and seek each to the stored offset.

        Only called with no batch in hand, so the ledger's offsets are the positions.
        """
        # Deferred: aiokafka loads only where a client is built.
        from aiokafka.structs import TopicPartition

        # ``consumer.topics()`` fetches fresh metadata but keeps it to itself (the consumer's
        # own cache only knows assigned topics), so ask the client for the cluster it builds.
        cluster = await asyncio.wait_for(
            consumer._client.fetch_all_metadata(), self.options.kafka_timeout_s
        )
        found: set[Any] = set()
        for topic in self._topics:
            for partition in cluster.partitions_for_topic(topic) or ():
                found.add(TopicPartition(topic, partition))
        if found == known:
            return known
        consumer.assign(sorted(found))
        committed = self.writer.committed_offsets()
        fresh = []
        for tp in sorted(found):
            last = committed.get((tp.topic, tp.partition))
            if last is None:
                fresh.append(tp)
            else:
                consumer.seek(tp, last + 1)
        if fresh:
            await asyncio.wait_for(consumer.seek_to_beginning(*fresh), self.options.kafka_timeout_s)
        log.info("consuming %d partitions of %d topics", len(found), len(self._topics))
        self.stats.partitions = len(found)
        return found

    async def _lag(self, consumer: Any, assigned: set[Any]) -> int:
        if not assigned:
            return 0
        ends = await asyncio.wait_for(
            consumer.end_offsets(sorted(assigned)), self.options.kafka_timeout_s
        )
        lag = 0
        for tp, end in ends.items():
            position = await asyncio.wait_for(consumer.position(tp), self.options.kafka_timeout_s)
            lag += max(0, int(end) - int(position))
        return lag

    async def _consume(self, consumer: Any) -> None:
        opts = self.options
        assigned: set[Any] = await self._assign(consumer, set())
        batch: list[SourceRecord] = []
        first_at = 0.0
        now = time.monotonic()
        next_metadata = now + opts.metadata_every_s
        next_lag = now
        next_compact = now + opts.compact_every_s
        idle_since: float | None = None
        last_ok = now
        while not self._stop.is_set():
            now = time.monotonic()
            if not batch and now >= next_metadata:
                assigned = await self._assign(consumer, assigned)
                next_metadata = now + opts.metadata_every_s
            if now >= next_lag:
                try:
                    self.stats.lag = await self._lag(consumer, assigned) + len(batch)
                    if not self.stats.connected:
                        log.warning("Kafka answers again at %s", self.settings.bootstrap_servers)
                        self.stats.connected = True
                    last_ok = now
                except (TimeoutError, OSError) as exc:
                    self.stats.connected = False
                    self.stats.lag = None
                    if now - last_ok > opts.stuck_after_s:
                        raise _Reconnect(f"no answer from Kafka for {now - last_ok:.0f} s") from exc
                    log.warning(
                        "Kafka not answering (%s); still trying", str(exc) or type(exc).__name__
                    )
                next_lag = now + opts.lag_every_s
                self._progress()
            if assigned:
                polled = await consumer.getmany(
                    timeout_ms=200, max_records=max(1, opts.batch_size - len(batch))
                )
                for tp, records in polled.items():
                    for r in records:
                        batch.append(
                            SourceRecord(
                                tp.topic, tp.partition, r.offset, r.key, r.value, r.timestamp
                            )
                        )
                if polled and first_at == 0.0:
                    first_at = time.monotonic()
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.2)
            now = time.monotonic()
            if batch and (len(batch) >= opts.batch_size or now - first_at >= opts.batch_seconds):
                self._flush(batch)
                batch, first_at = [], 0.0
                idle_since = None
                next_lag = now  # refresh the lag right after a commit
            if not batch and opts.compact_every_s > 0 and now >= next_compact:
                self._compact()
                next_compact = time.monotonic() + opts.compact_every_s
            if opts.until_idle_s is not None:
                caught_up = not batch and self.stats.lag == 0 and self.stats.connected
                if not caught_up:
                    idle_since = None
                elif idle_since is None:
                    idle_since = now
                elif now - idle_since >= opts.until_idle_s:
                    log.info("caught up for %.1f s: stopping", opts.until_idle_s)
                    self._stop.set()
        if batch:
            self._flush(batch)

    def _flush(self, batch: list[SourceRecord]) -> None:
        result = self.writer.write_batch(batch)
        self.stats.add(result)
        if result.dead_lettered:
            log.warning("%d record(s) dead-lettered in the ledger", result.dead_lettered)
        self._progress()

    def _compact(self) -> None:
        done = self.writer.compact()
        if done.new_segments:
            self.stats.compactions += 1
            log.info("compacted %d segments into %d", done.merged_segments, done.new_segments)

    def _progress(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.stats)


def _is_kafka_error(exc: BaseException) -> bool:
    # Deferred: aiokafka loads only where a client is built.
    from aiokafka.errors import KafkaError

    return isinstance(exc, KafkaError)


def run_sink(settings: Settings, options: SinkOptions, *, quiet: bool = False) -> SinkStats:
    """Run the sink in this process until SIGTERM/SIGINT (or idle); progress on stderr."""
    # Deferred: rich loads only when something is printed.
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(stderr=True)
    level = logging.WARNING if quiet else logging.INFO
    if console.is_terminal:
        from rich.logging import RichHandler

        # Log lines go through the console, above the live progress line, not across it.
        logging.basicConfig(
            level=level, format="%(message)s", handlers=[RichHandler(console=console)]
        )
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiokafka logs every refused connection during a broker restart; our own lines say it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    live: Live | None = None
    last_line = 0.0

    def show(stats: SinkStats) -> None:
        nonlocal last_line
        if quiet:
            return
        if live is not None:
            live.update(Text(stats.line()))
        elif time.monotonic() - last_line >= 10.0:
            last_line = time.monotonic()
            log.info("%s", stats.line())

    signer = load_signer(settings.signing_key)  # checkpoints of each commit signed (issue 13)
    with LedgerWriter(settings.duckdb, fsync=options.fsync, signer=signer) as writer:
        sink = LedgerSink(settings, writer, options, on_progress=show)
        offsets = writer.committed_offsets()
        if not quiet:
            log.info(
                "ledger %s: %d partitions stored so far, resuming after their last offsets",
                settings.duckdb,
                len(offsets),
            )

        async def main() -> SinkStats:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, sink.stop)
            try:
                return await sink.run()
            finally:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)

        if not quiet and console.is_terminal:
            with Live(Text("starting"), console=console, refresh_per_second=4) as live:
                stats = asyncio.run(main())
            live = None
        else:
            stats = asyncio.run(main())
    if not quiet:
        console.print(f"sink stopped: {stats.line()}")
    return stats
