"""Turning input that cannot be used into a ``DeadLettered`` event, so the pipeline goes on.

The dead letter keeps the original bytes (base64), the reason and where the input sat in
Kafka. Its ``event_id`` is derived from that position, so the same bad message dead-lettered
twice (a replay after a crash) is recognisably the same dead letter.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import TypeVar

from ledger import wire
from ledger.errors import EventDecodeError
from ledger.events import DeadLettered, Event

__all__ = ["MAX_REASON", "Rejected", "dead_letter", "decode_or_reject"]

#: A reason longer than this is cut: a huge payload's validation message can be huge too.
MAX_REASON = 2_000

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


def dead_letter(
    raw: bytes | None,
    *,
    reason: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    at: datetime,
) -> DeadLettered:
    """The dead letter of one input message."""
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    return DeadLettered(
        event_id=f"dead-letter:{topic}:{partition}:{offset}",
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        reason=reason,
        original_key=None if key is None else key.decode("utf-8", errors="replace"),
        original_b64=base64.b64encode(raw or b"").decode("ascii"),
        at=at,
    )
