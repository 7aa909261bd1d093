"""`migration-ledger simulate` refuses bad input clearly, before touching any broker."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ledger.cli.app import app

cli = CliRunner()


@pytest.mark.parametrize(
    ("incident", "said"),
    [
        ("v3:error_rate*5@180s", "Cannot read the incident 'v3:error_rate*5@180s'"),
        ("v2:error_rate[gremlin]*2@1s", "unknown error type 'gremlin'"),
        ("v2:latency*2@3m-1m", "the end must come after the start"),
    ],
)
def test_a_bad_incident_exits_2_with_a_message_and_no_traceback(incident: str, said: str) -> None:
    result = cli.invoke(
        app,
        ["simulate", "-n", "5", "--incident", incident, "--bootstrap-servers", "127.0.0.1:1"],
    )
    assert result.exit_code == 2
    assert said in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_the_expected_incident_form_is_shown_with_its_brackets_intact() -> None:
    result = cli.invoke(app, ["simulate", "--incident", "nonsense"])
    assert "error_rate[timeout]*20@3m-5m" in " ".join(result.output.split())


@pytest.mark.parametrize("option", [["--operations", "0"], ["--rate", "0"], ["--sessions", "0"]])
def test_counts_and_rates_below_their_minimum_are_refused(option: list[str]) -> None:
    result = cli.invoke(app, ["simulate", *option])
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_an_unreachable_broker_exits_1_saying_where_it_looked() -> None:
    result = cli.invoke(
        app,
        ["simulate", "-n", "5", "--bootstrap-servers", "127.0.0.1:1", "--journal", "unused"],
    )
    assert result.exit_code == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in " ".join(result.output.split())
    assert "Traceback" not in result.output
