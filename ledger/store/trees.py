"""The writer's Merkle trees: one per (topic, partition), saved in every segment manifest.

Each committed segment's ``manifest.json`` holds a ``merkle`` block: the partition tree's size
and frontier after that segment (O(log n) hashes: the writer resumes without re-reading any
row), the offset of the last record it covers, and the checkpoint note (signed when the writer
has a key). The commit's rename makes the rows, the offsets and the checkpoint visible
together. A compacted segment keeps the newest block of its parts and their checkpoints as
``merkle_history`` (what ``checkpoint --out`` hands the auditor to locate a later change).

The leaf of a stored record is ``leaf_hash(topic \\n partition \\n offset \\n wire)`` over the
row's provenance and its exact wire text (``ledger.checkpoint.record_leaf_data``). Rows are
leaves in offset order whatever table holds them; a record dropped as a duplicate is no row
and no leaf, a dead-lettered record is its dead letter's row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ledger.checkpoint import Checkpoint, Signer, format_note, partition_origin, record_leaf_data
from ledger.merkle import CompactTree, leaf_hash

__all__ = [
    "HistoryEntry",
    "TreeHead",
    "history_of",
    "merkle_block",
    "record_leaf",
    "tree_from_block",
]


def record_leaf(topic: str, partition: int, offset: int, wire: str) -> bytes:
    return leaf_hash(record_leaf_data(topic, partition, offset, wire.encode()))


@dataclass(frozen=True)
class TreeHead:
    """A partition tree after one commit."""

    size: int
    root: bytes
    last_offset: int
    note: str


#: (tree size, root hash hex, last offset covered): one commit's head, for locating changes.
HistoryEntry = tuple[int, str, int]


def merkle_block(
    topic: str, partition: int, tree: CompactTree, last_offset: int, signer: Signer | None
) -> dict[str, Any]:
    """The manifest block of a partition tree after a commit (checkpoint signed if a key)."""
    checkpoint = Checkpoint(partition_origin(topic, partition), tree.size, tree.root())
    if signer is not None:
        checkpoint = signer.sign(checkpoint)
    return {
        "size": tree.size,
        "root": checkpoint.root_hex,
        "frontier": [h.hex() for h in tree.frontier],
        "last_offset": last_offset,
        "checkpoint": format_note(checkpoint),
    }


def tree_from_block(block: Any) -> CompactTree | None:
    """The tree saved in a manifest block (None when absent or unreadable: rebuild it)."""
    if not isinstance(block, dict):
        return None
    try:
        return CompactTree.restore(
            int(block["size"]), [bytes.fromhex(str(h)) for h in block["frontier"]]
        )
    except (KeyError, TypeError, ValueError):
        return None


def history_of(manifests: Iterable[dict[str, Any]]) -> Iterator[HistoryEntry]:
    """Every commit head a partition's manifests remember, oldest first (duplicates left in)."""
    for manifest in manifests:
        for entry in manifest.get("merkle_history", ()):
            yield int(entry[0]), str(entry[1]), int(entry[2])
        block = manifest.get("merkle")
        if isinstance(block, dict) and "size" in block:
            yield int(block["size"]), str(block["root"]), int(block["last_offset"])
