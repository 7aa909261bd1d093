"""The publisher against a fake Kafka: nothing lost, nothing doubled, order kept, caller spared."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from producer_fakes import (
    FakeBroker,
    KafkaTimeoutError,
    decision,
    operation,
    producer_factory,
)

from ledger.events import encode_event
from ledger.settings import Settings
from producers.publisher import Publisher

MakePublisher = Callable[..., Publisher]


@pytest.fixture
def broker() -> FakeBroker:
    return FakeBroker()


@pytest.fixture
def make_publisher(
    settings: Settings, tmp_path: Path, broker: FakeBroker
) -> Iterator[MakePublisher]:
    made: list[Publisher] = []

    def make(**options: object) -> Publisher:
        options.setdefault("journal_path", tmp_path / "journal.jsonl")
        options.setdefault("producer_factory", producer_factory(broker))
        options.setdefault("ack_timeout", 0.2)
        options.setdefault("retry_backoff", (0.01, 0.05))
        publisher = Publisher(settings, **options)  # type: ignore[arg-type]
        made.append(publisher)
        return publisher

    yield make
    for publisher in made:
        publisher.close(timeout=1)


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.01)


def test_operations_and_decisions_go_to_their_topics_under_their_keys(
    make_publisher: MakePublisher, broker: FakeBroker, settings: Settings
) -> None:
    publisher = make_publisher().start()
    events = [operation(1), decision(2), decision(3)]
    for event in events:
        publisher.publish(event)  # type: ignore[arg-type]

    assert publisher.flush(10)
    assert broker.records == [
        (settings.topic("operations"), b"c-1", encode_event(events[0])),
        (settings.topic("decisions"), b"s-2", encode_event(events[1])),
        (settings.topic("decisions"), b"c-3", encode_event(events[2])),  # anonymous: correlation
    ]
    assert publisher.stats.delivered == 3


def test_while_kafka_is_away_events_wait_in_the_journal_and_arrive_once_in_order(
    make_publisher: MakePublisher, broker: FakeBroker
) -> None:
    publisher = make_publisher().start()
    publisher.publish(operation(0))
    assert publisher.flush(10)
    broker.reachable = False
    events = [operation(n) for n in range(1, 301)]
    for event in events:
        publisher.publish(event)

    assert not publisher.flush(0.5)
    stats = publisher.stats
    assert not stats.online
    assert stats.pending == 300
    assert stats.outages == 1
    broker.reachable = True

    assert publisher.flush(10)
    assert broker.values()[1:] == [encode_event(e) for e in events]
    stats = publisher.stats
    assert (stats.delivered, stats.deferred, stats.pending, stats.online) == (301, 300, 0, True)


def test_a_publisher_started_while_kafka_is_down_journals_and_delivers_later(
    make_publisher: MakePublisher, broker: FakeBroker
) -> None:
    broker.reachable = False
    publisher = make_publisher().start()
    events = [operation(n) for n in range(50)]
    for event in events:
        publisher.publish(event)
    _until(lambda: broker.producers_created >= 2)  # it keeps trying to connect
    assert broker.records == []
    broker.reachable = True

    assert publisher.flush(10)
    assert broker.values() == [encode_event(e) for e in events]


def test_events_left_by_a_stopped_process_are_sent_first_after_a_restart(
    make_publisher: MakePublisher, broker: FakeBroker, tmp_path: Path
) -> None:
    broker.reachable = False
    first = make_publisher().start()
    before = [operation(n) for n in range(20)]
    for event in before:
        first.publish(event)
    stats = first.close(timeout=0.3)
    assert stats.pending == 20
    assert broker.records == []

    broker.reachable = True
    second = make_publisher()
    after = [operation(n) for n in range(20, 25)]
    for event in after:
        second.publish(event)  # queued before start: still behind the earlier run's events
    second.start()

    assert second.flush(10)
    assert broker.values() == [encode_event(e) for e in before + after]
    assert second.stats.replayed == 20


def test_a_record_kafka_refuses_for_good_is_counted_kept_aside_and_does_not_block_others(
    make_publisher: MakePublisher, broker: FakeBroker, tmp_path: Path
) -> None:
    events = [operation(n) for n in range(5)]
    broker.refuse.add(encode_event(events[2]))
    publisher = make_publisher().start()
    for event in events:
        publisher.publish(event)

    assert publisher.flush(10)
    assert broker.values() == [encode_event(e) for i, e in enumerate(events) if i != 2]
    assert publisher.stats.failed == 1
    kept = (tmp_path / "journal.jsonl.failed").read_text().splitlines()
    assert [json.loads(line)["value"]["event_id"] for line in kept] == [events[2].event_id]


def test_transient_delivery_failures_are_retried_without_duplicating_what_went_through(
    make_publisher: MakePublisher, broker: FakeBroker
) -> None:
    broker.flaky = 3
    publisher = make_publisher().start()
    events = [operation(n) for n in range(10)]
    for event in events:
        publisher.publish(event)

    assert publisher.flush(10)
    # Kafka orders per partition: records that went through first are not sent again.
    assert sorted(broker.values()) == sorted(encode_event(e) for e in events)
    assert publisher.stats.retried >= 3


def test_a_full_buffer_spills_to_the_journal_in_order_instead_of_dropping(
    make_publisher: MakePublisher, broker: FakeBroker
) -> None:
    publisher = make_publisher(buffer_size=4)  # not started: nothing drains the buffer
    events = [operation(n) for n in range(11)]
    for event in events:
        publisher.publish(event)
    # Each spill moves the 4 oldest buffered events to the journal to make room.
    assert publisher.stats.spilled == 8
    publisher.start()

    assert publisher.flush(10)
    assert broker.values() == [encode_event(e) for e in events]


def test_metadata_timeouts_in_the_producer_never_reach_the_caller(
    make_publisher: MakePublisher, broker: FakeBroker
) -> None:
    calls = {"n": 0}
    real_factory = producer_factory(broker)

    def factory() -> object:
        producer = real_factory()
        real_send = producer.send

        def send(topic: str, value: bytes, key: bytes | None) -> object:
            calls["n"] += 1
            if calls["n"] <= 3:
                raise KafkaTimeoutError("Failed to update metadata after 1.0 secs")
            return real_send(topic, value=value, key=key)

        producer.send = send
        return producer

    publisher = make_publisher(producer_factory=factory).start()
    events = [operation(n) for n in range(5)]
    for event in events:
        publisher.publish(event)

    assert publisher.flush(10)
    assert broker.values() == [encode_event(e) for e in events]
    assert publisher.stats.outages == 1


def test_publishing_after_close_is_counted_not_raised(make_publisher: MakePublisher) -> None:
    publisher = make_publisher().start()
    publisher.close(timeout=1)
    publisher.publish(operation(1))
    assert publisher.stats.failed == 1


def test_only_operations_and_decisions_can_be_published(make_publisher: MakePublisher) -> None:
    publisher = make_publisher()
    with pytest.raises(TypeError, match="OperationRecorded or RolloutDecided"):
        publisher.publish("not an event")  # type: ignore[arg-type]


def test_publish_returns_while_the_producer_is_stuck_connecting(
    make_publisher: MakePublisher, broker: FakeBroker
) -> None:
    """kafka-python may block for seconds (bootstrap, metadata); only the sender thread waits."""
    release = threading.Event()
    entered = threading.Event()

    def stuck_factory() -> object:
        entered.set()
        release.wait(10)
        return producer_factory(broker)()

    publisher = make_publisher(producer_factory=stuck_factory).start()
    publisher.publish(operation(0))
    assert entered.wait(5)
    for n in range(1, 1001):
        publisher.publish(operation(n))  # would hang here if publish waited for Kafka

    assert not release.is_set()
    assert publisher.stats.published == 1001
    release.set()
    assert publisher.flush(10)
    assert len(broker.records) == 1001


def test_the_counters_are_exposed_to_prometheus_at_scrape_time(
    make_publisher: MakePublisher, broker: FakeBroker
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    publisher = make_publisher().start()
    publisher.register_metrics(registry)
    publisher.publish(operation(1))
    assert publisher.flush(10)

    text = generate_latest(registry).decode()
    assert 'migration_ledger_publisher_events_total{state="delivered"} 1.0' in text
    assert "migration_ledger_publisher_online 1.0" in text


def test_an_event_the_sink_would_refuse_is_refused_at_publish_and_counted(
    make_publisher: MakePublisher, broker: FakeBroker, settings: Settings
) -> None:
    publisher = make_publisher().start()
    # Valid as a Python object, but its JSON is outside the double range: the worker and the
    # sink would dead-letter it, so it never leaves the process (issue 12).
    refused = operation(1).model_copy(update={"result": {"n": 10**400}})
    fine = operation(2)
    publisher.publish(refused)
    publisher.publish(fine)
    assert publisher.flush(10)
    assert broker.records == [(settings.topic("operations"), b"c-2", encode_event(fine))]
    stats = publisher.close()
    assert (stats.refused, stats.failed, stats.delivered) == (1, 1, 1)
