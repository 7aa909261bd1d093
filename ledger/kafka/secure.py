"""What a secure local broker needs: a private CA, the broker's certificate, SCRAM users.

``kafka up --secure`` calls ``prepare_secure`` before formatting storage. Everything lands in
the broker's state folder (``brokers/<port>/``)::

    tls/ca.pem, tls/ca.key          the private CA (key 0600; the CA never leaves the folder)
    tls/broker.pem, tls/broker.key  the broker's chain and key
    tls/broker-keystore.pem         both in one file: Kafka 4's PEM keystore (0600)
    credentials/<principal>.env     MIGRATION_LEDGER_* for one principal (0600)
    credentials/passwords.json      the generated passwords (0600), read again on restart

Certificates are made with ``cryptography`` (already a dependency) rather than ``keytool``:
PEM files are what every Python client reads, and Kafka 4 accepts PEM keystores directly.
Passwords are ``secrets.token_urlsafe``; none is ever printed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CONTROLLER_USER",
    "PRINCIPALS",
    "SCRAM_MECHANISM",
    "SecureFiles",
    "env_file_text",
    "format_arguments",
    "make_ca",
    "make_leaf",
    "prepare_secure",
    "secure_properties",
]

#: Every principal of the ledger; ``admin`` is the super user that applies the ACLs.
PRINCIPALS: tuple[str, ...] = ("admin", "worker", "sink", "router", "operator")
SCRAM_MECHANISM = "SCRAM-SHA-512"
#: The controller listener authenticates with SASL/PLAIN (KRaft cannot use SCRAM there: the
#: SCRAM credentials live in the metadata log the controller serves). Only the broker uses it.
CONTROLLER_USER = "controller"
_VALID_DAYS = 825


@dataclass(frozen=True)
class SecureFiles:
    """Paths and secrets of one secure broker (passwords stay out of every repr)."""

    tls_dir: Path
    credentials_dir: Path
    passwords: dict[str, str]

    def __repr__(self) -> str:
        return f"SecureFiles(tls_dir={self.tls_dir}, credentials_dir={self.credentials_dir})"

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def broker_chain(self) -> Path:
        return self.tls_dir / "broker.pem"

    @property
    def broker_key(self) -> Path:
        return self.tls_dir / "broker.key"

    @property
    def keystore(self) -> Path:
        """The broker's PEM keystore: its key then its chain, in one 0600 file."""
        return self.tls_dir / "broker-keystore.pem"

    def env_file(self, principal: str) -> Path:
        return self.credentials_dir / f"{principal}.env"


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only (no window in which it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8 unencrypted: the form Kafka's PEM keystore reads when no key password is set.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(now: dt.datetime, name: str = "migration-ledger local CA") -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_leaf(
    ca_pem: bytes, ca_key_pem: bytes, now: dt.datetime, host: str = "127.0.0.1"
) -> tuple[bytes, bytes]:
    """A server certificate for ``host`` signed by the CA: (chain PEM leaf+CA, key PEM)."""
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM) + ca_pem, _pem_key(key)


def env_file_text(
    principal: str, password: str, *, bootstrap: str, ca: Path, topic_prefix: str = ""
) -> str:
    """The ``MIGRATION_LEDGER_*`` variables one principal connects with (source it, or
    ``set -a; . file``)."""
    lines = [
        f"# {principal} on the secure local broker (`migration-ledger kafka up --secure`).",
        f"MIGRATION_LEDGER_BOOTSTRAP_SERVERS={bootstrap}",
        "MIGRATION_LEDGER_SECURITY_PROTOCOL=SASL_SSL",
        f"MIGRATION_LEDGER_SASL_MECHANISM={SCRAM_MECHANISM}",
        f"MIGRATION_LEDGER_SASL_USERNAME={principal}",
        f"MIGRATION_LEDGER_SASL_PASSWORD={password}",
        f"MIGRATION_LEDGER_SSL_CAFILE={ca}",
    ]
    if topic_prefix:
        lines.append(f"MIGRATION_LEDGER_TOPIC_PREFIX={topic_prefix}")
    return "\n".join(lines) + "\n"


#: What every single-node broker here sets, plaintext or secure: one replica of everything.
SINGLE_NODE_PROPERTIES = """\
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
"""


def _jaas(module: str, user: str, password: str, extra: str = "") -> str:
    return f'{module} required username="{user}" password="{password}"{extra};'


def secure_properties(
    files: SecureFiles,
    *,
    host: str,
    port: int,
    controller_port: int,
    data_dir: Path,
    listen_host: str | None = None,
) -> str:
    """``server.properties`` of the secure broker: SASL_SSL for clients and between brokers,
    SASL_SSL/PLAIN for the controller, StandardAuthorizer with admin and the controller as
    super users; everything else as the plaintext broker. ``host`` is the advertised name (in
    the certificate); ``listen_host`` what the listeners bind (default: ``host``; a
    container binds ``0.0.0.0``)."""
    bind = host if listen_host is None else listen_host
    p = files.passwords
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
    controller_jaas = _jaas(
        plain,
        CONTROLLER_USER,
        p[CONTROLLER_USER],
        f' user_{CONTROLLER_USER}="{p[CONTROLLER_USER]}"',
    )
    return f"""\
# Written by ledger.kafka.broker (--secure): SASL_SSL only, StandardAuthorizer, loopback only.
# Holds passwords: this file is 0600.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{host}:{controller_port}
listeners=SASL_SSL://{bind}:{port},CONTROLLER://{bind}:{controller_port}
advertised.listeners=SASL_SSL://{host}:{port}
inter.broker.listener.name=SASL_SSL
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:SASL_SSL,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms={SCRAM_MECHANISM}
sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}
sasl.mechanism.controller.protocol=PLAIN
listener.name.sasl_ssl.sasl.enabled.mechanisms={SCRAM_MECHANISM}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={_jaas(scram, "admin", p["admin"])}
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={controller_jaas}
ssl.keystore.type=PEM
ssl.keystore.location={files.keystore}
ssl.truststore.type=PEM
ssl.truststore.location={files.ca}
ssl.endpoint.identification.algorithm=https
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:{CONTROLLER_USER}
log.dirs={data_dir}
{SINGLE_NODE_PROPERTIES}group.initial.rebalance.delay.ms=0
# Off here: a principal that may not create a topic must not get one by reading it.
auto.create.topics.enable=false
log.retention.hours=168
"""


def format_arguments(files: SecureFiles) -> list[str]:
    """``kafka-storage format`` arguments creating every principal's SCRAM user."""
    arguments: list[str] = []
    for name in PRINCIPALS:
        password = files.passwords[name]
        arguments += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
    return arguments


def prepare_secure(state_dir: Path, *, host: str, bootstrap: str, now: dt.datetime) -> SecureFiles:
    """Make (once) the CA, the broker certificate and the passwords; (re)write the env files.

    An existing CA and passwords are kept, so a restarted broker keeps its users and clients
    keep trusting it.
    """
    tls_dir, credentials_dir = state_dir / "tls", state_dir / "credentials"
    tls_dir.mkdir(parents=True, exist_ok=True)
    credentials_dir.mkdir(parents=True, exist_ok=True)
    credentials_dir.chmod(0o700)
    store = credentials_dir / "passwords.json"
    if store.exists():
        passwords: dict[str, str] = json.loads(store.read_text())
    else:
        passwords = {name: secrets.token_urlsafe(24) for name in (*PRINCIPALS, CONTROLLER_USER)}
        _write_private(store, (json.dumps(passwords, indent=2) + "\n").encode())
    files = SecureFiles(tls_dir=tls_dir, credentials_dir=credentials_dir, passwords=passwords)
    if not files.ca.exists():
        ca_pem, ca_key = make_ca(now)
        _write_private(tls_dir / "ca.key", ca_key)
        files.ca.write_bytes(ca_pem)
    if not files.broker_chain.exists():
        chain, key = make_leaf(files.ca.read_bytes(), (tls_dir / "ca.key").read_bytes(), now, host)
        _write_private(files.broker_key, key)
        files.broker_chain.write_bytes(chain)
        _write_private(files.keystore, key + chain)
    for principal in PRINCIPALS:
        text = env_file_text(principal, passwords[principal], bootstrap=bootstrap, ca=files.ca)
        _write_private(files.env_file(principal), text.encode())
    return files
