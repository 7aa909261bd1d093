"""compose.yaml cannot run here (no Docker engine), so check it stays in step with the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer.main
import yaml

from ledger.cli.app import app

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"


def _services() -> dict[str, dict[str, object]]:
    document = yaml.safe_load(COMPOSE.read_text())
    services = document["services"]
    assert isinstance(services, dict)
    return services


def _resolve(argv: list[str]) -> Any:
    """Follow sub-command names through the real CLI, as the shell would."""
    command = typer.main.get_command(app)
    for word in argv:
        if word.startswith("-"):
            break
        # typer may bring its own click: look for sub-commands rather than a class.
        commands = getattr(command, "commands", None)
        assert commands is not None, f"{command.name} has no sub-command {word!r}"
        found = commands.get(word)
        assert found is not None, f"the CLI has no command {word!r} (compose.yaml names it)"
        command = found
    return command


def test_compose_runs_kafka_worker_and_sink() -> None:
    services = _services()
    assert {"kafka", "worker", "sink"} <= set(services)
    assert str(services["kafka"]["image"]).startswith("apache/kafka:4.")


def test_compose_commands_are_commands_the_cli_has() -> None:
    for name, service in _services().items():
        command = service.get("command")
        if command is None:
            continue
        assert isinstance(command, list)
        assert command[0] == "migration-ledger", name
        resolved = _resolve([str(word) for word in command[1:]])
        for word in command[1:]:
            if str(word).startswith("--"):
                option_names = {o for p in resolved.params for o in getattr(p, "opts", [])}
                assert word in option_names, f"{name}: {resolved.name} has no option {word}"


def test_worker_and_sink_commands_are_the_ones_the_issue_names() -> None:
    services = _services()
    assert services["worker"]["command"][:2] == ["migration-ledger", "worker"]
    assert services["sink"]["command"][:2] == ["migration-ledger", "sink"]


def test_services_talk_to_the_broker_by_its_compose_name() -> None:
    services = _services()
    for name in ("worker", "sink"):
        environment = services[name]["environment"]
        assert isinstance(environment, dict)
        assert environment["MIGRATION_LEDGER_BOOTSTRAP_SERVERS"] == "kafka:9092", name
