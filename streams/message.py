"""What the agents read of a faust message (``faust.types.Message``), as one protocol."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Message"]


class Message(Protocol):
    """The parts of a faust message the agents read."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None
