"""Send a flag command and wait for the flag log writer's answer; read the flag log.

What the ``flags`` and ``switchover`` commands need. Synchronous: a command line has nothing
else to do while it waits. The answer is found by its ``command_id`` on the flag log, read from
the log's end as it was just before the command was published, so no earlier answer is
mistaken for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ledger import flags, wire
from ledger.errors import EventDecodeError, LedgerError
from ledger.events import CommandRejected, FlagChanged
from ledger.kafka.clients import producer, publish_errors
from ledger.kafka.log import LogReader, Record
from ledger.settings import Settings

__all__ = ["Answer", "NoAnswer", "answers", "read_log", "submit"]

Answer = FlagChanged | CommandRejected


class NoAnswer(LedgerError, TimeoutError):
    """The flag log writer did not answer in time (is ``migration-ledger worker`` running?)."""


def answers(records: Iterable[Record]) -> list[Answer]:
    """The flag events among these records, in their order."""
    found: list[Answer] = []
    for record in records:
        try:
            event = wire.decode(record.value, "flag_events")
        except EventDecodeError:
            continue  # not ours to judge here; `migration-ledger check` reports it
        if isinstance(event, FlagChanged | CommandRejected):
            found.append(event)
    return found


def read_log(settings: Settings, *, flag: str | None = None, timeout: float = 60.0) -> list[Answer]:
    """Every FlagChanged / CommandRejected on the flag log, in log order."""
    with LogReader(settings, [settings.topic("flag_events")], timeout_s=timeout) as reader:
        reader.seek_to_beginning()
        events = answers(reader.read_to_end())
    return [e for e in events if flag is None or e.flag == flag]


def submit(settings: Settings, command: Any, *, timeout: float = 30.0) -> Answer:
    """Publish a ``ledger.flags`` command and return the writer's answer to it."""
    with LogReader(settings, [settings.topic("flag_events")], timeout_s=timeout) as reader:
        reader.partitions(wait_s=min(timeout, 5.0))  # the writer may be creating the log now
        reader.seek_to_end()
        with publish_errors("publish the command"):
            sender = producer(settings)
            sender.send(
                settings.topic("flag_commands"),
                key=command.flag.encode(),
                value=flags.encode_command(command),
            ).get(timeout=timeout)
            sender.close()

        def answered(records: Sequence[Record]) -> bool:
            return any(a.command_id == command.command_id for a in answers(records))

        for answer in answers(reader.tail(answered, timeout_s=timeout)):
            if answer.command_id == command.command_id:
                return answer
    raise NoAnswer(
        f"no answer to command {command.command_id} on {settings.topic('flag_events')} "
        f"within {timeout:g} s; is `migration-ledger worker` running?"
    )
