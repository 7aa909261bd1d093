"""Fixtures shared by every test: the real Kafka broker, unique topic names, Settings.

``kafka_bootstrap`` is session-scoped and lazy: a broker is only started when a collected test
asks for it. Set ``MIGRATION_LEDGER_BOOTSTRAP_SERVERS`` (e.g. to the team's dev broker at
127.0.0.1:9092) to reuse a running broker instead of starting one on free ports.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.settings import Settings

INTEGRATION_DIR = Path(__file__).parent / "integration"
#: Given to unit tests' Settings: nothing listens on port 1, so a stray connection fails fast.
OFFLINE_BOOTSTRAP = "127.0.0.1:1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration needs the broker; mark it so `-m` can select it.

    Integration tests race real processes (broker, faust workers) on a shared 2-core machine,
    so each gets one more try; a failure that repeats still fails the run. Unit tests get none.
    """
    for item in items:
        if INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``"127.0.0.1:PORT"`` of a real Kafka 4 broker, for the whole session.

    Started on two free ports, with its state in a temporary folder but the jars from the
    usual cache (``MIGRATION_LEDGER_CACHE_DIR``), and stopped at the end of the session even
    when tests fail. The kernel also stops it if pytest itself is killed.
    """
    given = os.environ.get("MIGRATION_LEDGER_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    from ledger.kafka.broker import LocalBroker, free_ports

    port, controller_port = free_ports(2)
    broker = LocalBroker(
        Settings().cache_dir,
        port=port,
        controller_port=controller_port,
        state_root=tmp_path_factory.mktemp("kafka-brokers"),
    )
    broker.up(timeout=120.0, die_with_parent=True)
    try:
        yield broker.bootstrap
    finally:
        broker.down()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, such as ``"t1a2b3c4d."``, so topics never collide."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def settings(request: pytest.FixtureRequest, topic_prefix: str, tmp_path: Path) -> Settings:
    """Settings for this test: its own topic prefix and DuckDB folder.

    In integration tests ``bootstrap_servers`` is the session broker; elsewhere it is an
    address where nothing listens, so unit tests never start a broker nor reach the dev one.
    """
    is_integration = request.node.get_closest_marker("integration") is not None
    bootstrap = request.getfixturevalue("kafka_bootstrap") if is_integration else OFFLINE_BOOTSTRAP
    return Settings(
        bootstrap_servers=bootstrap,
        topic_prefix=topic_prefix,
        duckdb=tmp_path / "ledger",
    )
