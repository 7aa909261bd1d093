"""The broker's ACLs: read them, and apply ``ledger.acls``' plan (as a super user).

kafka-python's ``KafkaAdminClient`` does the talking (``describe_acls``, ``create_acls``,
``delete_acls``); this module converts between its types and the core's ``Acl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.acls import Acl, Operation, PatternType, ResourceType, drift, plan_acls
from ledger.errors import BrokerError
from ledger.kafka.clients import broker_errors
from ledger.kafka.topics import TOPIC_SPECS, topic_name
from ledger.settings import Settings

__all__ = ["AclApplied", "apply_acls", "planned_acls", "read_acls", "set_scram_password"]


def planned_acls(settings: Settings) -> tuple[Acl, ...]:
    """The plan for these settings' topic names (prefix included) and faust's app id."""
    topics = {spec.logical: topic_name(settings, spec.logical) for spec in TOPIC_SPECS}
    return plan_acls(topics, app_id=f"{settings.topic_prefix}migration-ledger")


def _to_kafka(acl: Acl) -> Any:
    # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it.
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
    )
    from kafka.admin import ResourceType as KafkaResourceType

    return ACL(
        principal=f"User:{acl.principal}",
        host="*",
        operation=ACLOperation[acl.operation.value],
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(
            KafkaResourceType[acl.resource_type.value],
            acl.resource_name,
            ACLResourcePatternType[acl.pattern_type.value],
        ),
    )


def read_acls(admin: Any) -> tuple[tuple[Acl, ...], int]:
    """Every ALLOW ACL of a ``User:`` principal on the broker, and how many DENY entries
    exist besides (those take rights away, so they are counted, not compared)."""
    # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it.
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
    )
    from kafka.admin import ResourceType as KafkaResourceType

    match_all = ACLFilter(
        principal=None,
        host="*",
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(
            KafkaResourceType.ANY, None, ACLResourcePatternType.ANY
        ),
    )
    with broker_errors("describe the broker's ACLs"):
        found, error = admin.describe_acls(match_all)
    if getattr(error, "errno", 0):
        raise BrokerError(f"cannot describe the broker's ACLs: {error.__name__}")
    acls: list[Acl] = []
    denies = 0
    for entry in found:
        if entry.permission_type != ACLPermissionType.ALLOW:
            denies += 1
            continue
        _kind, _, name = str(entry.principal).partition(":")
        pattern = entry.resource_pattern
        acls.append(
            Acl(
                principal=name,
                resource_type=ResourceType(pattern.resource_type.name),
                pattern_type=PatternType(pattern.pattern_type.name),
                resource_name=pattern.resource_name,
                operation=Operation(entry.operation.name),
            )
        )
    return tuple(sorted(set(acls))), denies


@dataclass(frozen=True)
class AclApplied:
    created: tuple[Acl, ...]
    deleted: tuple[Acl, ...]
    unchanged: int


def apply_acls(admin: Any, plan: tuple[Acl, ...], *, prune: bool = False) -> AclApplied:
    """Create what the plan has and the broker lacks; with ``prune`` delete what the broker
    has for a planned principal beyond the plan. Running it twice changes nothing."""
    # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it.
    from kafka.admin import ACLFilter, ResourcePatternFilter

    actual, _denies = read_acls(admin)
    planned_principals = {acl.principal for acl in plan}
    differences = [d for d in drift(plan, actual) if d.principal in planned_principals]
    missing = tuple(acl for d in differences for acl in d.missing)
    extra = tuple(acl for d in differences for acl in d.extra) if prune else ()
    if missing:
        with broker_errors("create ACLs"):
            answer = admin.create_acls([_to_kafka(acl) for acl in missing])
        failed = answer.get("failed", [])
        if failed:
            raise BrokerError(f"the broker refused {len(failed)} ACLs: {failed[0][1]!r}")
    if extra:
        filters = []
        for acl in extra:
            kafka_acl = _to_kafka(acl)
            pattern = kafka_acl.resource_pattern
            filters.append(
                ACLFilter(
                    principal=kafka_acl.principal,
                    host="*",
                    operation=kafka_acl.operation,
                    permission_type=kafka_acl.permission_type,
                    resource_pattern=ResourcePatternFilter(
                        pattern.resource_type, pattern.resource_name, pattern.pattern_type
                    ),
                )
            )
        with broker_errors("delete ACLs"):
            admin.delete_acls(filters)
    return AclApplied(created=missing, deleted=extra, unchanged=len(plan) - len(missing))


def set_scram_password(admin: Any, user: str, password: str, mechanism: str) -> None:
    """Create or replace ``user``'s SCRAM credential (AlterUserScramCredentials, as admin).

    Connections already authenticated keep working; new logins need the new password.
    """
    # Deferred: kafka-python takes ~0.7 s to import: only code that talks to Kafka pays it.
    from kafka.admin import ScramMechanism, UserScramCredentialUpsertion

    kind = ScramMechanism[mechanism.replace("-", "_")]
    with broker_errors(f"set the {mechanism} password of {user}"):
        answer = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(user, kind, password)]
        )
    error = answer.get(user)
    if error:
        raise BrokerError(f"the broker refused the new password of {user}: {error}")
