"""Producers on the real broker: exactly once, through an outage, and the flag log tailed.

The outage test runs its own broker on free ports (so stopping it never disturbs the shared
one), stops it for about 30 s in the middle of a simulated run and starts it again.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.events import OperationRecorded, RolloutDecided, decode_event
from ledger.settings import Settings
from producers.publisher import ProcessPublisher, Publisher
from producers.shadow import PoolError, Route, ShadowRunner, is_skipped_shadow
from producers.simulator import Simulator, Workload

CreateTopics = Callable[[dict[str, int]], None]


def _read_all(bootstrap: str, topic: str, *, expect: int, timeout: float) -> list[Any]:
    """Every record of ``topic`` from the beginning, once at least ``expect`` arrived."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if len(records) >= expect:
                # One more poll: anything beyond ``expect`` would be a duplicate.
                for batch in consumer.poll(timeout_ms=1000).values():
                    records.extend(batch)
                break
        return records
    finally:
        consumer.close()


class V1Router:
    """Shadow mode as the flag defaults have it: V1 answers, V2 shadows every call."""

    def route(
        self,
        session_id: str | None,
        *,
        correlation_id: str,
        environment: str | None = None,
        breaker_open: bool = False,  # V1 only: an open breaker changes nothing here
    ) -> Route:
        from datetime import UTC, datetime

        from ledger.events import DecisionReason

        return Route(
            RolloutDecided(
                event_id=f"d-{correlation_id}",
                flag="v2_migration",
                session_id=session_id,
                correlation_id=correlation_id,
                environment=environment,
                pool="v1",
                reason=DecisionReason.DISABLED,
                bucket=0,
                threshold_bp=0,
                flag_version=0,
                at=datetime.now(UTC),
            ),
            shadow=True,
        )


def test_published_events_are_read_back_exactly_once_under_their_keys(
    settings: Settings, create_topics: CreateTopics, tmp_path: Path
) -> None:
    create_topics({settings.topic("operations"): 4, settings.topic("decisions"): 4})
    sim = Simulator(seed=1)
    with Publisher(settings, journal_path=tmp_path / "journal.jsonl") as publisher:
        runner = ShadowRunner(sim.v1, sim.v2, V1Router(), publisher)
        for call in Workload(seed=1, sessions=20).calls(300):
            # A simulated pool's own failure reaches the caller, and is recorded like any other.
            with contextlib.suppress(PoolError):
                runner.run(call.operation, call.args, call.session_id)
        shadow_stats = runner.close()
        assert publisher.flush(30)
        stats = publisher.stats

    operations = _read_all(
        settings.bootstrap_servers, settings.topic("operations"), expect=600, timeout=30
    )
    decisions = _read_all(
        settings.bootstrap_servers, settings.topic("decisions"), expect=300, timeout=30
    )
    events = [decode_event(r.value, OperationRecorded) for r in operations]
    assert len(events) == 600
    assert len({e.event_id for e in events}) == 600
    assert all(r.key.decode() == e.correlation_id for r, e in zip(operations, events, strict=True))
    assert Counter(Counter(e.correlation_id for e in events).values()) == {2: 300}
    assert Counter(e.role for e in events) == {"primary": 300, "shadow": 300}
    # The simulated V2 fails often enough to open its breaker: the shadows it skipped are
    # recorded (``shadow_skipped``) rather than missing, so every call still has two halves.
    skipped = [e for e in events if is_skipped_shadow(e)]
    assert len(skipped) == shadow_stats.shadow_circuit_open + shadow_stats.shadow_dropped
    assert len(decisions) == 300
    assert (stats.delivered, stats.failed, stats.pending) == (900, 0, 0)


# -- the outage ---------------------------------------------------------------------------------


@pytest.fixture
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A broker of this test's own, on free ports, that the test may stop and start."""
    from ledger.kafka.broker import LocalBroker, free_ports

    port, controller_port = free_ports(2)
    broker = LocalBroker(
        Settings().cache_dir,
        port=port,
        controller_port=controller_port,
        state_root=tmp_path_factory.mktemp("private-broker"),
    )
    broker.up(timeout=120.0, die_with_parent=True)
    try:
        yield broker
    finally:
        broker.down()


class Callers:
    """Threads issuing operations through the runner at a steady pace, like an application.

    Records every exception that reached a caller and how long each call took.
    """

    def __init__(self, runner: ShadowRunner, workload: Workload, *, threads: int = 2) -> None:
        self.runner = runner
        self.workload = workload
        self.pool_errors = 0
        self.other_errors: list[BaseException] = []
        self.durations: list[float] = []
        self.issued = 0
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _loop(self) -> None:
        interval = len(self._threads) / self.workload.rate
        while not self._stop.is_set():
            with self._lock:
                n = self._next
                self._next += 1
            call = self.workload.call(n)
            started = time.monotonic()
            try:
                self.runner.run(call.operation, call.args, call.session_id)
            except PoolError:
                with self._lock:
                    self.pool_errors += 1
            except BaseException as exc:
                with self._lock:
                    self.other_errors.append(exc)
            elapsed = time.monotonic() - started
            with self._lock:
                self.durations.append(elapsed)
                self.issued += 1
            self._stop.wait(max(0.0, interval - elapsed))


@pytest.mark.parametrize("where", ["threads", "child"])
def test_with_the_broker_down_for_30_s_every_operation_arrives_exactly_once_afterwards(
    private_broker: Any, topic_prefix: str, tmp_path: Path, where: str
) -> None:
    """``threads``: the publisher and the shadows on the caller's process; ``child``: both in
    the ProcessPublisher's child process (the caller's process only writes a pipe)."""
    from kafka import KafkaAdminClient

    settings = Settings(bootstrap_servers=private_broker.bootstrap, topic_prefix=topic_prefix)
    admin = KafkaAdminClient(bootstrap_servers=private_broker.bootstrap)
    admin.create_topics(
        {
            settings.topic("operations"): {"num_partitions": 4, "replication_factor": 1},
            settings.topic("decisions"): {"num_partitions": 4, "replication_factor": 1},
        },
        wait_for_metadata=True,
    )
    admin.close()

    sim = Simulator(seed=3)
    journal = tmp_path / "journal.jsonl"
    publisher: Publisher | ProcessPublisher
    if where == "threads":
        publisher = Publisher(settings, journal_path=journal).start()
    else:
        pools = functools.partial(Simulator, seed=3)
        publisher = ProcessPublisher(settings, journal_path=journal, pools=pools).start()
    runner = ShadowRunner(sim.v1, sim.v2, V1Router(), publisher)
    callers = Callers(runner, Workload(seed=3, sessions=50, rate=40.0))
    callers.start()
    try:
        time.sleep(5)
        private_broker.down()
        down_at = time.monotonic()
        issued_before_outage = callers.issued
        time.sleep(30)
        assert not publisher.stats.online
        assert publisher.stats.pending > 0
        private_broker.up(timeout=120.0, die_with_parent=True)
        outage = time.monotonic() - down_at
        time.sleep(5)
    finally:
        callers.stop()
    runner.close(timeout=10)
    delivered_all = publisher.flush(120)
    stats = publisher.close(timeout=5)

    assert delivered_all, f"still pending: {stats}"
    assert callers.other_errors == []
    assert callers.pool_errors == sum(sim.v1.counts()["errors"].values())
    assert callers.issued > issued_before_outage + 30 * 40 * 0.5  # kept working throughout
    expected = callers.issued * 2  # primary + shadow for every operation
    records = _read_all(
        settings.bootstrap_servers, settings.topic("operations"), expect=expected, timeout=60
    )
    ids = Counter(decode_event(r.value, OperationRecorded).event_id for r in records)
    assert len(ids) == expected
    assert max(ids.values()) == 1, "an operation reached the topic twice"
    assert stats.deferred > 0
    assert stats.outages >= 1
    slowest = max(callers.durations)
    print(
        f"\noutage {outage:.0f} s; {callers.issued} operations; {stats}; "
        f"slowest call {slowest * 1000:.1f} ms"
    )
    # The bound on the caller's path: a call that waited on Kafka would take >= max_block_ms
    # (1 s) or the bootstrap timeout (2 s); simulated pools answer without sleeping.
    assert slowest < 1.0


# -- the flag client and the simulate command on the real broker ----------------------------------


def _flag_changes(flag: str, *commands: dict[str, Any]) -> list[Any]:
    import json
    from datetime import UTC, datetime

    from ledger import flags

    state = flags.initial_state(flag)
    out = []
    for index, fields in enumerate(commands):
        data = {"command_id": f"cmd-{index}", "flag": flag, "actor": "test", "reason": "test"}
        command = flags.decode_command(json.dumps({**data, **fields}).encode())
        event = flags.decide_command(state, command, at=datetime.now(UTC), event_id=f"fe-{index}")
        state = flags.apply(state, event)
        out.append(event)
    return out


def test_the_flag_client_follows_flag_events_as_they_are_appended(
    settings: Settings, create_topics: CreateTopics
) -> None:
    from kafka import KafkaProducer

    from ledger.events import encode_event
    from producers.flag_client import FlagClient

    create_topics({settings.topic("flag_events"): 1})
    events = _flag_changes(
        settings.flag,
        {"command": "enable"},
        {"command": "set_percentage", "percentage_bp": 10_000},
    )
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    producer.send(
        settings.topic("flag_events"), key=settings.flag.encode(), value=encode_event(events[0])
    ).get(30)
    with FlagClient(settings, environ={}) as client:
        assert client.wait_until_version(1, timeout=30)
        assert client.decide("s-1").pool == "v1"  # enabled, still 0 %
        producer.send(
            settings.topic("flag_events"),
            key=settings.flag.encode(),
            value=encode_event(events[1]),
        ).get(30)
        assert client.wait_until_version(2, timeout=30)
        assert client.decide("s-1").pool == "v2"
        deadline = time.monotonic() + 10
        while client.staleness() > 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.staleness() <= 2
    producer.close()


def test_simulate_drives_traffic_to_the_topics_and_prints_a_summary(
    settings: Settings, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from ledger.cli.app import app

    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--operations",
            "200",
            "--rate",
            "400",
            "--sessions",
            "20",
            "--seed",
            "4",
            "--incident",
            "v2:error_rate*5@0.2s",
            "--journal",
            str(tmp_path / "journal.jsonl"),
            "--bootstrap-servers",
            settings.bootstrap_servers,
            "--topic-prefix",
            settings.topic_prefix,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Simulation summary" in result.output
    records = _read_all(
        settings.bootstrap_servers, settings.topic("operations"), expect=400, timeout=30
    )
    events = [decode_event(r.value, OperationRecorded) for r in records]
    assert len({e.event_id for e in events}) == len(events) == 400
    assert Counter(e.role for e in events) == {"primary": 200, "shadow": 200}


def test_events_journaled_by_a_process_that_never_reached_kafka_are_sent_by_the_next_one(
    settings: Settings, create_topics: CreateTopics, tmp_path: Path
) -> None:
    create_topics({settings.topic("operations"): 4, settings.topic("decisions"): 4})
    journal = tmp_path / "journal.jsonl"
    offline = Settings(bootstrap_servers="127.0.0.1:1", topic_prefix=settings.topic_prefix)
    first = Publisher(offline, journal_path=journal).start()
    sim = Simulator(seed=5)
    runner = ShadowRunner(sim.v1, sim.v2, V1Router(), first)
    for call in Workload(seed=5).calls(50):
        with contextlib.suppress(PoolError):
            runner.run(call.operation, call.args, call.session_id)
    runner.close()
    left = first.close(timeout=1)
    assert left.pending == 150  # 50 decisions + 100 executions, all in the journal

    with Publisher(settings, journal_path=journal) as second:
        assert second.flush(60)
        assert second.stats.replayed == 150

    records = _read_all(
        settings.bootstrap_servers, settings.topic("operations"), expect=100, timeout=30
    )
    ids = Counter(decode_event(r.value, OperationRecorded).event_id for r in records)
    assert len(ids) == 100
    assert set(ids.values()) == {1}
