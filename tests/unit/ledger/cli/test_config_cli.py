"""``check --env NAME --profile-only`` and ``config diff`` through the real command line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ledger.cli.app import app
from tests.unit.ledger.profile_factories import PROFILES

runner = CliRunner()


def write(tmp_path: Path, text: str = PROFILES) -> Path:
    path = tmp_path / "environments.toml"
    path.write_text(text)
    return path


def test_check_env_validates_a_sound_profile_without_a_broker(tmp_path: Path) -> None:
    path = write(tmp_path)
    result = runner.invoke(
        app,
        ["check", "--env", "prod", "--profiles", str(path), "--profile-only", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    findings = json.loads(result.stdout)["checks"]
    assert [(f["check"], f["status"]) for f in findings] == [("profile", "PASS")]


def test_check_env_fails_one_line_per_problem_and_runs_no_probe(tmp_path: Path) -> None:
    path = write(tmp_path, '[env.prod]\npartitions = 0\nserve_token = "x"\n')
    result = runner.invoke(
        app, ["check", "--env", "prod", "--profiles", str(path), "--format", "json"]
    )
    assert result.exit_code == 1
    findings = json.loads(result.stdout)["checks"]
    assert [f["status"] for f in findings] == ["FAIL", "FAIL"]
    assert findings[0]["figure"].startswith("env.prod.serve_token: secrets come only")
    assert findings[1]["figure"].startswith("env.prod.partitions:")


def test_check_env_names_a_missing_environment(tmp_path: Path) -> None:
    path = write(tmp_path)
    result = runner.invoke(app, ["check", "--env", "qa", "--profiles", str(path), "--profile-only"])
    assert result.exit_code == 1
    result = runner.invoke(
        app, ["check", "--env", "qa", "--profiles", str(path), "--profile-only", "--format", "json"]
    )
    assert "no [env.qa]" in json.loads(result.stdout)["checks"][0]["figure"]


def test_config_diff_prints_what_differs(tmp_path: Path) -> None:
    path = write(tmp_path)
    result = runner.invoke(
        app, ["config", "diff", "staging", "prod", "--profiles", str(path), "--json"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["key"]: (r["staging"], r["prod"]) for r in json.loads(result.stdout)}
    assert rows["partitions"] == (4, 12)
    assert rows["plan"] == ("default", None)
    assert rows["plan.min_samples"] == (None, 500)


def test_config_diff_refuses_a_profile_with_problems(tmp_path: Path) -> None:
    path = write(tmp_path, PROFILES + '\n[env.qa]\npartitions = "many"\n')
    result = runner.invoke(app, ["config", "diff", "qa", "prod", "--profiles", str(path)])
    assert result.exit_code == 2
    assert "env.qa.partitions" in result.stderr
