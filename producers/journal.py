"""The publisher's append-only journal: events on their way to Kafka, kept on local disk.

Every event the publisher accepts passes through this file, one JSON line per event::

    {"topic":"pool.operations","key":"c-42","value":{...the event, byte for byte...}}

A sidecar ``<name>.cursor`` holds the byte offset up to which Kafka has acknowledged the
lines. Lines after it are *pending*: they are sent in file order, and on start-up a new
publisher sends the pending lines of the previous process first. When every line has been
acknowledged the file is truncated (so it stays small while Kafka is up and grows only while
Kafka is away).

The value is stored verbatim after the ``"value":`` marker rather than re-encoded, so what
reaches Kafka after a replay is exactly what would have been sent at once. ``topic`` and
``key`` are JSON strings and come first, so the first ``,"value":`` in a line is ours: inside
a JSON string literal a quote is always escaped.

Writes go through ``os.write`` on an ``O_APPEND`` descriptor (nothing lingers in a Python
buffer) and are fsync'd in batches by :meth:`Journal.sync`; reads use ``os.pread`` on their
own descriptor. A line torn by a crash (no trailing newline) is cut off when the file is
opened; a line that cannot be parsed is skipped, counted and logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import PublishError

__all__ = ["Envelope", "Journal", "JournalEntry"]

log = logging.getLogger(__name__)

_VALUE_MARKER = b',"value":'
_READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Envelope:
    """One encoded event and where it goes."""

    topic: str
    key: str | None
    value: bytes

    def line(self) -> bytes:
        """The journal line of this envelope (with its newline)."""
        head = json.dumps({"topic": self.topic, "key": self.key}, separators=(",", ":"))
        return b"".join((head[:-1].encode(), _VALUE_MARKER, self.value, b"}\n"))


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journal line read back: the envelope and the byte range it occupies."""

    envelope: Envelope
    offset: int
    end: int
    #: True when the line was written by an earlier process (a restart replays it).
    inherited: bool


def _parse(line: bytes) -> Envelope:
    marker = line.find(_VALUE_MARKER)
    if marker < 0 or not line.endswith(b"}"):
        raise ValueError("no value in journal line")
    head = json.loads(line[:marker] + b"}")
    topic, key = head.get("topic"), head.get("key")
    if not isinstance(topic, str) or not (key is None or isinstance(key, str)):
        raise ValueError("journal line has no string topic/key")
    value = line[marker + len(_VALUE_MARKER) : -1]
    if not value:
        raise ValueError("empty value in journal line")
    return Envelope(topic, key, value)


class Journal:
    """An append-only file of envelopes with an acknowledged-up-to cursor.

    Thread-safe: one thread appends (and callers may spill into it), another reads and
    acknowledges. ``append`` never fsyncs; ``sync`` does, for everything appended so far.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cursor_path = path.with_name(path.name + ".cursor")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)
        self._write_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # Two publishers on one journal would interleave and double-send: refuse.
            fcntl.flock(self._write_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._write_fd)
            raise PublishError(
                f"The journal {path} is in use by another publisher; give each process its "
                "own journal path."
            ) from exc
        self._read_fd = os.open(path, os.O_RDONLY)
        self._size = self._repair_tail()
        self._cursor = min(self._load_cursor(), self._size)
        self._read_at = self._cursor
        #: Lines before this offset were written by an earlier process.
        self._inherited_end = self._size
        self._pending = self._count_lines(self._cursor, self._size)
        self._dirty = False
        self._last_sync = time.monotonic()
        self.corrupt_lines = 0
        self._corrupt_offsets: set[int] = set()
        self._closed = False

    # -- opening ----------------------------------------------------------------------

    def _repair_tail(self) -> int:
        """Cut off a last line without its newline: a write torn by a crash."""
        size = os.fstat(self._write_fd).st_size
        if size == 0:
            return 0
        tail_start = max(0, size - _READ_CHUNK)
        tail = os.pread(self._read_fd, size - tail_start, tail_start)
        if tail.endswith(b"\n"):
            return size
        newline = tail.rfind(b"\n")
        keep = tail_start + newline + 1 if newline >= 0 else 0
        if newline < 0 and tail_start > 0:
            keep = tail_start  # a single line longer than the chunk: drop just that tail
        log.warning("journal %s: cutting a torn last line (%d bytes)", self.path, size - keep)
        os.truncate(self.path, keep)
        return keep

    def _load_cursor(self) -> int:
        try:
            value = json.loads(self.cursor_path.read_text())["offset"]
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError):
            log.warning("journal %s: unreadable cursor, replaying from the start", self.path)
            return 0
        return value if isinstance(value, int) and value >= 0 else 0

    def _count_lines(self, start: int, end: int) -> int:
        count, offset = 0, start
        while offset < end:
            chunk = os.pread(self._read_fd, min(_READ_CHUNK, end - offset), offset)
            if not chunk:
                break
            count += chunk.count(b"\n")
            offset += len(chunk)
        return count

    # -- writing ----------------------------------------------------------------------

    def append(self, envelopes: Iterable[Envelope]) -> int:
        """Append envelopes in order (one write); returns how many. Not fsync'd yet."""
        lines = [envelope.line() for envelope in envelopes]
        if not lines:
            return 0
        data = b"".join(lines)
        with self._lock:
            self._write_all(data)
            self._size += len(data)
            self._pending += len(lines)
            self._dirty = True
            self._appended.notify_all()
        return len(lines)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._write_fd, view)
            view = view[written:]

    def sync(self) -> None:
        """fsync what was appended so far (no-op when nothing was)."""
        with self._lock:
            if not self._dirty or self._closed:
                return
            self._dirty = False
        # Outside the lock: appends may continue while the disk catches up.
        os.fsync(self._write_fd)
        self._last_sync = time.monotonic()

    def sync_if_older_than(self, interval: float) -> None:
        if time.monotonic() - self._last_sync >= interval:
            self.sync()

    # -- reading and acknowledging ------------------------------------------------------

    def wait_for_unread(self, timeout: float) -> bool:
        """Block until there is something to read (or ``timeout``); True if there is."""
        with self._lock:
            if self._read_at < self._size:
                return True
            self._appended.wait(timeout)
            return self._read_at < self._size

    def read(self, limit: int) -> list[JournalEntry]:
        """Up to ``limit`` unread entries in order; the read position moves past them."""
        with self._lock:
            start, end, inherited_end = self._read_at, self._size, self._inherited_end
        entries: list[JournalEntry] = []
        offset = start
        while offset < end and len(entries) < limit:
            chunk = os.pread(self._read_fd, min(_READ_CHUNK, end - offset), offset)
            if not chunk:
                break
            position = 0
            while len(entries) < limit:
                newline = chunk.find(b"\n", position)
                if newline < 0:
                    break
                line_start = offset + position
                line_end = offset + newline + 1
                try:
                    envelope = _parse(chunk[position:newline])
                except ValueError as exc:
                    self._skip_corrupt(line_start, exc)
                else:
                    entries.append(
                        JournalEntry(envelope, line_start, line_end, line_end <= inherited_end)
                    )
                position = newline + 1
            if position == 0:  # one line longer than the chunk: read it whole
                line = self._read_long_line(offset, end)
                try:
                    entries.append(
                        JournalEntry(
                            _parse(line[:-1]),
                            offset,
                            offset + len(line),
                            offset + len(line) <= inherited_end,
                        )
                    )
                except ValueError as exc:
                    self._skip_corrupt(offset, exc)
                position = len(line)
            offset += position
        with self._lock:
            if self._read_at == start:  # not rewound meanwhile
                self._read_at = offset
        return entries

    def _read_long_line(self, offset: int, end: int) -> bytes:
        parts: list[bytes] = []
        while offset < end:
            chunk = os.pread(self._read_fd, min(_READ_CHUNK, end - offset), offset)
            newline = chunk.find(b"\n")
            if newline >= 0:
                parts.append(chunk[: newline + 1])
                break
            parts.append(chunk)
            offset += len(chunk)
        return b"".join(parts)

    def _skip_corrupt(self, offset: int, exc: Exception) -> None:
        with self._lock:
            if offset in self._corrupt_offsets:
                return  # read again after a rewind: already counted
            self._corrupt_offsets.add(offset)
            self._pending = max(0, self._pending - 1)
        self.corrupt_lines += 1
        log.error("journal %s: skipping unreadable line at byte %d: %s", self.path, offset, exc)

    def rewind(self, offset: int) -> None:
        """Read again from ``offset`` (an entry that must be re-sent)."""
        with self._lock:
            self._read_at = max(self._cursor, min(offset, self._read_at))

    def acknowledge(self, entries: Sequence[JournalEntry]) -> None:
        """Kafka has the entries, which must be the oldest pending ones, in order.

        Lines skipped as corrupt between them count as handled too.
        """
        if not entries:
            return
        end = entries[-1].end
        with self._lock:
            if end <= self._cursor:
                return
            done = sum(1 for entry in entries if entry.offset >= self._cursor)
            self._cursor = end
            self._pending = max(0, self._pending - done)
            self._write_cursor()

    def _write_cursor(self) -> None:
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        tmp.write_text(json.dumps({"offset": self._cursor}))
        tmp.replace(self.cursor_path)

    def compact(self, min_bytes: int = 0) -> bool:
        """Truncate the file when every line is acknowledged (and it holds >= ``min_bytes``)."""
        with self._lock:
            drained = self._cursor == self._size or (
                self._pending == 0 and self._read_at == self._size
            )
            if not drained or self._size < min_bytes or self._size == 0:
                return False
            os.ftruncate(self._write_fd, 0)
            self._size = self._cursor = self._read_at = self._inherited_end = 0
            self._pending = 0
            self._corrupt_offsets.clear()
            self._write_cursor()
            return True

    # -- state ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Lines not yet acknowledged by Kafka."""
        with self._lock:
            return self._pending

    @property
    def size(self) -> int:
        with self._lock:
            return self._size

    def close(self) -> None:
        """fsync, persist the cursor and close the descriptors."""
        if self._closed:
            return
        self.sync()
        with self._lock:
            self._closed = True
            self._write_cursor()
            for fd in (self._write_fd, self._read_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._appended.notify_all()
