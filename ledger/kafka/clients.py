"""Every Kafka client outside faust is built here, so connection settings live in one place.

Library errors are converted at this boundary: callers see ``BrokerError`` (cannot reach or
read) and ``PublishError`` (cannot hand a record over), never a library's own exception type.
Security (TLS, SASL) comes from ``Settings`` and is applied here to every client (faust's
credentials are built from the same ``ssl_context`` in ``streams.app``). The client libraries
are imported inside the builders: importing ``ledger.kafka`` stays light, and the command line
starts fast.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ledger.errors import BrokerError, PublishError
from ledger.kafka.preflight import preflight
from ledger.settings import Settings

__all__ = [
    "admin_client",
    "aiokafka_consumer",
    "aiokafka_security",
    "broker_errors",
    "consumer",
    "kafka_python_security",
    "producer",
    "publish_errors",
    "ssl_context",
]

T = TypeVar("T")


def _sasl_options(settings: Settings) -> dict[str, Any]:
    """Protocol and SASL options: the same names in kafka-python and aiokafka."""
    options: dict[str, Any] = {}
    if settings.security_protocol != "PLAINTEXT":
        options["security_protocol"] = settings.security_protocol
    if settings.sasl_mechanism is not None:
        assert settings.sasl_password is not None  # the settings refuse SASL without one
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options


def kafka_python_security(settings: Settings) -> dict[str, Any]:
    """The security options of a kafka-python client (none for PLAINTEXT)."""
    options = _sasl_options(settings)
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(settings, name)
        if value is not None:
            options[name] = str(value)
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of aiokafka and faust clients (None without TLS)."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        cafile=None if settings.ssl_cafile is None else str(settings.ssl_cafile)
    )
    if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
        context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile))
    return context


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """The security options of an aiokafka client (none for PLAINTEXT)."""
    options = _sasl_options(settings)
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    return options


def _connection(settings: Settings) -> dict[str, Any]:
    """What every kafka-python client needs to reach the cluster."""
    return {"bootstrap_servers": settings.bootstrap_servers, **kafka_python_security(settings)}


@contextmanager
def broker_errors(doing: str) -> Iterator[None]:
    """Turn kafka-python's and aiokafka's errors into ``BrokerError("cannot <doing>: ...")``."""
    # Deferred: aiokafka loads only where a client is built; kafka-python takes ~0.7 s to import:
    # only code that talks to Kafka pays it.
    from aiokafka.errors import KafkaError as AioKafkaError
    from kafka.errors import KafkaError

    try:
        yield
    except (KafkaError, AioKafkaError) as exc:
        raise BrokerError(f"cannot {doing}: {_explained(exc)}") from exc


@contextmanager
def publish_errors(doing: str) -> Iterator[None]:
    """Turn kafka-python's and aiokafka's errors into ``PublishError("cannot <doing>: ...")``."""
    # Deferred: aiokafka loads only where a client is built; kafka-python takes ~0.7 s to import:
    # only code that talks to Kafka pays it.
    from aiokafka.errors import KafkaError as AioKafkaError
    from kafka.errors import KafkaError

    try:
        yield
    except (KafkaError, AioKafkaError) as exc:
        raise PublishError(f"cannot {doing}: {_explained(exc)}") from exc


def _explained(exc: BaseException) -> str:
    """The library's message, plus which setting to look at when the broker refused."""
    name = type(exc).__name__
    if "AuthorizationFailed" in name or name == "AuthorizationError":
        return (
            f"refused by the broker's ACLs: {exc}. The principal in "
            "MIGRATION_LEDGER_SASL_USERNAME lacks this right; `migration-ledger acls plan` "
            "shows what each principal may do"
        )
    if "SaslAuthentication" in name:
        return (
            f"SASL refused: {exc}; check MIGRATION_LEDGER_SASL_USERNAME and "
            "MIGRATION_LEDGER_SASL_PASSWORD"
        )
    return str(exc)


def _built(settings: Settings, build: Callable[[], T]) -> T:
    preflight(settings)  # a refusal is named now, not after 30 s of silent retries
    with broker_errors(f"reach Kafka at {settings.bootstrap_servers}"):
        return build()


def consumer(settings: Settings, **options: Any) -> Any:
    """A kafka-python ``KafkaConsumer`` outside any group unless ``group_id`` is given."""
    # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it.
    from kafka import KafkaConsumer

    config = {"group_id": None, "enable_auto_commit": False, **options}
    return _built(settings, lambda: KafkaConsumer(**_connection(settings), **config))


def producer(settings: Settings, **options: Any) -> Any:
    """A kafka-python ``KafkaProducer``."""
    # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it.
    from kafka import KafkaProducer

    return _built(settings, lambda: KafkaProducer(**_connection(settings), **options))


def admin_client(settings: Settings, **options: Any) -> Any:
    """A kafka-python ``KafkaAdminClient``."""
    # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it.
    from kafka.admin import KafkaAdminClient

    return _built(settings, lambda: KafkaAdminClient(**_connection(settings), **options))


def aiokafka_consumer(settings: Settings, *topics: str, **options: Any) -> Any:
    """An aiokafka ``AIOKafkaConsumer`` (not started) outside any group unless one is given."""
    # Deferred: aiokafka loads only where a client is built.
    from aiokafka import AIOKafkaConsumer

    config = {"group_id": None, "enable_auto_commit": False, **options}
    if settings.security_protocol != "PLAINTEXT":
        preflight(settings)  # (blocks one handshake; a plaintext consumer skips it)
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.bootstrap_servers,
        **aiokafka_security(settings),
        **config,
    )
