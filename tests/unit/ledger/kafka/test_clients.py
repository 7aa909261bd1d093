"""Client security from the settings: every library connects alike, secrets stay secret."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from ledger.kafka.clients import aiokafka_security, kafka_python_security, ssl_context
from ledger.settings import Settings
from streams.app import faust_credentials

SASL = {
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "worker",
    "sasl_password": "s3cret-pw",
}


def test_plaintext_adds_no_option_to_any_client() -> None:
    settings = Settings()
    assert kafka_python_security(settings) == {}
    assert aiokafka_security(settings) == {}
    assert faust_credentials(settings) is None
    assert ssl_context(settings) is None


def test_sasl_reaches_kafka_python_and_aiokafka_alike() -> None:
    settings = Settings(**SASL)
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "worker",
        "sasl_plain_password": "s3cret-pw",
    }
    assert kafka_python_security(settings) == expected
    assert aiokafka_security(settings) == expected
    credentials = faust_credentials(settings)
    assert credentials.username == "worker"
    assert credentials.mechanism.value == "SCRAM-SHA-512"


def test_the_password_never_shows_in_the_settings_repr() -> None:
    settings = Settings(**SASL)
    assert "s3cret-pw" not in repr(settings)
    assert "s3cret-pw" not in str(settings.model_dump())


def test_tls_builds_a_context_that_verifies_the_broker() -> None:
    settings = Settings(security_protocol="SSL")
    context = ssl_context(settings)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert aiokafka_security(settings)["ssl_context"] is not None
    assert kafka_python_security(settings) == {"security_protocol": "SSL"}


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"security_protocol": "SASL_SSL"}, "MIGRATION_LEDGER_SASL_MECHANISM"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u"},
            "MIGRATION_LEDGER_SASL_PASSWORD",
        ),
        ({"sasl_username": "u"}, "use SASL_SSL or SASL_PLAINTEXT"),
        (
            {"security_protocol": "SSL", "ssl_certfile": Path("client.pem")},
            "MIGRATION_LEDGER_SSL_KEYFILE",
        ),
        ({"ssl_cafile": Path("ca.pem")}, "use SSL or SASL_SSL"),
        ({"security_protocol": "TLS"}, "security_protocol"),
    ],
)
def test_half_a_security_configuration_is_refused_naming_the_setting(
    given: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(**given)  # type: ignore[arg-type]
