"""Properties of the comparison engine over generated results (hypothesis)."""

from __future__ import annotations

import json
import re
from typing import Any

from comparison_factories import AT, operation
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger.comparison import (
    CANONICAL_ERRORS,
    Category,
    compare_operations,
    load_rules,
    parse_rules,
)
from ledger.comparison.diff import DifferenceSink, diff_results
from ledger.events import ComparisonRecorded, OperationRecorded, decode_event, encode_event

KEYS = st.sampled_from(["a", "b", "c", "id", "name", "rows"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=25,
)
PLAIN = parse_rules("[compare]\nmax_differences = 10000\n", "plain")
DEFAULT = load_rules()
LENIENT = parse_rules(
    """
    [compare]
    unordered = ["rows", "**.b"]
    abs_tolerance = 0.5
    rel_tolerance = 0.01
    strings = ["strip", "casefold"]
    ignore = ["**.id"]
    """,
    "lenient",
)
SWAPPED = {Category.V1_ERROR: Category.V2_ERROR, Category.V2_ERROR: Category.V1_ERROR}
_SEGMENT = re.compile(r"\.?([A-Za-z_]+)|\[(\d+)\]")


def _differences(a: Any, b: Any, rules_text: str) -> list[tuple[str, str]]:
    rules = parse_rules(f"[compare]\nmax_differences = 10000\n{rules_text}", "generated")
    sink = DifferenceSink(10_000)
    diff_results(a, b, rules.for_operation("op").root, sink)
    return [(path, kind) for path, kind, _, _ in sink.rendered(50)]


def _segments(path: str) -> list[str | int]:
    if path == "$":
        return []
    found: list[str | int] = []
    for match in _SEGMENT.finditer(path):
        key, index = match.groups()
        found.append(key if key is not None else int(index))
    assert "".join(m.group() for m in _SEGMENT.finditer(path)) == path
    return found


def _under(path: str, keys: list[str]) -> bool:
    """Whether a literal pattern (keys, indices transparent) selects ``path`` or an ancestor."""
    seen: list[str] = []
    for segment in _segments(path):
        if isinstance(segment, str):
            seen.append(segment)
            if seen == keys:
                return True
    return False


@given(value=JSON)
def test_a_result_compared_with_itself_is_a_match(value: Any) -> None:
    copy = json.loads(json.dumps(value))
    for rules, v1_result in ((PLAIN, copy), (LENIENT, copy), (DEFAULT, {"data": copy})):
        comparison = compare_operations(
            operation("v1", result=v1_result), operation("v2", result=value), rules, at=AT
        )
        assert comparison.category == Category.MATCH
        assert comparison.differences == ()


@settings(suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(a=st.dictionaries(KEYS, JSON), b=st.dictionaries(KEYS, JSON), data=st.data())
def test_ignoring_a_path_removes_the_differences_there_and_no_others(
    a: Any, b: Any, data: st.DataObject
) -> None:
    before = _differences(a, b, "")
    keyed = [d for d in before if any(isinstance(s, str) for s in _segments(d[0]))]
    assume(keyed)
    path, _ = data.draw(st.sampled_from(keyed))
    keys = [s for s in _segments(path) if isinstance(s, str)]
    keys = keys[: data.draw(st.integers(1, len(keys)))]
    after = _differences(a, b, f"ignore = [{json.dumps('.'.join(keys))}]")
    # Ignoring a field can reveal that list items differ only by their order: another story.
    assume(all(kind != "ordering" for _, kind in before + after))
    assert after == [d for d in before if not _under(d[0], keys)]
    assert len(after) < len(before)


def _half(pool: str, outcome: tuple[str, Any]) -> OperationRecorded:
    kind, payload = outcome
    if kind == "error":
        return operation(pool, error={"type": payload, "message": "failed"})
    return operation(pool, result=payload)


OUTCOMES = st.one_of(
    st.tuples(st.just("ok"), JSON),
    st.tuples(st.just("error"), st.sampled_from(CANONICAL_ERRORS)),
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(first=OUTCOMES, second=OUTCOMES, lenient=st.booleans())
def test_swapping_v1_and_v2_swaps_only_the_one_sided_error_categories(
    first: tuple[str, Any], second: tuple[str, Any], lenient: bool
) -> None:
    rules = LENIENT if lenient else PLAIN
    forward = compare_operations(_half("v1", first), _half("v2", second), rules, at=AT)
    backward = compare_operations(_half("v1", second), _half("v2", first), rules, at=AT)
    category = Category(forward.category)
    assert backward.category == SWAPPED.get(category, category)
    assert backward.difference_count == forward.difference_count
    assert (backward.v1_error_type, backward.v2_error_type) == (
        forward.v2_error_type,
        forward.v1_error_type,
    )


@given(
    base=st.floats(-1e6, 1e6),
    tolerance=st.floats(1e-3, 100.0),
    fraction=st.floats(0.0, 0.99),
    sign=st.sampled_from([-1, 1]),
)
def test_numbers_within_the_absolute_tolerance_match(
    base: float, tolerance: float, fraction: float, sign: int
) -> None:
    rules = parse_rules(f"[compare]\nabs_tolerance = {tolerance!r}\n", "abs")
    other = base + sign * tolerance * fraction
    result = compare_operations(
        operation("v1", result={"x": base}), operation("v2", result={"x": other}), rules, at=AT
    )
    assert result.category == Category.MATCH


@given(
    base=st.floats(-1e6, 1e6),
    tolerance=st.floats(1e-3, 100.0),
    fraction=st.floats(1.01, 100.0),
    sign=st.sampled_from([-1, 1]),
)
def test_numbers_beyond_the_absolute_tolerance_differ(
    base: float, tolerance: float, fraction: float, sign: int
) -> None:
    rules = parse_rules(f"[compare]\nabs_tolerance = {tolerance!r}\n", "abs")
    other = base + sign * tolerance * fraction
    result = compare_operations(
        operation("v1", result={"x": base}), operation("v2", result={"x": other}), rules, at=AT
    )
    assert result.category == Category.VALUE_MISMATCH
    assert [(d.path, d.kind) for d in result.differences] == [("x", "value")]


@given(
    base=st.floats(1e-3, 1e9),
    tolerance=st.floats(1e-6, 0.5),
    fraction=st.one_of(st.floats(0.0, 0.98), st.floats(1.02, 50.0)),
)
def test_relative_tolerance_holds_on_both_sides_of_its_boundary(
    base: float, tolerance: float, fraction: float
) -> None:
    rules = parse_rules(f"[compare]\nrel_tolerance = {tolerance!r}\n", "rel")
    # the larger value is `base`, so a gap of tolerance * fraction * base sits at `fraction`
    other = base - tolerance * fraction * base
    result = compare_operations(
        operation("v1", result=[base]), operation("v2", result=[other]), rules, at=AT
    )
    expected = Category.MATCH if fraction < 1 else Category.VALUE_MISMATCH
    assert result.category == expected


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(a=JSON, b=JSON)
def test_every_comparison_is_a_valid_event_on_the_wire(a: Any, b: Any) -> None:
    for rules in (PLAIN, LENIENT):
        comparison = compare_operations(
            operation("v1", result=a), operation("v2", result=b), rules, at=AT
        )
        decoded = decode_event(encode_event(comparison), expected=ComparisonRecorded)
        assert decoded == ComparisonRecorded.model_validate(comparison.model_dump())
        assert decoded.model_dump() == comparison.model_dump()


@given(a=JSON, b=JSON)
def test_the_same_pair_always_gets_the_same_comparison(a: Any, b: Any) -> None:
    first = compare_operations(operation("v1", result=a), operation("v2", result=b), LENIENT, at=AT)
    again = compare_operations(
        operation("v1", result=json.loads(json.dumps(a))),
        operation("v2", result=json.loads(json.dumps(b))),
        LENIENT,
        at=AT,
    )
    assert first == again
