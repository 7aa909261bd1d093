"""Flag commands and flag logs for the ledger core's tests: hypothesis strategies and a writer.

``decide_all`` plays the flag log writer: it decides each command against the state folded so
far and keeps every answer, as ``streams.flag_writer`` does with Kafka in between.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from ledger import flags
from ledger.events import CommandRejected, FlagChanged

FLAG = "v2_migration"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SESSIONS = ("alice", "bob", "carol", "dave")
ENVIRONMENTS = ("prod", "staging", "canary")

pools = st.sampled_from(["v1", "v2"])
basis_points = st.one_of(st.integers(0, 10_000), st.sampled_from([0, 1, 500, 5000, 9999, 10_000]))

#: The fields that make each kind of command (the common ones are added by ``command``).
command_fields: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({"command": "enable"}),
    st.just({"command": "disable"}),
    basis_points.map(lambda bp: {"command": "set_percentage", "percentage_bp": bp}),
    st.booleans().map(lambda on: {"command": "set_shadow_mode", "enabled": on}),
    basis_points.map(lambda bp: {"command": "set_shadow_sample", "sample_bp": bp}),
    st.builds(
        lambda s, p: {"command": "set_session_override", "session_id": s, "pool": p},
        st.sampled_from(SESSIONS),
        pools,
    ),
    st.sampled_from(SESSIONS).map(lambda s: {"command": "clear_session_override", "session_id": s}),
    st.builds(
        lambda e, p: {"command": "set_environment_override", "environment": e, "pool": p},
        st.sampled_from(ENVIRONMENTS),
        pools,
    ),
    st.sampled_from(ENVIRONMENTS).map(
        lambda e: {"command": "clear_environment_override", "environment": e}
    ),
    st.just({"command": "freeze"}),
    st.just({"command": "unfreeze"}),
    st.just({"command": "rollback"}),
)


def command(index: int, fields: dict[str, Any], flag: str = FLAG, **extra: Any) -> Any:
    """A command decoded from its wire form, as the writer receives it."""
    data = {
        "command_id": f"cmd-{index}",
        "flag": flag,
        "actor": "alice",
        "reason": f"step {index}",
        **fields,
        **extra,
    }
    return flags.decode_command(json.dumps(data))


command_lists = st.lists(command_fields, min_size=0, max_size=20)


@dataclass(frozen=True)
class Log:
    """What the writer appended for a list of commands, and the state after each answer."""

    events: list[FlagChanged | CommandRejected]
    states: list[flags.FlagState]  # states[i]: after events[i]

    @property
    def changes(self) -> list[FlagChanged]:
        return [e for e in self.events if isinstance(e, FlagChanged)]

    @property
    def final(self) -> flags.FlagState:
        return self.states[-1] if self.states else flags.initial_state(FLAG)


def decide_all(
    commands: Sequence[dict[str, Any]],
    *,
    flag: str = FLAG,
    clock: Callable[[int], datetime] = lambda i: T0 + timedelta(seconds=i),
) -> Log:
    """Decide every command in order against the state folded so far (the writer's loop)."""
    state = flags.initial_state(flag)
    events: list[FlagChanged | CommandRejected] = []
    states: list[flags.FlagState] = []
    for index, fields in enumerate(commands):
        answer = flags.decide_command(state, command(index, fields, flag), at=clock(index))
        assert answer is not None, "a fresh command id is always answered"
        state = flags.apply(state, answer)
        events.append(answer)
        states.append(state)
    return Log(events, states)


def changes_for(*commands: dict[str, Any]) -> list[FlagChanged]:
    """The FlagChanged events of these commands; fails if any is rejected."""
    log = decide_all(commands)
    rejected = [e for e in log.events if isinstance(e, CommandRejected)]
    assert not rejected, rejected
    return log.changes


#: Logs with at least ``n`` versions: commands that always change something, then a random tail.
def logs_with_versions(n: int) -> st.SearchStrategy[Log]:
    ramp = [
        {"command": "enable"},
        *({"command": "set_percentage", "percentage_bp": 100 * (i + 1)} for i in range(n)),
    ]
    return command_lists.map(lambda tail: decide_all([*ramp, *tail]))
