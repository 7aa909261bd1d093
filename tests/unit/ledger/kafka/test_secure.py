"""The secure broker's files: CA and certificate, server.properties, env files, modes."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

from cryptography import x509

from ledger.kafka.secure import (
    PRINCIPALS,
    make_ca,
    make_leaf,
    prepare_secure,
    secure_properties,
)
from ledger.settings import Settings

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)


def test_the_broker_certificate_verifies_against_the_ca_for_loopback(tmp_path: Path) -> None:
    ca_pem, ca_key = make_ca(NOW)
    chain, key = make_leaf(ca_pem, ca_key, NOW, "127.0.0.1")
    leaf = x509.load_pem_x509_certificates(chain)[0]
    ca = x509.load_pem_x509_certificate(ca_pem)
    leaf.verify_directly_issued_by(ca)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    # The standard library accepts the pair as a server's chain and key, and trusts the CA.
    (tmp_path / "chain.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    assert client.cert_store_stats()["x509_ca"] == 1


def test_prepare_writes_private_files_and_one_env_file_per_principal(tmp_path: Path) -> None:
    files = prepare_secure(tmp_path, host="127.0.0.1", bootstrap="127.0.0.1:19092", now=NOW)
    for private in (
        files.broker_key,
        files.keystore,
        files.tls_dir / "ca.key",
        files.credentials_dir / "passwords.json",
        *(files.env_file(p) for p in PRINCIPALS),
    ):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    for principal in PRINCIPALS:
        settings = Settings(_env_file=files.env_file(principal))
        assert settings.sasl_username == principal
        assert settings.security_protocol == "SASL_SSL"
        assert settings.sasl_mechanism == "SCRAM-SHA-512"
        assert settings.ssl_cafile == files.ca
        assert settings.bootstrap_servers == "127.0.0.1:19092"
        assert settings.sasl_password is not None
        assert settings.sasl_password.get_secret_value() == files.passwords[principal]
    assert len(set(files.passwords.values())) == len(files.passwords)
    assert all(password not in repr(files) for password in files.passwords.values())


def test_prepare_again_keeps_the_ca_and_the_passwords(tmp_path: Path) -> None:
    first = prepare_secure(tmp_path, host="127.0.0.1", bootstrap="127.0.0.1:1", now=NOW)
    ca = first.ca.read_bytes()
    again = prepare_secure(tmp_path, host="127.0.0.1", bootstrap="127.0.0.1:1", now=NOW)
    assert again.passwords == first.passwords
    assert again.ca.read_bytes() == ca


def test_server_properties_are_sasl_ssl_only_with_the_authorizer(tmp_path: Path) -> None:
    files = prepare_secure(tmp_path, host="127.0.0.1", bootstrap="127.0.0.1:19092", now=NOW)
    text = secure_properties(
        files, host="127.0.0.1", port=19092, controller_port=19093, data_dir=tmp_path / "d"
    )
    props = dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert "PLAINTEXT" not in props["listener.security.protocol.map"].replace("SASL_", "")
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:controller"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert props["ssl.keystore.location"] == str(files.keystore)
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["auto.create.topics.enable"] == "false"
