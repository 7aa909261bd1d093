"""One short handshake before a client is built, so a refusal is named at once.

kafka-python and aiokafka treat a wrong password, an untrusted certificate or a protocol
mismatch as "broker not available yet" and retry until their bootstrap timeout (30 s), then
say only "Unable to bootstrap". ``preflight`` speaks just enough of the protocol to tell
those apart in one connection: the TLS handshake with the settings' CA, then SaslHandshake
and SaslAuthenticate (the SASL mechanism objects are kafka-python's own, so nothing of SCRAM
is hand-written), or, for a plaintext client, an ApiVersions request.

It raises ``BrokerError`` only on a positive refusal, naming the setting to look at; when the
broker cannot be reached at all (refused, timeout) it returns and the client's own retries
decide, as before. It never puts a password in a message.
"""

from __future__ import annotations

import socket
import ssl
import struct
from typing import Any

from ledger.errors import BrokerError
from ledger.kafka.frames import read_exactly
from ledger.settings import Settings

__all__ = ["preflight"]

_API_VERSIONS, _SASL_HANDSHAKE, _SASL_AUTHENTICATE = 18, 17, 36
_CLIENT_ID = b"migration-ledger-preflight"
_UNSUPPORTED_SASL_MECHANISM, _SASL_AUTHENTICATION_FAILED = 33, 58
_ILLEGAL_SASL_STATE = 34


def _request(api_key: int, version: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, 1, len(_CLIENT_ID)) + _CLIENT_ID
    message = header + body
    return struct.pack(">i", len(message)) + message


def _answer(sock: socket.socket) -> bytes:
    first = read_exactly(sock, 4)
    if first[:1] == b"\x15" and first[1:2] == b"\x03":  # a TLS alert record, not Kafka
        raise _SpeaksTls()
    (size,) = struct.unpack(">i", first)
    if not 0 < size < 10_000_000:
        raise _SpeaksTls()
    return read_exactly(sock, size)


class _SpeaksTls(Exception):
    """The listener answered a plaintext request with TLS (or not as Kafka)."""


def _string(data: bytes, offset: int) -> tuple[str | None, int]:
    (length,) = struct.unpack_from(">h", data, offset)
    offset += 2
    if length < 0:
        return None, offset
    return data[offset : offset + length].decode(errors="replace"), offset + length


def _first_address(bootstrap: str) -> tuple[str, int] | None:
    for address in (a.strip() for a in bootstrap.split(",")):
        host, _, port = address.rpartition(":")
        if host and port.isdigit():
            return host.strip("[]"), int(port)
    return None


def preflight(settings: Settings, *, timeout: float = 5.0) -> None:
    """Refuse now, naming the setting, if the first bootstrap broker refuses these settings."""
    where = _first_address(settings.bootstrap_servers)
    if where is None:
        return
    host, port = where
    address = f"{host}:{port}"
    try:
        raw = socket.create_connection(where, timeout=timeout)
    except OSError:
        return  # not reachable (yet): the client's own retries and timeout decide
    sock: Any = raw
    try:
        if settings.security_protocol in ("SSL", "SASL_SSL"):
            sock = _tls(raw, settings, host, address)
        if settings.security_protocol.startswith("SASL_"):
            _sasl(sock, settings, address)
        else:
            _plaintext(sock, settings, address)
    except (TimeoutError, ConnectionError, struct.error):
        return  # a slow or vanishing broker is the client's business, not a refusal
    finally:
        sock.close()
        raw.close()


def _tls(raw: socket.socket, settings: Settings, host: str, address: str) -> ssl.SSLSocket:
    # Deferred: clients imports this module; the context is the one every client uses.
    from ledger.kafka.clients import ssl_context

    context = ssl_context(settings)
    assert context is not None
    cafile = settings.ssl_cafile or "the system's CA store"
    try:
        return context.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        raise BrokerError(
            f"TLS refused: the broker at {address} presented a certificate that the CA in "
            f"MIGRATION_LEDGER_SSL_CAFILE ({cafile}) does not trust ({exc.verify_message}); "
            "point MIGRATION_LEDGER_SSL_CAFILE at the CA that signed the broker's certificate"
        ) from None
    except ssl.SSLError as exc:
        raise BrokerError(
            f"TLS refused: the listener at {address} did not complete a TLS handshake "
            f"({exc.reason}); it may not speak TLS: check MIGRATION_LEDGER_SECURITY_PROTOCOL "
            f"(now {settings.security_protocol}) and MIGRATION_LEDGER_BOOTSTRAP_SERVERS"
        ) from None


def _plaintext(sock: Any, settings: Settings, address: str) -> None:
    try:
        sock.sendall(_request(_API_VERSIONS, 0, b""))
        _answer(sock)
    except (_SpeaksTls, ConnectionError):
        raise BrokerError(
            f"refused: the listener at {address} did not answer a "
            f"{settings.security_protocol} Kafka request; it expects TLS and probably SASL: "
            "set MIGRATION_LEDGER_SECURITY_PROTOCOL (SSL or SASL_SSL) and the "
            "MIGRATION_LEDGER_SASL_* and MIGRATION_LEDGER_SSL_CAFILE settings (a secure "
            "local broker writes them to credentials/<principal>.env)"
        ) from None


def _sasl(sock: Any, settings: Settings, address: str) -> None:
    # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it.
    from kafka.net.sasl import get_sasl_mechanism

    from ledger.kafka.clients import kafka_python_security

    mechanism = settings.sasl_mechanism
    assert mechanism is not None
    name = mechanism.encode()
    try:
        sock.sendall(_request(_SASL_HANDSHAKE, 1, struct.pack(">h", len(name)) + name))
        answer = _answer(sock)
    except _SpeaksTls:
        raise BrokerError(
            f"refused: the listener at {address} answered with TLS; set "
            "MIGRATION_LEDGER_SECURITY_PROTOCOL=SASL_SSL and MIGRATION_LEDGER_SSL_CAFILE"
        ) from None
    (_correlation, error) = struct.unpack_from(">ih", answer, 0)
    if error == _UNSUPPORTED_SASL_MECHANISM:
        (count,) = struct.unpack_from(">i", answer, 6)
        offset, enabled = 10, []
        for _ in range(max(count, 0)):
            value, offset = _string(answer, offset)
            enabled.append(value or "")
        raise BrokerError(
            f"SASL refused: the broker at {address} does not accept {mechanism} (it accepts "
            f"{', '.join(enabled) or 'none'}); set MIGRATION_LEDGER_SASL_MECHANISM"
        )
    if error == _ILLEGAL_SASL_STATE or error != 0:
        return  # not a refusal of ours to explain; the client will report it
    options = {"security_protocol": settings.security_protocol, **kafka_python_security(settings)}
    client = get_sasl_mechanism(mechanism)(host=address.rpartition(":")[0], **options)
    while not client.is_done():
        token = client.auth_bytes()
        sock.sendall(_request(_SASL_AUTHENTICATE, 1, struct.pack(">i", len(token)) + token))
        answer = _answer(sock)
        (_correlation, error) = struct.unpack_from(">ih", answer, 0)
        message, offset = _string(answer, 6)
        if error == _SASL_AUTHENTICATION_FAILED:
            raise BrokerError(
                f"SASL refused: the broker at {address} rejected the {mechanism} login of user "
                f"{settings.sasl_username!r} ({message or 'authentication failed'}); check "
                "MIGRATION_LEDGER_SASL_USERNAME and MIGRATION_LEDGER_SASL_PASSWORD"
            )
        if error != 0:
            return
        (length,) = struct.unpack_from(">i", answer, offset)
        client.receive(answer[offset + 4 : offset + 4 + max(length, 0)])
