"""One category per pair, with realistic V1/V2 answers, and the event that records it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from comparison_factories import AT, operation

from ledger.comparison import (
    Category,
    RuleSet,
    compare_operations,
    comparison_id_for,
    missing_comparison,
    parse_rules,
)
from ledger.events import ComparisonRecorded, decode_event, encode_event

V2_RESULT: dict[str, Any] = {
    "request_id": "req-b81f",
    "created_at": "2026-03-01T12:00:00.412Z",
    "status": "completed",
    "exit_code": 0,
    "success": True,
    "stdout": "rows=1204\n",
    "duration_ms": 12.3,
    "metrics": {"rows": 1204, "score": 0.8731, "cpu": [0.5, 0.25]},
    "tags": ["nightly", "etl", "eu"],
    "items": [
        {"id": 1, "name": "Zürich", "price": 12.5, "created_at": "t1"},
        {"id": 2, "name": "東京", "price": None, "created_at": "t1"},
    ],
}


def _v1_wrapped(result: Any) -> dict[str, Any]:
    return {"status": "ok", "data": result}


def _compare(v1_result: Any, v2_result: Any, rules: RuleSet) -> ComparisonRecorded:
    return compare_operations(
        operation("v1", result=_v1_wrapped(v1_result)),
        operation("v2", result=v2_result),
        rules,
        at=AT,
    )


def _v1_noise() -> dict[str, Any]:
    """V1's answer to the same request: only what the default rules absorb differs."""
    return {
        "request_id": "req-0001",
        "created_at": "2026-03-01T12:00:00.100Z",
        "status": "completed",
        "exit_code": 0,
        "success": True,
        "stdout": "rows=1204",
        "duration_ms": 40.0,
        "metrics": {"rows": 1204.0, "score": 0.8731 + 1e-12, "cpu": [0.5, 0.25]},
        "tags": ["eu", "etl", "nightly"],
        "items": [
            {"id": 1, "name": "Zürich", "price": 12.5, "created_at": "t0"},
            {"id": 2, "name": "東京", "price": None, "created_at": "t0"},
        ],
    }


def test_answers_that_differ_only_where_the_rules_allow_match(default_rules: RuleSet) -> None:
    comparison = _compare(_v1_noise(), V2_RESULT, default_rules)
    assert comparison.category == Category.MATCH
    assert comparison.differences == ()
    assert comparison.difference_count == 0


def test_a_changed_value_deep_in_a_list_is_a_value_mismatch(default_rules: RuleSet) -> None:
    v1 = _v1_noise()
    v1["items"][1]["price"] = 0.0
    v1["metrics"]["score"] = 0.9
    comparison = _compare(v1, V2_RESULT, default_rules)
    assert comparison.category == Category.VALUE_MISMATCH
    found = {(d.path, d.kind, d.v1, d.v2) for d in comparison.differences}
    assert found == {("items[1].price", "null", 0.0, None), ("metrics.score", "value", 0.9, 0.8731)}


def test_a_missing_key_is_a_shape_mismatch(default_rules: RuleSet) -> None:
    v1 = _v1_noise()
    del v1["items"][0]["name"]
    v1["legacy"] = {"flag": 1}
    comparison = _compare(v1, V2_RESULT, default_rules)
    assert comparison.category == Category.SHAPE_MISMATCH
    found = {(d.path, d.kind) for d in comparison.differences}
    assert found == {("items[0].name", "extra"), ("legacy", "missing")}


def test_a_bool_against_a_number_is_a_type_change(default_rules: RuleSet) -> None:
    v1 = _v1_noise()
    v1["success"] = 1
    comparison = _compare(v1, V2_RESULT, default_rules)
    assert comparison.category == Category.SHAPE_MISMATCH
    assert [(d.path, d.kind, d.v1, d.v2) for d in comparison.differences] == [
        ("success", "type", 1, True)
    ]


def test_a_different_number_of_items_is_a_shape_mismatch(default_rules: RuleSet) -> None:
    v1 = _v1_noise()
    v1["metrics"]["cpu"].append(0.125)
    comparison = _compare(v1, V2_RESULT, default_rules)
    assert comparison.category == Category.SHAPE_MISMATCH
    assert [(d.path, d.kind, d.v1, d.v2) for d in comparison.differences] == [
        ("metrics.cpu", "size", 3, 2)
    ]


def test_items_in_another_order_are_one_ordering_difference(default_rules: RuleSet) -> None:
    v1 = _v1_noise()
    v1["items"].reverse()
    comparison = _compare(v1, V2_RESULT, default_rules)
    assert comparison.category == Category.VALUE_MISMATCH
    assert [(d.path, d.kind) for d in comparison.differences] == [("items", "ordering")]


def test_unicode_text_is_compared_exactly_unless_normalised(default_rules: RuleSet) -> None:
    v1 = _v1_noise()
    v1["items"][0]["name"] = "Zu\u0308rich"  # decomposed ü
    assert _compare(v1, V2_RESULT, default_rules).category == Category.VALUE_MISMATCH
    nfc = parse_rules(
        """
        [pools.v1]
        unwrap = "data"
        [compare]
        ignore = ["**.created_at", "request_id", "stdout"]
        unordered = ["tags"]
        abs_tolerance = 1e-9
        strings = ["nfc"]
        """,
        "nfc",
    )
    assert _compare(v1, V2_RESULT, nfc).category == Category.MATCH


def test_both_failing_the_same_canonical_way_is_an_error_match(default_rules: RuleSet) -> None:
    comparison = compare_operations(
        operation("v1", error={"type": "pool_timeout", "message": "no worker in 30s"}),
        operation("v2", error={"type": "checkout_timeout", "message": "t", "category": "timeout"}),
        default_rules,
        at=AT,
    )
    assert comparison.category == Category.ERROR_MATCH
    assert (comparison.v1_error_type, comparison.v2_error_type) == ("timeout", "timeout")


def test_both_failing_differently_is_an_error_mismatch(default_rules: RuleSet) -> None:
    comparison = compare_operations(
        operation("v1", error={"type": "out_of_memory", "message": "killed"}),
        operation("v2", error={"type": "connection_error", "message": "refused"}),
        default_rules,
        at=AT,
    )
    assert comparison.category == Category.ERROR_MISMATCH
    assert (comparison.v1_error_type, comparison.v2_error_type) == ("resource", "connection")


def test_only_v2_failing_is_a_v2_error_and_only_v1_a_v1_error(default_rules: RuleSet) -> None:
    ok_v1 = operation("v1", result=_v1_wrapped(V2_RESULT))
    ok_v2 = operation("v2", result=V2_RESULT)
    failed_v1 = operation("v1", error={"type": "ValueError", "message": "bad input"})
    failed_v2 = operation("v2", error={"type": "python_error", "message": "bad input"})
    assert compare_operations(ok_v1, failed_v2, default_rules, at=AT).category == "v2_error"
    assert compare_operations(failed_v1, ok_v2, default_rules, at=AT).category == "v1_error"


def test_the_event_carries_ids_latencies_and_rules_version(default_rules: RuleSet) -> None:
    comparison = compare_operations(
        operation("v1", result=_v1_wrapped(V2_RESULT), duration_ms=40.0),
        operation("v2", result=V2_RESULT, duration_ms=10.0),
        default_rules,
        at=AT,
    )
    assert comparison.comparison_id == comparison.event_id == comparison_id_for("corr-1")
    assert (comparison.v1_event_id, comparison.v2_event_id) == ("corr-1-v1", "corr-1-v2")
    assert (comparison.v1_duration_ms, comparison.v2_duration_ms) == (40.0, 10.0)
    assert comparison.latency_ratio == 0.25
    assert comparison.rules_version == default_rules.version
    assert (comparison.session_id, comparison.environment) == ("session-7", "prod")
    assert comparison.primary_pool == "v1"
    assert comparison.at == AT


def test_a_zero_v1_latency_has_no_ratio(default_rules: RuleSet) -> None:
    comparison = compare_operations(
        operation("v1", result=1, duration_ms=0.0),
        operation("v2", result=1),
        default_rules,
        at=AT,
    )
    assert comparison.latency_ratio is None


def test_halves_passed_the_other_way_round_are_compared_the_same(default_rules: RuleSet) -> None:
    v1 = operation("v1", result=_v1_wrapped(_v1_noise()))
    v2 = operation("v2", result=V2_RESULT)
    assert compare_operations(v2, v1, default_rules, at=AT) == compare_operations(
        v1, v2, default_rules, at=AT
    )


def test_halves_that_do_not_belong_together_are_refused(default_rules: RuleSet) -> None:
    with pytest.raises(ValueError, match="one v1 and one v2"):
        compare_operations(operation("v1"), operation("v1"), default_rules, at=AT)
    with pytest.raises(ValueError, match="correlation ids differ"):
        compare_operations(
            operation("v1"), operation("v2", correlation_id="other"), default_rules, at=AT
        )


def test_comparison_ids_are_deterministic_and_distinct() -> None:
    assert comparison_id_for("corr-1") == comparison_id_for("corr-1")
    assert comparison_id_for("corr-1") != comparison_id_for("corr-2")
    assert comparison_id_for("corr-1").startswith("cmp-")


@pytest.mark.parametrize(
    ("pool", "role", "late", "category"),
    [
        ("v1", "primary", False, "shadow_missing"),
        ("v2", "shadow", False, "primary_missing"),
        ("v2", "primary", False, "shadow_missing"),
        ("v1", "shadow", False, "primary_missing"),
        ("v2", "shadow", True, "shadow_missing"),
        ("v1", "primary", True, "primary_missing"),
    ],
)
def test_a_missing_half_is_named_by_its_role(
    default_rules: RuleSet, pool: str, role: str, late: bool, category: str
) -> None:
    present = operation(pool, role=role, result={"x": 1}, duration_ms=7.0)
    comparison = missing_comparison(present, at=AT, late=late, rules=default_rules)
    assert comparison.category == category
    assert comparison.late is late
    assert comparison.comparison_id == comparison_id_for("corr-1")
    assert getattr(comparison, f"{pool}_event_id") == present.event_id
    assert getattr(comparison, f"{pool}_duration_ms") == 7.0
    assert comparison.latency_ratio is None


def test_a_missing_comparison_keeps_the_present_error_type(default_rules: RuleSet) -> None:
    present = operation("v2", role="primary", error={"type": "timeout_error", "message": "t"})
    comparison = missing_comparison(present, at=AT, rules=default_rules)
    assert (comparison.category, comparison.v2_error_type) == ("shadow_missing", "timeout")
    assert comparison.primary_pool == "v2"


def test_events_round_trip_through_the_wire_form(default_rules: RuleSet) -> None:
    v1 = _v1_noise()
    v1["items"][0]["price"] = "12.5"
    v1["note"] = "x" * 5000
    comparison = _compare(v1, V2_RESULT, default_rules)
    decoded = decode_event(encode_event(comparison), expected=ComparisonRecorded)
    assert decoded == comparison
    # the event assembled without validation is exactly what validation would have built
    assert ComparisonRecorded.model_validate(comparison.model_dump()) == comparison


def test_events_are_assembled_on_the_fast_path_for_the_current_contract() -> None:
    """If this fails, ComparisonRecorded or Difference changed: update the field lists in
    ledger/comparison/classify.py (the slower validated path is used meanwhile)."""
    from ledger.comparison.classify import TRUSTED_CONSTRUCTION

    assert TRUSTED_CONSTRUCTION


def test_assembled_events_serialise_fields_in_contract_order(default_rules: RuleSet) -> None:
    comparison = _compare(_v1_noise(), V2_RESULT, default_rules)
    assert list(json.loads(encode_event(comparison))) == list(ComparisonRecorded.model_fields)
