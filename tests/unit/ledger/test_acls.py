"""The ACL plan: least privilege per principal, and the drift that ``check`` reports."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledger.acls import (
    PLANNED_PRINCIPALS,
    Acl,
    Operation,
    PatternType,
    ResourceType,
    drift,
    plan_acls,
    render_plan,
)
from ledger.checks import AclObservation, Status, judge_acls

LOGICAL = (
    "operations",
    "comparisons",
    "flag_commands",
    "flag_events",
    "decisions",
    "health",
    "dead_letters",
    "checkpoints",
    "pairing_ticks",
    "health_partials",
)
TOPICS = {name: f"t.{name}" for name in LOGICAL}
PLAN = plan_acls(TOPICS, app_id="migration-ledger")


def _rights(principal: str, operation: Operation) -> set[str]:
    return {
        acl.resource_name
        for acl in PLAN
        if acl.principal == principal
        and acl.operation is operation
        and acl.resource_type is ResourceType.TOPIC
        and acl.pattern_type is PatternType.LITERAL
    }


def test_only_the_worker_may_write_the_flag_log_and_checkpoints() -> None:
    writers = {
        acl.principal
        for acl in PLAN
        if acl.operation is Operation.WRITE
        and acl.resource_name in {"t.flag_events", "t.checkpoints"}
    }
    assert writers == {"worker"}


def test_router_writes_operations_decisions_and_health_and_reads_the_flag_log_only() -> None:
    assert _rights("router", Operation.WRITE) == {"t.operations", "t.decisions", "t.health"}
    assert _rights("router", Operation.READ) == {"t.flag_events"}
    assert {acl.operation for acl in PLAN if acl.principal == "router"} == {
        Operation.READ,
        Operation.WRITE,
    }


def test_operator_sends_flag_commands_and_reads_the_flag_log_only() -> None:
    assert {(a.operation, a.resource_name) for a in PLAN if a.principal == "operator"} == {
        (Operation.WRITE, "t.flag_commands"),
        (Operation.READ, "t.flag_events"),
    }


def test_sink_only_reads_every_stored_topic() -> None:
    sink = [a for a in PLAN if a.principal == "sink"]
    assert {a.operation for a in sink} == {Operation.READ}
    assert {a.resource_name for a in sink} == {
        "t.operations",
        "t.comparisons",
        "t.flag_events",
        "t.decisions",
        "t.health",
        "t.dead_letters",
        "t.checkpoints",
    }


def test_worker_gets_its_group_and_faust_topics_under_the_app_id() -> None:
    plan = plan_acls(TOPICS, app_id="p.migration-ledger")
    worker = {a for a in plan if a.principal == "worker"}
    assert (
        Acl("worker", ResourceType.GROUP, PatternType.LITERAL, "p.migration-ledger", Operation.READ)
        in worker
    )
    prefixed = {a.operation for a in worker if a.pattern_type is PatternType.PREFIXED}
    assert prefixed == {Operation.READ, Operation.WRITE, Operation.CREATE}
    assert {a.resource_name for a in worker if a.pattern_type is PatternType.PREFIXED} == {
        "p.migration-ledger-"
    }
    assert "t.operations" not in {a.resource_name for a in worker if a.operation is Operation.WRITE}


def test_no_principal_gets_all_or_cluster_rights_and_admin_has_no_entries() -> None:
    assert all(a.operation is not Operation.ALL for a in PLAN)
    assert all(a.resource_type is not ResourceType.CLUSTER for a in PLAN)
    assert {a.principal for a in PLAN} == set(PLANNED_PRINCIPALS)


def test_plan_is_sorted_and_free_of_duplicates() -> None:
    assert list(PLAN) == sorted(set(PLAN))


def test_drift_names_extra_and_missing_per_principal() -> None:
    extra = Acl("router", ResourceType.TOPIC, PatternType.LITERAL, "t.flag_events", Operation.WRITE)
    gone = next(a for a in PLAN if a.principal == "sink")
    found = (set(PLAN) - {gone}) | {extra}
    by_principal = {d.principal: d for d in drift(PLAN, found)}
    assert by_principal["router"].extra == (extra,)
    assert by_principal["router"].missing == ()
    assert by_principal["sink"].missing == (gone,)
    assert by_principal["worker"].ok
    assert by_principal["operator"].ok


def test_drift_reports_a_principal_that_has_no_plan() -> None:
    stranger = Acl("mallory", ResourceType.TOPIC, PatternType.LITERAL, "t.health", Operation.READ)
    (only,) = [d for d in drift(PLAN, (*PLAN, stranger)) if not d.ok]
    assert only.principal == "mallory"
    assert only.extra == (stranger,)


@given(st.sets(st.sampled_from(PLAN)))
def test_drift_of_any_subset_is_exactly_what_was_left_out(kept: set[Acl]) -> None:
    missing = {acl for d in drift(PLAN, kept) for acl in d.missing}
    extra = {acl for d in drift(PLAN, kept) for acl in d.extra}
    assert missing == set(PLAN) - kept
    assert extra == set()


def test_render_plan_groups_by_principal() -> None:
    text = render_plan(PLAN)
    assert text.splitlines()[0] == "User:operator"
    assert "  WRITE    topic  t.flag_commands" in text
    assert "migration-ledger- (prefix)" in text


def test_check_passes_a_matching_broker_and_fails_one_with_more_or_less() -> None:
    assert judge_acls(AclObservation("User:admin", drift(PLAN, PLAN))).status is Status.PASS
    extra = Acl("router", ResourceType.TOPIC, PatternType.LITERAL, "t.flag_events", Operation.WRITE)
    failed = judge_acls(AclObservation("User:admin", drift(PLAN, (*PLAN[1:], extra))))
    assert failed.status is Status.FAIL
    assert "User:router: 1 more than planned" in failed.figure
    assert f"User:{PLAN[0].principal}" in failed.figure
    assert "missing" in failed.figure
    unreadable = judge_acls(AclObservation("User:worker", error="not authorized"))
    assert unreadable.status is Status.WARN
    assert "User:worker" in unreadable.figure
