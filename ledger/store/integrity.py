"""Checkpoints of a stored ledger, their audit, and inclusion proofs of decisions.

Two kinds of tree (``ledger.checkpoint`` names them by origin):

- one per (topic, partition) the writer stored, over its rows in offset order whatever table
  holds them (``ledger.store.trees``); its heads are in the segment manifests;
- the flag log writer's, over the flag events of the flag topic in offset order; its heads
  are the ``CheckpointPublished`` rows of the ``checkpoints`` table.

:func:`take_checkpoints` collects the newest head of every tree (and the older heads the
ledger remembers, to locate a later change) into the file an auditor keeps outside the ledger.
:func:`audit_checkpoints` rebuilds every tree from the stored rows in one pass and checks each
held head with an RFC 6962 consistency proof (held tree a prefix of today's), then that every
stored row is covered by a head signed by the trusted key. A failure names the tree, the
offsets (and tables, or flag versions) between the last head that still matches and the first
that does not.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    Verifier,
    flag_log_origin,
    format_note,
    parse_note,
    parse_origin,
    partition_origin,
)
from ledger.errors import StoreError
from ledger.events import FlagChanged, RolloutDecided, decode_event
from ledger.evidence import CHECKPOINTS_FORMAT, PROOF_FORMAT
from ledger.merkle import (
    CompactTree,
    consistency_ranges,
    inclusion_ranges,
    leaf_hash,
    verify_consistency,
)
from ledger.store.layout import Layout
from ledger.store.reader import open_reader, take_snapshot
from ledger.store.schema import TABLES
from ledger.store.trees import history_of, record_leaf

__all__ = [
    "Finding",
    "HeldCheckpoint",
    "IntegrityReport",
    "audit_checkpoints",
    "decision_proof",
    "read_checkpoint_file",
    "take_checkpoints",
]

SCAN_BATCH = 200_000


@dataclass(frozen=True)
class HeldCheckpoint:
    """One tree head of a checkpoint file, with the older heads remembered for locating."""

    checkpoint: Checkpoint
    last_offset: int | None
    #: (size, root hex, last offset) of older heads, oldest first.
    history: tuple[tuple[int, str, int], ...] = ()
    derived: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "note": format_note(self.checkpoint),
            "last_offset": self.last_offset,
            "history": [list(h) for h in self.history],
            "derived": self.derived,
        }


def read_checkpoint_file(path: Path) -> list[HeldCheckpoint]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the checkpoint file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINTS_FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint file ({CHECKPOINTS_FORMAT})")
    held = []
    for item in data.get("checkpoints", []):
        held.append(
            HeldCheckpoint(
                parse_note(str(item["note"])),
                None if item.get("last_offset") is None else int(item["last_offset"]),
                tuple((int(h[0]), str(h[1]), int(h[2])) for h in item.get("history", [])),
                bool(item.get("derived", False)),
            )
        )
    return held


def _manifests(ledger: Path) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Each partition's live segment manifests, oldest first."""
    snapshot = take_snapshot(ledger)
    layout = Layout(ledger)
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for segment in snapshot.segments:
        manifest = json.loads((layout.segment_dir(segment) / "manifest.json").read_text())
        out.setdefault((segment.topic, segment.partition), []).append(manifest)
    return out


def _flag_topics(con: Any) -> list[str]:
    rows = con.execute("SELECT DISTINCT _topic FROM flag_events ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows]


def _published(con: Any) -> dict[str, list[tuple[int, str, int, str]]]:
    """Flag log heads stored in ``checkpoints``: origin -> [(size, root, last offset, note)]."""
    rows = con.execute(
        "SELECT origin, tree_size, root_hash, coalesce(last_offset, -1), note FROM checkpoints "
        "ORDER BY origin, tree_size, _offset"
    ).fetchall()
    out: dict[str, list[tuple[int, str, int, str]]] = {}
    for origin, size, root, last, note in rows:
        out.setdefault(str(origin), []).append((int(size), str(root), int(last), str(note)))
    return out


def take_checkpoints(ledger: Path) -> dict[str, Any]:
    """The checkpoint file's content: the newest head of every tree of the ledger."""
    held: list[HeldCheckpoint] = []
    for _key, manifests in sorted(_manifests(ledger).items()):
        newest = manifests[-1].get("merkle")
        if not isinstance(newest, dict):
            continue  # written before trees existed and never appended to since
        history = tuple(history_of(manifests))[:-1]
        held.append(
            HeldCheckpoint(
                parse_note(str(newest["checkpoint"])), int(newest["last_offset"]), history
            )
        )
    con = open_reader(ledger)
    try:
        published = _published(con)
        for topic in _flag_topics(con):
            origin = flag_log_origin(topic)
            heads = published.get(origin)
            if heads:
                _, _, last, note = heads[-1]
                history = tuple((s, r, o) for s, r, o, _ in heads[:-1])
                held.append(HeldCheckpoint(parse_note(note), last, history))
            else:
                # No head published by the writer (a ledger filled by ingest of old data):
                # derived from the rows as they are now, and marked so.
                tree, last_offset = CompactTree(), -1
                for offset, wire in _flag_rows(con, topic):
                    tree.append(leaf_hash(wire.encode()))
                    last_offset = offset
                cp = Checkpoint(origin, tree.size, tree.root())
                held.append(HeldCheckpoint(cp, last_offset, (), derived=True))
    finally:
        con.close()
    return {"format": CHECKPOINTS_FORMAT, "checkpoints": [h.as_json() for h in held]}


def _flag_rows(con: Any, topic: str) -> list[tuple[int, str]]:
    rows = con.execute(
        "SELECT _offset, wire FROM flag_events WHERE _topic = ? ORDER BY _partition, _offset",
        [topic],
    ).fetchall()
    return [(int(o), str(w)) for o, w in rows]


# --- the audit ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing the audit found; ``ok`` False fails it."""

    origin: str
    ok: bool
    text: str


@dataclass
class IntegrityReport:
    findings: list[Finding] = field(default_factory=list)
    trees: int = 0
    rows: int = 0
    signature: str = ""
    columns_checked: bool = True

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def add(self, origin: str, ok: bool, text: str) -> None:
        self.findings.append(Finding(origin, ok, text))


class _Walk:
    """One tree rebuilt in offset order, with its root noted at chosen offset boundaries."""

    def __init__(self, size: int, want: Sequence[tuple[int, int]], boundaries: set[int]) -> None:
        self.tree = CompactTree(want)
        self.expected_size = size
        self.boundaries = sorted(boundaries)
        self._next = 0
        #: boundary offset -> (rows with offset <= it, root of those rows)
        self.at: dict[int, tuple[int, bytes]] = {}
        self.last_offset = -1

    def add(self, offset: int, leaf: bytes) -> None:
        self.add_many([offset], [leaf])

    def add_many(self, offsets: Sequence[int], leaves: Sequence[bytes]) -> None:
        """Append rows in offset order, noting the root at each boundary passed."""
        bounds = self.boundaries
        at = 0
        while at < len(offsets):
            if self._next < len(bounds):
                bound = bounds[self._next]
                end = bisect_right(offsets, bound, at)
            else:
                bound, end = None, len(offsets)
            self.tree.extend(leaves[at:end])
            at = end
            if bound is not None and at < len(offsets):
                self.at[bound] = (self.tree.size, self.tree.root())
                self._next += 1
        if offsets:
            self.last_offset = offsets[-1]

    def finish(self) -> None:
        for bound in self.boundaries[self._next :]:
            self.at[bound] = (self.tree.size, self.tree.root())
        self._next = len(self.boundaries)


def _counts(con: Any) -> dict[tuple[str, int], tuple[int, int]]:
    """(rows, last offset) per partition, as of this reader's snapshot."""
    rows = con.execute(
        "SELECT _topic, _partition, count(*), max(_offset) FROM events GROUP BY ALL"
    ).fetchall()
    return {(str(t), int(p)): (int(n), int(o)) for t, p, n, o in rows}


#: Rows from which the partition trees are built in parallel processes (one per core).
PARALLEL_ROWS = 500_000

WalkJob = tuple[str, str, int, int, tuple[tuple[int, int], ...], tuple[int, ...]]
WalkResult = tuple[
    int, tuple[bytes, ...], dict[tuple[int, int], bytes], dict[int, tuple[int, bytes]]
]


def _walk_partition(job: WalkJob) -> WalkResult:
    """One partition's tree, built from its rows up to ``last`` (the parent's snapshot)."""
    ledger, topic, partition, last, want, bounds = job
    con = open_reader(Path(ledger))
    try:
        offsets, leaves = _partition_scan(con, topic, partition, last)
    finally:
        con.close()
    walk = _Walk(len(offsets), want, set(bounds))
    walk.add_many(offsets, leaves)
    walk.finish()
    return walk.tree.size, walk.tree.frontier, walk.tree.caught, walk.at


def _run_walks(jobs: list[WalkJob]) -> list[WalkResult]:
    """Every partition's walk: in a process pool when the ledger is big and cores allow."""
    import os

    rows = sum(job[3] for job in jobs)  # an upper bound of the rows (last offsets)
    workers = min(len(jobs), os.cpu_count() or 1)
    if rows < PARALLEL_ROWS or workers < 2:
        return [_walk_partition(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # Spawned, not forked: a forked DuckDB or thread pool is not safe to use.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_walk_partition, jobs))


#: A stored record's leaf data in DuckDB SQL, byte for byte ``ledger.checkpoint.record_leaf_data``
#: behind RFC 6962's 0x00 leaf prefix: DuckDB builds the bytes, Python's hashlib hashes them
#: (DuckDB's own sha256 measured several times slower here).
LEAF_DATA_SQL = (
    r"'\x00'::BLOB || encode(_topic || chr(10) || _partition::VARCHAR || chr(10) "
    r"|| _offset::VARCHAR || chr(10) || wire)"
)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _partition_scan(
    con: Any, topic: str, partition: int, last: int | None = None
) -> tuple[list[int], list[bytes]]:
    """One partition's (offsets, leaf hashes) in offset order.

    Read unsorted (a sort would move every wire text) and put in order by a numpy argsort of
    the offsets: the wide rows are only hashed, never sorted.
    """
    sha = hashlib.sha256
    chunks: list[npt.NDArray[np.int64]] = []
    leaves: list[bytes] = []
    reader = con.sql(
        f"SELECT _offset, {LEAF_DATA_SQL} FROM events "
        f"WHERE _topic = {_sql_text(topic)} AND _partition = {int(partition)}"
        + ("" if last is None else f" AND _offset <= {int(last)}")
    ).to_arrow_reader(SCAN_BATCH)
    for batch in reader:
        chunks.append(np.asarray(batch.column(0).to_numpy(), dtype=np.int64))
        leaves.extend([sha(data).digest() for data in batch.column(1).to_pylist()])
    if not chunks:
        return [], []
    offsets = np.concatenate(chunks)
    order = np.argsort(offsets, kind="stable")
    return offsets[order].tolist(), [leaves[i] for i in order.tolist()]


def _column_spec(type_: str) -> Any:
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store.writer import _json_spec

    return _json_spec(type_)


def column_mismatches(con: Any, limit: int = 20) -> tuple[int, list[str]]:
    """Rows whose typed columns no longer say what their wire says (an in-place Parquet edit
    leaves the wire, and so the trees, as they were): (count, the first few named).

    Each non-JSON column present in the wire is parsed from it as the writer parsed it and
    compared; JSON-typed columns are left out (a producer's number formatting may differ
    from the stored canonical text).
    """
    total, named = 0, list[str]()
    for name, table in TABLES.items():
        columns = [c for c in table.event_columns if c.type != "JSON"]
        spec = json.dumps({c.name: _column_spec(c.type) for c in columns}).replace("'", "''")
        differs = [
            f"CASE WHEN json_exists(wire, '$.{c.name}') AND j.\"{c.name}\" IS DISTINCT FROM "
            f"t.\"{c.name}\" THEN '{c.name}' END"
            for c in columns
        ]
        query = (
            f"SELECT _topic, _partition, _offset, concat_ws(',', {', '.join(differs)}) AS bad "
            f"FROM (SELECT *, from_json(wire, '{spec}') AS j FROM \"{name}\") t "
            "WHERE bad <> ''"
        )
        rows = con.sql(f"SELECT count(*) OVER (), * FROM ({query}) ORDER BY 2, 3, 4 LIMIT {limit}")
        found = rows.fetchall()
        total += int(found[0][0]) if found else 0
        for _, topic, partition, offset, bad in found:
            if len(named) < limit:
                named.append(
                    f"table {name}, {topic} partition {partition} offset {offset}: "
                    f"column(s) {bad} differ from the row's wire"
                )
    return total, named


def audit_checkpoints(
    ledger: Path,
    held: Sequence[HeldCheckpoint],
    verifier: Verifier | None,
    *,
    columns: bool = False,
) -> IntegrityReport:
    """Check every held head against the trees rebuilt from today's rows (see the module);
    ``columns`` also compares typed columns with their wire (:func:`column_mismatches`)."""
    report = IntegrityReport(columns_checked=columns)
    manifests = _manifests(ledger)
    con = open_reader(ledger)
    try:
        return _audit(con, manifests, held, verifier, report, ledger)
    finally:
        con.close()


def _signature_verdict(held: Sequence[HeldCheckpoint], verifier: Verifier | None) -> str:
    unsigned = [h for h in held if not h.checkpoint.signed]
    if unsigned and len(unsigned) == len(held):
        return (
            "UNSIGNED: the held checkpoints carry no signature; they prove only as much as "
            "the place they were kept (set MIGRATION_LEDGER_SIGNING_KEY to sign them)"
        )
    if verifier is None:
        return "signatures NOT CHECKED: no public key given (--public-key)"
    return f"signatures checked with key {verifier.name}+{verifier.key_id:08x}"


def _audit(
    con: Any,
    manifests: dict[tuple[str, int], list[dict[str, Any]]],
    held: Sequence[HeldCheckpoint],
    verifier: Verifier | None,
    report: IntegrityReport,
    ledger: Path,
) -> IntegrityReport:
    report.signature = _signature_verdict(held, verifier)
    edited, examples = column_mismatches(con) if report.columns_checked else (0, [])
    for text in examples:
        report.add("columns", False, f"EDITED IN PLACE: {text}")
    if edited > len(examples):
        report.add("columns", False, f"EDITED IN PLACE: {edited - len(examples)} more rows")
    counts = _counts(con)
    published = _published(con)
    flag_topics = set(_flag_topics(con))
    held_by_origin = {h.checkpoint.origin: h for h in held}
    for h in held:
        if verifier is not None and h.checkpoint.signed and not verifier.verifies(h.checkpoint):
            report.add(h.checkpoint.origin, False, "held checkpoint: signature does not verify")
        elif verifier is not None and not h.checkpoint.signed and not h.derived:
            report.add(h.checkpoint.origin, False, "held checkpoint is unsigned")

    # Stored heads (manifests, published flag log heads) are checked too: (size, root, last).
    stored: dict[str, list[tuple[int, str, int, str | None]]] = {}
    for (topic, partition), items in manifests.items():
        origin = partition_origin(topic, partition)
        heads: list[tuple[int, str, int, str | None]] = [
            (s, r, o, None) for s, r, o in history_of(items)
        ]
        newest = items[-1].get("merkle")
        if isinstance(newest, dict) and heads:
            heads[-1] = (*heads[-1][:3], str(newest["checkpoint"]))
        stored[origin] = heads
    for origin, rows in published.items():
        stored[origin] = [(s, r, o, n) for s, r, o, n in rows]

    walks: dict[str, _Walk] = {}
    sizes: dict[str, int] = {partition_origin(t, p): n for (t, p), (n, _) in counts.items()}
    flag_sizes: dict[str, int] = {}
    for topic in flag_topics:
        origin = flag_log_origin(topic)
        flag_sizes[origin] = int(
            con.execute("SELECT count(*) FROM flag_events WHERE _topic = ?", [topic]).fetchall()[0][
                0
            ]
        )
    sizes.update(flag_sizes)
    for origin, size in sizes.items():
        mine = held_by_origin.get(origin)
        want: list[tuple[int, int]] = []
        if mine is not None and mine.checkpoint.size <= size:
            want = consistency_ranges(mine.checkpoint.size, size)
        bounds = {o for _, _, o, _ in stored.get(origin, [])}
        if mine is not None and mine.last_offset is not None:
            bounds.add(mine.last_offset)
            bounds.update(o for _, _, o in mine.history)
        walks[origin] = _Walk(size, want, bounds)

    flag_wires: dict[str, list[tuple[int, str]]] = {}
    for topic in flag_topics:
        origin = flag_log_origin(topic)
        flag_wires[origin] = _flag_rows(con, topic)
        for offset, wire in flag_wires[origin]:
            walks[origin].add(offset, leaf_hash(wire.encode()))
    for origin in flag_wires:
        walks[origin].finish()
    jobs = []
    for (topic, partition), (_, last) in sorted(counts.items()):
        walk = walks[partition_origin(topic, partition)]
        jobs.append((str(ledger), topic, partition, last, walk.tree.wanted, tuple(walk.boundaries)))
    for job, (size, frontier, caught, at) in zip(jobs, _run_walks(jobs), strict=True):
        origin = partition_origin(job[1], job[2])
        walk = walks[origin]
        if size != sizes[origin]:
            raise StoreError(f"{origin} changed while it was read; run the audit again")
        walk.tree = CompactTree.restore(size, frontier, caught)
        walk.at = at
        report.rows += size
    report.trees = len(walks)

    for origin, walk in sorted(walks.items()):
        _check_tree(con, report, origin, walk, held_by_origin.get(origin), stored.get(origin, []),
                    verifier, flag_wires.get(origin))  # fmt: skip
    for origin in held_by_origin:
        if origin not in walks:
            h = held_by_origin[origin]
            report.add(
                origin,
                h.checkpoint.size == 0,
                f"TRUNCATED: the held checkpoint covers {h.checkpoint.size} records of "
                f"{_tree_name(origin)}; the ledger holds none",
            )
    return report


def _tree_name(origin: str) -> str:
    try:
        kind, topic, partition = parse_origin(origin)
    except CheckpointError:
        return origin
    return f"the flag log ({topic})" if kind == "flag-log" else f"{topic} partition {partition}"


def _region(
    con: Any, origin: str, after: int, upto: int, flag_wires: list[tuple[int, str]] | None
) -> str:
    """What lies at offsets (after, upto]: tables and counts, or flag versions."""
    if flag_wires is not None:
        names = []
        for offset, wire in flag_wires:
            if after < offset <= upto:
                try:
                    event = decode_event(wire)
                except ValueError:
                    names.append(f"offset {offset} (undecodable)")
                    continue
                if isinstance(event, FlagChanged):
                    names.append(f"version {event.version} (offset {offset})")
                else:
                    names.append(f"{type(event).__name__} {event.event_id} (offset {offset})")
        return ", ".join(names[:10]) or "no flag event (deleted)"
    _, topic, partition = parse_origin(origin)
    rows = con.execute(
        "SELECT table_name, min(_offset), max(_offset), count(*) FROM events "
        "WHERE _topic = ? AND _partition = ? AND _offset > ? AND _offset <= ? "
        "GROUP BY table_name ORDER BY 2",
        [topic, partition, after, upto],
    ).fetchall()
    if not rows:
        return "no rows left there"
    return ", ".join(f"table {t} offsets {lo}..{hi} ({n} rows)" for t, lo, hi, n in rows)


def _locate(
    con: Any,
    origin: str,
    walk: _Walk,
    heads: Sequence[tuple[int, str, int]],
    flag_wires: list[tuple[int, str]] | None,
) -> str | None:
    """The first remembered head the rows no longer match, and what lies before it."""
    previous = -1
    for size, root_hex, last in sorted(heads, key=lambda h: h[2]):
        count, root = walk.at.get(last, (walk.tree.size, walk.tree.root()))
        if count != size or root.hex() != root_hex:
            if count < size:
                what = f"{size - count} row(s) DELETED"
            elif count > size:
                what = f"{count - size} row(s) INSERTED"
            else:
                what = "row(s) EDITED or REORDERED"
            return (
                f"{what} at offsets {previous + 1}..{last} of {_tree_name(origin)}: "
                f"{_region(con, origin, previous, last, flag_wires)}"
            )
        previous = last
    return None


def _check_tree(
    con: Any,
    report: IntegrityReport,
    origin: str,
    walk: _Walk,
    held: HeldCheckpoint | None,
    stored: Sequence[tuple[int, str, int, str | None]],
    verifier: Verifier | None,
    flag_wires: list[tuple[int, str]] | None,
) -> None:
    name = _tree_name(origin)
    size, root = walk.tree.size, walk.tree.root()
    held_consistent = False
    if held is not None:
        m = held.checkpoint.size
        heads = [*held.history]
        if held.last_offset is not None:
            heads.append((m, held.checkpoint.root_hex, held.last_offset))
        if m > size:
            where = _locate(con, origin, walk, heads, flag_wires)
            report.add(
                origin,
                False,
                f"TRUNCATED: {name} holds {size} records, the held checkpoint {m}"
                + (f"; {where}" if where else ""),
            )
        else:
            proof = walk.tree.hashes(consistency_ranges(m, size))
            held_consistent = verify_consistency(m, size, proof, held.checkpoint.root, root)
            if held_consistent:
                report.add(
                    origin,
                    True,
                    f"{name}: the held tree of {m} is a prefix of today's {size} "
                    f"(consistency proof of {len(proof)} hashes)",
                )
            else:
                where = _locate(con, origin, walk, heads, flag_wires)
                report.add(
                    origin,
                    False,
                    f"REWRITTEN: {name} is no longer an extension of the held checkpoint "
                    f"(size {m}): " + (where or "the first records differ"),
                )
    # Every row after the held head must be covered by a stored head that matches the rows
    # and is signed by the trusted key.
    stored_heads = [(s, r, o) for s, r, o, _ in stored]
    where = _locate(con, origin, walk, stored_heads, flag_wires)
    if where is not None:
        report.add(origin, False, f"stored checkpoint mismatch: {where}")
    held_covers, after = 0, -1
    if held is not None and held_consistent and held.last_offset is not None:
        held_covers, after = held.checkpoint.size, held.last_offset
    if size <= held_covers:
        return
    newest = max(stored, key=lambda h: h[0], default=None)
    if newest is None or newest[0] < size:
        if newest is not None and newest[0] > held_covers:
            after = newest[2]
        report.add(
            origin,
            False,
            f"UNCOVERED: {size - max(held_covers, 0 if newest is None else newest[0])} "
            f"record(s) of {name} after the last checkpoint (offsets after {after}: "
            f"{_region(con, origin, after, 2**62, flag_wires)}): a forged head or an addition "
            "outside the writer",
        )
        return
    note = newest[3]
    if verifier is not None and note is not None:
        checkpoint = parse_note(note)
        if not verifier.verifies(checkpoint):
            report.add(
                origin,
                False,
                f"UNTRUSTED: {size - held_covers} record(s) of {name} after the held checkpoint "
                f"(offsets after {after}: {_region(con, origin, after, 2**62, flag_wires)}) are "
                "covered only by a checkpoint "
                + ("without a signature" if not checkpoint.signed else "of another key"),
            )


# --- proofs -------------------------------------------------------------------------------


def _partition_leaves(con: Any, topic: str, partition: int) -> Iterator[tuple[int, str]]:
    literal = "'" + topic.replace("'", "''") + "'"
    reader = con.sql(
        f"SELECT _offset, wire FROM events WHERE _topic = {literal} "
        f"AND _partition = {int(partition)} ORDER BY _offset"
    ).to_arrow_reader(SCAN_BATCH)
    for batch in reader:
        yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)


def _prove(
    leaves: Iterator[tuple[int, bytes]], target: int, checkpoint: Checkpoint
) -> tuple[int, list[str]]:
    """(leaf index, proof hex) of the leaf at offset ``target`` in the checkpoint's tree."""
    rows = list(leaves)
    index = next((i for i, (offset, _) in enumerate(rows) if offset == target), None)
    if index is None or index >= checkpoint.size:
        raise StoreError(f"offset {target} is not in the tree of {checkpoint.size} records")
    ranges = inclusion_ranges(index, checkpoint.size)
    tree = CompactTree(ranges)
    for _, leaf in rows[: checkpoint.size]:
        tree.append(leaf)
    if tree.root() != checkpoint.root:
        raise StoreError(
            f"the stored rows of {checkpoint.origin} do not match its checkpoint of size "
            f"{checkpoint.size}: run `audit --checkpoint`"
        )
    return index, [h.hex() for h in tree.hashes(ranges)]


def decision_proof(
    ledger: Path, event_id: str, held: Sequence[HeldCheckpoint] | None = None
) -> dict[str, Any]:
    """The proof file of one decision: its inclusion, and its flag event's (``evidence``)."""
    by_origin = {h.checkpoint.origin: h.checkpoint for h in held or ()}
    mine = {h["note"] and parse_note(h["note"]).origin: parse_note(h["note"])
            for h in take_checkpoints(ledger)["checkpoints"]}  # fmt: skip
    con = open_reader(ledger)
    try:
        found = con.execute(
            "SELECT _topic, _partition, _offset, wire FROM decisions WHERE event_id = ?",
            [event_id],
        ).fetchall()
        if not found:
            raise StoreError(f"no decision {event_id!r} in the ledger")
        topic, partition, offset, wire = found[0]
        origin = partition_origin(str(topic), int(partition))
        checkpoint = by_origin.get(origin) or mine.get(origin)
        if checkpoint is None:
            raise StoreError(f"no checkpoint of {origin}")
        leaves = (
            (int(o), record_leaf(str(topic), int(partition), int(o), str(w)))
            for o, w in _partition_leaves(con, str(topic), int(partition))
        )
        index, path = _prove(leaves, int(offset), checkpoint)
        out: dict[str, Any] = {
            "format": PROOF_FORMAT,
            "decision": {
                "topic": str(topic),
                "partition": int(partition),
                "offset": int(offset),
                "wire": str(wire),
                "leaf_index": index,
                "proof": path,
                "checkpoint": format_note(checkpoint),
            },
        }
        decision = decode_event(str(wire))
        assert isinstance(decision, RolloutDecided)
        flag_row = con.execute(
            "SELECT _topic, _offset, wire FROM flag_events WHERE type = 'FlagChanged' "
            "AND flag = ? AND version = ? ORDER BY _offset LIMIT 1",
            [decision.flag, decision.flag_version],
        ).fetchall()
        if flag_row:
            ftopic, foffset, fwire = flag_row[0]
            forigin = flag_log_origin(str(ftopic))
            fcheckpoint = by_origin.get(forigin) or mine.get(forigin)
            if fcheckpoint is not None:
                fleaves = ((o, leaf_hash(w.encode())) for o, w in _flag_rows(con, str(ftopic)))
                findex, fpath = _prove(fleaves, int(foffset), fcheckpoint)
                out["flag_event"] = {
                    "topic": str(ftopic),
                    "offset": int(foffset),
                    "wire": str(fwire),
                    "leaf_index": findex,
                    "proof": fpath,
                    "checkpoint": format_note(fcheckpoint),
                }
        return out
    finally:
        con.close()
