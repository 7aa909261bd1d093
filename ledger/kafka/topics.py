"""Every Kafka topic the ledger uses: the one table of names, keys, partitions and retention.

The table below is the one place that says how many partitions and how much retention each
topic gets. Topics keyed by correlation id share ``settings.partitions`` so that the pairing
table's changelog is co-partitioned with them (faust refuses to start otherwise). The flag
command and event topics have one partition: one total order, one writer. The flag event log
is the flag itself, so it is never compacted and never expires.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ledger.settings import Settings

__all__ = ["INTERNAL_TOPICS", "TOPIC_SPECS", "TopicSpec", "topic_name"]

DAY_MS = 24 * 60 * 60 * 1000
FOREVER = -1

#: Topics only the worker reads and writes; not part of the public contract.
INTERNAL_TOPICS: dict[str, str] = {"pairing_ticks": "ledger.pairing-ticks"}


@dataclass(frozen=True)
class TopicSpec:
    """How one topic should look on the broker."""

    logical: str
    key: str
    purpose: str
    retention_ms: int
    #: None means ``settings.partitions`` (co-partitioned with the pairing table).
    partitions: int | None = None
    extra_config: Mapping[str, str] = field(default_factory=dict)

    def partitions_for(self, settings: Settings) -> int:
        return settings.partitions if self.partitions is None else self.partitions

    def config(self) -> dict[str, str]:
        """The topic-level configuration ``ensure`` creates and checks."""
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(self.retention_ms),
            **self.extra_config,
        }


TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "operations",
        key="correlation id",
        purpose="OperationRecorded from both pools",
        retention_ms=7 * DAY_MS,
        # The broker stamps arrival time: the pairing timeout is measured against it, so a
        # producer's skewed clock cannot make a half look late or early.
        extra_config={"message.timestamp.type": "LogAppendTime"},
    ),
    TopicSpec(
        "comparisons",
        key="correlation id",
        purpose="ComparisonRecorded, one per correlation id",
        retention_ms=7 * DAY_MS,
    ),
    TopicSpec(
        "flag_commands",
        key="flag name",
        purpose="flag commands from people, the controller and rollback triggers",
        retention_ms=7 * DAY_MS,
        partitions=1,
    ),
    TopicSpec(
        "flag_events",
        key="flag name",
        purpose="FlagChanged / CommandRejected: the flag log itself",
        retention_ms=FOREVER,
        partitions=1,
        extra_config={"retention.bytes": "-1"},
    ),
    TopicSpec(
        "decisions",
        key="session id",
        purpose="RolloutDecided from the routers",
        retention_ms=7 * DAY_MS,
    ),
    TopicSpec(
        "health",
        key="pool (switchover records: flag name)",
        purpose="HealthAssessed windows, breaker and switchover events",
        # The switchover controller rebuilds its state from its records here, and a default
        # ramp soaks 16 h in all: a paused ramp must not lose its start to retention.
        retention_ms=FOREVER,
    ),
    TopicSpec(
        "dead_letters",
        key="original key",
        purpose="DeadLettered: input that could not be parsed or validated",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        "pairing_ticks",
        key="none (partition chosen)",
        purpose="internal: wakes the pairing agent of a quiet partition to time out halves",
        retention_ms=DAY_MS,
    ),
)


def topic_name(settings: Settings, logical: str) -> str:
    """The Kafka topic of a logical name, public (``settings.topic``) or internal."""
    if logical in INTERNAL_TOPICS:
        return f"{settings.topic_prefix}{INTERNAL_TOPICS[logical]}"
    return settings.topic(logical)
