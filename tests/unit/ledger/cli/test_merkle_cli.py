"""``checkpoint``, ``audit --checkpoint``, ``proof``, ``verify-proof`` and ``keys`` through the
real command line, on ledgers written by the real writer (``merkle_factories``).

Each tampering of issue 13 is done as a user would: export -> edit the files -> ingest into a
new ledger, or a Parquet file rewritten in place; each must fail the checkpoint audit naming
where, while an honest ledger and an honest export -> ingest pass.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from ledger import flags
from ledger.cli.app import app
from ledger.events import FlagChanged, decode_event, encode_event
from tests.unit.merkle_factories import FLAG_TOPIC, KEY, Built, build

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout + result.stderr


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Built, Path, Path]:
    """(ledger, what was written, held checkpoint file, public key file)."""
    root = tmp_path_factory.mktemp("merkle")
    ledger = root / "ledger"
    built = build(ledger)
    held = root / "held.json"
    code, out = run("checkpoint", "--out", str(held), "--duckdb", str(ledger))
    assert code == 0, out
    public = root / "public.pem"
    public.write_bytes(KEY.verifier().public_pem())
    return ledger, built, held, public


def audit(ledger: Path, held: Path, public: Path | None) -> tuple[int, str]:
    args = ["audit", "--duckdb", str(ledger), "--checkpoint", str(held)]
    if public is not None:
        args += ["--public-key", str(public)]
    return run(*args)


Lines = list[tuple[list[Any], str]]


def tampered(
    original: tuple[Path, Built, Path, Path],
    tmp_path: Path,
    edit: Callable[[dict[str, Lines]], None],
) -> Path:
    """Export the ledger as NDJSON, let ``edit`` change the files, ingest into a new ledger."""
    ledger = original[0]
    out = tmp_path / "export"
    code, text = run("export", "--out", str(out), "--duckdb", str(ledger))
    assert code == 0, text
    files: dict[str, Lines] = {}
    for path in sorted(out.glob("*.ndjson")):
        wires = path.read_text().splitlines()
        positions = [json.loads(p) for p in path.with_suffix(".positions").read_text().splitlines()]
        files[path.stem] = list(zip(positions, wires, strict=True))
    edit(files)
    for name, lines in files.items():
        (out / f"{name}.ndjson").write_text("".join(w + "\n" for _, w in lines))
        (out / f"{name}.positions").write_text("".join(json.dumps(p) + "\n" for p, _ in lines))
    again = tmp_path / "again"
    code, text = run("ingest", str(out), "--duckdb", str(again))
    assert code == 0, text
    return again


def flag_lines(files: dict[str, Lines]) -> Lines:
    """The flag log's lines (both types) in offset order, moved out of ``files``."""
    lines = files.pop("FlagChanged") + files.pop("CommandRejected")
    return sorted(lines, key=lambda line: line[0][2])


def put_flag_lines(files: dict[str, Lines], lines: Lines) -> None:
    files["FlagChanged"] = [x for x in lines if '"FlagChanged"' in x[1]]
    files["CommandRejected"] = [x for x in lines if '"CommandRejected"' in x[1]]


# --- honest ledgers pass ---------------------------------------------------------------------


def test_an_honest_ledger_passes_with_signatures_checked(
    original: tuple[Path, Built, Path, Path],
) -> None:
    ledger, _, held, public = original
    code, out = audit(ledger, held, public)
    assert code == 0, out
    assert "AUDIT CLEAN" in out or "clean" in out.lower()
    assert "CHECKPOINTS VERIFIED" in out
    assert "signatures checked with key migration-ledger+" in out
    assert "the held tree of 7 is a prefix of today's 7" in out


def test_an_honest_export_and_ingest_verifies_against_the_same_checkpoints(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    again = tampered(original, tmp_path, lambda files: None)
    code, out = audit(again, original[2], original[3])
    assert code == 0, out
    assert "CHECKPOINTS VERIFIED" in out


def test_the_checkpoint_file_holds_a_signed_head_per_tree(
    original: tuple[Path, Built, Path, Path],
) -> None:
    data = json.loads(original[2].read_text())
    origins = {json_note.split("\n")[0] for json_note in (c["note"] for c in data["checkpoints"])}
    assert f"migration-ledger/flag-log/{FLAG_TOPIC}" in origins
    assert "migration-ledger/ledger/ledger.decisions/1" in origins
    assert all("\n\n\u2014 migration-ledger " in c["note"] for c in data["checkpoints"])


def test_an_unsigned_ledger_passes_but_says_it_proves_little(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    build(ledger, signer=None, n_decisions=20)
    held = tmp_path / "held.json"
    code, out = run("checkpoint", "--out", str(held), "--duckdb", str(ledger))
    assert code == 0
    assert "UNSIGNED" in out
    code, out = audit(ledger, held, None)
    assert code == 0, out
    assert "UNSIGNED: the held checkpoints carry no signature" in out


# --- the flag log ----------------------------------------------------------------------------


def test_dropping_the_newest_two_versions_and_their_decisions_is_a_truncation(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    def edit(files: dict[str, Lines]) -> None:
        lines = [x for x in flag_lines(files) if x[0][2] < 5]  # versions 5 and 6 go
        put_flag_lines(files, lines)
        files["CheckpointPublished"] = [x for x in files["CheckpointPublished"] if x[0][2] < 5]
        files["RolloutDecided"] = [
            x
            for x in files["RolloutDecided"]
            if decode_event(x[1]).flag_version < 5  # type: ignore[attr-defined]
        ]

    code, out = audit(tampered(original, tmp_path, edit), original[2], original[3])
    assert code == 1, out
    assert f"TRUNCATED: the flag log ({FLAG_TOPIC}) holds 5 records, the held checkpoint 7" in out
    assert "row(s) DELETED at offsets 5..5" in out
    assert "TRUNCATED: ledger.decisions partition" in out


def _rehash(lines: Lines, version: int, **changes: Any) -> Lines:
    """Change one FlagChanged and re-hash every later one: the chain stays valid."""
    out: Lines = []
    prev: str | None = None
    for position, wire in lines:
        event = decode_event(wire)
        if isinstance(event, FlagChanged):
            fields: dict[str, Any] = {}
            if event.version == version:
                fields.update(changes)
            if prev is not None:
                fields["prev_hash"] = prev
            if fields:
                event = event.model_copy(update=fields)
                event = event.model_copy(update={"hash": flags.flag_event_hash(event)})
            prev = event.hash if event.version >= version else None
            wire = encode_event(event).decode()
        out.append((position, wire))
    return out


def test_a_rewritten_version_with_every_later_hash_redone_is_named(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    def edit(files: dict[str, Lines]) -> None:
        lines = _rehash(flag_lines(files), 5, actor="mallory", reason="nothing to see")
        put_flag_lines(files, lines)

    ledger = tampered(original, tmp_path, edit)
    code, out = audit(ledger, original[2], original[3])
    assert code == 1, out
    assert "hash chain" in out.lower()  # the old chain check still runs (and passes here)
    assert "REWRITTEN: the flag log" in out
    assert "version 5 (offset 5)" in out
    # Decisions made under versions 5 and 6 name the hashes those versions had.
    assert "flag_event_hash (not the hash of that version's flag event)" in out


def test_a_forged_head_with_a_valid_prev_hash_is_uncovered(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    def edit(files: dict[str, Lines]) -> None:
        lines = flag_lines(files)
        last = decode_event(lines[-1][1])
        assert isinstance(last, FlagChanged)
        forged = last.model_copy(
            update={
                "version": last.version + 1,
                "event_id": "forged",
                "command_id": "cmd-forged",
                "v2_rollout_bp": 10_000,
                "prev_hash": last.hash,
            }
        )
        forged = forged.model_copy(update={"hash": flags.flag_event_hash(forged)})
        position = [FLAG_TOPIC, 0, lines[-1][0][2] + 1, "v2_migration", None]
        put_flag_lines(files, [*lines, (position, encode_event(forged).decode())])

    code, out = audit(tampered(original, tmp_path, edit), original[2], original[3])
    assert code == 1, out
    assert "version 7 (offset 7)" in out
    assert "UNCOVERED" in out or "UNTRUSTED" in out


@pytest.mark.parametrize("change", ["edit", "delete"])
def test_a_command_rejected_edited_or_deleted_is_found(
    original: tuple[Path, Built, Path, Path], tmp_path: Path, change: str
) -> None:
    def edit(files: dict[str, Lines]) -> None:
        rejected = files["CommandRejected"]
        assert len(rejected) == 1
        if change == "delete":
            files["CommandRejected"] = []
        else:
            position, wire = rejected[0]
            files["CommandRejected"] = [(position, wire.replace('"again"', '"other"'))]

    code, out = audit(tampered(original, tmp_path, edit), original[2], original[3])
    assert code == 1, out
    if change == "delete":
        assert "1 row(s) DELETED at offsets 3..3 of the flag log" in out
    else:
        assert "EDITED or REORDERED at offsets 3..3 of the flag log" in out
        assert "CommandRejected fe-3 (offset 3)" in out


# --- every table -----------------------------------------------------------------------------


def test_a_decision_row_deleted_in_place_is_found(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    ledger = Path(shutil.copytree(original[0], tmp_path / "ledger"))
    victim = original[1].decisions[37]
    con = duckdb.connect()
    files = sorted(ledger.glob("segments/ledger.decisions+1+*/decisions.parquet"))
    for path in files:
        changed = path.with_name("x.parquet")
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{path}') WHERE event_id <> '{victim.event_id}') "
            f"TO '{changed}' (FORMAT parquet)"
        )
        changed.replace(path)
    con.close()
    code, out = audit(ledger, original[2], original[3])
    assert code == 1, out
    assert "ledger.decisions partition 1" in out
    assert "DELETED" in out
    assert "table decisions offsets" in out


def test_an_edited_comparison_category_is_found(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    def edit(files: dict[str, Lines]) -> None:
        lines = files["ComparisonRecorded"]
        position, wire = lines[7]
        assert '"category":"match"' in wire
        lines[7] = (position, wire.replace('"category":"match"', '"category":"value_mismatch"'))

    code, out = audit(tampered(original, tmp_path, edit), original[2], original[3])
    assert code == 1, out
    assert "REWRITTEN: ledger.comparisons partition 0" in out
    assert "EDITED or REORDERED at offsets 6..11" in out
    assert "table comparisons offsets 6..11" in out


def test_a_comparison_category_edited_in_place_in_parquet_is_found(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    """The typed column changed, the wire (and so the trees) left as they were."""
    ledger = Path(shutil.copytree(original[0], tmp_path / "ledger"))
    con = duckdb.connect()
    for path in sorted(ledger.glob("segments/ledger.comparisons+*/comparisons.parquet")):
        changed = path.with_name("x.parquet")
        con.execute(
            f"COPY (SELECT * REPLACE (CASE WHEN event_id = 'cmp-3' THEN 'match' ELSE category "
            f"END AS category) FROM read_parquet('{path}')) TO '{changed}' (FORMAT parquet)"
        )
        changed.replace(path)
    con.close()
    code, out = run(
        "audit", "--duckdb", str(ledger), "--checkpoint", str(original[2]),
        "--public-key", str(original[3]), "--columns",
    )  # fmt: skip
    assert code == 1, out
    assert (
        "EDITED IN PLACE: table comparisons, ledger.comparisons partition 0 offset 3: "
        "column(s) category differ from the row's wire"
    ) in out
    # The trees alone do not see it: the wire, their leaf, is as it was.
    code, out = audit(ledger, original[2], original[3])
    assert code == 0, out
    assert "typed columns NOT compared" in out


def test_an_added_operation_row_is_found(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    def edit(files: dict[str, Lines]) -> None:
        lines = files["OperationRecorded"]
        position, wire = lines[-1]
        added = wire.replace('"op-7-v1"', '"op-99-v1"').replace('"c-7"', '"c-99"')
        lines.append(([position[0], 0, position[2] + 1, "c-99", None], added))

    code, out = audit(tampered(original, tmp_path, edit), original[2], original[3])
    assert code == 1, out
    assert "UNTRUSTED: 1 record(s) of pool.operations partition 0" in out
    assert "table operations offsets 8..8" in out


def test_a_partition_missing_entirely_is_a_truncation(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    def edit(files: dict[str, Lines]) -> None:
        files["OperationRecorded"] = []

    code, out = audit(tampered(original, tmp_path, edit), original[2], original[3])
    assert code == 1, out
    assert "TRUNCATED: the held checkpoint covers 8 records of pool.operations partition 0" in out


def test_a_held_checkpoint_with_a_forged_signature_fails(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    data = json.loads(original[2].read_text())
    note = data["checkpoints"][0]["note"]
    body, _, sigs = note.partition("\n\n")
    lines = body.split("\n")
    lines[1] = str(int(lines[1]) + 1)
    data["checkpoints"][0]["note"] = "\n".join(lines) + "\n\n" + sigs
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    code, out = audit(original[0], forged, original[3])
    assert code == 1, out
    assert "held checkpoint: signature does not verify" in out


# --- proofs ----------------------------------------------------------------------------------


def test_a_decision_proof_verifies_offline_and_fails_when_one_byte_changes(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    ledger, built, held, public = original
    decision = built.decisions[41]
    proof = tmp_path / "proof.json"
    code, out = run(
        "proof", "--decision", decision.event_id, "--out", str(proof),
        "--checkpoint", str(held), "--duckdb", str(ledger),
    )  # fmt: skip
    assert code == 0, out
    data = json.loads(proof.read_text())
    assert set(data) >= {"decision", "flag_event"}
    assert len(data["decision"]["proof"]) <= 6  # ⌈log2 60⌉ hashes for 60 leaves
    shutil.rmtree(tmp_path / "nothing", ignore_errors=True)
    code, out = run(
        "verify-proof", str(proof), "--checkpoint", str(held), "--public-key", str(public)
    )
    assert code == 0, out
    assert "PROOF VERIFIED" in out
    assert "the held checkpoint of migration-ledger/ledger/ledger.decisions/1" in out

    flipped = dict(data)
    first = data["decision"]["proof"][0]
    changed = ("0" if first[0] != "0" else "1") + first[1:]
    flipped["decision"] = {**data["decision"], "proof": [changed, *data["decision"]["proof"][1:]]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(flipped))
    code, out = run(
        "verify-proof", str(bad), "--checkpoint", str(held), "--public-key", str(public)
    )
    assert code == 1
    assert "PROOF REJECTED" in out

    wire = data["flag_event"]["wire"]
    flipped = {**data, "flag_event": {**data["flag_event"], "wire": wire.replace("alice", "alicf")}}
    bad.write_text(json.dumps(flipped))
    code, out = run(
        "verify-proof", str(bad), "--checkpoint", str(held), "--public-key", str(public)
    )
    assert code == 1
    assert "flag_event" in out


def test_a_proof_fails_with_another_public_key(
    original: tuple[Path, Built, Path, Path], tmp_path: Path
) -> None:
    ledger, built, held, _ = original
    proof = tmp_path / "proof.json"
    code, _ = run(
        "proof", "--decision", built.decisions[3].event_id, "--out", str(proof),
        "--duckdb", str(ledger),
    )  # fmt: skip
    assert code == 0
    code, out = run("keys", "generate", "--out", str(tmp_path / "keys"))
    assert code == 0, out
    other = tmp_path / "keys" / "ledger-signing.pub"
    code, out = run(
        "verify-proof", str(proof), "--checkpoint", str(held), "--public-key", str(other)
    )
    assert code == 1
    assert "not signed by the given public key" in out


def test_generated_keys_sign_through_the_setting(tmp_path: Path) -> None:
    code, out = run("keys", "generate", "--out", str(tmp_path / "keys"))
    assert code == 0, out
    private = tmp_path / "keys" / "ledger-signing.key"
    assert private.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in out
    from pydantic import SecretStr

    from ledger.store.keys import load_signer, load_verifier

    signer = load_signer(SecretStr(str(private)))
    assert signer is not None
    verifier = load_verifier(tmp_path / "keys" / "ledger-signing.pub")
    from ledger.checkpoint import Checkpoint

    assert verifier.verifies(signer.sign(Checkpoint("o", 1, bytes(32))))
    code, out = run("keys", "generate", "--out", str(tmp_path / "keys"))
    assert code == 2
    assert "refusing to overwrite" in out
