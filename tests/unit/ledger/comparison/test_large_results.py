"""Very large and very deep results: bounded work, bounded memory, no recursion blow-up."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

from comparison_factories import AT, operation

from ledger.comparison import Category, compare_operations, parse_rules
from ledger.events import ComparisonRecorded, decode_event, encode_event

RULES = parse_rules('[compare]\nignore = ["**.created_at"]\n', "large")


def _ten_megabytes() -> dict[str, Any]:
    rows = [
        {
            "id": index,
            "name": f"ßtation-{index} 東京",
            "price": index * 0.25,
            "tags": ["a", "b", None],
            "payload": "p" * 120,
            "created_at": "2026-03-01T00:00:00Z",
        }
        for index in range(50_000)
    ]
    result = {"rows": rows, "total": len(rows)}
    assert len(json.dumps(result)) > 10_000_000
    return result


def _compare(v1: Any, v2: Any) -> ComparisonRecorded:
    return compare_operations(
        operation("v1", result=v1, construct=True),
        operation("v2", result=v2, construct=True),
        RULES,
        at=AT,
    )


def test_a_ten_megabyte_result_with_one_change_finds_exactly_that_change() -> None:
    v2 = _ten_megabytes()
    v1 = json.loads(json.dumps(v2))
    v1["rows"][31_337]["price"] = -1.0
    for row in v1["rows"]:
        row["created_at"] = "2026-03-01T00:00:09Z"
    tracemalloc.start()
    try:
        comparison = _compare(v1, v2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert comparison.category == Category.VALUE_MISMATCH
    assert [(d.path, d.kind, d.v1) for d in comparison.differences] == [
        ("rows[31337].price", "value", -1.0)
    ]
    assert peak < 20_000_000  # the walk's own memory, beside 2 x 10 MB of input


def test_a_ten_megabyte_result_that_differs_everywhere_is_capped_and_grouped() -> None:
    v2 = _ten_megabytes()
    v1 = json.loads(json.dumps(v2))
    for row in v1["rows"]:
        row["payload"] = "q" * 120
    comparison = _compare(v1, v2)
    assert comparison.category == Category.VALUE_MISMATCH
    assert comparison.difference_count == 50_000
    assert len(comparison.differences) == 50
    assert comparison.differences_truncated
    assert len(encode_event(comparison)) < 40_000
    other = json.loads(json.dumps(v2))
    other["rows"][5]["payload"] = "x"
    assert _compare(other, v2).fingerprint == comparison.fingerprint


def test_a_ten_megabyte_result_compared_with_itself_matches() -> None:
    v2 = _ten_megabytes()
    assert _compare(json.loads(json.dumps(v2)), v2).category == Category.MATCH


def _deep(depth: int, leaf: Any) -> Any:
    value = leaf
    for level in range(depth):
        value = {"level": [value]} if level % 2 else [{"x": level}, value]
    return value


def test_a_very_deep_result_is_compared_without_recursion() -> None:
    v2 = _deep(100_000, "bottom")
    assert _compare(_deep(100_000, "bottom"), v2).category == Category.MATCH
    comparison = _compare(_deep(100_000, "BOTTOM"), v2)
    assert comparison.category == Category.VALUE_MISMATCH
    [difference] = comparison.differences
    assert (difference.kind, difference.v1, difference.v2) == ("value", "BOTTOM", "bottom")
    assert "segments…" in difference.path
    assert len(difference.path) < 400
    assert decode_event(encode_event(comparison), expected=ComparisonRecorded) == comparison


def test_a_very_deep_result_against_a_shallow_one_is_a_bounded_shape_mismatch() -> None:
    comparison = _compare(_deep(100_000, 1), {"level": []})
    assert comparison.category == Category.SHAPE_MISMATCH
    assert len(encode_event(comparison)) < 10_000


def test_deep_lists_under_unordered_rules_fall_back_to_order() -> None:
    rules = parse_rules('[compare]\nunordered = ["**"]\n', "everything unordered")
    deep_a: Any = 1
    deep_b: Any = 2
    for _ in range(1_000):
        deep_a, deep_b = [deep_a, 0], [deep_b, 0]
    comparison = compare_operations(
        operation("v1", result=deep_a, construct=True),
        operation("v2", result=deep_b, construct=True),
        rules,
        at=AT,
    )
    assert comparison.category == Category.VALUE_MISMATCH
    assert comparison.difference_count == 1
    assert comparison.differences[0].path.endswith("[0][0][0]")
