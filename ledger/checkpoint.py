"""Checkpoints: (origin, tree size, root hash) as C2SP signed notes, signed with Ed25519.

A checkpoint's text is C2SP's (``c2sp.org/tlog-checkpoint``)::

    migration-ledger/ledger/ledger.decisions/2
    1520
    <base64 root hash>

then, when signed, a blank line and one line per signature (``c2sp.org/signed-note``)::

    — migration-ledger <base64(key id || Ed25519 signature of the text)>

with key id = SHA-256(key name || 0x0A || 0x01 || public key)[:4]. An unsigned checkpoint is
the text alone: it says what the tree was, and proves it only to whoever trusts the place it
is kept.

Origins name the tree: ``migration-ledger/flag-log/<flag topic>`` for the flag log writer's
tree over the flag events it appended (leaf: the event's wire bytes), and
``migration-ledger/ledger/<topic>/<partition>`` for the sink's tree over the records stored
from one partition in offset order (leaf: :func:`record_leaf_data`).

Why the Ed25519 calls sit here and not in an adapter: signing and verifying are pure,
deterministic computations (Ed25519 signatures are deterministic: the same key and text give
the same signature, so a checkpoint published twice is the same event twice). They read no
file, no clock and no network; the key's bytes are passed in. Reading a key file is the
adapters' job (``ledger.store.keys``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import LedgerError

__all__ = [
    "DEFAULT_KEY_NAME",
    "Checkpoint",
    "CheckpointError",
    "Signer",
    "Verifier",
    "flag_log_origin",
    "format_note",
    "generate_key_pair",
    "parse_note",
    "parse_origin",
    "partition_origin",
    "record_leaf_data",
]

DEFAULT_KEY_NAME = "migration-ledger"
ORIGIN_PREFIX = "migration-ledger"
_ED25519 = b"\x01"
_DASH = "\u2014 "


class CheckpointError(LedgerError, ValueError):
    """A checkpoint or key that cannot be read, or whose signature does not verify."""


def flag_log_origin(topic: str) -> str:
    return f"{ORIGIN_PREFIX}/flag-log/{topic}"


def partition_origin(topic: str, partition: int) -> str:
    return f"{ORIGIN_PREFIX}/ledger/{topic}/{partition}"


def parse_origin(origin: str) -> tuple[str, str, int | None]:
    """(``"flag-log"`` or ``"ledger"``, topic, partition or None) of one of our origins."""
    parts = origin.split("/")
    if len(parts) == 3 and parts[0] == ORIGIN_PREFIX and parts[1] == "flag-log":
        return "flag-log", parts[2], None
    if len(parts) == 4 and parts[:2] == [ORIGIN_PREFIX, "ledger"] and parts[3].isdigit():
        return "ledger", parts[2], int(parts[3])
    raise CheckpointError(f"not a migration-ledger origin: {origin!r}")


def record_leaf_data(topic: str, partition: int, offset: int, wire: bytes) -> bytes:
    """What the sink's tree hashes for one stored record (topic names hold no newline)."""
    return f"{topic}\n{partition}\n{offset}\n".encode() + wire


@dataclass(frozen=True)
class Checkpoint:
    """A tree head, optionally with the signatures of its text (key name, key id, signature)."""

    origin: str
    size: int
    root: bytes
    signatures: tuple[tuple[str, int, bytes], ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("a checkpoint origin is one non-empty line")
        if self.size < 0 or len(self.root) != 32:
            raise CheckpointError("a checkpoint needs a size >= 0 and a 32-byte root hash")

    @property
    def text(self) -> str:
        """The signed text (C2SP checkpoint body, final newline included)."""
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @property
    def signed(self) -> bool:
        return bool(self.signatures)

    @property
    def root_hex(self) -> str:
        return self.root.hex()


def format_note(checkpoint: Checkpoint) -> str:
    """The note: the text, then (if signed) a blank line and the signature lines."""
    if not checkpoint.signatures:
        return checkpoint.text
    lines = [
        f"{_DASH}{name} {base64.b64encode(key_id.to_bytes(4, 'big') + sig).decode()}\n"
        for name, key_id, sig in checkpoint.signatures
    ]
    return checkpoint.text + "\n" + "".join(lines)


def parse_note(note: str) -> Checkpoint:
    """Read a note written by :func:`format_note` (signatures are kept, not yet verified)."""
    text, _, tail = note.partition("\n\n")
    body = text.split("\n")
    if len(body) < 3 or body[2] == "":
        raise CheckpointError("a checkpoint has an origin, a size and a root hash line")
    origin, size_text, root_text = body[0], body[1], body[2]
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise CheckpointError(f"checkpoint size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"checkpoint root {root_text!r} is not base64") from exc
    signatures: list[tuple[str, int, bytes]] = []
    for line in tail.split("\n"):
        if not line:
            continue
        if not line.startswith(_DASH):
            raise CheckpointError(f"not a signature line: {line!r}")
        name, _, value = line[len(_DASH) :].rpartition(" ")
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CheckpointError(f"signature of {name!r} is not base64") from exc
        if len(raw) < 5 or not name:
            raise CheckpointError(f"signature line of {name!r} is too short")
        signatures.append((name, int.from_bytes(raw[:4], "big"), raw[4:]))
    return Checkpoint(origin, int(size_text), root, tuple(signatures))


def _key_id(name: str, public: bytes) -> int:
    return int.from_bytes(hashlib.sha256(name.encode() + b"\n" + _ED25519 + public).digest()[:4])


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class Signer:
    """Signs checkpoints with one Ed25519 private key under one key name."""

    def __init__(self, private_key: Ed25519PrivateKey, name: str = DEFAULT_KEY_NAME) -> None:
        if not name or any(c.isspace() or c == "+" for c in name):
            raise CheckpointError("a key name is non-empty, without spaces or '+'")
        self._key = private_key
        self.name = name
        self.key_id = _key_id(name, _raw_public(private_key.public_key()))

    @classmethod
    def from_text(cls, text: str | bytes, name: str = DEFAULT_KEY_NAME) -> Signer:
        """A PEM (PKCS 8) private key, or the base64 of a raw 32-byte Ed25519 seed."""
        data = text.encode() if isinstance(text, str) else text
        try:
            if b"-----BEGIN" in data:
                key = serialization.load_pem_private_key(data, password=None)
            else:
                key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip()))
        except (ValueError, TypeError, binascii.Error):
            raise CheckpointError("the signing key is not an Ed25519 private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise CheckpointError("the signing key is not an Ed25519 private key")
        return cls(key, name)

    def verifier(self) -> Verifier:
        return Verifier(self._key.public_key(), self.name)

    def sign(self, checkpoint: Checkpoint) -> Checkpoint:
        """The checkpoint with this key's signature (any earlier one of this key replaced)."""
        signature = self._key.sign(checkpoint.text.encode())
        others = tuple(s for s in checkpoint.signatures if (s[0], s[1]) != (self.name, self.key_id))
        return Checkpoint(
            checkpoint.origin,
            checkpoint.size,
            checkpoint.root,
            (*others, (self.name, self.key_id, signature)),
        )

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


class Verifier:
    """Checks checkpoints against one trusted Ed25519 public key and key name."""

    def __init__(self, public_key: Ed25519PublicKey, name: str = DEFAULT_KEY_NAME) -> None:
        self._key = public_key
        self.name = name
        self.key_id = _key_id(name, _raw_public(public_key))

    @classmethod
    def from_text(cls, text: str | bytes, name: str = DEFAULT_KEY_NAME) -> Verifier:
        """A PEM public key, or the base64 of a raw 32-byte Ed25519 public key."""
        data = text.encode() if isinstance(text, str) else text
        try:
            if b"-----BEGIN" in data:
                key = serialization.load_pem_public_key(data)
            else:
                key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip()))
        except (ValueError, TypeError, binascii.Error):
            raise CheckpointError("the public key is not an Ed25519 public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise CheckpointError("the public key is not an Ed25519 public key")
        return cls(key, name)

    def verifies(self, checkpoint: Checkpoint) -> bool:
        """True when the checkpoint carries a valid signature of this key (C2SP's rule: a
        signature of this key that fails rejects the note; other keys' are ignored)."""
        ours = [s for s in checkpoint.signatures if (s[0], s[1]) == (self.name, self.key_id)]
        if not ours:
            return False
        for _, _, signature in ours:
            try:
                self._key.verify(signature, checkpoint.text.encode())
            except InvalidSignature:
                return False
        return True

    def public_pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_key_pair(name: str = DEFAULT_KEY_NAME) -> Signer:
    """A new random Ed25519 key (the randomness is the operating system's, via cryptography)."""
    return Signer(Ed25519PrivateKey.generate(), name)
