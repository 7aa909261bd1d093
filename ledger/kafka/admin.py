"""``topics ensure`` (make the broker match the topic table) and the comparison ``check`` shares.

Both read existing topics with one describe call and one comparison (``topic_differences``),
so ``check`` and ``topics ensure`` can never disagree about a topic.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.checks import TopicDifference
from ledger.errors import BrokerError
from ledger.kafka.clients import admin_client, broker_errors
from ledger.kafka.topics import TOPIC_SPECS, TopicSpec, topic_name
from ledger.settings import Settings

__all__ = ["CHECKED_CONFIG", "EnsureReport", "ensure_topics", "topic_differences"]


@dataclass(frozen=True)
class EnsureReport:
    created: tuple[str, ...]
    present: tuple[str, ...]
    mismatches: tuple[TopicDifference, ...]

    def partition_mismatches(self) -> tuple[TopicDifference, ...]:
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
    from kafka.errors import TopicAlreadyExistsError

    wanted = {topic_name(settings, spec.logical): spec for spec in specs}
    try:
        admin = admin_client(
            settings,
            client_id="migration-ledger-topics",
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(connect_timeout_s * 1000),
        )
    except BrokerError as exc:
        raise BrokerError(f"{exc}; is the broker up (`migration-ledger kafka status`)?") from exc
    try:
        with broker_errors(f"ensure topics on {settings.bootstrap_servers}"):
            existing = set(admin.list_topics())
            missing = {name: spec for name, spec in wanted.items() if name not in existing}
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
            present = sorted(name for name in wanted if name not in missing)
            mismatches = topic_differences(admin, settings, {n: wanted[n] for n in present})
    finally:
        admin.close()
    return EnsureReport(tuple(sorted(missing)), tuple(present), tuple(mismatches))


def topic_differences(
    admin: Any, settings: Settings, present: Mapping[str, TopicSpec]
) -> list[TopicDifference]:
    """How existing topics differ from their specs: one describe call for all of them.

    ``admin`` is a kafka-python admin client (``clients.admin_client``); its errors pass
    through, for the caller's own ``broker_errors`` or report.
    """
    from kafka.admin import ConfigResource, ConfigResourceType

    if not present:
        return []
    described = {t["name"]: t for t in admin.describe_topics(list(present))}
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs=dict.fromkeys(CHECKED_CONFIG))
        for name in present
    ]
    configs = admin.describe_configs(resources, config_filter="all")
    differences: list[TopicDifference] = []
    for name, spec in present.items():
        differences.extend(
            _compare(name, spec, settings, described.get(name, {}), _topic_configs(configs, name))
        )
    return differences


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
) -> list[TopicDifference]:
    found: list[TopicDifference] = []
    partitions = len(described.get("partitions", []))
    expected_partitions = spec.partitions_for(settings)
    if partitions != expected_partitions:
        found.append(TopicDifference(name, "partitions", str(expected_partitions), str(partitions)))
    for key in CHECKED_CONFIG:
        expected = spec.config().get(key)
        actual = config.get(key)
        if expected is not None and actual is not None and actual != expected:
            found.append(TopicDifference(name, key, expected, actual))
    return found
