"""The three client stacks the pipeline is built on, each against the real Kafka 4 broker.

If any of these fails, nothing built on top can work: kafka-python (producers, admin),
aiokafka (used by faust), and faust itself with a table whose changelog lives on the broker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
#: INFO so that a failure's message can show what the worker was doing.
WORKER_FLAGS = ("--without-web", "-l", "info")
#: The ``create_topics`` fixture of tests/integration/conftest.py: {name: partitions}.
CreateTopics = Callable[[dict[str, int]], None]


def _until(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_kafka_python_consumer_reads_back_what_its_producer_wrote_in_order(
    kafka_bootstrap: str, topic_prefix: str, create_topics: CreateTopics
) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    topic = f"{topic_prefix}roundtrip.kafka-python"
    create_topics({topic: 1})
    sent = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(5)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        for key, value in sent:
            producer.send(topic, key=key, value=value, headers=[("n", key[-1:])])
        producer.flush(timeout=30)
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{topic_prefix}group",
        auto_offset_reset="earliest",
    )
    received: list[Any] = []
    try:

        def poll() -> bool:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(records)
            return len(received) >= len(sent)

        _until(poll, timeout=30, what="the 5 records to come back")
    finally:
        consumer.close()

    assert [(r.key, r.value) for r in received] == sent
    assert [r.offset for r in received] == list(range(len(sent)))
    assert [dict(r.headers)["n"] for r in received] == [key[-1:] for key, _ in sent]


def test_aiokafka_consumer_reads_back_what_its_producer_wrote(
    kafka_bootstrap: str, topic_prefix: str, create_topics: CreateTopics
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = f"{topic_prefix}roundtrip.aiokafka"
    create_topics({topic: 2})
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(6)}

    async def roundtrip() -> dict[bytes, bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for key, value in sent.items():
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"{topic_prefix}group",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        received: dict[bytes, bytes] = {}
        try:
            async with asyncio.timeout(30):
                while len(received) < len(sent):
                    batches = await consumer.getmany(timeout_ms=500)
                    for records in batches.values():
                        received.update((r.key, r.value) for r in records)
        finally:
            await consumer.stop()
        return received

    assert asyncio.run(roundtrip()) == sent


class FaustWorker:
    """``faust -A faust_table_app worker`` as a subprocess, stopped with SIGTERM like in prod."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", "faust_table_app", "worker", *WORKER_FLAGS],
                cwd=HERE,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def assert_running(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        assert code is None, f"faust worker exited with {code}:\n{self.log.read_text()[-3000:]}"


@pytest.fixture
def faust_worker(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[tuple[FaustWorker, dict[str, str]]]:
    names = {
        "FAUST_TABLE_TEST_APP_ID": f"{topic_prefix}counter-{uuid.uuid4().hex[:6]}",
        "FAUST_TABLE_TEST_BOOTSTRAP": kafka_bootstrap,
        "FAUST_TABLE_TEST_DATADIR": str(tmp_path / "faust-data"),
        "FAUST_TABLE_TEST_SOURCE": f"{topic_prefix}words",
        "FAUST_TABLE_TEST_TOTALS": f"{topic_prefix}totals",
    }
    worker = FaustWorker({**os.environ, **names}, tmp_path / "faust-worker.log")
    try:
        yield worker, names
    finally:
        worker.stop()


def test_faust_table_is_rebuilt_from_its_changelog_after_a_worker_restart(
    kafka_bootstrap: str,
    create_topics: CreateTopics,
    faust_worker: tuple[FaustWorker, dict[str, str]],
) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

    worker, names = faust_worker
    app_id = names["FAUST_TABLE_TEST_APP_ID"]
    source, totals = names["FAUST_TABLE_TEST_SOURCE"], names["FAUST_TABLE_TEST_TOTALS"]
    changelog = f"{app_id}-counts-changelog"
    create_topics({source: 1, totals: 1})

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    reader.assign([TopicPartition(totals, 0)])
    # Reads the group's progress without joining the group (no subscribe, no rebalance).
    watcher = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=app_id)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    seen: list[tuple[bytes, bytes]] = []

    def totals_seen(count: int) -> bool:
        worker.assert_running()
        for records in reader.poll(timeout_ms=300).values():
            seen.extend((r.key, r.value) for r in records)
        return len(seen) >= count

    def send(*words: bytes) -> None:
        for word in words:
            producer.send(source, key=word, value=b"")
        producer.flush(timeout=30)

    try:
        worker.start()
        send(b"apple", b"apple", b"pear", b"apple")
        _until(lambda: totals_seen(4), timeout=60, what="the first worker's four totals")
        assert seen == [(b"apple", b"1"), (b"apple", b"2"), (b"pear", b"1"), (b"apple", b"3")]

        # Stop only once the input is committed and the table writes reached the changelog,
        # so that the restart neither reprocesses input nor finds a short changelog.
        source_partition = TopicPartition(source, 0)
        _until(
            lambda: watcher.committed(source_partition) == 4,
            timeout=30,
            what="the worker to commit its input",
        )
        changelog_partition = TopicPartition(changelog, 0)
        _until(
            lambda: watcher.end_offsets([changelog_partition])[changelog_partition] >= 4,
            timeout=30,
            what="the table writes to reach the changelog",
        )
        worker.stop()
        assert changelog in admin.list_topics()

        worker.start()
        send(b"apple", b"pear")
        _until(lambda: totals_seen(6), timeout=60, what="the restarted worker's totals")
        assert seen[4:] == [(b"apple", b"4"), (b"pear", b"2")]
    finally:
        for client in (producer, reader, watcher, admin):
            client.close()
