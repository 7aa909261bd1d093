"""A signed, Merkle-checkpointed ledger written the way the sink and the flag writer would.

Topics as in production (no prefix): the flag log, its checkpoints, decisions on two
partitions, comparisons and operations. Rows are written in several batches so the segment
manifests remember several tree heads (what locates a later change).
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ledger import flags, rollout
from ledger.checkpoint import Signer, flag_log_origin
from ledger.events import (
    CheckpointPublished,
    CommandRejected,
    Event,
    FlagChanged,
    RolloutDecided,
    encode_event,
)
from ledger.evidence import flag_log_checkpoint
from ledger.merkle import CompactTree, leaf_hash
from ledger.store.writer import LedgerWriter, SourceRecord
from tests.unit.store_factories import comparison, operation

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
FLAG = "v2_migration"
FLAG_TOPIC = "ledger.flag-events"
KEY = Signer.from_text(base64.b64encode(bytes(range(32))))

#: The flag commands: six accepted changes with one refused (no change) in the middle.
SCRIPT: tuple[dict[str, Any], ...] = (
    {"command": "enable", "reason": "start"},
    {"command": "set_percentage", "percentage_bp": 1000, "reason": "first step"},
    {"command": "set_percentage", "percentage_bp": 2500, "reason": "soak passed"},
    {"command": "set_percentage", "percentage_bp": 2500, "reason": "again"},  # refused
    {"command": "rollback", "reason": "p99 doubled", "actor": "health-monitor"},
    {"command": "enable", "reason": "fixed"},
    {"command": "set_percentage", "percentage_bp": 5000, "reason": "half"},
)


@dataclass
class Built:
    flag_events: list[FlagChanged | CommandRejected] = field(default_factory=list)
    checkpoints: list[CheckpointPublished] = field(default_factory=list)
    decisions: list[RolloutDecided] = field(default_factory=list)


def flag_log() -> list[FlagChanged | CommandRejected]:
    state = flags.initial_state(FLAG)
    out: list[FlagChanged | CommandRejected] = []
    for index, fields in enumerate(SCRIPT):
        data = {"command_id": f"cmd-{index}", "flag": FLAG, "actor": "alice", **fields}
        command = flags.decode_command(json.dumps(data).encode())
        event = flags.decide_command(
            state, command, at=T0 + timedelta(minutes=10 * index), event_id=f"fe-{index}"
        )
        assert event is not None
        state = flags.apply(state, event)
        out.append(event)
    return out


def decisions(log: list[FlagChanged | CommandRejected], n: int) -> list[RolloutDecided]:
    rng = random.Random(5)
    states = []
    state = flags.initial_state(FLAG)
    for event in log:
        state = flags.apply(state, event)
        if isinstance(event, FlagChanged):
            states.append((event.at, state))
    out = []
    for i in range(n):
        at = T0 + timedelta(minutes=5 + 60 * i / n)
        current = [s for t, s in states if t <= at][-1]
        context = rollout.DecisionContext(f"s{rng.randrange(30)}", f"r{i:04d}", None)
        out.append(rollout.decide(current, context, at=at, event_id=f"rd-{i:04d}"))
    return out


def build(path: Path, *, signer: Signer | None = KEY, n_decisions: int = 120) -> Built:
    built = Built(flag_events=flag_log())
    built.decisions = decisions(built.flag_events, n_decisions)
    tree = CompactTree()
    origin = flag_log_origin(FLAG_TOPIC)
    flag_records, checkpoint_records = [], []
    for offset, event in enumerate(built.flag_events):
        wire = encode_event(event)
        tree.append(leaf_hash(wire))
        cp = flag_log_checkpoint(tree, origin, signer, last_offset=offset, at=event.at)
        built.checkpoints.append(cp)
        flag_records.append(SourceRecord(FLAG_TOPIC, 0, offset, FLAG.encode(), wire))
        checkpoint_records.append(
            SourceRecord("ledger.checkpoints", 0, offset, origin.encode(), encode_event(cp))
        )
    with LedgerWriter(path, fsync=False, signer=signer) as writer:
        writer.write_batch(flag_records[:4] + checkpoint_records[:4])
        writer.write_batch(flag_records[4:] + checkpoint_records[4:])
        chunk = max(1, len(built.decisions) // 4)
        for start in range(0, len(built.decisions), chunk):
            part = built.decisions[start : start + chunk]
            writer.write_batch(
                _records("ledger.decisions", part, 2, first=start, partitions_of=built.decisions)
            )
        others: list[Event] = [comparison(i) for i in range(12)]
        writer.write_batch(_records("ledger.comparisons", others[:6], 1))
        writer.write_batch(_records("ledger.comparisons", others[6:], 1, first=6))
        ops: list[Event] = [operation(i) for i in range(8)]
        writer.write_batch(_records("pool.operations", ops, 1))
    return built


def _records(
    topic: str,
    events: list[Any],
    partitions: int,
    *,
    first: int = 0,
    partitions_of: list[Any] | None = None,
) -> list[SourceRecord]:
    """Round robin over partitions by global index ``first + i``; offsets count per partition."""
    out = []
    for i, event in enumerate(events, start=first):
        partition = i % partitions
        offset = i // partitions
        # Operations are keyed by correlation id, as the wire contract requires.
        key = getattr(event, "correlation_id", None) if topic.endswith("operations") else None
        out.append(
            SourceRecord(topic, partition, offset, key and key.encode(), encode_event(event))
        )
    return out
