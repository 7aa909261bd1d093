"""Dead letters keep the input, its origin and why it was refused."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.events import DeadLettered, OperationRecorded, decode_event, encode_event
from streams.dead_letters import MAX_REASON, Rejected, dead_letter, decode_or_reject

AT = datetime(2025, 3, 1, tzinfo=UTC)


@given(st.binary(max_size=200), st.text(min_size=1, max_size=3000))
def test_dead_letter_round_trips_with_original_bytes(raw: bytes, reason: str) -> None:
    letter = dead_letter(raw, reason=reason, topic="t", partition=1, offset=7, key=b"k", at=AT)
    again = decode_event(encode_event(letter))
    assert isinstance(again, DeadLettered)
    assert base64.b64decode(again.original_b64) == raw
    assert len(again.reason) <= MAX_REASON
    assert again.source_offset == 7


def test_same_position_gives_the_same_dead_letter_id() -> None:
    a = dead_letter(b"x", reason="r", topic="t", partition=0, offset=3, key=None, at=AT)
    b = dead_letter(b"x", reason="r", topic="t", partition=0, offset=3, key=None, at=AT)
    c = dead_letter(b"x", reason="r", topic="t", partition=0, offset=4, key=None, at=AT)
    assert a.event_id == b.event_id != c.event_id


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (None, "empty"),
        (b"", "empty"),
        (b"[1, 2", "not JSON"),
        (b'{"type": "OperationRecorded"}', "event_id"),
        (b'{"type": "OperationRecorded", "pool": "v3"}', "pool"),
    ],
)
def test_bad_input_is_rejected_with_a_reason_naming_the_problem(
    raw: bytes | None, named: str
) -> None:
    with pytest.raises(Rejected) as caught:
        decode_or_reject(raw, OperationRecorded)
    assert named in caught.value.reason
