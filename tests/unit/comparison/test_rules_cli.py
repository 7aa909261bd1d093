"""``migration-ledger rules``: check, default and compare, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.comparison import parse_rules

runner = CliRunner()


def test_check_accepts_a_good_file_and_names_its_version(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('version = "team-7"\n[compare]\nignore = ["**.created_at"]\n')
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 0
    assert "version team-7" in result.output


def test_check_names_the_line_of_a_mistake_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('version = "1"\n[compare]\nignore = "**.created_at"\n')
    result = runner.invoke(app, ["rules", "check", str(path)])
    assert result.exit_code == 1
    assert "line 3: compare.ignore: expected a list of strings" in result.output
    assert "Traceback" not in result.output


def test_default_prints_the_packaged_rules() -> None:
    result = runner.invoke(app, ["rules", "default"])
    assert result.exit_code == 0
    assert parse_rules(result.output, "printed").version == "default-3"


def test_compare_classifies_two_bare_results(tmp_path: Path) -> None:
    (tmp_path / "v1.json").write_text(json.dumps({"data": {"a": 1, "created_at": "t0"}}))
    (tmp_path / "v2.json").write_text(json.dumps({"a": 1.0, "created_at": "t1", "b": "new"}))
    result = runner.invoke(
        app, ["rules", "compare", str(tmp_path / "v1.json"), str(tmp_path / "v2.json")]
    )
    assert result.exit_code == 0
    comparison = json.loads(result.output)
    assert comparison["category"] == "shape_mismatch"
    assert [(d["path"], d["kind"]) for d in comparison["differences"]] == [("b", "extra")]


def test_compare_refuses_a_file_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "v1.json").write_text("{not json")
    (tmp_path / "v2.json").write_text("1")
    result = runner.invoke(
        app, ["rules", "compare", str(tmp_path / "v1.json"), str(tmp_path / "v2.json")]
    )
    assert result.exit_code == 1
    assert "cannot read JSON" in result.output
