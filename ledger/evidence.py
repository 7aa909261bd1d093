"""Evidence an auditor can check offline: flag log checkpoints and inclusion proof files.

Pure (no I/O, no clock): the CLI reads and writes the files; this module builds and checks
their content.

A proof file (``migration-ledger proof``) holds, for one decision, two inclusion proofs:

- ``decision``: its record in the sink's tree of its topic-partition (leaf: topic, partition,
  offset and wire text, ``ledger.checkpoint.record_leaf_data``);
- ``flag_event``: the ``FlagChanged`` it used, in the flag log writer's tree (leaf: the event's
  wire text), when the decision names it (``flag_event_hash``) or its version is in the log.

Each part carries the checkpoint note it was proven against. :func:`verify_proof` recomputes
every leaf from the wire text, runs the RFC 9162 verifier against the checkpoint's root,
checks the checkpoint's signature with the auditor's public key, and compares the checkpoint
with the one the auditor holds for that tree (same size: same root).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    Signer,
    Verifier,
    format_note,
    parse_note,
    record_leaf_data,
)
from ledger.events import CheckpointPublished, FlagChanged, RolloutDecided, decode_event
from ledger.merkle import CompactTree, leaf_hash, verify_inclusion

__all__ = [
    "CHECKPOINTS_FORMAT",
    "PROOF_FORMAT",
    "flag_log_checkpoint",
    "verify_proof",
]

PROOF_FORMAT = "migration-ledger/proof/1"
CHECKPOINTS_FORMAT = "migration-ledger/checkpoints/1"


def flag_log_checkpoint(
    tree: CompactTree, origin: str, signer: Signer | None, *, last_offset: int | None, at: datetime
) -> CheckpointPublished:
    """The event the flag log writer publishes after an append (the same head: the same id)."""
    checkpoint = Checkpoint(origin, tree.size, tree.root())
    if signer is not None:
        checkpoint = signer.sign(checkpoint)
    return CheckpointPublished(
        event_id=f"checkpoint:{origin}:{tree.size}:{checkpoint.root_hex}",
        origin=origin,
        tree_size=tree.size,
        root_hash=checkpoint.root_hex,
        note=format_note(checkpoint),
        signed=checkpoint.signed,
        key_name=None if signer is None else signer.name,
        last_offset=last_offset,
        at=at,
    )


def _part_leaf(kind: str, part: dict[str, Any]) -> bytes:
    wire = str(part["wire"]).encode()
    if kind == "decision":
        data = record_leaf_data(
            str(part["topic"]), int(part["partition"]), int(part["offset"]), wire
        )
        return leaf_hash(data)
    return leaf_hash(wire)


def verify_proof(
    proof: dict[str, Any], held: Sequence[Checkpoint], verifier: Verifier | None
) -> tuple[list[str], list[str]]:
    """(problems, facts): an empty ``problems`` means every part verified."""
    problems: list[str] = []
    facts: list[str] = []
    if proof.get("format") != PROOF_FORMAT:
        return [f"not a proof file (format {proof.get('format')!r})"], facts
    held_by_origin: dict[str, list[Checkpoint]] = {}
    for cp in held:
        held_by_origin.setdefault(cp.origin, []).append(cp)
    parts = [(kind, proof.get(kind)) for kind in ("decision", "flag_event")]
    if not isinstance(proof.get("decision"), dict):
        problems.append("the proof holds no decision")
    decision: RolloutDecided | None = None
    for kind, part in parts:
        if not isinstance(part, dict):
            continue
        try:
            checkpoint = parse_note(str(part["checkpoint"]))
            leaf = _part_leaf(kind, part)
            path = [bytes.fromhex(str(h)) for h in part["proof"]]
            index = int(part["leaf_index"])
            event = decode_event(str(part["wire"]))
        except (CheckpointError, KeyError, TypeError, ValueError) as exc:
            problems.append(f"{kind}: unreadable ({exc})")
            continue
        where = (
            f"{kind} {event.event_id} (leaf {index} of {checkpoint.size} in {checkpoint.origin})"
        )
        if not verify_inclusion(leaf, index, checkpoint.size, path, checkpoint.root):
            problems.append(f"{where}: the inclusion proof does not lead to the checkpoint's root")
        else:
            facts.append(f"{where}: included ({len(path)} hashes, {32 * len(path)} bytes)")
        if verifier is None:
            problems.append(f"{kind}: no public key given, the checkpoint's signature is unchecked")
        elif not checkpoint.signed:
            problems.append(f"{kind}: the checkpoint it was proven against is unsigned")
        elif not verifier.verifies(checkpoint):
            problems.append(f"{kind}: the checkpoint is not signed by the given public key")
        mine = held_by_origin.get(checkpoint.origin, [])
        if not mine:
            problems.append(f"{kind}: the held checkpoints have no tree {checkpoint.origin}")
        for cp in mine:
            if cp.size == checkpoint.size and cp.root != checkpoint.root:
                problems.append(
                    f"{kind}: tree {cp.origin} of size {cp.size} has another root in the held "
                    "checkpoint: the ledger was rewritten"
                )
            elif cp.size == checkpoint.size:
                facts.append(f"{kind}: the held checkpoint of {cp.origin} is the same tree head")
            else:
                facts.append(
                    f"{kind}: held checkpoint of {cp.origin} has size {cp.size}, the proof "
                    f"{checkpoint.size} (run `proof --checkpoint` with the held file to link them)"
                )
        if kind == "decision" and isinstance(event, RolloutDecided):
            decision = event
        if kind == "flag_event" and decision is not None:
            if not isinstance(event, FlagChanged):
                problems.append("flag_event: not a FlagChanged")
            elif (event.flag, event.version) != (decision.flag, decision.flag_version):
                problems.append(
                    f"flag_event: version {event.version} is not the decision's "
                    f"{decision.flag_version}"
                )
            elif decision.flag_event_hash is not None and decision.flag_event_hash != event.hash:
                problems.append("flag_event: its hash is not the one the decision names")
    return problems, facts


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
