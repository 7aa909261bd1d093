"""Turning input that cannot be used into a ``DeadLettered`` event, so the pipeline goes on.

The dead letter keeps the original bytes (base64), the reason and where the input sat in
Kafka. Its ``event_id`` is derived from that position, so the same bad message dead-lettered
twice (a replay after a crash) is recognisably the same dead letter.
"""

from __future__ import annotations

from typing import TypeVar

from ledger import wire
from ledger.errors import EventDecodeError
from ledger.events import MAX_DEAD_LETTER_REASON, Event, dead_letter

__all__ = ["MAX_REASON", "Rejected", "dead_letter", "decode_or_reject"]

#: A reason longer than this is cut: a huge payload's validation message can be huge too.
MAX_REASON = MAX_DEAD_LETTER_REASON

E = TypeVar("E", bound=Event)


class Rejected(Exception):
    """Raised by :func:`decode_or_reject`; carries the reason to dead-letter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_or_reject(
    raw: bytes | None, expected: type[E], *, topic: str | None = None, key: bytes | None = None
) -> E:
    """Decode one message value as ``expected`` or raise :class:`Rejected` with why.

    The decoder is ``ledger.wire``'s, the sink's too, so both give the same verdict and
    reason; with ``topic``, the topic's key rule is checked as well (``key``).
    """
    try:
        if topic is None:
            event = wire.decode(raw, expected=expected)
        else:
            event = wire.decode_record(topic, key, raw)
    except EventDecodeError as exc:
        raise Rejected(str(exc)) from exc
    if not isinstance(event, expected):
        raise Rejected(f"not a valid {expected.__name__}: type: {type(event).__name__}")
    return event
