"""Path patterns: syntax, and which nodes of a result each one selects."""

from __future__ import annotations

import pytest

from ledger.comparison.paths import (
    ANY_DEPTH,
    ANY_INDEX,
    ANY_KEY,
    Automaton,
    Defaults,
    MatchState,
    PathRule,
    fold_path,
    format_path,
    parse_pattern,
)


def _ignoring(*patterns: str) -> MatchState:
    compiled = [(parse_pattern(text), PathRule(ignore=True)) for text in patterns]
    return Automaton(compiled, Defaults()).root


def _state_at(root: MatchState, *segments: str | int) -> MatchState:
    state = root
    for segment in segments:
        state = state.item() if isinstance(segment, int) else state.child(segment)
    return state


def test_patterns_parse_into_keys_and_wildcards() -> None:
    assert parse_pattern("items[].price") == ("items", ANY_INDEX, "price")
    assert parse_pattern("**.created_at") == (ANY_DEPTH, "created_at")
    assert parse_pattern("*.id") == (ANY_KEY, "id")
    assert parse_pattern('["odd.key"].x') == ("odd.key", "x")
    assert parse_pattern("rows[*]") == ("rows", ANY_INDEX)


@pytest.mark.parametrize(
    "text",
    ["", " a", "a.", ".a", "a..b", "a[x]", "a[-1]", "a]b", "a**b", '["unterminated', "a b", "a[]b"],
)
def test_malformed_patterns_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"path pattern|must be a whole segment"):
        parse_pattern(text)


def test_double_star_selects_a_key_at_any_depth_including_the_top() -> None:
    root = _ignoring("**.created_at")
    assert _state_at(root, "created_at").ignored
    assert _state_at(root, "a", "b", 3, "created_at").ignored
    assert not _state_at(root, "a", "created").ignored


def test_a_plain_path_only_selects_from_the_top() -> None:
    root = _ignoring("program_id")
    assert _state_at(root, "program_id").ignored
    assert not _state_at(root, "inner", "program_id").ignored


def test_list_indices_are_transparent_to_patterns_that_do_not_name_them() -> None:
    root = _ignoring("items.price")
    assert _state_at(root, "items", 4, "price").ignored
    assert _state_at(root, "items", 0, 2, "price").ignored
    assert not _state_at(root, "items", 4, "name").ignored


def test_an_explicit_index_wildcard_needs_an_index() -> None:
    root = _ignoring("rows[].x")
    assert _state_at(root, "rows", 1, "x").ignored
    assert not _state_at(root, "rows", "x").ignored


def test_star_and_globs_inside_a_key() -> None:
    root = _ignoring("*.secret", "**.*_at")
    assert _state_at(root, "anything", "secret").ignored
    assert not _state_at(root, "a", "b", "secret").ignored
    assert _state_at(root, "deep", 2, "updated_at").ignored
    assert not _state_at(root, "deep", "at").ignored


def test_a_rule_applies_to_the_whole_subtree_but_unordered_only_to_the_named_list() -> None:
    compiled = [
        (parse_pattern("metrics"), PathRule(abs_tolerance=0.5)),
        (parse_pattern("tags"), PathRule(unordered=True)),
    ]
    root = Automaton(compiled, Defaults(abs_tolerance=0.0)).root
    assert _state_at(root, "metrics", "cpu", 3).abs_tolerance == 0.5
    assert _state_at(root, "other").abs_tolerance == 0.0
    assert _state_at(root, "tags").unordered
    assert not _state_at(root, "tags", 0).unordered


def test_the_later_rule_wins_where_two_set_the_same_option() -> None:
    compiled = [
        (parse_pattern("**.score"), PathRule(rel_tolerance=0.1)),
        (parse_pattern("final.score"), PathRule(rel_tolerance=0.0)),
    ]
    root = Automaton(compiled, Defaults()).root
    assert _state_at(root, "x", "score").rel_tolerance == 0.1
    assert _state_at(root, "final", "score").rel_tolerance == 0.0


def test_states_are_interned_so_the_automaton_stays_small() -> None:
    root = _ignoring("**.created_at")
    for index in range(1000):
        _state_at(root, f"key{index}", index, "x")
    assert len(root.automaton._states) <= 4


def test_paths_render_readably_and_fold_indices() -> None:
    link = ((((None, "items"), 3), "price"), 0)
    assert format_path(link) == "items[3].price[0]"
    assert fold_path(link) == "items[].price[]"
    assert format_path(None) == "$"
    assert format_path(((None, "a.b"), "ünï")) == '["a.b"]["ünï"]'
    assert format_path((None, 2)) == "[2]"
