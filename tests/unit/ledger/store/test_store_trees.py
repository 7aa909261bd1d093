"""The store writer's per-partition Merkle trees: resumed from manifests, kept by compaction,
rebuilt for segments written before trees existed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.checkpoint import parse_note, partition_origin
from ledger.merkle import root_of
from ledger.store.integrity import (
    HeldCheckpoint,
    audit_checkpoints,
    take_checkpoints,
)
from ledger.store.trees import record_leaf
from ledger.store.writer import LedgerWriter
from tests.unit.store_factories import every_type, records


def held(ledger: Path) -> list[HeldCheckpoint]:
    out = []
    for item in take_checkpoints(ledger)["checkpoints"]:
        history = tuple(tuple(h) for h in item["history"])
        cp = parse_note(item["note"])
        out.append(HeldCheckpoint(cp, item["last_offset"], history, item["derived"]))  # type: ignore[arg-type]
    return out


def expected_root(ledger: Path, partition: int) -> bytes:
    from ledger.store import open_reader

    con = open_reader(ledger)
    rows = con.execute(
        "SELECT _topic, _partition, _offset, wire FROM events WHERE _partition = ? "
        "ORDER BY _offset",
        [partition],
    ).fetchall()
    con.close()
    return root_of([record_leaf(t, p, o, w) for t, p, o, w in rows])


def test_a_restarted_writer_continues_the_tree_from_the_newest_manifest(tmp_path: Path) -> None:
    ledger = tmp_path / "l"
    events = every_type(4)
    with LedgerWriter(ledger, fsync=False) as w:
        w.write_batch(records(events[:20]))
    with LedgerWriter(ledger, fsync=False) as w:
        w.write_batch(records(events[20:], start=10))
    heads = {h.checkpoint.origin: h.checkpoint for h in held(ledger)}
    for partition in (0, 1):
        assert heads[partition_origin("t.events", partition)].root == expected_root(
            ledger, partition
        )


def test_compaction_keeps_the_heads_and_a_held_checkpoint_still_verifies(tmp_path: Path) -> None:
    ledger = tmp_path / "l"
    events = every_type(4)
    with LedgerWriter(ledger, fsync=False) as w:
        for start in range(0, len(events), 6):
            w.write_batch(records(events[start : start + 6], start=start // 2))
        before = held(ledger)
        w.compact(full=True)
    after = held(ledger)
    assert {h.checkpoint for h in after} == {h.checkpoint for h in before}
    # The parts' heads are remembered (the flag log's head is derived here: no writer).
    assert all(len(h.history) == 7 for h in after if not h.derived)
    report = audit_checkpoints(ledger, before, None)
    assert report.ok, [f.text for f in report.findings if not f.ok]


def test_segments_without_trees_are_rebuilt_from_their_rows(tmp_path: Path) -> None:
    ledger = tmp_path / "l"
    events = every_type(4)
    with LedgerWriter(ledger, fsync=False) as w:
        w.write_batch(records(events[:20]))
    for manifest in ledger.glob("segments/*/manifest.json"):
        data = json.loads(manifest.read_text())
        del data["merkle"]  # as a segment written before issue 13
        manifest.write_text(json.dumps(data))
    with LedgerWriter(ledger, fsync=False) as w:
        w.write_batch(records(events[20:], start=10))
    heads = {h.checkpoint.origin: h.checkpoint for h in held(ledger)}
    assert heads[partition_origin("t.events", 0)].root == expected_root(ledger, 0)


def test_trees_built_in_parallel_processes_give_the_same_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ledger.store.integrity as integrity

    ledger = tmp_path / "l"
    events = every_type(4)
    with LedgerWriter(ledger, fsync=False) as w:
        for start in range(0, len(events), 6):
            w.write_batch(records(events[start : start + 6], start=start // 2))
    heads = held(ledger)
    inline = audit_checkpoints(ledger, heads, None)
    monkeypatch.setattr(integrity, "PARALLEL_ROWS", 0)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    parallel = audit_checkpoints(ledger, heads, None)
    assert parallel.findings == inline.findings
    assert parallel.rows == inline.rows == len(events) + 0
    assert parallel.ok
