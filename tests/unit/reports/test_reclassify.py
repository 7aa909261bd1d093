"""Reclassify: stored pairs compared again under other rules; the from -> to matrix."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from report_factories import Ledger

from ledger.comparison import load_rules
from reports.reclassify import reclassify, render_reclassification


def test_the_same_rules_move_nothing(con: Any, built: Ledger) -> None:
    result = reclassify(con, load_rules())
    assert result.changed == 0
    recorded = Counter(c.category for c in built.comparisons)
    assert dict(Counter({b: n for (b, a), n in result.matrix.items() if a == b})) == dict(recorded)
    assert result.pairs == len(built.comparisons)


def test_ignoring_the_differing_fields_turns_those_mismatches_into_matches(
    con: Any, built: Ledger, tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('version = "ignore-value-name"\n[compare]\nignore = ["value", "name"]\n')
    result = reclassify(con, load_rules(rules_file))
    moved = Counter(
        c.category for c in built.comparisons if c.category in ("value_mismatch", "shape_mismatch")
    )
    assert result.matrix[("value_mismatch", "match")] == moved["value_mismatch"]
    assert result.matrix[("shape_mismatch", "match")] == moved["shape_mismatch"]
    assert result.changed == sum(moved.values())
    # Errors and missing halves are not about result fields: they stay.
    for category in ("v2_error", "error_match", "shadow_missing"):
        n = sum(c.category == category for c in built.comparisons)
        assert result.matrix[(category, category)] == n
    assert result.examples
    assert all(e.after == "match" for e in result.examples)


def test_the_examples_are_capped(con: Any, tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('version = "x"\n[compare]\nignore = ["value", "name"]\n')
    assert len(reclassify(con, load_rules(rules_file), examples=2).examples) == 2


def test_a_limit_takes_only_the_first_pairs(con: Any) -> None:
    assert reclassify(con, load_rules(), limit=25).pairs == 25


def test_the_matrix_is_printed_with_recorded_categories_as_rows(con: Any, tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('version = "loose"\n[compare]\nignore = ["value"]\n')
    text = render_reclassification(reclassify(con, load_rules(rules_file)))
    assert "under rules loose" in text
    assert "recorded \\ new" in text
    assert "value_mismatch" in text
