"""Helpers for tests on the real broker: create the topics a test needs, ready to use."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

#: ``create_topics({"name": partitions, ...})`` creates and waits until every leader is elected.
CreateTopics = Callable[[dict[str, int]], None]


@pytest.fixture
def create_topics(kafka_bootstrap: str) -> Iterator[CreateTopics]:
    """Create topics (name -> partitions, replication 1) and wait until they can be used.

    Waiting matters on KRaft: CreateTopics returns before leaders are elected, and a producer
    that races ahead would see UNKNOWN_TOPIC_OR_PARTITION. Topics are left in place; their
    names carry the test's unique ``topic_prefix``.
    """
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-admin")

    def create(topics: dict[str, int]) -> None:
        admin.create_topics(
            {name: {"num_partitions": n, "replication_factor": 1} for name, n in topics.items()},
            wait_for_metadata=True,
        )

    try:
        yield create
    finally:
        admin.close()
