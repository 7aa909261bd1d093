"""``kafka up --secure`` end to end: SASL_SSL, SCRAM users, the ACL plan enforced by Kafka.

The module starts its own secure broker on free ports (the session's plaintext broker is not
touched), creates the topics and applies the plan as ``admin``, then checks what each
principal may and may not do, and that every refusal is named (by the preflight handshake,
not after the client libraries' 30 s of retries) and never shows a password.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import certifi
import pytest
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.errors import BrokerError, PublishError
from ledger.kafka import clients
from ledger.kafka.acls import apply_acls, planned_acls
from ledger.kafka.admin import ensure_topics
from ledger.kafka.broker import LocalBroker, free_ports
from ledger.kafka.secure import PRINCIPALS
from ledger.settings import Settings
from tests.conftest import BROKER_START_TIMEOUT


@dataclass(frozen=True)
class SecureBroker:
    broker: LocalBroker
    credentials: Path
    passwords: tuple[str, ...] = field(repr=False)

    def settings(self, principal: str, **overrides: object) -> Settings:
        env = _env(self.credentials / f"{principal}.env")
        fields = {k.removeprefix("MIGRATION_LEDGER_").lower(): v for k, v in env.items()}
        return Settings(**{**fields, **overrides})  # type: ignore[arg-type]

    def env(self, principal: str) -> dict[str, str]:
        return _env(self.credentials / f"{principal}.env")


def _env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    port, controller_port = free_ports(2)
    broker = LocalBroker(
        Settings().cache_dir,
        port=port,
        controller_port=controller_port,
        # <cache>/brokers/<port>, as `kafka status` looks for it with that cache dir.
        state_root=tmp_path_factory.mktemp("secure-cache") / "brokers",
        secure=True,
    )
    state, _ = broker.up(timeout=BROKER_START_TIMEOUT, die_with_parent=True)
    try:
        assert state.credentials_dir is not None
        credentials = Path(state.credentials_dir)
        stored = json.loads((credentials / "passwords.json").read_text())
        found = SecureBroker(broker, credentials, tuple(stored.values()))
        admin_settings = found.settings("admin")
        ensure_topics(admin_settings, timeout_s=60.0, connect_timeout_s=30.0)
        admin = clients.admin_client(admin_settings, request_timeout_ms=30_000)
        try:
            apply_acls(admin, planned_acls(admin_settings))
        finally:
            admin.close()
        _wait_until_granted(found.settings("worker"))
        yield found
    finally:
        broker.down()


def _wait_until_granted(settings: Settings, timeout_s: float = 60.0) -> None:
    """Until the broker's authorizer serves the new ACLs (they travel through the metadata log)."""
    # Deferred: kafka-python takes ~0.7 s to import.
    from kafka.errors import TopicAuthorizationFailedError

    started = time.monotonic()
    consumer = clients.consumer(settings, request_timeout_ms=30_000)
    try:
        while True:
            try:
                consumer.partitions_for_topic(settings.topic("operations"))
                consumer.topics()
                break
            except TopicAuthorizationFailedError:
                if time.monotonic() - started > timeout_s:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()
    print(f"ACLs in force after {time.monotonic() - started:.2f} s")


def _end_offsets(settings: Settings, topic: str) -> int:
    # Deferred: kafka-python takes ~0.7 s to import.
    from kafka import TopicPartition

    consumer = clients.consumer(settings, request_timeout_ms=30_000)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def test_the_env_files_are_private_and_name_each_principal(secure: SecureBroker) -> None:
    for principal in PRINCIPALS:
        path = secure.credentials / f"{principal}.env"
        assert path.stat().st_mode & 0o077 == 0
        assert secure.env(principal)["MIGRATION_LEDGER_SASL_USERNAME"] == principal


def test_worker_produces_and_consumes_its_topics(secure: SecureBroker) -> None:
    # Deferred: kafka-python takes ~0.7 s to import.
    from kafka import TopicPartition

    worker = secure.settings("worker")
    topic = worker.topic("comparisons")
    producer = clients.producer(worker, request_timeout_ms=30_000)
    try:
        with clients.publish_errors("publish a comparison"):
            sent = producer.send(topic, key=b"c-1", value=b"secure-roundtrip").get(timeout=30)
    finally:
        producer.close()
    consumer = clients.consumer(worker, request_timeout_ms=30_000, consumer_timeout_ms=10_000)
    try:
        partition = TopicPartition(topic, sent.partition)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        record = next(iter(consumer))
    finally:
        consumer.close()
    assert record.value == b"secure-roundtrip"


def test_router_is_denied_the_flag_log_and_nothing_reaches_it(secure: SecureBroker) -> None:
    router = secure.settings("router")
    flag_log = router.topic("flag_events")
    producer = clients.producer(router, request_timeout_ms=30_000)
    try:
        with (
            pytest.raises(PublishError) as refused,
            clients.publish_errors("append to the flag log"),
        ):
            producer.send(flag_log, key=b"v2_migration", value=b"{}").get(timeout=30)
    finally:
        producer.close()
    message = str(refused.value)
    assert "TopicAuthorizationFailed" in message
    assert "MIGRATION_LEDGER_SASL_USERNAME" in message
    assert flag_log in message
    assert _end_offsets(secure.settings("admin"), flag_log) == 0


@pytest.mark.parametrize("case", ["wrong password", "unknown CA", "plaintext on the TLS port"])
def test_refusals_are_named_at_once(secure: SecureBroker, case: str) -> None:
    worker = secure.settings("worker")
    settings, names = {
        "wrong password": (
            secure.settings("worker", sasl_password="not-the-password"),
            "MIGRATION_LEDGER_SASL_PASSWORD",
        ),
        "unknown CA": (
            secure.settings("worker", ssl_cafile=certifi.where()),
            "MIGRATION_LEDGER_SSL_CAFILE",
        ),
        "plaintext on the TLS port": (
            Settings(bootstrap_servers=worker.bootstrap_servers),
            "MIGRATION_LEDGER_SECURITY_PROTOCOL",
        ),
    }[case]
    started = time.monotonic()
    with pytest.raises(BrokerError) as refused:
        clients.producer(settings, request_timeout_ms=30_000)
    elapsed = time.monotonic() - started
    message = str(refused.value)
    # The library's own path ends in "Unable to bootstrap" after 30 s; the preflight's
    # message names the setting, which is what proves it answered on the first connection.
    assert names in message, message
    assert "Unable to bootstrap" not in message
    assert all(password not in message for password in secure.passwords)
    print(f"{case}: refused after {elapsed:.2f} s: {message}")


def test_no_password_in_any_output(secure: SecureBroker) -> None:
    runner = CliRunner()
    port = str(secure.broker.port)
    cache = {"MIGRATION_LEDGER_CACHE_DIR": str(secure.broker.state_dir.parent.parent)}
    outputs = []
    outputs.append(runner.invoke(app, ["acls", "apply"], env=secure.env("admin")))
    outputs.append(runner.invoke(app, ["check", "--format", "json"], env=secure.env("admin")))
    outputs.append(runner.invoke(app, ["check"], env=secure.env("worker")))
    wrong = {**secure.env("worker"), "MIGRATION_LEDGER_SASL_PASSWORD": "also-wrong"}
    outputs.append(runner.invoke(app, ["check", "--format", "json"], env=wrong))
    outputs.append(runner.invoke(app, ["kafka", "status", "--port", port], env=cache))
    texts = [result.output for result in outputs]
    assert "0 created" in texts[0]
    acls = next(c for c in json.loads(texts[1])["checks"] if c["check"] == "acls")
    assert acls["status"] == "PASS", acls
    broker = next(c for c in json.loads(texts[3])["checks"] if c["check"] == "broker")
    assert broker["status"] == "FAIL"
    assert "SASL refused" in broker["figure"]
    assert "listener: SASL_SSL" in texts[4]
    assert "principals: admin, worker, sink, router, operator" in texts[4]
    for text in texts:
        assert all(password not in text for password in secure.passwords), text
    state = (secure.broker.state_dir / "broker.json").read_text()
    assert all(password not in state for password in secure.passwords)
    for log in secure.broker.state_dir.joinpath("logs").iterdir():
        text = log.read_text(errors="replace")
        assert all(password not in text for password in secure.passwords), log.name
