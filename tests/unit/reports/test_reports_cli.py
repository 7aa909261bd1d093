"""``migration-ledger report | replay | audit | reclassify`` through the real command line."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from report_factories import Ledger, rewrite
from typer.testing import CliRunner

from ledger.cli.app import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_report_json_prints_every_section_as_row_objects(ledger_path: Path, built: Ledger) -> None:
    code, out, _ = run("report", "summary", "--format", "json", "--duckdb", str(ledger_path))
    assert code == 0
    document = json.loads(out)
    assert document["report"] == "summary"
    categories = {r["category"]: r["comparisons"] for r in document["sections"]["categories"]}
    assert categories == dict(Counter(c.category for c in built.comparisons))


def test_report_csv_of_one_section_is_plain_csv(ledger_path: Path, built: Ledger) -> None:
    code, out, _ = run(
        "report", "performance", "-f", "csv", "--section", "pools", "--duckdb", str(ledger_path)
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sum(int(r["count"]) for r in rows) == len(built.operations)


def test_report_csv_of_every_section_names_each_one(ledger_path: Path) -> None:
    code, out, _ = run("report", "summary", "-f", "csv", "--duckdb", str(ledger_path))
    assert code == 0
    names = [line[2:] for line in out.splitlines() if line.startswith("# ")]
    assert names == ["overview", "pools", "categories", "fingerprints", "dead_letters"]


def test_report_html_writes_one_file_with_the_charts(ledger_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "site" / "rollout.html"
    code, _, err = run(
        "report", "rollout", "-f", "html", "--out", str(out), "--duckdb", str(ledger_path)
    )
    assert code == 0
    assert f"wrote {out}" in err
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert 'data-chart="rollout"' in html


def test_report_table_shows_the_titles(ledger_path: Path) -> None:
    code, out, _ = run("report", "daily", "--duckdb", str(ledger_path))
    assert code == 0
    assert "Day by day (UTC)" in out


def test_report_window_options_are_checked(ledger_path: Path) -> None:
    code, _, err = run("report", "summary", "--since", "yesterday", "--duckdb", str(ledger_path))
    assert code == 2
    assert "--since" in err
    assert "RFC 3339" in err
    code, _, err = run(
        "report", "summary", "--since", "2025-03-01T10:00", "--duckdb", str(ledger_path)
    )
    assert code == 2
    assert "no UTC offset" in err


def test_an_unknown_report_is_refused_with_the_known_names(ledger_path: Path) -> None:
    code, _, err = run("report", "weekly", "--duckdb", str(ledger_path))
    assert code == 2
    assert "summary, performance, rollout, go-no-go, daily, verdicts" in err
    assert "Traceback" not in err


def test_a_missing_ledger_is_a_clear_error(tmp_path: Path) -> None:
    for args in (["report", "summary"], ["audit"], ["replay", "--session", "s1"]):
        code, _, err = run(*args, "--duckdb", str(tmp_path / "nowhere"))
        assert code == 2, args
        assert "no ledger at" in err


def test_go_no_go_exits_one_on_no_go_and_zero_when_the_thresholds_allow(
    ledger_path: Path, tmp_path: Path
) -> None:
    code, out, _ = run("report", "go-no-go", "--duckdb", str(ledger_path))
    assert code == 1
    assert "NO-GO" in out
    lenient = tmp_path / "gates.toml"
    lenient.write_text(
        "[go_no_go]\nmin_comparisons = 10\nmax_mismatch_rate = 0.5\nmax_missing_rate = 0.5\n"
        "max_v2_error_ratio = 10.0\nmax_p99_ratio = 10.0\nmax_dead_letter_rate = 0.5\n"
        "max_rollbacks = 5\n"
        # 0 turns the sample-ratio check off: the factory's primaries are V1 whatever the
        # decision said, which the operations check rightly calls a broken router.
        "sample_ratio_alpha = 0\n"
    )
    code, out, _ = run(
        "report",
        "go-no-go",
        "-f",
        "json",
        "--thresholds",
        str(lenient),
        "--duckdb",
        str(ledger_path),
    )
    assert code == 0
    document = json.loads(out)
    assert document["passed"] is True
    assert {r["status"] for r in document["sections"]["checklist"]} == {"PASS"}


def test_go_no_go_refuses_a_thresholds_file_it_cannot_use(
    ledger_path: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "gates.toml"
    bad.write_text("[go_no_go]\nmax_mismatch = 1\n")
    code, _, err = run("report", "go-no-go", "--thresholds", str(bad), "--duckdb", str(ledger_path))
    assert code == 2
    assert "unknown threshold(s) max_mismatch" in err


def test_replay_by_session_and_time_explains_the_decision(ledger_path: Path, built: Ledger) -> None:
    decision = built.decisions[100]
    assert decision.session_id is not None
    code, out, _ = run(
        "replay",
        "--session",
        decision.session_id,
        "--at",
        decision.at.isoformat(),
        "--duckdb",
        str(ledger_path),
    )
    assert code == 0
    assert "MATCHES" in out
    assert f"flag v2_migration at version {decision.flag_version}" in out


def test_replay_by_correlation_id_in_json(ledger_path: Path, built: Ledger) -> None:
    decision = built.decisions[5]
    code, out, _ = run(
        "replay",
        "--correlation-id",
        decision.correlation_id,
        "-f",
        "json",
        "--duckdb",
        str(ledger_path),
    )
    assert code == 0
    assert json.loads(out)["decision"]["event_id"] == decision.event_id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --session"),
        (
            ["--session", "s1", "--at", "2025-03-01T10:00:00+00:00", "--correlation-id", "c"],
            "not both",
        ),
        (["--session", "nobody"], "no recorded decision for session 'nobody'"),
    ],
)
def test_replay_refuses_what_it_cannot_answer(
    ledger_path: Path, args: list[str], message: str
) -> None:
    code, _, err = run("replay", *args, "--duckdb", str(ledger_path))
    assert code == 2
    assert message in err


def test_audit_of_a_clean_ledger_exits_zero(ledger_path: Path, built: Ledger) -> None:
    code, out, _ = run("audit", "--sample", "50", "--duckdb", str(ledger_path))
    assert code == 0
    assert "AUDIT CLEAN" in out
    assert f"{len(built.decisions)} recomputed" in out


def test_audit_of_a_tampered_ledger_exits_one_naming_the_version(
    ledger_path: Path, built: Ledger, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(ledger_path, tmp_path / "ledger"))
    target = built.flag_changes[1]
    rewrite(
        copy,
        "flag_events",
        f"SELECT * REPLACE (CASE WHEN version = {target.version} THEN 'nobody asked' "
        "ELSE reason END AS reason) FROM t",
    )
    code, out, _ = run("audit", "--duckdb", str(copy))
    assert code == 1
    assert f"AUDIT FAILED at v2_migration version {target.version}" in out
    code, out, _ = run("audit", "-f", "json", "--duckdb", str(copy))
    assert code == 1
    assert json.loads(out)["bad_versions"][0]["version"] == target.version


def test_reclassify_prints_the_matrix(ledger_path: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('version = "loose"\n[compare]\nignore = ["value", "name"]\n')
    code, out, _ = run(
        "reclassify", "--rules", str(rules), "-f", "json", "--duckdb", str(ledger_path)
    )
    assert code == 0
    document = json.loads(out)
    assert document["rules_version"] == "loose"
    assert document["changed"] > 0
    assert document["matrix"]["value_mismatch"]["match"] > 0


def test_reclassify_names_the_line_of_a_bad_rules_file(ledger_path: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('version = "x"\n[compare]\nabs_tolerance = "wide"\n')
    code, _, err = run("reclassify", "--rules", str(rules), "--duckdb", str(ledger_path))
    assert code == 2
    assert "line 3" in err


def test_a_bad_interval_is_refused(ledger_path: Path) -> None:
    code, _, err = run("report", "rollout", "--interval", "fortnight", "--duckdb", str(ledger_path))
    assert code == 2
    assert "not a DuckDB interval" in err


def test_go_no_go_audits_the_decisions_of_its_window(ledger_path: Path, built: Ledger) -> None:
    since = built.decisions[len(built.decisions) // 2].at
    inside = sum(d.at >= since for d in built.decisions)
    code, out, _ = run(
        "report",
        "go-no-go",
        "-f",
        "json",
        "--since",
        since.isoformat(),
        "--duckdb",
        str(ledger_path),
    )
    assert code in (0, 1)
    lines = {r["check"]: r for r in json.loads(out)["sections"]["checklist"]}
    assert f"0 of {inside} decisions disagree" in lines["decision audit"]["figure"]


def test_a_corrupt_segment_is_an_error_message_not_a_traceback(
    ledger_path: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(ledger_path, tmp_path / "ledger"))
    (victim,) = list(copy.glob("segments/*+*/decisions.parquet"))[:1]
    victim.write_bytes(b"PAR1 this is not parquet PAR1")
    for args in (["audit"], ["replay", "--session", "s001"], ["report", "rollout"]):
        result = runner.invoke(app, [*args, "--duckdb", str(copy)])
        assert result.exit_code == 2, (args, result.output)
        assert "Error:" in result.stderr
        assert "Traceback" not in result.output


def test_report_raw_gives_the_same_json_as_the_rollups(ledger_path: Path) -> None:
    rolled = run("report", "summary", "--format", "json", "--duckdb", str(ledger_path))
    raw = run("report", "summary", "--format", "json", "--raw", "--duckdb", str(ledger_path))
    assert rolled[0] == raw[0] == 0
    assert json.loads(rolled[1])["sections"] == json.loads(raw[1])["sections"]


def test_audit_full_and_incremental_agree_on_a_tampered_ledger(
    ledger_path: Path, built: Ledger, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(ledger_path, tmp_path / "ledger"))
    assert run("audit", "--sample", "0", "--duckdb", str(copy))[0] == 0  # verdicts kept
    rewrite(copy, "decisions", "SELECT * REPLACE ('v2' AS pool) FROM t")
    kept = run("audit", "--sample", "0", "--format", "json", "--duckdb", str(copy))
    full = run("audit", "--full", "--sample", "0", "--format", "json", "--duckdb", str(copy))
    assert kept[0] == full[0] == 1
    mine, theirs = json.loads(kept[1]), json.loads(full[1])
    assert mine["disagreeing"] == theirs["disagreeing"] > 0
    assert mine["by_version"] == theirs["by_version"]


def test_go_no_go_holds_the_split_to_the_sample_ratio_check(ledger_path: Path) -> None:
    code, out, _ = run("report", "go-no-go", "-f", "json", "--duckdb", str(ledger_path))
    assert code == 1
    lines = {r["check"]: r for r in json.loads(out)["sections"]["checklist"]}
    # the factory's decisions follow the hash (distinct sessions, p = 0.04); its primaries
    # are all V1 whatever the decision said: a router that sends requests elsewhere
    assert lines["sample ratio (decisions)"]["status"] == "PASS"
    assert lines["sample ratio (operations)"]["status"] == "FAIL"
    assert "operations: V2 0 of 151" in lines["sample ratio (operations)"]["figure"]
    versions = json.loads(out)["sections"]["sample_ratio"]
    at_half = [r for r in versions if r["unit"] == "decisions" and r["expected_v2_share"] == 0.5]
    assert [(r["v1"], r["v2"]) for r in at_half] == [(20, 17)]
