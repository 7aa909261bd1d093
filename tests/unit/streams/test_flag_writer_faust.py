"""The flag log writer wired into a real faust app, driven through ``Agent.test_context``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from stream_factories import recording_producer

from ledger import flags
from ledger.events import CommandRejected, DeadLettered, FlagChanged, decode_event
from ledger.settings import Settings
from streams.app import create_app


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


def test_flag_writer_agent_answers_commands_and_dead_letters_garbage(
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

    async def run() -> list[object]:
        async with ledger.agents["flag_writer"].test_context() as agent:
            for value in (cmd(1, "enable"), b"{}", cmd(2, "enable"), cmd(1, "enable")):
                await agent.put(value, key=settings.flag.encode(), partition=0)
            return list(agent.results.values())

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
