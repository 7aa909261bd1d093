"""JSON Schemas of the event contract, for producers written in other languages.

One schema per event type (``<Type>.json``, from ``ledger.events.EVENT_TYPES``) and one for
the flag commands (``FlagCommand.json``). They are generated from the pydantic models, so the
models stay the single source; the committed copies in ``docs/schemas/`` are checked against
them by the tests (``migration-ledger schema --check`` does the same in CI).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from ledger.events import EVENT_TYPES
from ledger.flags import FlagCommand

__all__ = ["DEFAULT_DIRECTORY", "render", "schemas", "stale_schemas", "write_schemas"]

#: Where ``migration-ledger schema`` writes by default (relative to the working directory).
DEFAULT_DIRECTORY = Path("docs/schemas")
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schemas() -> dict[str, dict[str, Any]]:
    """File stem -> JSON Schema: every event type, then ``FlagCommand``."""
    found: dict[str, dict[str, Any]] = {}
    for name, model in EVENT_TYPES.items():
        found[name] = {"$schema": DIALECT, **_tag_required(model.model_json_schema(), "type")}
    command = TypeAdapter(FlagCommand).json_schema()
    for variant in command.get("$defs", {}).values():
        if "command" in variant.get("properties", {}):
            _tag_required(variant, "command")
    found["FlagCommand"] = {
        "$schema": DIALECT,
        "title": "FlagCommand",
        "description": "A command to the flag log writer; `command` selects the kind.",
        **command,
    }
    return found


def _tag_required(schema: dict[str, Any], tag: str) -> dict[str, Any]:
    """Mark the discriminator required: the models default it, but the decoders that pick a
    model by it (``decode_event``, ``decode_command``) need it on the wire."""
    required = schema.setdefault("required", [])
    if tag not in required:
        required.insert(0, tag)
    return schema


def render(schema: dict[str, Any]) -> str:
    """The committed text of a schema: sorted keys, two-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(directory: Path = DEFAULT_DIRECTORY) -> list[Path]:
    """Write every schema into ``directory`` (created if needed); returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = directory / f"{name}.json"
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def stale_schemas(directory: Path = DEFAULT_DIRECTORY) -> list[str]:
    """Names of the schemas missing from ``directory`` or different from the models."""
    stale = []
    for name, schema in schemas().items():
        path = directory / f"{name}.json"
        if not path.is_file() or path.read_text(encoding="utf-8") != render(schema):
            stale.append(name)
    return stale
