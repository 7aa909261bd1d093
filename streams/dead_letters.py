"""Turning input that cannot be used into a ``DeadLettered`` event, so the pipeline goes on.

The dead letter keeps the original bytes (base64), the reason and where the input sat in
Kafka. Its ``event_id`` is derived from that position, so the same bad message dead-lettered
twice (a replay after a crash) is recognisably the same dead letter.
"""

from __future__ import annotations

from typing import TypeVar

from ledger.errors import EventDecodeError
from ledger.events import MAX_DEAD_LETTER_REASON, Event, dead_letter, decode_event

__all__ = ["MAX_REASON", "Rejected", "dead_letter", "decode_or_reject"]

#: A reason longer than this is cut: a huge payload's validation message can be huge too.
MAX_REASON = MAX_DEAD_LETTER_REASON

E = TypeVar("E", bound=Event)


class Rejected(Exception):
    """Raised by :func:`decode_or_reject`; carries the reason to dead-letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_or_reject(raw: bytes | None, expected: type[E]) -> E:
    """Decode one message value as ``expected`` or raise :class:`Rejected` with why."""
    if raw is None or raw == b"":
        raise Rejected("empty message value")
    try:
        event = decode_event(raw, expected=expected)
    except EventDecodeError as exc:
        raise Rejected(f"not a valid {expected.__name__}: {exc}") from exc
    assert isinstance(event, expected)
    return event
