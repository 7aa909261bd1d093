"""The flag log writer wired into a real faust app, driven through ``Agent.test_context``."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from stream_factories import recording_producer

from ledger import flags
from ledger.events import CommandRejected, DeadLettered, FlagChanged, decode_event
from ledger.settings import Settings
from streams.app import create_app
from streams.flag_writer import build_writer


class ListLog:
    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.read = 0

    async def read_to_end(self) -> list[tuple[int, bytes | None]]:
        new = [(n, raw) for n, raw in enumerate(self.records) if n >= self.read]
        self.read = len(self.records)
        return new  # type: ignore[return-value]

    async def append(self, flag: str, value: bytes) -> int:
        self.records.append(value)
        return len(self.records) - 1


@dataclass
class CommandRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def test_the_apps_flag_writer_answers_commands_and_dead_letters_garbage(
    settings: Settings, tmp_path: Path
) -> None:
    log = ListLog()
    ledger = create_app(
        settings,
        app_id="unit-flags",
        web_enabled=False,
        modules=("streams.metrics", "streams.flag_writer"),
        datadir=tmp_path,
        flag_log_source=log,
        flag_log_append=log.append,
    )
    producer = recording_producer(ledger.app)
    ledger.app.producer = producer

    def cmd(n: int, kind: str, **fields: object) -> bytes:
        data = {
            "command": kind,
            "command_id": f"c{n}",
            "flag": settings.flag,
            "actor": "a",
            "reason": "r",
            **fields,
        }
        return flags.encode_command(flags.decode_command(json.dumps(data)))

    # faust may drop fetched messages around a rebalance, so a task that reads the commands
    # topic itself answers (streams.flag_writer.install); the agent only holds the partition.
    assert "flag_writer" not in ledger.agents
    assert "flag_commands_token" in ledger.agents
    writer = build_writer(ledger, log)
    values = (cmd(1, "enable"), b"{}", cmd(2, "enable"), cmd(1, "enable"))
    records = [
        CommandRecord(settings.topic("flag_commands"), 0, n, settings.flag.encode(), value)
        for n, value in enumerate(values)
    ]

    async def run() -> list[object]:
        return [await writer.handle(record) for record in records]

    results = asyncio.run(run())
    assert [type(r).__name__ for r in results] == [
        "FlagChanged",
        "NoneType",
        "CommandRejected",
        "NoneType",
    ]
    events = [decode_event(raw) for raw in log.records]
    assert [type(e) for e in events] == [FlagChanged, CommandRejected]
    (dead,) = producer.of(settings.topic("dead_letters"))
    assert isinstance(decode_event(dead[1] or b""), DeadLettered)
