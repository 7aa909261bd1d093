"""The flag log writer (streams.flag_writer) against an in-memory flag log.

The log plays Kafka's part: appends get offsets, a reader sees everything up to the end.
Crashes are modelled by a new writer that starts from an empty state and re-reads commands
from an earlier (committed) position.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import flags
from ledger.events import CommandRejected, DeadLettered, FlagChanged, decode_event
from streams.flag_writer import FlagWriter
from streams.metrics import Metrics

FLAG = "v2_migration"


class MemoryLog:
    """An append-only log; ``lose_ack`` makes the next append land but report failure."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.lose_ack = False
        self.refuse = False

    def reader(self) -> Any:
        log = self

        class Reader:
            position = 0

            async def read_to_end(self) -> list[tuple[int, bytes | None]]:
                new = list(enumerate(log.records))[self.position :]
                self.position = len(log.records)
                return [(offset, raw) for offset, raw in new]

        return Reader()

    async def append(self, flag: str, value: bytes) -> int:
        if self.refuse:
            self.refuse = False
            raise ConnectionError("broker away")
        self.records.append(value)
        if self.lose_ack:
            self.lose_ack = False
            raise TimeoutError("no ack")
        return len(self.records) - 1

    def events(self) -> list[FlagChanged | CommandRejected]:
        out = []
        for raw in self.records:
            event = decode_event(raw)
            assert isinstance(event, FlagChanged | CommandRejected)
            out.append(event)
        return out


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def writer_for(log: MemoryLog, dead: list[DeadLettered] | None = None) -> FlagWriter:
    async def send_dead_letter(key: bytes | None, value: bytes) -> None:
        event = decode_event(value)
        assert isinstance(event, DeadLettered)
        if dead is not None:
            dead.append(event)

    return FlagWriter(
        source=log.reader(),
        append=log.append,
        send_dead_letter=send_dead_letter,
        metrics=Metrics(),
        wall=lambda: 1_700_000_000.0,
    )


def command(n: int, kind: str, **fields: Any) -> bytes:
    data = {
        "command": kind,
        "command_id": f"cmd-{n}",
        "flag": FLAG,
        "actor": "tester",
        "reason": f"step {n}",
        **fields,
    }
    return flags.encode_command(flags.decode_command(json.dumps(data)))


def message(offset: int, value: bytes) -> Msg:
    return Msg("ledger.flag-commands", 0, offset, FLAG.encode(), value)


def run(writer: FlagWriter, *messages: Msg) -> list[Any]:
    async def go() -> list[Any]:
        return [await writer.handle(m) for m in messages]

    return asyncio.run(go())


def test_accepts_then_rejects_a_change_that_changes_nothing() -> None:
    log = MemoryLog()
    answers = run(
        writer_for(log),
        message(0, command(0, "enable")),
        message(1, command(1, "set_percentage", percentage_bp=2_500)),
        message(2, command(2, "set_percentage", percentage_bp=2_500)),
    )
    assert [type(a).__name__ for a in answers] == ["FlagChanged", "FlagChanged", "CommandRejected"]
    assert [e.version for e in log.events() if isinstance(e, FlagChanged)] == [1, 2]
    assert flags.fold(log.events(), FLAG).v2_rollout_bp == 2_500


def test_state_is_rebuilt_from_the_log_by_a_new_writer() -> None:
    log = MemoryLog()
    run(writer_for(log), message(0, command(0, "enable")))
    answer = run(writer_for(log), message(1, command(1, "freeze")))[0]
    assert isinstance(answer, FlagChanged)
    assert answer.version == 2
    assert answer.v2_pool_enabled  # the second writer knew the first one's change


def test_a_reader_that_starts_over_from_offset_0_does_not_fold_a_change_twice() -> None:
    # What a consumer whose position was reset to the beginning hands back: the whole log again.
    log = MemoryLog()
    writer = writer_for(log)
    rewinding = log.reader()

    async def from_the_beginning() -> list[tuple[int, bytes | None]]:
        rewinding.position = 0
        return list(await rewinding.read_to_end())

    writer.source = type("Rewinding", (), {"read_to_end": staticmethod(from_the_beginning)})()
    answers = run(
        writer,
        message(0, command(0, "enable")),
        message(1, command(1, "set_percentage", percentage_bp=1_000)),
        message(2, command(2, "set_percentage", percentage_bp=2_000)),
    )
    assert [a.version for a in answers] == [1, 2, 3]
    assert flags.fold(log.events(), FLAG).v2_rollout_bp == 2_000
    assert writer.tree.size == 3  # each record is one leaf of the Merkle tree, once


def test_a_lost_acknowledgement_is_not_appended_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.flag_writer.RETRY_S", 0.0)
    log = MemoryLog()
    log.lose_ack = True
    answer = run(writer_for(log), message(0, command(0, "enable")))[0]
    assert answer is None  # found in the log on the retry: already decided
    assert len(log.records) == 1


def test_a_refused_append_is_retried_until_it_lands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.flag_writer.RETRY_S", 0.0)
    log = MemoryLog()
    log.refuse = True
    answer = run(writer_for(log), message(0, command(0, "enable")))[0]
    assert isinstance(answer, FlagChanged)
    assert len(log.records) == 1


def test_malformed_commands_are_dead_lettered_and_the_writer_goes_on() -> None:
    log = MemoryLog()
    dead: list[DeadLettered] = []
    answers = run(
        writer_for(log, dead),
        message(0, b'{"command": "explode"}'),
        message(1, b"not json"),
        message(2, command(2, "enable")),
    )
    assert answers[:2] == [None, None]
    assert isinstance(answers[2], FlagChanged)
    assert [base64.b64decode(d.original_b64) for d in dead] == [
        b'{"command": "explode"}',
        b"not json",
    ]
    assert all("not a valid flag command" in d.reason for d in dead)


COMMANDS = [
    ("enable", {}),
    ("disable", {}),
    ("set_percentage", {"percentage_bp": 1_000}),
    ("set_percentage", {"percentage_bp": 5_000}),
    ("freeze", {}),
    ("unfreeze", {}),
    ("rollback", {}),
    ("set_session_override", {"session_id": "s-1", "pool": "v2"}),
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(range(len(COMMANDS))), min_size=1, max_size=15),
    st.data(),
)
def test_crash_anywhere_leaves_versions_without_gap_or_duplicate(
    picks: list[int], data: st.DataObject
) -> None:
    messages = [
        message(n, command(n, COMMANDS[i][0], **COMMANDS[i][1])) for n, i in enumerate(picks)
    ]
    read = data.draw(st.integers(0, len(messages)))
    committed = data.draw(st.integers(0, read))
    log = MemoryLog()
    run(writer_for(log), *messages[:read])
    run(writer_for(log), *messages[committed:])  # restarted: replays from the commit

    events = log.events()
    answered = [e.command_id for e in events]
    assert sorted(answered) == sorted(f"cmd-{m.offset}" for m in messages)  # one answer each
    versions = [e.version for e in events if isinstance(e, FlagChanged)]
    assert versions == list(range(1, len(versions) + 1))
    flags.fold(events, FLAG)  # the hash chain holds
