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

from ledger.events import EVENT_TYPES, MAX_ID_BYTES, SCHEMA_VERSIONS
from ledger.flags import FlagCommand
from ledger.wire import ANY, CONTRACTS, MAX_DEPTH, REQUIRED

__all__ = ["DEFAULT_DIRECTORY", "render", "schemas", "stale_schemas", "write_schemas"]

#: Where ``migration-ledger schema`` writes by default (relative to the working directory).
DEFAULT_DIRECTORY = Path("docs/schemas")
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schemas() -> dict[str, dict[str, Any]]:
    """File stem -> JSON Schema: every event type, then ``FlagCommand``."""
    found: dict[str, dict[str, Any]] = {}
    for name, model in EVENT_TYPES.items():
        schema = model.model_json_schema()
        topics = [
            c.logical
            for c in CONTRACTS.values()
            if model in c.models and c.logical[0] != "_" and c.logical != ANY
        ]
        shared = [t for t in topics if CONTRACTS[t].only is None]
        if shared:
            _tag_required(schema, "type")
            rule = f"`type` is required (topic {', '.join(shared)} holds several event types)"
        else:
            rule = f"`type` may be left out on topic {', '.join(topics)}, which holds only {name}"
        schema["description"] = (
            f"{schema.get('description', '')}\n\nWire rules (ledger.wire): {rule}; strict JSON "
            f"(no duplicate keys, no NaN/Infinity, numbers within the double range, integers "
            f"within int64, nesting at most {MAX_DEPTH} deep); ids without NUL and at most "
            f"{MAX_ID_BYTES} UTF-8 bytes; timestamps to the microsecond; schema_version "
            f"{', '.join(str(v) for v in sorted(SCHEMA_VERSIONS))}."
        ).strip()
        for field in REQUIRED.get(model, ()):  # null only in records older than the rule
            _tag_required(schema, field)
            schema["properties"][field].pop("default", None)
        found[name] = {"$schema": DIALECT, **schema}
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
    """Mark the discriminator required: the models default it, but a decoder that picks a
    model by it (a topic holding several event types, ``decode_command``) needs it."""
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
