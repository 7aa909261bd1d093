"""Every Kafka client outside faust is built here, so connection settings live in one place.

Library errors are converted at this boundary: callers see ``BrokerError`` (cannot reach or
read) and ``PublishError`` (cannot hand a record over), never a library's own exception type.
The client libraries are imported inside the builders: importing ``ledger.kafka`` stays light,
and the command line starts fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ledger.errors import BrokerError, PublishError
from ledger.settings import Settings

__all__ = [
    "admin_client",
    "aiokafka_consumer",
    "broker_errors",
    "consumer",
    "producer",
    "publish_errors",
]

T = TypeVar("T")


def _connection(settings: Settings) -> dict[str, Any]:
    """What every kafka-python client needs to reach the cluster."""
    return {"bootstrap_servers": settings.bootstrap_servers}


@contextmanager
def broker_errors(doing: str) -> Iterator[None]:
    """Turn kafka-python's and aiokafka's errors into ``BrokerError("cannot <doing>: ...")``."""
    from aiokafka.errors import KafkaError as AioKafkaError
    from kafka.errors import KafkaError

    try:
        yield
    except (KafkaError, AioKafkaError) as exc:
        raise BrokerError(f"cannot {doing}: {exc}") from exc


@contextmanager
def publish_errors(doing: str) -> Iterator[None]:
    """Turn kafka-python's and aiokafka's errors into ``PublishError("cannot <doing>: ...")``."""
    from aiokafka.errors import KafkaError as AioKafkaError
    from kafka.errors import KafkaError

    try:
        yield
    except (KafkaError, AioKafkaError) as exc:
        raise PublishError(f"cannot {doing}: {exc}") from exc


def _built(settings: Settings, build: Callable[[], T]) -> T:
    with broker_errors(f"reach Kafka at {settings.bootstrap_servers}"):
        return build()


def consumer(settings: Settings, **options: Any) -> Any:
    """A kafka-python ``KafkaConsumer`` outside any group unless ``group_id`` is given."""
    from kafka import KafkaConsumer

    config = {"group_id": None, "enable_auto_commit": False, **options}
    return _built(settings, lambda: KafkaConsumer(**_connection(settings), **config))


def producer(settings: Settings, **options: Any) -> Any:
    """A kafka-python ``KafkaProducer``."""
    from kafka import KafkaProducer

    return _built(settings, lambda: KafkaProducer(**_connection(settings), **options))


def admin_client(settings: Settings, **options: Any) -> Any:
    """A kafka-python ``KafkaAdminClient``."""
    from kafka.admin import KafkaAdminClient

    return _built(settings, lambda: KafkaAdminClient(**_connection(settings), **options))


def aiokafka_consumer(settings: Settings, *topics: str, **options: Any) -> Any:
    """An aiokafka ``AIOKafkaConsumer`` (not started) outside any group unless one is given."""
    from aiokafka import AIOKafkaConsumer

    config = {"group_id": None, "enable_auto_commit": False, **options}
    return AIOKafkaConsumer(*topics, bootstrap_servers=settings.bootstrap_servers, **config)
