"""The flag log writer keeps the flag log as a Merkle log and publishes signed checkpoints."""

from __future__ import annotations

import base64

from test_flag_writer import MemoryLog, command, message, run

from ledger.checkpoint import Signer, parse_note
from ledger.events import CheckpointPublished, DeadLettered, decode_event
from ledger.merkle import leaf_hash, root_of
from streams.flag_writer import FlagWriter
from streams.metrics import Metrics

KEY = Signer.from_text(base64.b64encode(bytes(range(32))))


def writer(log: MemoryLog, published: list[CheckpointPublished]) -> FlagWriter:
    async def publish(key: bytes, value: bytes) -> None:
        event = decode_event(value)
        assert isinstance(event, CheckpointPublished)
        published.append(event)

    async def dead(key: bytes | None, value: bytes) -> None:
        assert isinstance(decode_event(value), DeadLettered)

    return FlagWriter(
        source=log.reader(),
        append=log.append,
        send_dead_letter=dead,
        metrics=Metrics(),
        wall=lambda: 1_700_000_000.0,
        publish_checkpoint=publish,
        signer=KEY,
        origin="migration-ledger/flag-log/ledger.flag-events",
    )


def test_every_append_rejections_included_publishes_a_signed_head_of_the_whole_log() -> None:
    log = MemoryLog()
    published: list[CheckpointPublished] = []
    run(
        writer(log, published),
        message(0, command(0, "enable")),
        message(1, command(1, "set_percentage", percentage_bp=2_500)),
        message(2, command(2, "set_percentage", percentage_bp=2_500)),  # rejected: no change
    )
    assert [p.tree_size for p in published] == [1, 2, 3]
    for p in published:
        checkpoint = parse_note(p.note)
        assert checkpoint.size == p.tree_size
        assert checkpoint.root == root_of([leaf_hash(r) for r in log.records[: p.tree_size]])
        assert KEY.verifier().verifies(checkpoint)
        assert p.signed
        assert p.last_offset == p.tree_size - 1


def test_a_new_writer_rebuilds_the_tree_from_the_log_before_it_appends() -> None:
    log = MemoryLog()
    run(writer(log, []), message(0, command(0, "enable")), message(1, command(1, "freeze")))
    published: list[CheckpointPublished] = []
    run(writer(log, published), message(2, command(2, "unfreeze")))
    assert [p.tree_size for p in published] == [3]
    assert published[0].root_hash == root_of([leaf_hash(r) for r in log.records]).hex()


def test_without_a_key_checkpoints_are_published_unsigned() -> None:
    log = MemoryLog()
    published: list[CheckpointPublished] = []
    w = writer(log, published)
    w.signer = None
    run(w, message(0, command(0, "enable")))
    assert not published[0].signed
    assert not parse_note(published[0].note).signed
