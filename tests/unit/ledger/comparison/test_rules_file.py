"""The rules file: the packaged default loads, and every malformed file names line and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.comparison import RuleSet, load_rules, parse_rules
from ledger.errors import LedgerError, RulesError


def test_packaged_rules_load_with_their_declared_version() -> None:
    rules = load_rules()
    assert isinstance(rules, RuleSet)
    assert rules.version == "default-3"
    assert set(rules.pools) == {"v1", "v2"}


def test_packaged_rules_file_is_installed_beside_the_package() -> None:
    from importlib import resources

    text = resources.files("ledger.comparison").joinpath("default_rules.toml").read_text("utf-8")
    assert parse_rules(text, "copy").digest == load_rules().digest


def test_a_rules_file_without_version_is_versioned_by_its_content() -> None:
    first = parse_rules("[compare]\nignore = ['a']\n", "one.toml")
    second = parse_rules("[compare]\nignore = ['b']\n", "two.toml")
    assert first.version.startswith("sha-")
    assert first.version != second.version
    assert parse_rules("[compare]\nignore = ['a']\n", "again.toml").version == first.version


def test_rules_load_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('version = "mine-3"\n[compare]\nabs_tolerance = 0.5\n')
    assert load_rules(path).version == "mine-3"


def test_a_missing_rules_file_is_a_rules_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules(tmp_path / "absent.toml")


def _error(text: str) -> str:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.toml")
    assert isinstance(caught.value, LedgerError)
    assert isinstance(caught.value, ValueError)
    return str(caught.value)


def test_toml_syntax_error_names_line_and_column() -> None:
    message = _error('version = "x"\n\n[compare]\nabs_tolerance = = 1\n')
    assert message.startswith("rules.toml, line 4, column 17: invalid TOML")


def test_unknown_key_names_its_line_and_suggests_the_right_one() -> None:
    message = _error('version = "x"\n[compare]\nignore = []\nabs_tolerence = 0.1\n')
    assert message.startswith("rules.toml, line 4: compare.abs_tolerence: unknown key")
    assert "did you mean 'abs_tolerance'?" in message


def test_unknown_top_level_table_names_its_header_line() -> None:
    message = _error('version = "x"\n\n[comparing]\nignore = []\n')
    assert message.startswith("rules.toml, line 3: comparing: unknown key")


def test_wrong_type_names_the_line_and_what_was_found() -> None:
    message = _error('[compare]\nignore = []\nrel_tolerance = "1%"\n')
    assert message == (
        "rules.toml, line 3: compare.rel_tolerance: expected a number >= 0, got a string '1%'"
    )


def test_negative_tolerance_is_refused() -> None:
    assert "expected a number >= 0" in _error("[compare]\nabs_tolerance = -0.1\n")


def test_boolean_is_not_a_number() -> None:
    assert "got a boolean True" in _error("[compare]\nabs_tolerance = true\n")


def test_bad_pattern_in_a_multiline_list_names_the_line_of_that_element() -> None:
    text = '[compare]\nignore = [\n  "**.created_at",\n  "items..price",\n]\n'
    message = _error(text)
    assert message.startswith("rules.toml, line 4: compare.ignore: path pattern 'items..price'")
    assert "empty segment" in message


def test_bad_path_table_pattern_names_its_header() -> None:
    message = _error('[compare]\nignore = []\n\n[compare.paths."a.**b"]\nignore = true\n')
    assert message.startswith('rules.toml, line 4: compare.paths."a.**b"')
    assert "'**' must be a whole segment" in message


def test_unknown_option_inside_a_path_table() -> None:
    message = _error('[operations.run.paths."**.score"]\nabs_tol = 1\n')
    assert message.startswith('rules.toml, line 2: operations.run.paths."**.score".abs_tol')


def test_unknown_string_step_names_the_step() -> None:
    message = _error('[compare]\nstrings = ["strip", "lowercase"]\n')
    assert message.startswith("rules.toml, line 2: compare.strings: unknown string step")
    assert "'lowercase'" in message
    assert "casefold" in message


def test_error_mapped_outside_the_taxonomy_names_the_mapping_line() -> None:
    text = "[pools.v1.errors]\npool_timeout = 'timeout'\nboom = 'explosion'\n"
    message = _error(text)
    assert message.startswith("rules.toml, line 3: pools.v1.errors.boom: a string 'explosion'")
    assert "not a canonical error type" in message


def test_unknown_pool_is_refused() -> None:
    assert _error("[pools.v3]\nunwrap = 'data'\n").startswith("rules.toml, line 1: pools.v3")


def test_unwrap_must_name_keys_only() -> None:
    assert "keys only" in _error("[pools.v1]\nunwrap = 'data[]'\n")


def test_inline_table_keys_are_located_on_their_line() -> None:
    message = _error('version = "1"\n[pools.v1]\nrename = { a = "b", c = 3 }\n')
    assert message.startswith("rules.toml, line 3: pools.v1.rename.c: expected a key name")


def test_empty_version_is_refused() -> None:
    assert _error('version = " "\n') == "rules.toml, line 1: version: must not be empty"


def test_max_differences_must_be_a_positive_integer() -> None:
    assert "expected an integer >= 1" in _error("[compare]\nmax_differences = 0\n")


def test_operation_rules_extend_global_lists_and_override_scalars() -> None:
    rules = parse_rules(
        """
        [compare]
        ignore = ["a"]
        abs_tolerance = 0.5
        [operations.special]
        ignore = ["b"]
        abs_tolerance = 0.0
        """,
        "inline",
    )
    general = rules.for_operation("other").root
    special = rules.for_operation("special").root
    assert general.child("a").ignored
    assert not general.child("b").ignored
    assert special.child("a").ignored
    assert special.child("b").ignored
    assert general.child("x").abs_tolerance == 0.5
    assert special.child("x").abs_tolerance == 0.0


def test_rule_sets_are_immutable() -> None:
    rules = load_rules()
    with pytest.raises(AttributeError):
        rules.version = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        rules.pools["v3"] = rules.pools["v1"]  # type: ignore[index]
