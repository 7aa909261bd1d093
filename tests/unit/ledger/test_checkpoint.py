"""Checkpoints as C2SP signed notes: format, parse, sign, verify."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    Signer,
    Verifier,
    flag_log_origin,
    format_note,
    generate_key_pair,
    parse_note,
    parse_origin,
    partition_origin,
)

SEED = bytes(range(32))
ROOT = hashlib.sha256(b"root").digest()


def signer() -> Signer:
    return Signer.from_text(base64.b64encode(SEED))


def test_an_unsigned_checkpoint_is_the_c2sp_body_alone() -> None:
    cp = Checkpoint("migration-ledger/flag-log/ledger.flag-events", 7, ROOT)
    note = format_note(cp)
    assert note == (
        f"migration-ledger/flag-log/ledger.flag-events\n7\n{base64.b64encode(ROOT).decode()}\n"
    )
    assert parse_note(note) == cp
    assert not parse_note(note).signed


def test_a_signed_note_has_a_blank_line_then_an_em_dash_signature_line() -> None:
    key = signer()
    note = format_note(key.sign(Checkpoint("o", 3, ROOT)))
    text, _blank, line = note.partition("\n\n")
    assert text + "\n" == Checkpoint("o", 3, ROOT).text
    assert line.startswith("\u2014 migration-ledger ")
    raw = base64.b64decode(line.split(" ")[2])
    public = key.verifier().public_pem()
    verifier = Verifier.from_text(public)
    assert int.from_bytes(raw[:4], "big") == verifier.key_id
    assert len(raw) == 4 + 64
    # C2SP's key id: SHA-256(name || 0x0A || 0x01 || raw public key)[:4].
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    raw_pub = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    expected = hashlib.sha256(b"migration-ledger\n\x01" + raw_pub).digest()[:4]
    assert raw[:4] == expected


def test_signatures_are_deterministic_so_a_republished_checkpoint_is_the_same_text() -> None:
    cp = Checkpoint("o", 3, ROOT)
    assert format_note(signer().sign(cp)) == format_note(signer().sign(cp))


def test_the_right_key_verifies_and_a_changed_size_root_or_other_key_does_not() -> None:
    key = signer()
    verifier = key.verifier()
    signed = parse_note(format_note(key.sign(Checkpoint("o", 3, ROOT))))
    assert verifier.verifies(signed)
    forged_size = Checkpoint("o", 4, ROOT, signed.signatures)
    forged_root = Checkpoint("o", 3, hashlib.sha256(b"x").digest(), signed.signatures)
    assert not verifier.verifies(forged_size)
    assert not verifier.verifies(forged_root)
    assert not generate_key_pair().verifier().verifies(signed)
    assert not verifier.verifies(Checkpoint("o", 3, ROOT))  # unsigned


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**40), st.binary(min_size=32, max_size=32), st.data())
def test_any_changed_byte_of_a_signed_note_breaks_it(
    size: int, root: bytes, data: st.DataObject
) -> None:
    key = signer()
    note = format_note(key.sign(Checkpoint("migration-ledger/ledger/t/0", size, root)))
    raw = bytearray(note.encode())
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.sampled_from([1, 2, 4, 32]))
    try:
        changed = parse_note(raw.decode())
    except (CheckpointError, UnicodeDecodeError, ValueError):
        return  # unreadable: refused
    assert not key.verifier().verifies(changed)


def test_keys_round_trip_through_pem() -> None:
    key = generate_key_pair()
    again = Signer.from_text(key.private_pem())
    cp = Checkpoint("o", 1, ROOT)
    assert key.verifier().verifies(again.sign(cp))
    with pytest.raises(CheckpointError):
        Signer.from_text("not a key")
    with pytest.raises(CheckpointError):
        Verifier.from_text(key.private_pem())


def test_origins_name_their_tree() -> None:
    assert parse_origin(flag_log_origin("p.ledger.flag-events")) == (
        "flag-log",
        "p.ledger.flag-events",
        None,
    )
    assert parse_origin(partition_origin("ledger.decisions", 3)) == (
        "ledger",
        "ledger.decisions",
        3,
    )
    with pytest.raises(CheckpointError):
        parse_origin("example.com/log")
