"""`sql`, `export`, `ingest`, `compact` from the command line, and the ledger's documentation."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.store import LedgerWriter, describe_schema, open_reader
from tests.unit.store_factories import every_type, operation, records

DOC = Path(__file__).parents[2] / "docs" / "ledger.md"


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    with LedgerWriter(path, fsync=False) as writer:
        writer.write_batch(records(every_type(3)))
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_sql_json_prints_an_array_of_row_objects_with_json_and_timestamps_as_data(
    ledger: Path,
) -> None:
    code, out, _ = run(
        "sql",
        "SELECT event_id, result, started_at, resources FROM operations WHERE event_id = 'op-0-v1'",
        "--format",
        "json",
        "--duckdb",
        str(ledger),
    )
    assert code == 0
    op = operation(0)
    assert json.loads(out) == [
        {
            "event_id": "op-0-v1",
            "result": op.result,
            "started_at": op.started_at.isoformat(),
            "resources": op.resources.model_dump() if op.resources else None,
        }
    ]


def test_sql_csv_has_a_header_and_one_line_per_row(ledger: Path) -> None:
    code, out, _ = run(
        "sql", "SELECT pool, count(*) AS n FROM operations GROUP BY pool ORDER BY pool",
        "--format", "csv", "--duckdb", str(ledger),
    )  # fmt: skip
    assert code == 0
    assert list(csv.reader(io.StringIO(out))) == [["pool", "n"], ["v1", "3"], ["v2", "3"]]


def test_sql_table_shows_every_column_and_counts_rows_on_stderr(ledger: Path) -> None:
    code, out, err = run("sql", "SELECT category FROM comparisons", "--duckdb", str(ledger))
    assert code == 0
    assert "category" in out
    assert "(3 rows)" in err


def test_sql_reports_a_bad_query_without_a_traceback(ledger: Path) -> None:
    code, _, err = run("sql", "SELECT nope FROM operations", "--duckdb", str(ledger))
    assert code == 2
    assert "nope" in err
    assert "Traceback" not in err


def test_sql_on_a_missing_ledger_says_how_to_make_one(tmp_path: Path) -> None:
    code, _, err = run("sql", "SELECT 1", "--duckdb", str(tmp_path / "nowhere"))
    assert code == 1
    assert "no ledger" in err


def test_export_and_ingest_commands_copy_a_ledger(ledger: Path, tmp_path: Path) -> None:
    code, out, _ = run("export", "--format", "parquet", "--out", str(tmp_path / "x"),
                       "--duckdb", str(ledger))  # fmt: skip
    assert code == 0
    assert "OperationRecorded: 6" in out
    copy = tmp_path / "copy"
    code, out, err = run("ingest", str(tmp_path / "x"), "--duckdb", str(copy))
    assert code == 0, err
    assert "operations: 6" in out
    code, _, err = run("ingest", str(tmp_path / "missing"), "--duckdb", str(copy))
    assert (code, "no such file" in err) == (1, True)


def test_compact_command_merges_and_refuses_while_another_writer_holds_the_ledger(
    ledger: Path,
) -> None:
    with LedgerWriter(ledger, fsync=False) as writer:
        writer.write_batch(records([operation(9)], partitions=1, start=100))
        code, _, err = run("compact", "--duckdb", str(ledger))
        assert code == 1
        assert "being written" in err
    code, out, _ = run("compact", "--full", "--duckdb", str(ledger))
    assert code == 0
    assert "merged 2 segments into 1" in out  # partition 0 had two; partition 1 one


def test_the_documented_schema_is_the_schema_in_code() -> None:
    text = DOC.read_text()
    section = text.split("-->\n", 1)[1].split("\n<!-- schema:end -->")[0]
    assert "<!-- schema:begin" in text
    assert section == describe_schema()


def test_every_example_query_in_the_documentation_runs(ledger: Path) -> None:
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)
    statements = [s.strip() for block in blocks for s in block.split(";") if s.strip()]
    assert len(statements) >= 6
    con = open_reader(ledger)
    for statement in statements:
        con.sql(statement).fetchall()
