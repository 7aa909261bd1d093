"""Every Kafka topic the ledger uses, and `topics ensure`, which makes the broker match.

The table below is the one place that says how many partitions and how much retention each
topic gets. Topics keyed by correlation id share ``settings.partitions`` so that the pairing
table's changelog is co-partitioned with them (faust refuses to start otherwise). The flag
command and event topics have one partition: one total order, one writer. The flag event log
is the flag itself, so it is never compacted and never expires.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.errors import BrokerError
from ledger.settings import Settings

__all__ = [
    "INTERNAL_TOPICS",
    "TOPIC_SPECS",
    "EnsureReport",
    "Mismatch",
    "TopicSpec",
    "ensure_topics",
    "topic_name",
]

DAY_MS = 24 * 60 * 60 * 1000
FOREVER = -1

#: Topics only the worker reads and writes; not part of the public contract.
INTERNAL_TOPICS: dict[str, str] = {
    "pairing_ticks": "ledger.pairing-ticks",
    "health_partials": "ledger.health-partials",
}


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
    TopicSpec(
        "health_partials",
        key="input partition",
        purpose="internal: each partition's closed health windows, for the one merger",
        retention_ms=DAY_MS,
        # One partition: the merger reads every partition's progress in one order.
        partitions=1,
    ),
)


def topic_name(settings: Settings, logical: str) -> str:
    """The Kafka topic of a logical name, public (``settings.topic``) or internal."""
    if logical in INTERNAL_TOPICS:
        return f"{settings.topic_prefix}{INTERNAL_TOPICS[logical]}"
    return settings.topic(logical)


@dataclass(frozen=True)
class Mismatch:
    """An existing topic that differs from its spec; ``ensure`` reports, never alters, it."""

    topic: str
    setting: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.topic}: {self.setting} is {self.actual}, expected {self.expected}"


@dataclass(frozen=True)
class EnsureReport:
    created: tuple[str, ...]
    present: tuple[str, ...]
    mismatches: tuple[Mismatch, ...]

    def partition_mismatches(self) -> tuple[Mismatch, ...]:
        return tuple(m for m in self.mismatches if m.setting == "partitions")


#: Settings compared on existing topics. Partition counts matter for co-partitioning;
#: retention and cleanup policy matter for the flag log (it must never expire).
CHECKED_CONFIG = ("cleanup.policy", "retention.ms", "retention.bytes", "message.timestamp.type")


def ensure_topics(
    settings: Settings,
    *,
    replication_factor: int = 1,
    specs: Iterable[TopicSpec] = TOPIC_SPECS,
    timeout_s: float = 30.0,
    connect_timeout_s: float = 10.0,
) -> EnsureReport:
    """Create missing topics; report partition or retention mismatches of existing ones."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    wanted = {topic_name(settings, spec.logical): spec for spec in specs}
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=settings.bootstrap_servers,
            client_id="migration-ledger-topics",
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(connect_timeout_s * 1000),
        )
    except KafkaError as exc:
        raise BrokerError(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}; "
            "is the broker up (`migration-ledger kafka status`)?"
        ) from exc
    try:
        existing = set(admin.list_topics())
        missing = {name: spec for name, spec in wanted.items() if name not in existing}
        created: list[str] = []
        if missing:
            request = {
                name: {
                    "num_partitions": spec.partitions_for(settings),
                    "replication_factor": replication_factor,
                    "configs": spec.config(),
                }
                for name, spec in missing.items()
            }
            # Another process may win the race to create one; the checks below still run.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    request, timeout_ms=int(timeout_s * 1000), wait_for_metadata=True
                )
            created = sorted(missing)
        present = sorted(name for name in wanted if name not in missing)
        mismatches: list[Mismatch] = []
        if present:
            described = {t["name"]: t for t in admin.describe_topics(present)}
            resources = [
                ConfigResource(
                    ConfigResourceType.TOPIC, name, configs=dict.fromkeys(CHECKED_CONFIG)
                )
                for name in present
            ]
            configs = admin.describe_configs(resources, config_filter="all")
            for name in present:
                mismatches.extend(
                    _compare(
                        name,
                        wanted[name],
                        settings,
                        described.get(name, {}),
                        _topic_configs(configs, name),
                    )
                )
    except KafkaError as exc:
        raise BrokerError(f"cannot ensure topics on {settings.bootstrap_servers}: {exc}") from exc
    finally:
        admin.close()
    return EnsureReport(tuple(created), tuple(present), tuple(mismatches))


def _topic_configs(configs: Any, name: str) -> dict[str, str]:
    """The ``{key: value}`` of one topic out of kafka-python's nested describe answer."""
    by_name = configs.get("topic", {}) if isinstance(configs, Mapping) else {}
    entries = by_name.get(name, {})
    values: dict[str, str] = {}
    for key, data in entries.items():
        value = data.get("value") if isinstance(data, Mapping) else data
        values[key] = "" if value is None else str(value)
    return values


def _compare(
    name: str,
    spec: TopicSpec,
    settings: Settings,
    described: Mapping[str, Any],
    config: Mapping[str, str],
) -> list[Mismatch]:
    found: list[Mismatch] = []
    partitions = len(described.get("partitions", []))
    expected_partitions = spec.partitions_for(settings)
    if partitions != expected_partitions:
        found.append(Mismatch(name, "partitions", str(expected_partitions), str(partitions)))
    for key in CHECKED_CONFIG:
        expected = spec.config().get(key)
        actual = config.get(key)
        if expected is not None and actual is not None and actual != expected:
            found.append(Mismatch(name, key, expected, actual))
    return found
