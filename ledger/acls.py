"""ACLs as code: which principal may do what to which topic or group, least privilege.

Pure: the plan is computed from topic names (the caller passes them in, public and internal,
with the prefix applied) and compared with what the broker holds; ``ledger.kafka.acls``
reads and writes the broker's ACLs and ``migration-ledger acls plan | apply`` and ``check``
use both. Every entry is an ALLOW on host ``*``: Kafka denies whatever no ALLOW grants once
``allow.everyone.if.no.acl.found`` is false, so no DENY entries are needed.

Kafka's implications keep the list short: READ and WRITE on a topic imply DESCRIBE; READ on
a group implies DESCRIBE. ``admin`` is a super user (``super.users``) and needs no entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from ledger.wire import STORED_TOPICS

__all__ = [
    "PLANNED_PRINCIPALS",
    "Acl",
    "AclDrift",
    "Operation",
    "PatternType",
    "ResourceType",
    "drift",
    "plan_acls",
    "render_plan",
]


class ResourceType(StrEnum):
    TOPIC = "TOPIC"
    GROUP = "GROUP"
    CLUSTER = "CLUSTER"
    TRANSACTIONAL_ID = "TRANSACTIONAL_ID"
    DELEGATION_TOKEN = "DELEGATION_TOKEN"
    USER = "USER"


class PatternType(StrEnum):
    LITERAL = "LITERAL"
    PREFIXED = "PREFIXED"


class Operation(StrEnum):
    READ = "READ"
    WRITE = "WRITE"
    CREATE = "CREATE"
    DELETE = "DELETE"
    ALTER = "ALTER"
    DESCRIBE = "DESCRIBE"
    DESCRIBE_CONFIGS = "DESCRIBE_CONFIGS"
    ALTER_CONFIGS = "ALTER_CONFIGS"
    CLUSTER_ACTION = "CLUSTER_ACTION"
    IDEMPOTENT_WRITE = "IDEMPOTENT_WRITE"
    CREATE_TOKENS = "CREATE_TOKENS"
    DESCRIBE_TOKENS = "DESCRIBE_TOKENS"
    ALL = "ALL"


#: The principals with a plan (``admin`` is a super user and has none).
PLANNED_PRINCIPALS: tuple[str, ...] = ("router", "worker", "sink", "operator")


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW entry: ``User:<principal>`` may ``operation`` on the resource."""

    principal: str
    resource_type: ResourceType
    pattern_type: PatternType
    resource_name: str
    operation: Operation

    def __str__(self) -> str:
        pattern = "" if self.pattern_type is PatternType.LITERAL else " (prefix)"
        return (
            f"User:{self.principal} {self.operation.value} "
            f"{self.resource_type.value.lower()} {self.resource_name}{pattern}"
        )


def _topics(principal: str, operation: Operation, names: Iterable[str]) -> list[Acl]:
    return [
        Acl(principal, ResourceType.TOPIC, PatternType.LITERAL, name, operation) for name in names
    ]


def plan_acls(topics: Mapping[str, str], *, app_id: str) -> tuple[Acl, ...]:
    """The least-privilege ACLs of every planned principal, sorted.

    ``topics`` maps each logical topic (``operations``, ..., and the worker's internal
    ``pairing_ticks`` and ``health_partials``) to its Kafka name; ``app_id`` is faust's app
    id (with the prefix): the worker's consumer group and the prefix of faust's own topics.
    """

    def t(*logical: str) -> list[str]:
        return [topics[name] for name in logical]

    internal = ("pairing_ticks", "health_partials")
    acls: list[Acl] = []
    # Routers: the publisher writes operations and decisions; the flag client reads the flag
    # log from the start (no group). The shadow runner, in the router's process, writes its
    # breaker transitions to health. Never the flag log, never flag commands.
    acls += _topics("router", Operation.WRITE, t("operations", "decisions", "health"))
    acls += _topics("router", Operation.READ, t("flag_events"))
    # The worker: pairing reads operations, health reads comparisons, the flag writer reads
    # flag commands and rebuilds from the flag log (the only writer of flag events and
    # checkpoints), health and the switchover controller read health and send flag commands
    # (rollbacks, ramp steps); its internal topics both ways; faust's group and the topics
    # faust creates for itself (changelogs, the leader topic) under the app id.
    acls += _topics(
        "worker",
        Operation.READ,
        t("operations", "comparisons", "flag_commands", "flag_events", "health", *internal),
    )
    acls += _topics(
        "worker",
        Operation.WRITE,
        t(
            "comparisons",
            "flag_events",
            "checkpoints",
            "health",
            "dead_letters",
            "flag_commands",
            *internal,
        ),
    )
    # At start the worker checks every topic exists with its partitions and retention
    # (``ensure_topics``): it must see them all and their configuration, read-only.
    acls += _topics("worker", Operation.DESCRIBE, topics.values())
    acls += _topics("worker", Operation.DESCRIBE_CONFIGS, topics.values())
    acls.append(Acl("worker", ResourceType.GROUP, PatternType.LITERAL, app_id, Operation.READ))
    for operation in (Operation.READ, Operation.WRITE, Operation.CREATE):
        acls.append(
            Acl("worker", ResourceType.TOPIC, PatternType.PREFIXED, f"{app_id}-", operation)
        )
    # The sink reads every stored topic, without a group (its offsets live in the store).
    acls += _topics("sink", Operation.READ, t(*STORED_TOPICS))
    # Operators: send flag commands and read the flag log (for the answers); nothing else.
    acls += _topics("operator", Operation.WRITE, t("flag_commands"))
    acls += _topics("operator", Operation.READ, t("flag_events"))
    return tuple(sorted(set(acls)))


@dataclass(frozen=True)
class AclDrift:
    """How one principal's ACLs on the broker differ from its plan."""

    principal: str
    missing: tuple[Acl, ...]
    extra: tuple[Acl, ...]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra


def drift(plan: Iterable[Acl], actual: Iterable[Acl]) -> tuple[AclDrift, ...]:
    """Per principal (planned or found on the broker), what is missing and what is extra."""
    planned, found = set(plan), set(actual)
    principals = sorted({acl.principal for acl in planned | found})
    return tuple(
        AclDrift(
            principal,
            missing=tuple(sorted(a for a in planned - found if a.principal == principal)),
            extra=tuple(sorted(a for a in found - planned if a.principal == principal)),
        )
        for principal in principals
    )


def render_plan(plan: Iterable[Acl]) -> str:
    """The plan as text, grouped by principal, one ACL a line."""
    lines: list[str] = []
    current = None
    for acl in sorted(plan):
        if acl.principal != current:
            current = acl.principal
            lines.append(f"User:{current}")
        pattern = " (prefix)" if acl.pattern_type is PatternType.PREFIXED else ""
        lines.append(
            f"  {acl.operation.value:<8} {acl.resource_type.value.lower():<6} "
            f"{acl.resource_name}{pattern}"
        )
    return "\n".join(lines)
