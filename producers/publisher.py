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
import dataclasses
import fcntl
import logging
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ledger import events as ledger_events
from ledger import wire
from ledger.errors import EventDecodeError, PublishError
from ledger.events import Event, OperationRecorded, RolloutDecided
from ledger.kafka import clients
from ledger.settings import Settings
from producers.journal import Envelope, Journal, JournalEntry

if TYPE_CHECKING:
    from producers.shadow import Draft

__all__ = [
    "DeliveryFuture",
    "EventSink",
    "KafkaLikeProducer",
    "ProcessPublisher",
    "Publisher",
    "PublisherStats",
    "from_micros",
    "kafka_producer_factory",
    "pack_decision",
    "pack_event",
    "to_micros",
    "unpack_decision",
    "unpack_event",
]

log = logging.getLogger(__name__)

#: Events moved from the buffer to the journal per lock hold.
_MOVE_CHUNK = 256
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(at: datetime) -> int:
    """A timestamp as whole microseconds since the epoch (exact; pickles as a small int)."""
    return (at - _EPOCH) // _MICROSECOND


def from_micros(micros: int) -> datetime:
    """The UTC timestamp of :func:`to_micros`."""
    return _EPOCH + timedelta(microseconds=micros)


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
        # Built where every client is (connection and security settings in one place).
        built: KafkaLikeProducer = clients.producer(settings, **config)
        return built

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
        # Deferred: prometheus-client loads only where metrics are served.
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


# -- the publisher in a child process ------------------------------------------------------------
#
# What the caller's process keeps is one non-blocking pipe write per event; everything else
# (building and encoding the events, the journal, kafka-python and its I/O thread) runs in a
# child process, where its threads never hold the caller's GIL.

_FRAME = struct.Struct("!I")
#: Linux's default pipe holds 64 KiB; ask for this much (capped by fs/pipe-max-size).
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031


def pack_event(event: Event) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """An event as (type, fields, names of datetime fields as µs): quick to pickle."""
    fields = dict(event.__dict__)
    times = tuple(name for name, value in fields.items() if isinstance(value, datetime))
    for name in times:
        fields[name] = to_micros(fields[name])
    return type(event).__name__, fields, times


def unpack_event(packed: tuple[str, dict[str, Any], tuple[str, ...]]) -> Event:
    name, fields, times = packed
    for field_name in times:
        fields[field_name] = from_micros(fields[field_name])
    model: type[Event] = getattr(ledger_events, name)
    return model.model_validate(fields)


def pack_decision(decision: RolloutDecided) -> tuple[Any, ...]:
    """A decision as plain values (a third of :func:`pack_event`'s cost: it goes every call)."""
    return (
        decision.event_id,
        decision.schema_version,
        decision.flag,
        decision.session_id,
        decision.correlation_id,
        decision.environment,
        decision.pool,
        decision.reason.value,
        decision.bucket,
        decision.threshold_bp,
        decision.flag_version,
        decision.hash_version,
        to_micros(decision.at),
    )


def unpack_decision(packed: tuple[Any, ...]) -> RolloutDecided:
    names = (
        "event_id",
        "schema_version",
        "flag",
        "session_id",
        "correlation_id",
        "environment",
        "pool",
        "reason",
        "bucket",
        "threshold_bp",
        "flag_version",
        "hash_version",
    )
    fields = dict(zip(names, packed, strict=False))
    fields["reason"] = ledger_events.DecisionReason(fields["reason"])
    fields["at"] = from_micros(packed[-1])
    return RolloutDecided.model_validate(fields)


class ProcessPublisher:
    """A :class:`Publisher` that runs in a child process; this side only writes to a pipe.

    Same guarantees as :class:`Publisher` (the child *is* one, on ``journal_path``): nothing
    is lost across a broker outage or a restart, pending journal lines go first. The caller's
    thread pickles a few plain values and makes one non-blocking ``write``; the shadow runner
    hands it drafts (:meth:`record_draft`), so even building the event happens in the child.

    If the pipe is full (the child is starved), frames wait in a backlog here, in order, and
    go out with the next write; beyond ``backlog_bytes`` the caller waits for the child rather
    than lose an event. If the child dies, the next write starts a new one on the same
    journal (it sends what its predecessor journaled); frames the dead child had read but
    not yet journaled are lost, as they would be in a crash of a one-process publisher.

    ``publisher_options`` go to the child's :class:`Publisher` and must pickle (a
    ``producer_factory`` must be a module-level callable). ``stats`` and ``flush`` ask the
    child (a round trip; ``stats`` raises :class:`PublishError` when it gets no answer).

    ``pools``: a picklable zero-argument callable the child calls once, returning ``{"v1":
    pool, "v2": pool}`` or an object with ``.v1``/``.v2`` (``functools.partial(Simulator,
    seed=0)``); with it the child also runs the shadow executions a :class:`ShadowRunner`
    hands over (see ``producers.shadow.HostedShadows``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        journal_path: Path | None = None,
        backlog_bytes: int = 64 << 20,
        start_timeout: float = 60.0,
        pools: Callable[[], Any] | None = None,
        **publisher_options: Any,
    ) -> None:
        self.settings = settings
        #: Called once in the child: ``{"v1": pool, "v2": pool}`` to run shadows there.
        self._pools = pools
        self._reply_lock = threading.Lock()
        self._outcomes: dict[str, list[bool]] = {}
        self._hosted: dict[str, dict[str, Any]] = {}
        self._journal_path = journal_path or settings.cache_dir / "journal" / "publisher.jsonl"
        self._options = publisher_options
        self._backlog_limit = backlog_bytes
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._ask_lock = threading.Lock()
        self._backlog: deque[bytes | memoryview] = deque()
        self._backlog_bytes = 0
        self._fd = -1
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: _FrameReader | None = None
        self._closed = False
        self._started = False
        self._restarts = 0
        self._pickle_errors = 0

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> ProcessPublisher:
        with self._lock:
            if not self._started:
                self._spawn()
                self._started = True
                atexit.register(self._close_at_exit)
        return self

    def _spawn(self) -> None:
        """Start the child: a fresh interpreter (no re-import of ``__main__``, no fork of
        this process's threads) given the read end of the frame pipe and a reply pipe."""
        frames_read, frames_write = os.pipe()
        replies_read, replies_write = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(frames_write, _F_SETPIPE_SZ, _PIPE_BYTES)
        code = (
            "from producers.publisher import _child_main; "
            f"_child_main({frames_read}, {replies_write})"
        )
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", code],
                pass_fds=(frames_read, replies_write),
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(frames_read)
            os.close(replies_write)
        replies = _FrameReader(replies_read)
        try:
            # The child's imports first (sys.path), then its configuration.
            config = (self.settings, self._journal_path, self._options, self._pools)
            for message in (sys.path, config):
                data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
                _write_all(frames_write, _FRAME.pack(len(data)) + data)
            answer = replies.read(self._start_timeout)
        except OSError as exc:
            answer = ("failed", repr(exc))
        if answer is None or answer[0] != "started":
            process.kill()
            process.wait(5)
            replies.close()
            os.close(frames_write)
            why = "no answer" if answer is None else answer[1]
            raise PublishError(f"the publisher's child process did not start: {why}")
        os.set_blocking(frames_write, False)
        self._fd = frames_write
        self._process, self._replies = process, replies

    def _close_at_exit(self) -> None:
        self.close(timeout=2.0)

    def __enter__(self) -> ProcessPublisher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the caller's side ---------------------------------------------------------------

    def publish(self, event: OperationRecorded | RolloutDecided) -> None:
        """Queue an operation (key: correlation id) or a decision (key: session id)."""
        if not isinstance(event, OperationRecorded | RolloutDecided):
            raise TypeError(f"publish() takes OperationRecorded or RolloutDecided, not {event!r}")
        self._frame(("p", pack_event(event)))

    def send(self, topic: str, key: str | None, event: Event) -> None:
        """Queue any event for ``topic`` under ``key``. Never raises."""
        self._frame(("s", topic, key, pack_event(event)))

    def record_draft(self, draft: Draft, decision: RolloutDecided | None = None) -> None:
        """Queue an execution the child builds into an ``OperationRecorded`` and publishes
        (after ``decision``, the routing decision that sent it there, when given).

        Raises (pickle's errors) when the draft does not pickle: the runner then builds the
        event itself and publishes it.
        """
        packed = None if decision is None else pack_decision(decision)
        self._write(pickle.dumps(("d", draft, packed), pickle.HIGHEST_PROTOCOL))

    def _frame(self, message: tuple[Any, ...]) -> None:
        try:
            data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        except Exception:
            log.exception("publisher: cannot pass an event to the child process")
            with self._lock:
                self._pickle_errors += 1
            return
        self._write(data)

    def _write(self, data: bytes) -> None:
        frame = _FRAME.pack(len(data)) + data
        with self._lock:
            if self._closed or not self._started:
                state = "closed" if self._closed else "not started"
                log.error("publisher is %s: event not recorded", state)
                return
            self._backlog.append(frame)
            self._backlog_bytes += len(frame)
            self._drain(block=self._backlog_bytes > self._backlog_limit)

    def _drain(self, *, block: bool, deadline: float = float("inf")) -> bool:
        """Write the backlog to the pipe, in order (hold the lock); True when it is empty."""
        while self._backlog:
            head = self._backlog[0]
            try:
                written = os.write(self._fd, head)
            except BlockingIOError:
                if not block or time.monotonic() >= deadline:
                    return False
                select.select([], [self._fd], [], min(0.1, max(0.0, deadline - time.monotonic())))
                continue
            except OSError as exc:  # the child is gone: start another one, same journal
                self._restart(exc)
                continue
            self._backlog_bytes -= written
            if written == len(head):
                self._backlog.popleft()
            else:
                self._backlog[0] = memoryview(head)[written:]
        return True

    def _restart(self, why: BaseException) -> None:
        log.error("publisher: child process lost (%s); starting another on the journal", why)
        # A frame cut in the middle would be garbage to the new child: restart it whole.
        if self._backlog and isinstance(self._backlog[0], memoryview):
            self._backlog[0] = bytes(self._backlog[0])
        with contextlib.suppress(OSError):
            os.close(self._fd)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(5)
        if self._replies is not None:
            self._replies.close()
        self._restarts += 1
        self._spawn()
        for key, options in self._hosted.items():  # the new child hosts the same runners
            data = pickle.dumps(("open", key, options), pickle.HIGHEST_PROTOCOL)
            self._backlog.appendleft(_FRAME.pack(len(data)) + data)
            self._backlog_bytes += len(data) + _FRAME.size

    # -- shadows run by the child (``pools=``) ------------------------------------------------

    @property
    def runs_shadows(self) -> bool:
        """True when the child runs the shadow executions (it was given ``pools``)."""
        return self._pools is not None

    def open_shadows(self, key: str, options: Mapping[str, Any]) -> None:
        """A runner ``key`` will hand shadows over (``options``: its shadow settings)."""
        self._hosted[key] = dict(options)
        self._frame(("open", key, dict(options)))

    def submit_shadow(self, key: str, request: Any, args: Mapping[str, Any]) -> None:
        """Run one shadow in the child. Raises pickle's errors when ``args`` do not pickle."""
        self._write(pickle.dumps(("shadow", key, request, args), pickle.HIGHEST_PROTOCOL))

    def breaker_outcomes(self, key: str) -> list[bool]:
        """Outcomes (failed?) of V2 shadows the child ran for ``key`` since the last look.

        Never waits: when another thread is reading the child's answers, the outcomes it
        reads are kept for the next look.
        """
        replies = self._replies
        if replies is not None and self._reply_lock.acquire(blocking=False):
            try:
                while (message := replies.read_ready()) is not _NOTHING:
                    if message is None:
                        break
                    if message[0] == "outcome":
                        self._outcomes.setdefault(message[1], []).append(message[2])
            finally:
                self._reply_lock.release()
        outcomes = self._outcomes.get(key)
        if not outcomes:
            return []
        self._outcomes[key] = []
        return outcomes

    def shadow_stats(self, key: str) -> tuple[Any, int]:
        """The child's counters for runner ``key`` and its shadows in flight."""
        answer = self._ask(("shadow_stats", key), 10.0)
        return (None, 0) if answer is None else (answer[1], answer[2])

    def close_shadows(self, key: str, timeout: float) -> Any:
        """Wait up to ``timeout`` for runner ``key``'s shadows in the child; their counters."""
        self._hosted.pop(key, None)
        answer = self._ask(("shadow_close", key, timeout), timeout + 10.0)
        return None if answer is None else answer[1]

    # -- asking the child ------------------------------------------------------------------

    def _ask(self, request: tuple[Any, ...], timeout: float) -> Any:
        """Send a request behind everything written so far; the child's answer (None: none)."""
        deadline = time.monotonic() + timeout
        data = pickle.dumps(request, pickle.HIGHEST_PROTOCOL)
        with self._ask_lock:  # one request at a time: answers come in order
            with self._lock:
                if not self._started or self._replies is None:
                    return None
                self._backlog.append(_FRAME.pack(len(data)) + data)
                self._backlog_bytes += len(data) + _FRAME.size
                if not self._drain(block=True, deadline=deadline):
                    return None
                replies = self._replies
            # Callers keep writing meanwhile: only the lock above is theirs too.
            with self._reply_lock:
                while True:
                    answer = replies.read(max(0.0, deadline - time.monotonic()) + 5.0)
                    if answer is None or answer[0] != "outcome":
                        return answer
                    self._outcomes.setdefault(answer[1], []).append(answer[2])

    def flush(self, timeout: float) -> bool:
        """Wait until everything published so far is in Kafka (False on timeout)."""
        answer = self._ask(("flush", timeout), timeout)
        return bool(answer is not None and answer[1])

    @property
    def stats(self) -> PublisherStats:
        answer = self._ask(("stats",), 10.0)
        with self._lock:
            waiting = len(self._backlog)
        if answer is None:
            raise PublishError("the publisher's child process did not answer within 10 s")
        stats: PublisherStats = answer[1]
        return dataclasses.replace(stats, pending=stats.pending + waiting)

    @property
    def journal_path(self) -> Path:
        return self._journal_path

    @property
    def restarts(self) -> int:
        """How many times the child process had to be started again."""
        return self._restarts

    def close(self, timeout: float = 10.0) -> PublisherStats:
        """Deliver what can be delivered within ``timeout``; the child keeps the rest journaled."""
        if self._closed or not self._started:
            self._closed = True
            return PublisherStats(0, 0, 0, 0, 0, 0, 0, 0, 0, False)
        atexit.unregister(self._close_at_exit)
        answer = self._ask(("close", timeout), timeout + 10.0)
        with self._lock:
            self._closed = True
            with contextlib.suppress(OSError):
                os.close(self._fd)
            process = self._process
        if process is not None:
            try:
                process.wait(timeout + 10.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._replies is not None:
            self._replies.close()
        if answer is None:
            log.error("publisher: the child process did not report on close")
            return PublisherStats(0, 0, 0, 0, 0, 0, 0, 0, len(self._backlog), False)
        stats: PublisherStats = answer[1]
        return stats


_NOTHING: Any = object()
#: How often the child looks at its pipe (it sleeps between looks; see _FrameReader.poll).
_CHILD_POLL = 0.005
#: The child's niceness (``MIGRATION_LEDGER_PUBLISHER_NICE`` overrides it).
_CHILD_NICE = 0


class _FrameReader:
    """Length-prefixed pickles from a pipe, with a timeout per frame."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = bytearray()

    def buffered(self) -> Any:
        """The next message already read, or :data:`_NOTHING`."""
        if len(self._buffer) >= _FRAME.size:
            (size,) = _FRAME.unpack_from(self._buffer)
            if len(self._buffer) >= _FRAME.size + size:
                data = bytes(self._buffer[_FRAME.size : _FRAME.size + size])
                del self._buffer[: _FRAME.size + size]
                return pickle.loads(data)
        return _NOTHING

    def poll(self, interval: float) -> bool:
        """Read what the pipe holds, sleeping ``interval`` first when it holds nothing; False
        at end of file. Never *waits on* the pipe: a writer's ``write`` then wakes nobody, so
        the writing thread is not preempted by this process at every event it writes."""
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                time.sleep(interval)
                return True
            except InterruptedError:
                continue
            if not chunk:
                return False
            self._buffer += chunk
            if len(chunk) < 1 << 20:
                return True

    def read_ready(self) -> Any:
        """The next message if one can be had without waiting, else :data:`_NOTHING`."""
        while True:
            message = self.buffered()
            if message is not _NOTHING:
                return message
            if not select.select([self.fd], [], [], 0)[0]:
                return _NOTHING
            try:
                chunk = os.read(self.fd, 1 << 16)
            except OSError:
                return None
            if not chunk:
                return None
            self._buffer += chunk

    def read(self, timeout: float | None) -> Any:
        """The next message; None at end of file or when ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            message = self.buffered()
            if message is not _NOTHING:
                return message
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                    return None
            try:
                chunk = os.read(self.fd, 1 << 16)
            except InterruptedError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            self._buffer += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _child_main(frames: int, replies: int) -> None:
    """The child of a :class:`ProcessPublisher`: read frames, build, publish; answer requests."""
    # Late imports: the child alone needs them, and producers.shadow imports this module.
    import signal
    import uuid

    from producers.shadow import HostedShadows, build_operation

    # A terminal's Ctrl-C reaches the whole process group: the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reader = _FrameReader(frames)
    niceness = int(os.environ.get("MIGRATION_LEDGER_PUBLISHER_NICE", _CHILD_NICE))
    with contextlib.suppress(OSError, AttributeError):
        # Batch scheduling: this process never preempts the caller's on waking up, and
        # a lower priority: on a busy machine the caller's threads get the CPU first.
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        os.nice(niceness)

    answer_lock = threading.Lock()

    def answer(message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with answer_lock:  # shadow threads report outcomes too
            _write_all(replies, _FRAME.pack(len(data)) + data)

    sys.path[:] = reader.read(None)
    try:
        settings, journal_path, options, pools_factory = reader.read(None)
        publisher = Publisher(settings, journal_path=journal_path, **options).start()
        pools = pools_factory() if pools_factory is not None else None
        if pools is not None and not isinstance(pools, Mapping):
            pools = {"v1": pools.v1, "v2": pools.v2}  # a Simulator, say
    except Exception as exc:
        answer(("failed", repr(exc)))
        return
    answer(("started",))
    hosts: dict[str, HostedShadows] = {}

    def reporter(key: str) -> Callable[[bool], None]:
        return lambda failed: answer(("outcome", key, failed))

    def new_id() -> str:
        return uuid.uuid4().hex

    os.set_blocking(frames, False)
    while True:
        message = reader.buffered()
        if message is _NOTHING:
            if not reader.poll(_CHILD_POLL):
                break  # the parent is gone: journal what we have and stop
            continue
        kind = message[0]
        try:
            if kind == "d":
                if message[2] is not None:
                    publisher.publish(unpack_decision(message[2]))
                event = build_operation(message[1], new_id)
                if event is not None:
                    publisher.publish(event)
            elif kind == "p":
                publisher.publish(unpack_event(message[1]))  # type: ignore[arg-type]
            elif kind == "s":
                publisher.send(message[1], message[2], unpack_event(message[3]))
            elif kind == "flush":
                answer(("flush", publisher.flush(message[1])))
            elif kind == "stats":
                answer(("stats", publisher.stats))
            elif kind == "shadow":
                hosts[message[1]].submit(message[2], message[3])
            elif kind == "open":
                if pools is None:
                    raise ValueError("shadows handed over, but this publisher has no pools")
                hosts[message[1]] = HostedShadows(
                    pools, publisher, reporter(message[1]), **message[2]
                )
            elif kind == "shadow_stats":
                host = hosts.get(message[1])
                in_flight = host.shadows_in_flight if host is not None else 0
                answer(("shadow_stats", host.stats if host else None, in_flight))
            elif kind == "shadow_close":
                host = hosts.pop(message[1], None)
                answer(("shadow_close", host.close(message[2]) if host else None))
            elif kind == "close":
                for host in hosts.values():
                    host.close(min(message[1], 5.0))
                answer(("close", publisher.close(message[1])))
                return
        except Exception:
            log.exception("publisher child: could not handle a %r frame", kind)
    publisher.close(10.0)
