"""What the ``flags`` commands need: publish a command, wait for its answer, read the log.

Synchronous (kafka-python): a command line has nothing else to do while it waits. The answer
is found by its ``command_id`` on the flag log, read from the log's end as it was just before
the command was published, so no earlier answer is mistaken for it.
"""

from __future__ import annotations

import time
from typing import Any

from ledger import wire
from ledger.errors import BrokerError, EventDecodeError, LedgerError, PublishError
from ledger.events import CommandRejected, FlagChanged
from ledger.settings import Settings

__all__ = ["NoAnswer", "read_log", "submit"]

Answer = FlagChanged | CommandRejected


class NoAnswer(LedgerError, TimeoutError):
    """The flag log writer did not answer in time (is ``migration-ledger worker`` running?)."""


def _consumer(settings: Settings) -> tuple[Any, Any]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=15_000,
        )
    except KafkaError as exc:
        raise BrokerError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc
    tp = TopicPartition(settings.topic("flag_events"), 0)
    consumer.assign([tp])
    return consumer, tp


def _answers(records: list[Any]) -> list[tuple[int, Answer]]:
    found = []
    for record in records:
        try:
            event = wire.decode(record.value, "flag_events")
        except EventDecodeError:
            continue  # not ours to judge here; `migration-ledger check` reports it
        if isinstance(event, FlagChanged | CommandRejected):
            found.append((record.offset, event))
    return found


def read_log(settings: Settings, *, flag: str | None = None, timeout: float = 60.0) -> list[Answer]:
    """Every FlagChanged / CommandRejected on the flag log, in log order."""
    consumer, tp = _consumer(settings)
    try:
        start = consumer.beginning_offsets([tp])[tp]
        end = consumer.end_offsets([tp])[tp]
        consumer.seek(tp, start)  # explicit offsets: no lazy reset policy in between
        events: list[Answer] = []
        read_to = start
        deadline = time.monotonic() + timeout
        while read_to < end:
            if time.monotonic() > deadline:
                raise BrokerError(f"read {read_to - start} of {end - start} records of {tp.topic}")
            batch = consumer.poll(timeout_ms=1000, max_records=10_000)
            records = batch.get(tp, [])
            if records:
                read_to = records[-1].offset + 1
            for _, event in _answers(records):
                if flag is None or event.flag == flag:
                    events.append(event)
        return events
    finally:
        consumer.close()


def submit(settings: Settings, command: Any, *, timeout: float = 30.0) -> Answer:
    """Publish a ``ledger.flags`` command and return the writer's answer to it."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from ledger import flags

    consumer, tp = _consumer(settings)
    try:
        start = consumer.end_offsets([tp])[tp]
        consumer.seek(tp, start)
        try:
            producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
            producer.send(
                settings.topic("flag_commands"),
                key=command.flag.encode(),
                value=flags.encode_command(command),
            ).get(timeout=timeout)
            producer.close()
        except KafkaError as exc:
            raise PublishError(f"could not publish the command: {exc}") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500, max_records=1000)
            for _, event in _answers(batch.get(tp, [])):
                if event.command_id == command.command_id:
                    return event
        raise NoAnswer(
            f"no answer to command {command.command_id} on {tp.topic} within {timeout:g} s; "
            "is `migration-ledger worker` running?"
        )
    finally:
        consumer.close()
