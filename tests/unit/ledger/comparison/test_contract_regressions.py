"""Issue 12's comparison findings, each pinned: exact numbers, inf/nan, depth, indices, order."""

from __future__ import annotations

from typing import Any

from ledger.comparison import load_rules, parse_rules
from ledger.comparison.classify import fingerprint
from ledger.comparison.diff import DifferenceSink, diff_results

INF = float("inf")
NAN = float("nan")


def _kinds(a: Any, b: Any, rules_text: str | None = None) -> list[tuple[str, str]]:
    rules = load_rules() if rules_text is None else parse_rules(rules_text, "test")
    sink = DifferenceSink(100)
    diff_results(a, b, rules.for_operation("op").root, sink)
    return [(path, kind) for path, kind, _, _ in sink.rendered(100)]


def test_infinity_is_not_within_the_default_tolerance_of_a_number() -> None:
    assert _kinds({"x": 1.0}, {"x": INF}) == [("x", "value")]
    assert _kinds({"x": INF}, {"x": -INF}) == [("x", "value")]
    assert _kinds({"x": -INF}, {"x": 1e308}) == [("x", "value")]
    assert _kinds({"x": INF}, {"x": INF}) == []


def test_nan_equals_only_nan() -> None:
    assert _kinds({"x": NAN}, {"x": NAN}) == []
    assert _kinds({"x": NAN}, {"x": 0.0}) == [("x", "value")]
    assert _kinds({"x": 1.0}, {"x": NAN}, "[compare]\nabs_tolerance = 1e300\n") == [("x", "value")]


def test_zero_tolerance_compares_an_int_and_a_float_without_rounding_the_int() -> None:
    exact = "[compare]\nabs_tolerance = 0\nrel_tolerance = 0\n"
    assert _kinds({"x": 2**53 + 1}, {"x": 9007199254740992.0}, exact) == [("x", "value")]
    assert _kinds({"x": 2**53}, {"x": 9007199254740992.0}, exact) == []
    # A tolerance measures the exact gap: 1 in 2**53 is within 1e-9 relative.
    assert (
        _kinds({"x": 2**53 + 1}, {"x": 9007199254740992.0}, "[compare]\nrel_tolerance = 1e-9\n")
        == []
    )


def _nested(depth: int, leaf: Any) -> Any:
    root: list[Any] = []
    inner = root
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    inner.append(leaf)
    return root


def test_lists_nested_2000_deep_under_unordered_do_not_recurse() -> None:
    rules = '[compare]\nunordered = ["**"]\n'
    assert _kinds({"l": [_nested(2000, 1)]}, {"l": [_nested(2000, 1)]}, rules) == []
    (found,) = _kinds({"l": [_nested(2000, 1)]}, {"l": [_nested(2000, 2)]}, rules)
    assert found[1] == "value"
    assert _kinds(_nested(2000, 1), _nested(2000, 2), rules)[0][1] == "value"


def test_the_readme_index_pattern_items_3_price_selects_that_item_only() -> None:
    a = {"items": [{"price": 1, "qty": 1} for _ in range(5)]}
    b = {"items": [{"price": 2, "qty": 1} for _ in range(5)]}
    found = _kinds(a, b, '[compare]\nignore = ["items[3].price"]\n')
    assert found == [(f"items[{i}].price", "value") for i in (0, 1, 2, 4)]
    tolerant = '[compare.paths."items[1].price"]\nabs_tolerance = 1\n'
    assert ("items[1].price", "value") not in _kinds(a, b, tolerant)
    assert ("items[0].price", "value") in _kinds(a, b, tolerant)


def test_the_fingerprint_does_not_depend_on_key_order_beyond_1000_keys() -> None:
    keys = [f"k{i:05d}" for i in range(3000)]
    a1 = {k: 1 for k in keys}
    b1 = {k: 2 for k in keys}
    a2 = {k: 1 for k in reversed(keys)}
    b2 = {k: 2 for k in reversed(keys)}
    root = load_rules().for_operation("op").root
    prints = []
    for a, b in ((a1, b1), (a2, b2)):
        sink = DifferenceSink(10)
        diff_results(a, b, root, sink)
        assert sink.count == 3000
        prints.append(fingerprint("value_mismatch", "op", sink.keys))
    assert prints[0] == prints[1]
