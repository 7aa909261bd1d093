"""The publisher's journal: lines round-trip byte for byte, the cursor survives, tears heal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import PublishError
from producers.journal import Envelope, Journal

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


def envelope(n: int, key: str | None = None) -> Envelope:
    return Envelope("pool.operations", key or f"c-{n}", json.dumps({"n": n}).encode())


@settings(max_examples=60, deadline=None)
@given(
    topic=st.text(min_size=1, max_size=20),
    key=st.none() | st.text(max_size=30),
    value=json_values,
)
def test_a_line_reads_back_byte_for_byte_whatever_the_topic_key_and_value(
    tmp_path_factory: pytest.TempPathFactory, topic: str, key: str | None, value: object
) -> None:
    raw = json.dumps({"type": "X", "payload": value}, separators=(",", ":")).encode()
    journal = Journal(tmp_path_factory.mktemp("j") / "journal.jsonl")
    try:
        journal.append([Envelope(topic, key, raw), envelope(2, key=',"value":{}')])
        first, second = journal.read(10)
    finally:
        journal.close()
    assert first.envelope == Envelope(topic, key, raw)
    assert second.envelope.key == ',"value":{}'


def test_each_line_is_one_json_object_with_topic_key_and_the_event(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append([envelope(1), envelope(2)])
    journal.close()
    lines = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"topic": "pool.operations", "key": "c-1", "value": {"n": 1}},
        {"topic": "pool.operations", "key": "c-2", "value": {"n": 2}},
    ]


def test_acknowledged_lines_are_not_read_again_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append(envelope(n) for n in range(5))
    journal.acknowledge(journal.read(2))
    journal.close()

    reopened = Journal(path)
    entries = reopened.read(10)
    reopened.close()
    assert [e.envelope.key for e in entries] == ["c-2", "c-3", "c-4"]
    assert all(e.inherited for e in entries)
    assert reopened.pending == 3


def test_a_torn_last_line_is_cut_off_and_the_rest_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append([envelope(1), envelope(2)])
    journal.close()
    with path.open("ab") as out:
        out.write(b'{"topic":"pool.operations","key":"c-3","value":{"n"')

    reopened = Journal(path)
    keys = [e.envelope.key for e in reopened.read(10)]
    reopened.close()
    assert keys == ["c-1", "c-2"]
    assert path.read_bytes().endswith(b"\n")


def test_an_unreadable_line_is_skipped_counted_and_does_not_block_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append([envelope(1)])
    journal.close()
    with path.open("ab") as out:
        out.write(b"not json at all\n")
    journal = Journal(path)
    journal.append([envelope(3)])
    entries = journal.read(10)
    journal.acknowledge(entries)

    assert [e.envelope.key for e in entries] == ["c-1", "c-3"]
    assert journal.corrupt_lines == 1
    assert journal.pending == 0
    assert journal.compact()
    journal.close()


def test_rewinding_reads_the_unacknowledged_entries_again_in_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append(envelope(n) for n in range(4))
    entries = journal.read(4)
    journal.acknowledge(entries[:1])
    journal.rewind(entries[1].offset)
    again = journal.read(10)
    journal.close()
    assert [e.envelope.key for e in again] == ["c-1", "c-2", "c-3"]


def test_compaction_happens_only_once_everything_is_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append(envelope(n) for n in range(3))
    entries = journal.read(3)
    journal.acknowledge(entries[:2])
    assert not journal.compact()
    journal.acknowledge(entries)
    assert journal.compact()
    assert path.stat().st_size == 0
    journal.append([envelope(9)])
    assert [e.envelope.key for e in journal.read(5)] == ["c-9"]
    journal.close()


def test_a_second_journal_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    try:
        with pytest.raises(PublishError, match="in use by another publisher"):
            Journal(path)
    finally:
        journal.close()
    Journal(path).close()  # free again once the first one closed


def test_a_line_longer_than_one_read_chunk_is_read_whole(tmp_path: Path) -> None:
    big = json.dumps({"blob": "x" * (3 << 20)}).encode()
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append([envelope(1), Envelope("t", "k", big), envelope(3)])
    entries = journal.read(10)
    journal.close()
    assert [e.envelope.value for e in entries][1] == big
    assert [e.envelope.key for e in entries] == ["c-1", "k", "c-3"]
