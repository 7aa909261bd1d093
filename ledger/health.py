"""Health windows: what one pool did for one operation during one tumbling window.

A ``HealthWindow`` is a mergeable accumulator: partial windows built on different partitions
(or replayed from different segments) merge, in any order, into exactly the window one
accumulator would have built from all the events. That is why every figure is a count, an
integer sum (durations in whole microseconds, so float rounding cannot depend on order), a
maximum, DDSketch bins (merging = adding bin counts) or a bottom-k sample (the k events with
the smallest hash of their id: a deterministic, order-free reservoir for the Mann-Whitney
judge). ``to_dict``/``from_dict`` give a JSON-able form for a Faust table.

Closing a window yields an unjudged ``HealthAssessed``; ``ledger.policy`` judges it against
the other pool's window. Pure code: time is always passed in.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

from ddsketch import LogarithmicMapping
from ddsketch.ddsketch import BaseDDSketch
from ddsketch.store import DenseStore

from ledger.events import (
    ComparisonRecorded,
    HealthAssessed,
    OperationRecorded,
    Pool,
    is_skipped_shadow,
)

__all__ = [
    "ALL_OPERATIONS",
    "DEFAULT_WINDOW",
    "MISMATCH_CATEGORIES",
    "MISSING_CATEGORIES",
    "RELATIVE_ACCURACY",
    "SAMPLE_SIZE",
    "WORKER_FAILURE_TYPES",
    "HealthWindow",
    "HealthWindows",
    "LatencySketch",
    "PartialWindows",
    "WindowMerger",
    "assessment_id_for",
    "merge_windows",
    "window_start",
]

#: Operation name of the window that sums every operation of a pool.
ALL_OPERATIONS: Final = "*"
DEFAULT_WINDOW: Final = timedelta(seconds=60)
#: DDSketch's alpha: a reported quantile is within 1% of the true one.
RELATIVE_ACCURACY: Final = 0.01
#: Latency values kept per window for the Mann-Whitney judge.
SAMPLE_SIZE: Final = 256
#: Canonical error types that mean the worker itself failed, not the program it ran.
WORKER_FAILURE_TYPES: Final = frozenset(
    {"initialization", "connection", "communication", "health_check"}
)
#: Comparison categories that count as V2 answering differently. ``v1_error`` is left out on
#: purpose: V1 failing alone is no reason to roll V2 back.
MISMATCH_CATEGORIES: Final = frozenset(
    {"value_mismatch", "shape_mismatch", "error_mismatch", "v2_error"}
)
MISSING_CATEGORIES: Final = frozenset({"shadow_missing", "primary_missing"})

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SAMPLE_KEY: Final = b"migration-ledger/health-sample"
_FORMAT: Final = 1


def window_start(at: datetime, size: timedelta = DEFAULT_WINDOW) -> datetime:
    """Start of the tumbling window holding ``at``: windows are aligned to the Unix epoch."""
    if size <= timedelta(0):
        raise ValueError("window size must be positive")
    return _EPOCH + ((at - _EPOCH) // size) * size


def assessment_id_for(pool: str, operation: str, start: datetime, size: timedelta) -> str:
    """The id of a window's assessment: derived, so a re-emission is recognisably the same."""
    text = f"{pool}|{operation}|{start.astimezone(UTC).isoformat()}|{size.total_seconds()}"
    return "health-" + hashlib.sha256(text.encode()).hexdigest()[:32]


@lru_cache(maxsize=8)
def _mapping(relative_accuracy: float) -> LogarithmicMapping:
    return LogarithmicMapping(relative_accuracy)


def _sample_priority(event_id: str) -> int:
    digest = hashlib.blake2b(event_id.encode(), digest_size=8, key=_SAMPLE_KEY).digest()
    return int.from_bytes(digest, "big")


def latency_key(value_ms: float, relative_accuracy: float = RELATIVE_ACCURACY) -> int | None:
    """The DDSketch bin of a latency (None: at or below the smallest it can tell from 0)."""
    mapping = _mapping(relative_accuracy)
    if value_ms <= mapping.min_possible:
        return None
    return int(mapping.key(value_ms))


def execution_keys(operation: OperationRecorded) -> tuple[int, int | None]:
    """The sample priority and the latency bin of one execution (its windows share them)."""
    return _sample_priority(operation.event_id), latency_key(operation.duration_ms)


def _micros(value_ms: float) -> int:
    return round(value_ms * 1000)


@dataclass
class LatencySketch:
    """DDSketch bins of non-negative latencies (ms), kept as a plain dict so they serialise.

    Adding uses the library's logarithmic key mapping and quantiles are read from a DDSketch
    assembled from the bins, so figures are the library's; merging adds bin counts, which is
    what ``DDSketch.merge`` does for sketches of equal accuracy.
    """

    relative_accuracy: float = RELATIVE_ACCURACY
    zero_count: int = 0
    bins: dict[int, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.zero_count + sum(self.bins.values())

    def add(self, value_ms: float) -> None:
        self.add_key(latency_key(value_ms, self.relative_accuracy))

    def add_key(self, key: int | None) -> None:
        """Count one value by its bin (``latency_key``; None: the zero bucket)."""
        if key is None:
            self.zero_count += 1
            return
        self.bins[key] = self.bins.get(key, 0) + 1

    def merged(self, other: LatencySketch) -> LatencySketch:
        if other.relative_accuracy != self.relative_accuracy:
            raise ValueError("cannot merge latency sketches of different accuracy")
        bins = dict(self.bins)
        for key, count in other.bins.items():
            bins[key] = bins.get(key, 0) + count
        return LatencySketch(self.relative_accuracy, self.zero_count + other.zero_count, bins)

    def to_ddsketch(self) -> BaseDDSketch:
        """The library's sketch holding these bins (for quantiles, or to hand to others)."""
        store = DenseStore()
        for key in sorted(self.bins):
            store.add(key, float(self.bins[key]))
        return BaseDDSketch(_mapping(self.relative_accuracy), store, DenseStore(), self.zero_count)

    def quantile(self, q: float) -> float | None:
        if self.count == 0:
            return None
        value = self.to_ddsketch().get_quantile_value(q)
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "relative_accuracy": self.relative_accuracy,
            "zero_count": self.zero_count,
            "bins": [[key, self.bins[key]] for key in sorted(self.bins)],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencySketch:
        return cls(
            relative_accuracy=float(data["relative_accuracy"]),
            zero_count=int(data["zero_count"]),
            bins={int(key): int(count) for key, count in data["bins"]},
        )


@dataclass
class HealthWindow:
    """The figures of one pool and operation over one tumbling window (mutable accumulator)."""

    pool: Pool
    operation: str
    start: datetime
    size: timedelta = DEFAULT_WINDOW
    count: int = 0
    error_count: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    latency: LatencySketch = field(default_factory=LatencySketch)
    latency_sum_us: int = 0
    cpu_count: int = 0
    cpu_sum_us: int = 0
    memory_bytes_max: int | None = None
    worker_failures: int = 0
    comparisons: int = 0
    mismatches: int = 0
    missing: int = 0
    sample_size: int = SAMPLE_SIZE
    #: hash priority -> latency (ms): the ``sample_size`` events with the smallest priority.
    sample: dict[int, float] = field(default_factory=dict)
    _largest: list[int] | None = field(default=None, compare=False, repr=False)

    @property
    def end(self) -> datetime:
        return self.start + self.size

    @property
    def key(self) -> tuple[str, str, datetime]:
        return (self.pool, self.operation, self.start)

    def add_operation(
        self,
        operation: OperationRecorded,
        *,
        error_type: str | None = None,
        worker_failure_types: frozenset[str] = WORKER_FAILURE_TYPES,
        keys: tuple[int, int | None] | None = None,
    ) -> None:
        """Count one execution; ``error_type`` is its canonical error type (else ``error.type``).

        ``keys`` are ``execution_keys(operation)`` when the caller counts the same execution
        in several windows (its operation's and the pool's): the hash and the sketch key are
        then computed once.
        """
        self.count += 1
        if operation.outcome == "error":
            self.error_count += 1
            kind = error_type or (operation.error.type if operation.error else "unknown")
            self.errors_by_type[kind] = self.errors_by_type.get(kind, 0) + 1
            if kind in worker_failure_types:
                self.worker_failures += 1
        else:
            # Latency describes answers only: a failure is judged by the error rate, and a
            # timeout's duration is the timeout setting. One timeout among the ~100 executions
            # of a short window would otherwise *be* its p99 and roll back a healthy pool.
            priority, bin_key = keys if keys is not None else execution_keys(operation)
            if self.latency.relative_accuracy == RELATIVE_ACCURACY:
                self.latency.add_key(bin_key)
            else:  # a sketch of its own accuracy: its own bins
                self.latency.add(operation.duration_ms)
            self.latency_sum_us += _micros(operation.duration_ms)
            self._sample(priority, operation.duration_ms)
        resources = operation.resources
        if resources is not None:
            if resources.cpu_ms is not None:
                self.cpu_count += 1
                self.cpu_sum_us += _micros(resources.cpu_ms)
            if resources.memory_bytes is not None:
                self.memory_bytes_max = max(self.memory_bytes_max or 0, resources.memory_bytes)

    def add_comparison(self, comparison: ComparisonRecorded) -> None:
        """Count one classified pair (mismatches and missing halves)."""
        if comparison.category in MISSING_CATEGORIES:
            self.missing += 1
            return
        self.comparisons += 1
        if comparison.category in MISMATCH_CATEGORIES:
            self.mismatches += 1

    def _sample(self, priority: int, value_ms: float) -> None:
        # A duplicate event has the same priority: keeping it once is the dedup.
        if priority in self.sample or self.sample_size <= 0:
            return
        if len(self.sample) < self.sample_size:
            self.sample[priority] = value_ms
            self._largest = None
            return
        heap = self._largest
        if heap is None or len(heap) != len(self.sample):
            # A max-heap (negated) of the kept priorities: replacing the largest is O(log k).
            heap = [-kept for kept in self.sample]
            heapq.heapify(heap)
            self._largest = heap
        if priority < -heap[0]:
            largest = -heapq.heapreplace(heap, -priority)
            del self.sample[largest]
            self.sample[priority] = value_ms

    def merged(self, other: HealthWindow) -> HealthWindow:
        """A new window holding both; raises ``ValueError`` for windows of another key/size."""
        if other.key != self.key or other.size != self.size:
            raise ValueError(f"cannot merge window {other.key} into {self.key}")
        errors = dict(self.errors_by_type)
        for kind, count in other.errors_by_type.items():
            errors[kind] = errors.get(kind, 0) + count
        sample_size = min(self.sample_size, other.sample_size)
        sample = {**self.sample, **other.sample}
        kept = dict(sorted(sample.items())[:sample_size])
        memory = [m for m in (self.memory_bytes_max, other.memory_bytes_max) if m is not None]
        return HealthWindow(
            pool=self.pool,
            operation=self.operation,
            start=self.start,
            size=self.size,
            count=self.count + other.count,
            error_count=self.error_count + other.error_count,
            errors_by_type=errors,
            latency=self.latency.merged(other.latency),
            latency_sum_us=self.latency_sum_us + other.latency_sum_us,
            cpu_count=self.cpu_count + other.cpu_count,
            cpu_sum_us=self.cpu_sum_us + other.cpu_sum_us,
            memory_bytes_max=max(memory) if memory else None,
            worker_failures=self.worker_failures + other.worker_failures,
            comparisons=self.comparisons + other.comparisons,
            mismatches=self.mismatches + other.mismatches,
            missing=self.missing + other.missing,
            sample_size=sample_size,
            sample=kept,
        )

    def sample_values(self) -> tuple[float, ...]:
        """The sampled latencies in priority order (deterministic, independent of arrival)."""
        return tuple(self.sample[priority] for priority in sorted(self.sample))

    def assessed(self, *, at: datetime) -> HealthAssessed:
        """This window as an unjudged ``HealthAssessed`` (``ledger.policy`` judges it)."""
        figures: dict[str, float] = {}
        if self.count:
            figures["error_rate"] = self.error_count / self.count
            figures["worker_failure_rate"] = self.worker_failures / self.count
        if self.comparisons:
            figures["mismatch_rate"] = self.mismatches / self.comparisons
        return HealthAssessed(
            event_id=assessment_id_for(self.pool, self.operation, self.start, self.size),
            pool=self.pool,
            operation=self.operation,
            window_start=self.start,
            window_end=self.end,
            count=self.count,
            error_count=self.error_count,
            errors_by_type=dict(sorted(self.errors_by_type.items())),
            p50_ms=self.latency.quantile(0.50),
            p95_ms=self.latency.quantile(0.95),
            p99_ms=self.latency.quantile(0.99),
            mean_ms=(
                self.latency_sum_us / 1000 / answered
                if (answered := self.count - self.error_count)
                else None
            ),
            comparisons=self.comparisons,
            mismatches=self.mismatches,
            missing=self.missing,
            cpu_ms_mean=self.cpu_sum_us / 1000 / self.cpu_count if self.cpu_count else None,
            memory_bytes_max=self.memory_bytes_max,
            worker_failures=self.worker_failures,
            latency_sample_ms=self.sample_values(),
            latency_sketch=self.latency.to_dict() if self.latency.count else None,
            metrics=figures,
            at=at,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (for a Faust table or a file); ``from_dict`` reverses it exactly."""
        return {
            "format": _FORMAT,
            "pool": self.pool,
            "operation": self.operation,
            "start": self.start.astimezone(UTC).isoformat(),
            "size_us": self.size // timedelta(microseconds=1),
            "count": self.count,
            "error_count": self.error_count,
            "errors_by_type": dict(sorted(self.errors_by_type.items())),
            "latency": self.latency.to_dict(),
            "latency_sum_us": self.latency_sum_us,
            "cpu_count": self.cpu_count,
            "cpu_sum_us": self.cpu_sum_us,
            "memory_bytes_max": self.memory_bytes_max,
            "worker_failures": self.worker_failures,
            "comparisons": self.comparisons,
            "mismatches": self.mismatches,
            "missing": self.missing,
            "sample_size": self.sample_size,
            # Priorities are 64-bit: strings keep them exact in any JSON reader.
            "sample": [[str(p), self.sample[p]] for p in sorted(self.sample)],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthWindow:
        if data.get("format") != _FORMAT:
            raise ValueError(f"unknown health window format {data.get('format')!r}")
        pool = data["pool"]
        if pool not in ("v1", "v2"):
            raise ValueError(f"pool: expected 'v1' or 'v2', got {pool!r}")
        memory = data["memory_bytes_max"]
        return cls(
            pool=pool,
            operation=str(data["operation"]),
            start=datetime.fromisoformat(data["start"]),
            size=timedelta(microseconds=int(data["size_us"])),
            count=int(data["count"]),
            error_count=int(data["error_count"]),
            errors_by_type={str(k): int(v) for k, v in data["errors_by_type"].items()},
            latency=LatencySketch.from_dict(data["latency"]),
            latency_sum_us=int(data["latency_sum_us"]),
            cpu_count=int(data["cpu_count"]),
            cpu_sum_us=int(data["cpu_sum_us"]),
            memory_bytes_max=None if memory is None else int(memory),
            worker_failures=int(data["worker_failures"]),
            comparisons=int(data["comparisons"]),
            mismatches=int(data["mismatches"]),
            missing=int(data["missing"]),
            sample_size=int(data["sample_size"]),
            sample={int(p): float(v) for p, v in data["sample"]},
        )


def merge_windows(windows: Iterable[HealthWindow]) -> HealthWindow:
    """One window from partial windows of the same key (order does not matter)."""
    merged: HealthWindow | None = None
    for window in windows:
        merged = window if merged is None else merged.merged(window)
    if merged is None:
        raise ValueError("no window to merge")
    return merged


@dataclass
class HealthWindows:
    """The open windows of every pool and operation, closed as event time moves on.

    Each execution counts in its operation's window and in the pool's ``"*"`` window;
    comparisons count in V2's windows (mismatches are V2's quality, V1 is the reference).
    Event time is ``started_at`` for executions and ``at`` for comparisons. An event for a
    window already closed is counted in ``late`` and otherwise ignored: a closed window has
    been published and is never re-opened.
    """

    size: timedelta = DEFAULT_WINDOW
    sample_size: int = SAMPLE_SIZE
    worker_failure_types: frozenset[str] = WORKER_FAILURE_TYPES
    open: dict[tuple[str, str, datetime], HealthWindow] = field(default_factory=dict)
    #: Windows starting before this have been closed.
    closed_before: datetime | None = None
    late: int = 0
    _last: datetime | None = field(default=None, compare=False, repr=False)

    def _window(self, pool: Pool, operation: str, start: datetime) -> HealthWindow:
        key = (pool, operation, start)
        window = self.open.get(key)
        if window is None:
            window = HealthWindow(
                pool=pool,
                operation=operation,
                start=start,
                size=self.size,
                sample_size=self.sample_size,
            )
            self.open[key] = window
        return window

    def _is_late(self, start: datetime) -> bool:
        if self.closed_before is not None and start < self.closed_before:
            self.late += 1
            return True
        return False

    def _start(self, at: datetime) -> datetime:
        # Events come roughly in time order: most fall in the window of the one before.
        last = self._last
        if last is not None and last <= at < last + self.size:
            return last
        start = self._last = window_start(at, self.size)
        return start

    def add_operation(self, operation: OperationRecorded, *, error_type: str | None = None) -> None:
        """Count one execution in its pool's windows; a skipped shadow is not an execution."""
        if is_skipped_shadow(operation):
            return
        start = self._start(operation.started_at)
        if self._is_late(start):
            return
        keys = execution_keys(operation) if operation.outcome != "error" else None
        for name in (operation.operation, ALL_OPERATIONS):
            self._window(operation.pool, name, start).add_operation(
                operation,
                error_type=error_type,
                worker_failure_types=self.worker_failure_types,
                keys=keys,
            )

    def add_comparison(self, comparison: ComparisonRecorded) -> None:
        start = self._start(comparison.at)
        if self._is_late(start):
            return
        names = [ALL_OPERATIONS]
        if comparison.operation is not None:
            names.insert(0, comparison.operation)
        for name in names:
            self._window("v2", name, start).add_comparison(comparison)

    def close_due(self, now: datetime, *, grace: timedelta = timedelta(0)) -> list[HealthWindow]:
        """Remove and return every window whose end + ``grace`` is at or before ``now``.

        Sorted by (start, pool, operation), so the assessments come out in a stable order.
        """
        horizon = window_start(now - grace, self.size)
        due = sorted(
            (key for key in self.open if key[2] < horizon), key=lambda k: (k[2], k[0], k[1])
        )
        if self.closed_before is None or horizon > self.closed_before:
            self.closed_before = horizon
        return [self.open.pop(key) for key in due]


@dataclass(frozen=True)
class PartialWindows:
    """What one input partition closed in one step: its windows, and how far it has closed.

    ``closed_before`` says every window of this partition starting before it is final, even
    one that had nothing (a partition without traffic still reports its progress); a merger
    waits for every partition's progress before it publishes a whole window.
    """

    partition: int
    closed_before: datetime
    windows: tuple[HealthWindow, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "partition": self.partition,
            "closed_before": self.closed_before.astimezone(UTC).isoformat(),
            "windows": [window.to_dict() for window in self.windows],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PartialWindows:
        if data.get("format") != _FORMAT:
            raise ValueError(f"unknown partial windows format {data.get('format')!r}")
        return cls(
            partition=int(data["partition"]),
            closed_before=datetime.fromisoformat(data["closed_before"]),
            windows=tuple(HealthWindow.from_dict(w) for w in data["windows"]),
        )


WindowKey = tuple[str, str, datetime]


@dataclass
class WindowMerger:
    """Merges the partial windows of ``partitions`` input partitions into whole windows.

    A window is whole once every partition has closed past its start; then the partial
    windows received for it (one per partition at most: a partition that re-sends one after a
    restart sends the same figures, and the first copy is kept) merge into exactly the window
    one accumulator fed with every partition would hold. A partial arriving for a window
    already merged is counted in ``late`` and dropped: a published window never changes.
    """

    partitions: int
    closed_before: dict[int, datetime] = field(default_factory=dict)
    parts: dict[WindowKey, dict[int, HealthWindow]] = field(default_factory=dict)
    #: Every window starting before this has been merged (and handed out by ``ready``).
    merged_before: datetime | None = None
    late: int = 0

    def add(self, partial: PartialWindows) -> None:
        if not 0 <= partial.partition < self.partitions:
            return  # a partition of another partition count: not one of ours
        seen = self.closed_before.get(partial.partition)
        if seen is None or partial.closed_before > seen:
            self.closed_before[partial.partition] = partial.closed_before
        for window in partial.windows:
            if self.merged_before is not None and window.start < self.merged_before:
                self.late += 1
                continue
            self.parts.setdefault(window.key, {}).setdefault(partial.partition, window)

    @property
    def horizon(self) -> datetime | None:
        """Windows starting before this are closed on every partition (None: not all heard)."""
        if len(self.closed_before) < self.partitions:
            return None
        return min(self.closed_before.values())

    def ready(self) -> list[HealthWindow]:
        """Remove and return every whole window, sorted by (start, pool, operation)."""
        horizon = self.horizon
        if horizon is None:
            return []
        due = sorted((k for k in self.parts if k[2] < horizon), key=lambda k: (k[2], k[0], k[1]))
        if self.merged_before is None or horizon > self.merged_before:
            self.merged_before = horizon
        return [merge_windows(self.parts.pop(key).values()) for key in due]
