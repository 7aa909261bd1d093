"""The sink on the real broker: crashes, readers meanwhile, a broker restart.

The restart is of the session's broker (``restartable_broker`` in tests/conftest.py): one
broker per test run, restarted here rather than a second one started for this test.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger.events import Event, encode_event
from ledger.kafka.admin import ensure_topics
from ledger.kafka.broker import LocalBroker
from ledger.settings import Settings
from ledger.store import EVENT_TABLE, TABLES, open_reader
from ledger.store.layout import Layout
from tests.unit.store_factories import (
    comparison,
    decision,
    every_type,
    flag_changed,
    health,
    operation,
)

CLI = str(Path(sys.executable).parent / "migration-ledger")

#: Event type -> the logical topic it is published on.
TOPIC_OF = {
    "OperationRecorded": "operations",
    "ComparisonRecorded": "comparisons",
    "FlagChanged": "flag_events",
    "CommandRejected": "flag_events",
    "RolloutDecided": "decisions",
    "HealthAssessed": "health",
    "RollbackTriggered": "health",
    "SwitchoverRecorded": "health",
    "GateVerdict": "health",
    "BreakerStateChanged": "health",
    "DeadLettered": "dead_letters",
}

Message = tuple[str, bytes | None, bytes]


class Stream:
    """Messages for every ledger topic: events of every type, repeats and garbage."""

    def __init__(self, settings: Settings, n: int, *, seed: int = 7) -> None:
        rng = random.Random(seed)
        events: list[Event] = list(every_type(4))
        for i in range(1_000, 1_000 + n):  # ids apart from every_type's
            events += [operation(i, "v1"), operation(i, "v2"), comparison(i), decision(i)]
            if i % 50 == 0:
                events.append(health(i))
        events += [flag_changed(v) for v in range(5, 5 + n // 100)]
        self.events = events
        self.messages: list[Message] = []
        for event in events:
            topic = settings.topic(TOPIC_OF[event.type])  # type: ignore[attr-defined]
            # Operations are keyed by correlation id, as the wire contract requires (their two
            # halves meet in one partition); everything else by its own id.
            key = getattr(event, "correlation_id", None) if topic.endswith("operations") else None
            message = (topic, (key or event.event_id).encode(), encode_event(event))
            self.messages.append(message)
            if rng.random() < 0.05:  # a producer's retry: the same event again, later
                self.messages.insert(rng.randrange(len(self.messages)), message)
        self.garbage = 0
        for logical in ("operations", "decisions", "health"):
            for k in range(3):
                spot = rng.randrange(len(self.messages))
                self.messages.insert(spot, (settings.topic(logical), None, b"{not json %d" % k))
                self.garbage += 1

    def expected(self) -> dict[str, int]:
        distinct: dict[str, set[str]] = {name: set() for name in TABLES}
        for event in self.events:
            distinct[EVENT_TABLE[event.type]].add(event.event_id)  # type: ignore[attr-defined]
        counts = {name: len(ids) for name, ids in distinct.items()}
        counts["dead_letters"] += self.garbage
        return counts


def publish(bootstrap: str, messages: list[Message]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    try:
        for topic, key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=60)
    finally:
        producer.close()


def stored(path: Path) -> dict[str, int]:
    con = open_reader(path)
    try:
        return {name: con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0] for name in TABLES}
    finally:
        con.close()


def until(done: Callable[[], bool], *, timeout: float, what: str, sink: Sink | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink is not None:
            sink.assert_running()
        if done():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{sink.tail()}" if sink else ""))


class Sink:
    """``migration-ledger sink`` as a subprocess."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.log = workdir / "sink.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *args: str) -> Sink:
        env = {
            **os.environ,
            "MIGRATION_LEDGER_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
            "MIGRATION_LEDGER_TOPIC_PREFIX": self.settings.topic_prefix,
            "MIGRATION_LEDGER_DUCKDB": str(self.settings.duckdb),
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [CLI, "sink", *args], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"sink ignored SIGTERM:\n{self.tail()}") from None

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"sink did not finish:\n{self.tail()}") from None

    def assert_running(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"sink exited {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def segment_count(path: Path) -> int:
    layout = Layout(path)
    return len(layout.list_segments()) if layout.exists() else 0


def end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in {settings.topic(t) for t in TOPIC_OF.values()}
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        return {(tp.topic, tp.partition): end for tp, end in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def test_sink_killed_mid_stream_and_restarted_stores_each_distinct_event_once(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    stream = Stream(settings, 1_500)
    half = len(stream.messages) // 2
    publish(settings.bootstrap_servers, stream.messages[:half])
    args = ("--quiet", "--batch-size", "300", "--batch-seconds", "0.2", "--compact-every", "1")
    ledger = settings.duckdb
    for round_ in range(3):
        with Sink(settings, tmp_path).start(*args) as sink:
            seen = segment_count(ledger)
            until(
                lambda: segment_count(ledger) >= seen + 3,  # noqa: B023
                timeout=90,
                what="new segments",
                sink=sink,
            )
            sink.kill()  # SIGKILL: mid-batch, mid-rename or mid-compaction
        if round_ == 0:
            publish(settings.bootstrap_servers, stream.messages[half:])
    with Sink(settings, tmp_path).start(*args, "--until-idle", "3") as sink:
        assert sink.wait(timeout=180) == 0, sink.tail()
    assert stored(ledger) == stream.expected()
    con = open_reader(ledger)
    committed = {
        (t, p): last for t, p, last in con.sql("SELECT * FROM committed_offsets").fetchall()
    }
    assert committed == {tp: end - 1 for tp, end in end_offsets(settings).items() if end > 0}
    distinct = con.sql("SELECT count(DISTINCT event_id) = count(*) FROM operations").fetchall()
    assert distinct == [(True,)]


def sql_count(settings: Settings, query: str) -> int:
    done = subprocess.run(
        [CLI, "sql", query, "--format", "json", "--duckdb", str(settings.duckdb)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return int(rows[0]["n"])


def test_sql_runs_while_the_sink_writes_and_sees_its_last_commit(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    stream = Stream(settings, 600)
    chunks = [stream.messages[i : i + 600] for i in range(0, len(stream.messages), 600)]
    with Sink(settings, tmp_path).start("--quiet", "--batch-seconds", "0.2") as sink:
        until(lambda: Layout(settings.duckdb).exists(), timeout=30, what="the ledger", sink=sink)
        counts = []
        for chunk in chunks:
            publish(settings.bootstrap_servers, chunk)
            counts.append(sql_count(settings, "SELECT count(*) AS n FROM operations"))
        expected = stream.expected()
        until(
            lambda: (
                sql_count(settings, "SELECT count(*) AS n FROM operations")
                == expected["operations"]
            ),
            timeout=60,
            what="the sink to store every operation",
            sink=sink,
        )
        pairs = sql_count(settings, "SELECT count(*) AS n FROM operation_pairs")
        assert sink.stop() == 0
    assert counts == sorted(counts)
    assert pairs == expected["operations"] // 2
    assert stored(settings.duckdb) == expected


def test_sink_rides_out_a_broker_restart_and_stores_everything_once(
    restartable_broker: LocalBroker, topic_prefix: str, tmp_path: Path
) -> None:
    settings = Settings(
        bootstrap_servers=restartable_broker.bootstrap,
        topic_prefix=topic_prefix,
        duckdb=tmp_path / "ledger",
    )
    ensure_topics(settings)
    stream = Stream(settings, 500)
    half = len(stream.messages) // 2
    publish(settings.bootstrap_servers, stream.messages[:half])
    with Sink(settings, tmp_path).start("--batch-seconds", "0.2") as sink:
        until(
            lambda: (
                segment_count(settings.duckdb) > 0 and sum(stored(settings.duckdb).values()) > 0
            ),
            timeout=60,
            what="a first commit",
            sink=sink,
        )
        restartable_broker.down()
        # Down until the sink has seen the outage: a fixed pause was shorter than the sink's
        # request timeout on a quiet machine, so the restart went unnoticed and untested.
        until(
            lambda: any(word in sink.log.read_text() for word in ("unavailable", "not answering")),
            timeout=60,
            what="the sink to notice that Kafka is down",
            sink=sink,
        )
        restartable_broker.up(timeout=120.0, die_with_parent=True)
        publish(settings.bootstrap_servers, stream.messages[half:])
        expected = stream.expected()
        until(
            lambda: stored(settings.duckdb) == expected,
            timeout=120,
            what="every event after the restart",
            sink=sink,
        )
        assert sink.stop() == 0
    assert "unavailable" in sink.log.read_text() or "not answering" in sink.log.read_text()
