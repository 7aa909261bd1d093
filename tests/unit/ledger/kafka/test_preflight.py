"""The preflight handshake: a positive refusal is named; an unreachable broker is left to the
client's own retries (no broker here: loopback listeners that answer like one would)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from ledger.errors import BrokerError, PublishError
from ledger.kafka.broker import free_ports
from ledger.kafka.clients import publish_errors
from ledger.kafka.preflight import preflight
from ledger.settings import Settings


@pytest.fixture
def tls_alert_listener() -> Iterator[int]:
    """Answers anything with a TLS alert record, as a TLS listener does to plaintext bytes."""
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(1024)
            connection.sendall(b"\x15\x03\x03\x00\x02\x02\x0a")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        thread.join(timeout=5)
        server.close()


def test_plaintext_client_on_a_tls_listener_is_named(tls_alert_listener: int) -> None:
    settings = Settings(bootstrap_servers=f"127.0.0.1:{tls_alert_listener}")
    with pytest.raises(BrokerError, match="MIGRATION_LEDGER_SECURITY_PROTOCOL"):
        preflight(settings, timeout=5.0)


def test_nothing_listening_is_left_to_the_client() -> None:
    (port,) = free_ports(1)
    preflight(Settings(bootstrap_servers=f"127.0.0.1:{port}"), timeout=1.0)  # does not raise
    secure = Settings(
        bootstrap_servers=f"127.0.0.1:{port}",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="worker",
        sasl_password="secret",
    )
    preflight(secure, timeout=1.0)


def test_an_acl_refusal_names_the_principal_setting_and_the_plan() -> None:
    # Deferred: kafka-python takes ~0.7 s to import.
    from kafka.errors import TopicAuthorizationFailedError

    with (
        pytest.raises(PublishError) as refused,
        publish_errors("append to the flag log"),
    ):
        raise TopicAuthorizationFailedError("ledger.flag-events")
    message = str(refused.value)
    assert message.startswith("cannot append to the flag log: refused by the broker's ACLs")
    assert "ledger.flag-events" in message
    assert "MIGRATION_LEDGER_SASL_USERNAME" in message
    assert "acls plan" in message
