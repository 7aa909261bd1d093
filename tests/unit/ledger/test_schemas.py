"""JSON Schemas: generated from the models, committed in docs/schemas, and kept in step."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ledger.cli.app import app
from ledger.events import EVENT_TYPES
from ledger.schemas import render, schemas, stale_schemas, write_schemas

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "schemas"
runner = CliRunner()


def test_the_committed_schemas_match_the_models() -> None:
    stale = stale_schemas(COMMITTED)
    assert stale == [], (
        f"docs/schemas is out of date for {stale}: run `migration-ledger schema` and commit"
    )


def test_nothing_but_the_generated_schemas_is_committed_there() -> None:
    committed = {path.stem for path in COMMITTED.glob("*.json")}
    assert committed == set(schemas())


def test_there_is_one_schema_per_event_type_plus_the_flag_commands() -> None:
    assert set(schemas()) == {*EVENT_TYPES, "FlagCommand"}


def test_each_event_schema_requires_its_type_only_where_its_topic_holds_several() -> None:
    shared = {"FlagChanged", "CommandRejected", "HealthAssessed", "RollbackTriggered"}
    shared |= {"SwitchoverRecorded", "GateVerdict", "BreakerStateChanged"}
    for name, schema in schemas().items():
        if name == "FlagCommand":
            continue
        assert schema["title"] == name
        assert ("type" in schema["required"]) is (name in shared), name
        assert ("may be left out" in schema["description"]) is (name not in shared), name
        assert schema["properties"]["type"]["const"] == name
        assert schema["additionalProperties"] is False


def test_the_decision_schema_requires_what_replay_recomputes() -> None:
    schema = schemas()["RolloutDecided"]
    assert {"bucket", "threshold_bp"} <= set(schema["required"])


def test_the_operation_schema_states_the_contract_producers_rely_on() -> None:
    schema = schemas()["OperationRecorded"]
    properties = schema["properties"]
    assert set(schema["required"]) >= {
        "event_id",
        "correlation_id",
        "session_id",
        "pool",
        "role",
        "operation",
        "outcome",
        "started_at",
        "duration_ms",
    }
    assert properties["pool"]["enum"] == ["v1", "v2"]
    assert properties["started_at"]["format"] == "date-time"
    assert properties["duration_ms"]["minimum"] == 0


def test_the_command_schema_lists_every_command_with_its_discriminator() -> None:
    schema = schemas()["FlagCommand"]
    assert schema["discriminator"]["propertyName"] == "command"
    kinds = set(schema["discriminator"]["mapping"])
    assert "set_percentage" in kinds
    assert "rollback" in kinds
    assert len(kinds) == 12
    for variant in schema["$defs"].values():
        assert variant["required"][0] == "command"


def test_schema_command_writes_one_file_per_event_type(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    result = runner.invoke(app, ["schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {len(schemas())} schemas" in result.output
    for name in EVENT_TYPES:
        written = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
        assert written == schemas()[name]


def test_schema_check_passes_on_fresh_files_and_fails_naming_a_stale_one(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    assert runner.invoke(app, ["schema", "--out", str(tmp_path), "--check"]).exit_code == 0
    (tmp_path / "RolloutDecided.json").write_text("{}\n", encoding="utf-8")
    result = runner.invoke(app, ["schema", "--out", str(tmp_path), "--check"])
    assert result.exit_code == 1
    assert "RolloutDecided" in result.output
    assert "migration-ledger schema" in result.output


def test_schema_into_a_file_instead_of_a_folder_fails_cleanly(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x", encoding="utf-8")
    result = runner.invoke(app, ["schema", "--out", str(not_a_folder)])
    assert result.exit_code == 2
    assert "not a folder" in result.output
    assert "Traceback" not in result.output


def test_rendered_schemas_are_stable_text_with_a_final_newline() -> None:
    schema = schemas()["FlagChanged"]
    text = render(schema)
    assert text.endswith("}\n")
    assert render(json.loads(text)) == text
