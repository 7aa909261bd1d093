"""The `flags` command line: values are parsed strictly before anything is published."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from ledger.cli import app
from streams.flags_cli import parse_percentage_bp, parse_switch

runner = CliRunner()


@given(st.integers(0, 10_000))
def test_any_two_decimal_percentage_becomes_its_basis_points(bp: int) -> None:
    assert parse_percentage_bp(f"{bp / 100:.2f}") == bp
    assert parse_percentage_bp(f"{bp / 100:.2f}%") == bp


@pytest.mark.parametrize("text", ["12.345", "-1", "100.01", "abc", "nan", "inf", ""])
def test_percentages_out_of_range_or_too_precise_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text)):
        parse_percentage_bp(text)


def test_switch_words() -> None:
    assert [parse_switch(w) for w in ("true", "ON", "yes", "1")] == [True] * 4
    assert [parse_switch(w) for w in ("false", "off", "No", "0")] == [False] * 4
    with pytest.raises(ValueError, match="maybe"):
        parse_switch("maybe")


def test_bad_value_exits_2_before_anything_is_sent() -> None:
    result = runner.invoke(
        app,
        [
            "flags",
            "set",
            "v2_rollout_percentage",
            "250",
            "--reason",
            "ramp",
            "--bootstrap-servers",
            "127.0.0.1:1",
        ],
    )
    assert result.exit_code == 2
    assert "between 0 and 100" in result.output
    assert "Traceback" not in result.output


def test_override_to_an_unknown_pool_exits_2() -> None:
    result = runner.invoke(
        app,
        [
            "flags",
            "override",
            "session",
            "s-1",
            "v3",
            "--reason",
            "pin",
            "--bootstrap-servers",
            "127.0.0.1:1",
        ],
    )
    assert result.exit_code == 2
    assert "v1, v2 or clear" in result.output
