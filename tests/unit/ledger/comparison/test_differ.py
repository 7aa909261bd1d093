"""The differ on its own: kinds, tolerances, unordered lists, caps, previews, fingerprints."""

from __future__ import annotations

from typing import Any

import pytest
from comparison_factories import AT, operation

from ledger.comparison import Category, compare_operations, parse_rules
from ledger.comparison.diff import DifferenceSink, diff_results, preview


def _differences(
    a: Any, b: Any, rules_text: str = "", operation_name: str = "op"
) -> list[tuple[str, str]]:
    rules = parse_rules(rules_text, "test")
    compiled = rules.for_operation(operation_name)
    sink = DifferenceSink(1000)
    diff_results(a, b, compiled.root, sink)
    return [(path, kind) for path, kind, _, _ in sink.rendered(200)]


def test_equal_results_have_no_differences() -> None:
    value = {"a": [1, 2.5, "x", None, True, {"b": []}], "c": {}}
    assert _differences(value, value) == []


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        (1, "1", "type"),
        (True, 1, "type"),
        (False, 0.0, "type"),
        ({"a": 1}, [1], "type"),
        ([], {}, "type"),
        (None, 0, "null"),
        ("", None, "null"),
        ({"x": 1}, None, "null"),
        (1, 2, "value"),
        ("a", "b", "value"),
        (True, False, "value"),
    ],
)
def test_scalar_and_type_difference_kinds(a: Any, b: Any, kind: str) -> None:
    assert _differences({"k": a}, {"k": b}) == [("k", kind)]


def test_int_float_leniency_is_configurable() -> None:
    assert _differences({"n": 1}, {"n": 1.0}) == []
    assert _differences({"n": 1}, {"n": 1.0}, "[compare]\nint_float_equal = false\n") == [
        ("n", "type")
    ]


def test_absolute_tolerance_boundary_is_inclusive() -> None:
    rules = "[compare]\nabs_tolerance = 0.5\n"
    assert _differences([1.0], [1.5], rules) == []
    assert _differences([1.0], [1.5000001], rules) == [("[0]", "value")]
    assert _differences([-2], [-1.5], rules) == []


def test_relative_tolerance_is_measured_against_the_larger_side() -> None:
    rules = "[compare]\nrel_tolerance = 0.5\n"
    assert _differences([1.0], [2.0], rules) == []  # gap 1 <= 0.5 * 2
    assert _differences([2.0], [1.0], rules) == []
    assert _differences([1.0], [2.0000001], rules) == [("[0]", "value")]


def test_per_path_tolerance_overrides_the_global_one() -> None:
    rules = '[compare]\nabs_tolerance = 0.0\n[compare.paths."metrics"]\nabs_tolerance = 1.0\n'
    a = {"metrics": {"cpu": [1.0, 2.0]}, "price": 1.0}
    b = {"metrics": {"cpu": [1.5, 2.9]}, "price": 1.5}
    assert _differences(a, b, rules) == [("price", "value")]


def test_huge_integers_compare_exactly() -> None:
    # Beyond the double range the tolerances still apply, in exact arithmetic.
    rules = "[compare]\nrel_tolerance = 0.1\n"
    assert _differences([10**400], [10**400 + 1], rules) == []
    assert _differences([10**400], [2 * 10**400], rules) == [("[0]", "value")]
    assert _differences([10**400], [10**400 + 1]) == [("[0]", "value")]
    assert _differences([10**400], [10**400], rules) == []


def test_string_normalisation_steps() -> None:
    rules = '[compare.paths."name"]\nstrings = ["strip", "casefold", "collapse_whitespace"]\n'
    assert _differences({"name": "  Straße  Nord "}, {"name": "STRASSE nord"}, rules) == []
    assert _differences({"other": " a"}, {"other": "a"}, rules) == [("other", "value")]


def test_ignored_paths_hide_missing_and_extra_keys_too() -> None:
    rules = '[compare]\nignore = ["**.debug", "meta"]\n'
    a = {"meta": {"host": "a"}, "rows": [{"x": 1, "debug": "v1 only"}]}
    b = {"rows": [{"x": 1}], "debug": {"v2": True}}
    assert _differences(a, b, rules) == []


def test_timing_fields_are_never_compared() -> None:
    a = {"duration_ms": 1, "worker_id": "w1", "inner": {"started_at": "t0", "elapsed_ms": 5}}
    b = {"duration_ms": 9, "worker_id": "w2", "inner": {"started_at": "t1"}}
    assert _differences(a, b) == []


def test_unordered_lists_match_as_multisets() -> None:
    rules = '[compare]\nunordered = ["rows", "tags"]\n'
    a = {"tags": ["b", "a", "a"], "rows": [{"id": 1, "v": [1, 2]}, {"id": 2, "v": [3]}]}
    b = {"tags": ["a", "b", "a"], "rows": [{"id": 2, "v": [3]}, {"id": 1, "v": [1, 2]}]}
    assert _differences(a, b, rules) == []


def test_unordered_lists_report_missing_and_extra_items() -> None:
    rules = '[compare]\nunordered = ["tags"]\n'
    assert _differences({"tags": ["a", "b", "c"]}, {"tags": ["c", "a"]}, rules) == [
        ("tags[1]", "missing")
    ]
    assert _differences({"tags": ["a"]}, {"tags": ["a", "z"]}, rules) == [("tags[1]", "extra")]


def test_unordered_items_pair_up_despite_tolerated_noise() -> None:
    rules = '[compare]\nunordered = ["points"]\nabs_tolerance = 0.01\n'
    assert _differences({"points": [3.0, 1.0, 2.0]}, {"points": [1.001, 2.002, 2.999]}, rules) == []


def test_unordered_items_that_really_differ_are_compared_field_by_field() -> None:
    rules = '[compare]\nunordered = ["rows"]\n'
    a = {"rows": [{"id": 1, "v": "x"}, {"id": 2, "v": "y"}]}
    b = {"rows": [{"id": 2, "v": "y"}, {"id": 1, "v": "changed"}]}
    assert _differences(a, b, rules) == [("rows[0].v", "value")]


def test_reordered_items_in_an_ordered_list_are_one_ordering_difference() -> None:
    assert _differences([[1, 2, 3]], [[3, 1, 2]]) == [("[0]", "ordering")]
    assert _differences([1, 2, 3], [1, 2, 4]) == [("[2]", "value")]


def test_lists_of_different_length_report_size_and_compare_the_common_prefix() -> None:
    assert _differences({"v": [1, 2, 3]}, {"v": [1, 5]}) == [("v", "size"), ("v[1]", "value")]


def test_long_scalar_lists_take_the_bulk_path_with_the_same_answers() -> None:
    a = list(range(100))
    assert _differences(a, list(range(100))) == []
    assert _differences(a, [*range(99), True]) == [("[99]", "type")]
    assert _differences(a, [*range(99), 99.0]) == []
    assert _differences(a, [*range(99), 98]) == [("[99]", "value")]


def test_differences_are_listed_in_document_order() -> None:
    a = {"b": {"y": 1, "x": 1}, "a": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}
    b = {"b": {"y": 2, "x": 2}, "a": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]}
    assert _differences(a, b) == [
        ("a[1]", "value"),
        ("a[11]", "value"),
        ("b.x", "value"),
        ("b.y", "value"),
    ]


def test_the_number_of_recorded_differences_is_capped_but_all_are_counted() -> None:
    rules = parse_rules("[compare]\nmax_differences = 3\n", "cap")
    comparison = compare_operations(
        operation("v1", result={"rows": list(range(100))}),
        operation("v2", result={"rows": [-n for n in range(100)]}),
        rules,
        at=AT,
    )
    assert comparison.category == Category.VALUE_MISMATCH
    assert len(comparison.differences) == 3
    assert comparison.differences_truncated
    assert comparison.difference_count == 99


def test_previews_of_big_values_stay_small() -> None:
    big = {"rows": [{"text": "x" * 10_000, "n": n} for n in range(10_000)], "more": 1}
    shown = preview(big, 200)
    assert len(str(shown)) < 2_000
    assert shown["rows"][-1] == "… 9999 more items"  # type: ignore[index,call-overload]
    assert shown["…"] == "1 more keys"  # type: ignore[index,call-overload]
    assert preview({"a": list(range(20)), "b": {"c": {"d": {"e": 1}}}}, 200) == {
        "a": [0, 1, 2, 3, 4, "… 15 more items"],
        "b": {"c": {"d": "{… 1 keys}"}},
    }
    assert preview("y" * 500, 50) == "y" * 49 + "… (+451 chars)"
    assert preview(float("nan"), 50) == "nan"


def test_fingerprints_fold_indices_so_repeated_problems_group() -> None:
    rules = parse_rules("", "plain")

    def compared(index: int, value: Any) -> str:
        rows: list[Any] = [0] * 10
        changed = list(rows)
        changed[index] = value
        return compare_operations(
            operation("v1", result={"rows": rows}),
            operation("v2", result={"rows": changed}),
            rules,
            at=AT,
        ).fingerprint

    assert compared(2, 1) == compared(7, 5)
    assert compared(2, 1) != compared(2, "1")  # another kind of difference
    other_operation = compare_operations(
        operation("v1", result={"rows": [0]}, operation_name="other"),
        operation("v2", result={"rows": [1]}, operation_name="other"),
        rules,
        at=AT,
    ).fingerprint
    assert other_operation != compared(0, 1)


def test_fingerprints_of_errors_depend_on_the_canonical_types(default_rules: Any) -> None:
    def fingerprint(v1_type: str, v2_type: str) -> str:
        return compare_operations(
            operation("v1", error={"type": v1_type, "message": "a"}),
            operation("v2", error={"type": v2_type, "message": "b"}),
            default_rules,
            at=AT,
        ).fingerprint

    assert fingerprint("pool_timeout", "connection_error") == fingerprint(
        "execution_timeout", "connection_error"
    )
    assert fingerprint("pool_timeout", "connection_error") != fingerprint(
        "pool_timeout", "resource_error"
    )


def test_the_shortcut_for_equal_containers_still_sees_bools_against_numbers() -> None:
    rows = [{"id": n, "ok": True, "score": 1.0} for n in range(40)]
    as_ints = [{"id": n, "ok": 1, "score": 1.0} for n in range(40)]
    as_floats = [{"id": n, "ok": True, "score": 1} for n in range(40)]
    assert _differences(rows, [dict(row) for row in rows]) == []
    assert _differences({"rows": rows}, {"rows": as_ints}) == [
        (f"rows[{n}].ok", "type") for n in range(40)
    ]
    assert _differences(rows, as_floats) == []
    assert _differences(rows, as_floats, "[compare]\nint_float_equal = false\n") == [
        (f"[{n}].score", "type") for n in range(40)
    ]


def test_an_ignored_key_missing_on_one_side_does_not_hide_an_extra_key() -> None:
    rules = '[compare]\nignore = ["skip"]\n'
    assert _differences({"x": 1, "skip": 2}, {"x": 1, "new": 3}, rules) == [("new", "extra")]
    assert _differences({"x": 1, "new": 3}, {"x": 1, "skip": 2}, rules) == [("new", "missing")]


def test_unordered_lists_of_containers_still_see_bools_against_numbers() -> None:
    rules = '[compare]\nunordered = ["**"]\n'
    assert _differences([{"ok": True}], [{"ok": 1}], rules) == [("[0].ok", "type")]
    assert _differences([[True], [2]], [[2], [1]], rules) == [("[0][0]", "type")]
    assert _differences([True, 2], [2, 1], rules) == [("[0]", "type")]
    assert _differences([1.0, 2], [2, 1], rules) == []
