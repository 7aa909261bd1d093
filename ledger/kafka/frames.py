"""Reading Kafka's length-prefixed frames from a raw socket.

The two places that speak the protocol by hand (the broker manager's readiness probe, which must
need no client library, and the clients' preflight, which names a refusal the libraries hide)
read frames the same way; this module is that way, and imports nothing heavy.
"""

from __future__ import annotations

import socket

__all__ = ["read_exactly"]


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``sock``, however the kernel splits them; ``ConnectionError`` if
    the peer closes first."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        chunks += chunk
    return bytes(chunks)
