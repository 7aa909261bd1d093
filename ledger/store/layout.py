"""The ledger folder on disk: segment names, which segments are live, and the two locks.

``settings.duckdb`` names a FOLDER::

    <ledger>/
      LEDGER                      marker: {"format": 1}; nothing is written to a folder without it
      .writer.lock                flock'ed exclusively by the one writer (sink, ingest, compact)
      .snapshot.lock              shared by readers while they list; exclusive while a commit swaps
      segments/
        _schema/<table>.parquet   zero-row file per table: the current column types
        <topic>+<partition>+<first>+<last>/     one committed segment (offsets zero-padded)
          <table>.parquet         rows of that table from that offset range
          manifest.json           row counts, dead letters, duplicates of the range
      tmp/                        segments being written (cleared when a writer starts)

A segment is written under ``tmp/`` and renamed into ``segments/`` in one ``rename(2)``: it is
either wholly there or not at all, with every table it touches. Its name is the commit
record: the highest ``last`` per (topic, partition) is the committed offset. A segment whose
range lies inside another's was replaced by compaction and is not live; it stays on disk for
a grace period (readers that listed it earlier may still read it), then the writer deletes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import StoreError

__all__ = [
    "FORMAT",
    "INGEST_TOPIC",
    "Layout",
    "Segment",
    "committed_offsets",
    "fsync_dir",
    "fsync_file",
    "live_segments",
]

FORMAT = 1
#: Pseudo topic of records loaded by ``ingest`` (files, no Kafka).
INGEST_TOPIC = "_ingest"
OFFSET_DIGITS = 19
_NAME = re.compile(
    r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<first>\d{19})\+(?P<last>\d{19})$"
)


@dataclass(frozen=True, order=True)
class Segment:
    """One committed (or candidate) segment: a (topic, partition) offset range."""

    topic: str
    partition: int
    first: int
    last: int

    @property
    def name(self) -> str:
        return (
            f"{self.topic}+{self.partition}+"
            f"{self.first:0{OFFSET_DIGITS}d}+{self.last:0{OFFSET_DIGITS}d}"
        )

    @classmethod
    def parse(cls, name: str) -> Segment | None:
        match = _NAME.match(name)
        if match is None:
            return None
        return cls(match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]))

    def covers(self, other: Segment) -> bool:
        """True when ``other`` is a strictly smaller range of the same partition inside this."""
        return (
            self != other
            and self.topic == other.topic
            and self.partition == other.partition
            and self.first <= other.first
            and other.last <= self.last
        )


def live_segments(segments: Iterable[Segment]) -> tuple[list[Segment], list[Segment]]:
    """Split into (live, replaced): a segment inside another's range was compacted away.

    Ranges of one partition either nest (compaction) or follow each other (commits); a
    partial overlap means two writers wrote the same partition, which the writer lock forbids.
    """
    by_partition: dict[tuple[str, int], list[Segment]] = {}
    for segment in segments:
        by_partition.setdefault((segment.topic, segment.partition), []).append(segment)
    live: list[Segment] = []
    replaced: list[Segment] = []
    for group in by_partition.values():
        # Widest first among equal starts, so a compacted range comes before its parts.
        group.sort(key=lambda s: (s.first, -s.last))
        reach = -1
        for segment in group:
            if segment.last <= reach:
                replaced.append(segment)
                continue
            if segment.first <= reach:
                raise StoreError(
                    f"segments overlap without nesting at {segment.name}: two writers?"
                )
            live.append(segment)
            reach = segment.last
    live.sort(key=lambda s: (s.topic, s.partition, s.first))
    return live, replaced


def committed_offsets(segments: Iterable[Segment]) -> dict[tuple[str, int], int]:
    """The last stored offset per (topic, partition): a writer resumes at ``last + 1``."""
    offsets: dict[tuple[str, int], int] = {}
    for segment in segments:
        key = (segment.topic, segment.partition)
        offsets[key] = max(offsets.get(key, -1), segment.last)
    return offsets


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Layout:
    """Paths inside one ledger folder."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / "LEDGER"

    @property
    def segments(self) -> Path:
        return self.root / "segments"

    @property
    def schema_dir(self) -> Path:
        return self.segments / "_schema"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def segment_dir(self, segment: Segment) -> Path:
        return self.segments / segment.name

    def schema_file(self, table: str) -> Path:
        return self.schema_dir / f"{table}.parquet"

    def exists(self) -> bool:
        return self.marker.is_file()

    def check_readable(self) -> None:
        if self.root.is_file():
            raise StoreError(
                f"{self.root} is a file; the ledger location is a folder of Parquet segments "
                "(MIGRATION_LEDGER_DUCKDB / --duckdb)"
            )
        if not self.exists():
            raise StoreError(
                f"no ledger at {self.root} (no LEDGER marker); fill one with "
                "`migration-ledger sink` or `migration-ledger ingest`"
            )
        try:
            marker = json.loads(self.marker.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"unreadable ledger marker {self.marker}: {exc}") from exc
        if not isinstance(marker, dict) or marker.get("format") != FORMAT:
            raise StoreError(f"{self.root} has ledger format {marker!r}, expected {FORMAT}")

    def create(self) -> None:
        """Make the folder a ledger, or check it is one; refuse a folder holding other things."""
        if self.root.is_file():
            self.check_readable()  # raises with the explanation
        if not self.exists():
            if self.root.is_dir() and any(self.root.iterdir()):
                raise StoreError(
                    f"{self.root} is a non-empty folder that is not a ledger; "
                    "choose an empty or new location"
                )
            self.root.mkdir(parents=True, exist_ok=True)
            tmp_marker = self.root / "LEDGER.tmp"
            tmp_marker.write_text(json.dumps({"format": FORMAT}) + "\n")
            for directory in (self.segments, self.schema_dir, self.tmp):
                directory.mkdir(exist_ok=True)
            for lock in (".writer.lock", ".snapshot.lock"):
                (self.root / lock).touch()
            fsync_file(tmp_marker)
            tmp_marker.rename(self.marker)
            fsync_dir(self.root)
        self.check_readable()
        for directory in (self.segments, self.schema_dir, self.tmp):
            directory.mkdir(exist_ok=True)

    def list_segments(self) -> list[Segment]:
        """Every segment folder's range (live or replaced); ignores anything else."""
        found: list[Segment] = []
        with os.scandir(self.segments) as entries:
            for entry in entries:
                segment = Segment.parse(entry.name)
                if segment is not None:
                    found.append(segment)
        return found

    @contextlib.contextmanager
    def snapshot_lock(self, *, exclusive: bool) -> Iterator[None]:
        """Readers list under a shared lock; a commit or compaction swaps under an exclusive one.

        So a reader never lists half of a compaction (the merged segment missing and its parts
        already moved away) nor half of a multi-partition commit.
        """
        path = self.root / ".snapshot.lock"
        fd = (
            os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
            if exclusive
            else os.open(path, os.O_RDONLY)
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def acquire_writer_lock(self) -> int:
        """Hold the single-writer lock; the returned descriptor keeps it until closed."""
        path = self.root / ".writer.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreError(
                f"the ledger at {self.root} is being written by {holder} "
                "(one writer at a time: the sink, ingest or compact)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        return fd
