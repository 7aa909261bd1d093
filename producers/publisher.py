"""Publish ledger events to Kafka without ever making the caller wait for Kafka.

``Publisher.publish(event)`` only appends to a bounded in-memory buffer. Two background
threads do the rest:

* the **journal writer** encodes buffered events and appends them to the local
  :class:`~producers.journal.Journal` (fsync'd in batches);
* the **Kafka sender** reads the journal in order, hands batches to an idempotent
  kafka-python producer (``acks="all"``) and moves the journal's cursor once Kafka has them.

So while Kafka is unreachable nothing changes for the caller: events pile up in the journal
and go out, in order, when the broker is back (the producer's own retries keep their sequence
numbers, so the broker drops duplicates of a batch it had already written). A new publisher
on the same journal sends what the last process left pending before anything new. Whatever
blocks in kafka-python (metadata waits bounded by ``max_block_ms``, bootstrapping) blocks
only the sender thread. If the buffer ever fills (the disk stalls), the caller writes its event
to the journal itself, behind the buffered ones, rather than dropping it.

Delivery failures never reach the caller: they are counted (:attr:`Publisher.stats`, and a
Prometheus collector when asked) and logged. A record Kafka refuses for good (too large, bad
topic) is written to ``<journal>.failed`` so it is kept, not lost.

Guarantee: exactly once into Kafka while the process runs, even across broker outages;
at least once across a crash of the publishing process (lines sent but not yet marked in the
cursor are sent again; every consumer deduplicates on ``event_id``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ledger import wire
from ledger.errors import EventDecodeError
from ledger.events import Event, OperationRecorded, RolloutDecided
from ledger.settings import Settings
from producers.journal import Envelope, Journal, JournalEntry

__all__ = [
    "DeliveryFuture",
    "EventSink",
    "KafkaLikeProducer",
    "Publisher",
    "PublisherStats",
    "kafka_producer_factory",
]

log = logging.getLogger(__name__)

#: Events moved from the buffer to the journal per lock hold.
_MOVE_CHUNK = 256


class EventSink(Protocol):
    """What the shadow runner and flag client need from a publisher (tests pass a list)."""

    def publish(self, event: OperationRecorded | RolloutDecided) -> None: ...


class DeliveryFuture(Protocol):
    """The part of kafka-python's ``FutureRecordMetadata`` the sender reads."""

    is_done: bool
    exception: BaseException | None


class KafkaLikeProducer(Protocol):
    """The part of ``kafka.KafkaProducer`` the sender uses (unit tests pass a fake)."""

    def send(self, topic: str, value: bytes, key: bytes | None) -> DeliveryFuture: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


ProducerFactory = Callable[[], KafkaLikeProducer]


def kafka_producer_factory(
    settings: Settings, *, client_id: str = "migration-ledger-publisher", **overrides: Any
) -> ProducerFactory:
    """A factory for the real producer: idempotent, ``acks="all"``, short blocking bounds.

    ``bootstrap_timeout_ms`` and ``max_block_ms`` are short because they only bound how long
    the *sender thread* waits before it reports Kafka unreachable and tries again; the
    journal holds the events meanwhile. ``delivery_timeout_ms`` is long so that a batch
    handed over before an outage is retried by the same producer (same sequence numbers,
    deduplicated by the broker) rather than failed and sent anew.
    """
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": client_id,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_block_ms": 1000,
        "bootstrap_timeout_ms": 2000,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 300_000,
        "reconnect_backoff_ms": 100,
        "reconnect_backoff_max_ms": 1000,
        **overrides,
    }

    def create() -> KafkaLikeProducer:
        from kafka import KafkaProducer

        producer: KafkaLikeProducer = KafkaProducer(**config)
        return producer

    return create


@dataclass(frozen=True, slots=True)
class PublisherStats:
    """Counters since this publisher started (``pending`` and ``online`` are current)."""

    published: int
    delivered: int
    #: Delivered after having waited in the journal for Kafka to come back.
    deferred: int
    #: Written to the journal by the caller because the in-memory buffer was full.
    spilled: int
    #: Left pending by an earlier process and delivered by this one.
    replayed: int
    #: Refused by Kafka for good; kept in ``<journal>.failed``.
    failed: int
    #: Records sent again after a retriable delivery failure.
    retried: int
    #: How many times Kafka became unreachable.
    outages: int
    #: Accepted but not yet acknowledged by Kafka (buffer + journal).
    pending: int
    online: bool
    #: Refused before the journal: the ledger's decoders would refuse them (``ledger.wire``).
    refused: int = 0


class _Settled:
    """Stand-in future for an entry whose fate is already known."""

    __slots__ = ("exception", "is_done")

    def __init__(self, exception: BaseException | None = None) -> None:
        self.is_done = True
        self.exception = exception


_ALREADY_DELIVERED = _Settled()


def _is_retriable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retriable", False))


def _is_timeout(exc: BaseException) -> bool:
    return type(exc).__name__ == "KafkaTimeoutError" or isinstance(exc, TimeoutError)


class Publisher:
    """Asynchronous, journaled publisher of ledger events. Use as a context manager.

    ``publish`` costs the caller an ``isinstance``, a lock and a deque append; everything
    else runs on the publisher's own threads.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        journal_path: Path | None = None,
        producer_factory: ProducerFactory | None = None,
        buffer_size: int = 10_000,
        batch_size: int = 2_000,
        fsync_interval: float = 0.2,
        ack_timeout: float = 5.0,
        retry_backoff: tuple[float, float] = (0.2, 2.0),
        max_retries: int = 5,
        compact_bytes: int = 4 << 20,
        linger: float = 0.005,
    ) -> None:
        self.settings = settings
        self._operations_topic = settings.topic("operations")
        self._decisions_topic = settings.topic("decisions")
        path = journal_path or settings.cache_dir / "journal" / "publisher.jsonl"
        self._journal = Journal(path)
        self._failed_path = path.with_name(path.name + ".failed")
        self._factory = producer_factory or kafka_producer_factory(settings)
        self._capacity = buffer_size
        self._batch_size = batch_size
        self._fsync_interval = fsync_interval
        self._ack_timeout = ack_timeout
        self._backoff_min, self._backoff_max = retry_backoff
        self._max_retries = max_retries
        self._compact_bytes = compact_bytes
        self._linger = linger

        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._settled = threading.Condition(self._lock)
        #: Held while moving buffer -> journal, so a spilling caller cannot overtake.
        self._order_lock = threading.Lock()
        self._buffer: deque[tuple[str, str | None, Event]] = deque()
        self._writer_idle = False
        self._stopping = False
        self._stop_deadline = float("inf")
        self._closed = False

        self._published = 0
        #: Lines an earlier process left pending: flush() waits for them too.
        self._inherited = self._journal.pending
        self._resolved = 0  # entries acknowledged (delivered or failed for good)
        self._delivered = 0
        self._deferred = 0
        self._spilled = 0
        self._replayed = 0
        self._failed = 0
        self._refused = 0
        self._retried = 0
        self._outages = 0
        self._online = True
        #: Entries below this journal offset were written before the last outage ended.
        self._deferred_until = 0
        self._attempts: dict[int, int] = {}
        #: Offsets Kafka already has although an earlier entry must be re-sent.
        self._delivered_out_of_order: set[int] = set()
        self._producer: KafkaLikeProducer | None = None
        #: Set on close: cuts the sender's back-off sleeps short.
        self._stop_signal = threading.Event()

        self._writer = threading.Thread(
            target=self._write_loop, name="ledger-journal-writer", daemon=True
        )
        self._sender = threading.Thread(
            target=self._send_loop, name="ledger-kafka-sender", daemon=True
        )
        self._started = False

    # -- the caller's side ---------------------------------------------------------------

    def start(self) -> Publisher:
        """Start the background threads (pending journal lines are sent first)."""
        if not self._started:
            self._started = True
            pending = self._journal.pending
            if pending:
                log.info("publisher: %d events left by an earlier run will be sent first", pending)
            self._writer.start()
            self._sender.start()
            # A process that forgets close() still gets its buffer into the journal.
            atexit.register(self._close_at_exit)
        return self

    def _close_at_exit(self) -> None:
        self.close(timeout=2.0)

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def publish(self, event: OperationRecorded | RolloutDecided) -> None:
        """Queue an operation (key: correlation id) or a decision (key: session id)."""
        if isinstance(event, OperationRecorded):
            self.send(self._operations_topic, event.correlation_id, event)
        elif isinstance(event, RolloutDecided):
            self.send(self._decisions_topic, event.session_id or event.correlation_id, event)
        else:
            raise TypeError(f"publish() takes OperationRecorded or RolloutDecided, not {event!r}")

    def send(self, topic: str, key: str | None, event: Event) -> None:
        """Queue any event for ``topic`` under ``key``. Never blocks on Kafka, never raises."""
        item = (topic, key, event)
        with self._lock:
            if self._closed:
                self._failed += 1
                log.error("publisher is closed: event %s was not recorded", event.event_id)
                return
            self._published += 1
            if len(self._buffer) < self._capacity:
                self._buffer.append(item)
                if self._writer_idle:
                    self._wakeup.notify()
                return
        self._spill(item)

    def _spill(self, item: tuple[str, str | None, Event]) -> None:
        """The buffer is full: move its oldest events to the journal ourselves, then queue.

        Bounded: one chunk is encoded here at most, and it frees a chunk of room, so under
        sustained overload only one publish in ``_MOVE_CHUNK`` pays for it.
        """
        with self._order_lock:
            moved = self._move_chunk()
            with self._lock:
                self._spilled += moved
                self._buffer.append(item)
                if self._writer_idle:
                    self._wakeup.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until everything published so far (and left by an earlier run) is in Kafka.

        Returns False on timeout; the events stay queued either way.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._published + self._inherited
            while self._resolved < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._sender.is_alive():
                    return False
                self._settled.wait(min(remaining, 0.5))
            return True

    def close(self, timeout: float = 10.0) -> PublisherStats:
        """Deliver what can be delivered within ``timeout``; keep the rest in the journal."""
        if self._closed:
            return self.stats
        if self._started:
            atexit.unregister(self._close_at_exit)
            self.flush(timeout)
        with self._lock:
            self._closed = True
            self._stopping = True
            self._stop_deadline = time.monotonic()
            self._wakeup.notify_all()
        self._stop_signal.set()
        if self._started:
            self._writer.join()
            self._sender.join()
        if self._producer is not None:
            self._close_producer()
        self._journal.close()
        stats = self.stats
        if stats.pending:
            log.warning(
                "publisher closed with %d events pending in %s; they are sent on next start",
                stats.pending,
                self._journal.path,
            )
        return stats

    @property
    def stats(self) -> PublisherStats:
        with self._lock:
            buffered = len(self._buffer)
            return PublisherStats(
                published=self._published,
                delivered=self._delivered,
                deferred=self._deferred,
                spilled=self._spilled,
                replayed=self._replayed,
                failed=self._failed,
                retried=self._retried,
                outages=self._outages,
                pending=buffered + self._journal.pending,
                online=self._online,
                refused=self._refused,
            )

    @property
    def journal_path(self) -> Path:
        return self._journal.path

    def register_metrics(self, registry: Any = None) -> None:
        """Expose :attr:`stats` to Prometheus (``registry`` defaults to the global one).

        Read at scrape time from the counters above: nothing is added to the hot path.
        """
        from prometheus_client import REGISTRY
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        publisher = self

        class _Collector:
            def collect(self) -> Iterator[Any]:
                stats = publisher.stats
                events = CounterMetricFamily(
                    "migration_ledger_publisher_events",
                    "Events by what became of them",
                    labels=["state"],
                )
                for state in ("published", "delivered", "deferred", "spilled", "replayed"):
                    events.add_metric([state], getattr(stats, state))
                events.add_metric(["failed"], stats.failed)
                events.add_metric(["retried"], stats.retried)
                yield events
                yield CounterMetricFamily(
                    "migration_ledger_publisher_outages", "Kafka became unreachable", stats.outages
                )
                yield GaugeMetricFamily(
                    "migration_ledger_publisher_pending", "Not yet in Kafka", stats.pending
                )
                yield GaugeMetricFamily(
                    "migration_ledger_publisher_online", "1 while Kafka answers", int(stats.online)
                )

            def describe(self) -> list[Any]:
                return []

        (registry or REGISTRY).register(_Collector())

    # -- journal writer thread -------------------------------------------------------------

    def _envelopes(self, items: list[tuple[str, str | None, Event]]) -> Iterator[Envelope]:
        for topic, key, event in items:
            try:
                # What the worker and the sink would dead-letter is refused here, loudly.
                value = wire.admit(event, topic)
            except EventDecodeError as exc:
                with self._lock:
                    self._refused += 1
                    self._failed += 1
                    self._resolved += 1
                    self._settled.notify_all()
                log.error("publisher: event %s refused: %s", event.event_id, exc)
                continue
            yield Envelope(topic, key, value)

    def _write_loop(self) -> None:
        while True:
            with self._lock:
                while not self._buffer and not self._stopping:
                    self._writer_idle = True
                    self._wakeup.wait(self._fsync_interval)
                    self._writer_idle = False
                    if not self._buffer:
                        break  # woke for the periodic fsync
                stop = self._stopping and not self._buffer
            if self._buffer and self._linger > 0 and not stop:
                # Let a few more events come: one wake-up and one write for many, so the
                # caller's threads meet this one less often at the GIL.
                self._stop_signal.wait(self._linger)
            if self._buffer:
                self._move_to_journal()
            try:
                self._journal.sync_if_older_than(self._fsync_interval)
            except OSError as exc:
                log.error("publisher: journal fsync failed: %s", exc)
            if stop:
                return

    def _move_to_journal(self) -> None:
        # Chunk by chunk, so a spilling caller never waits long for the order lock.
        while True:
            with self._order_lock:
                if not self._move_chunk():
                    return

    def _move_chunk(self) -> int:
        """The oldest buffered events into the journal (hold the order lock); how many."""
        with self._lock:
            count = min(len(self._buffer), _MOVE_CHUNK)
            batch = [self._buffer.popleft() for _ in range(count)]
        if not batch:
            return 0
        try:
            self._journal.append(self._envelopes(batch))
        except OSError as exc:
            with self._lock:
                self._failed += len(batch)
                self._resolved += len(batch)
            log.error("publisher: journal write failed, %d events lost: %s", len(batch), exc)
        return count

    # -- Kafka sender thread -----------------------------------------------------------------

    def _send_loop(self) -> None:
        backoff = self._backoff_min
        while True:
            with self._lock:
                stopping, deadline = self._stopping, self._stop_deadline
            drained = self._journal.pending == 0 or time.monotonic() >= deadline
            if stopping and not self._writer.is_alive() and drained:
                return
            if not self._journal.wait_for_unread(0.2):
                self._compact()
                continue
            producer = self._ensure_producer()
            if producer is None:
                self._stop_signal.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            entries = self._journal.read(self._batch_size)
            inflight = self._hand_over(producer, entries)
            if not inflight:  # Kafka did not take even the first record
                self._stop_signal.wait(backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            if self._settle(producer, inflight):
                backoff = self._backoff_min
            self._compact()

    def _compact(self) -> None:
        if self._journal.compact(self._compact_bytes):
            # Offsets start again from zero: forget what referred to the old ones.
            self._deferred_until = 0
            self._attempts.clear()
            self._delivered_out_of_order.clear()

    def _ensure_producer(self) -> KafkaLikeProducer | None:
        if self._producer is not None:
            return self._producer
        try:
            self._producer = self._factory()
        except Exception as exc:  # any failure to connect means: not now, keep journaling
            self._went_offline(f"cannot connect: {exc}")
            return None
        return self._producer

    def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=0)
        except Exception:
            # kafka-python's close() raises when its flush times out, before it stops its
            # I/O thread; a thread left retrying could deliver records that the journal
            # will send again on the next start. Stop it for good.
            sender = getattr(producer, "_sender", None)
            with contextlib.suppress(Exception):
                if sender is not None:
                    sender.force_close()

    def _hand_over(
        self, producer: KafkaLikeProducer, entries: list[JournalEntry]
    ) -> list[tuple[JournalEntry, DeliveryFuture]]:
        """Give entries to the producer in order; stop (and rewind) when it will not take one."""
        inflight: list[tuple[JournalEntry, DeliveryFuture]] = []
        for entry in entries:
            if entry.offset in self._delivered_out_of_order:
                inflight.append((entry, _ALREADY_DELIVERED))
                continue
            envelope = entry.envelope
            key = envelope.key.encode() if envelope.key is not None else None
            try:
                future = producer.send(envelope.topic, value=envelope.value, key=key)
            except Exception as exc:
                retriable = getattr(exc, "retriable", None)
                if retriable is False:  # a Kafka error that retrying cannot cure
                    inflight.append((entry, _Settled(exc)))
                    continue
                if retriable or _is_timeout(exc):
                    self._went_offline(f"producer would not take a record: {exc}")
                else:
                    log.warning("publisher: producer failed (%r); starting a new one", exc)
                    self._close_producer()
                self._journal.rewind(entry.offset)
                return inflight
            inflight.append((entry, future))
        return inflight

    def _settle(
        self, producer: KafkaLikeProducer, inflight: list[tuple[JournalEntry, DeliveryFuture]]
    ) -> bool:
        """Wait until Kafka answered for every entry, then move the cursor; True if all went.

        While Kafka is away this keeps waiting: the producer retries the batch itself with
        the same sequence numbers. The journal writer keeps appending meanwhile.
        """
        sent_at = time.monotonic()
        while not all(future.is_done for _, future in inflight):
            with contextlib.suppress(Exception):
                producer.flush(timeout=0.2)
            if all(future.is_done for _, future in inflight):
                break
            if self._online and time.monotonic() - sent_at > self._ack_timeout:
                self._went_offline(f"no acknowledgement within {self._ack_timeout:.0f} s")
            with self._lock:
                if self._stopping and time.monotonic() >= self._stop_deadline:
                    return False  # left pending in the journal for the next start
            if not all(future.is_done for _, future in inflight):
                self._stop_signal.wait(0.02)  # a producer whose flush returned early
        return self._account(inflight)

    def _account(self, inflight: list[tuple[JournalEntry, DeliveryFuture]]) -> bool:
        done: list[JournalEntry] = []
        delivered = deferred = replayed = failed = resolved = 0
        resend_from: JournalEntry | None = None
        for entry, future in inflight:
            exc = future.exception
            if resend_from is not None:
                # After a retriable failure everything is re-sent except what Kafka has.
                if exc is None and future is not _ALREADY_DELIVERED:
                    self._delivered_out_of_order.add(entry.offset)
                    delivered += 1
                continue
            if exc is None:
                if future is not _ALREADY_DELIVERED:
                    delivered += 1
                self._delivered_out_of_order.discard(entry.offset)
            elif self._gives_up(entry, exc):
                self._keep_failed(entry, exc)
                failed += 1
            else:
                resend_from = entry
                continue
            done.append(entry)
            resolved += 1
            if entry.inherited:
                replayed += 1
            if self._online is False or entry.offset < self._deferred_until:
                deferred += 1
        self._journal.acknowledge(done)
        resent = 0
        if resend_from is not None:
            self._journal.rewind(resend_from.offset)
            resent = sum(1 for entry, _ in inflight if entry.offset >= resend_from.offset)
            log.warning("publisher: a delivery failed; re-sending %d records in order", resent)
        with self._lock:
            self._delivered += delivered
            self._deferred += deferred
            self._replayed += replayed
            self._failed += failed
            self._resolved += resolved
            self._retried += resent
            self._settled.notify_all()
        if resend_from is None and done:
            self._came_back()
        return resend_from is None

    def _gives_up(self, entry: JournalEntry, exc: BaseException) -> bool:
        if _is_timeout(exc):
            return False  # Kafka was away: retried for as long as it takes
        if not _is_retriable(exc):
            return True
        attempts = self._attempts.get(entry.offset, 0) + 1
        self._attempts[entry.offset] = attempts
        return attempts > self._max_retries

    def _keep_failed(self, entry: JournalEntry, exc: BaseException) -> None:
        log.error(
            "publisher: Kafka refused an event for %s for good (%s); kept in %s",
            entry.envelope.topic,
            exc,
            self._failed_path,
        )
        try:
            with self._failed_path.open("ab") as out:
                out.write(entry.envelope.line())
        except OSError as write_error:
            log.error("publisher: could not keep the failed event: %s", write_error)

    def _went_offline(self, why: str) -> None:
        with self._lock:
            if not self._online:
                return
            self._online = False
            self._outages += 1
        log.warning("publisher: Kafka unreachable (%s); journaling to %s", why, self._journal.path)

    def _came_back(self) -> None:
        with self._lock:
            if self._online:
                return
            self._online = True
            self._deferred_until = self._journal.size
        log.warning("publisher: Kafka reachable again; sending the journal in order")
