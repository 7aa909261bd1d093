"""Commands of the tamper-evident ledger: ``checkpoint``, ``proof``, ``verify-proof``, ``keys``.

``audit --checkpoint`` lives with ``audit`` (``ledger.cli.reports``) and calls
:func:`checkpoint_audit` here. Exit codes: 1 when a proof or an audit fails, 2 for input that
cannot be read (a missing ledger, a bad checkpoint or key file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ledger.cli.options import DuckdbOption, build_settings, fail
from ledger.errors import LedgerError

__all__ = ["checkpoint", "checkpoint_audit", "keys_app", "proof", "verify_proof"]

keys_app = typer.Typer(
    help="Ed25519 keys that sign the ledger's checkpoints.", no_args_is_help=True
)

PublicKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--public-key",
        help="Public key that must have signed the checkpoints "
        "(default: derived from MIGRATION_LEDGER_SIGNING_KEY when set)",
    ),
]


def _verifier(public_key: Path | None) -> object | None:
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store.keys import load_signer, load_verifier

    if public_key is not None:
        return load_verifier(public_key)
    signer = load_signer(build_settings().signing_key)
    return None if signer is None else signer.verifier()


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def checkpoint(
    out: Annotated[Path, typer.Option("--out", help="The checkpoint file to write (JSON).")],
    duckdb: DuckdbOption = None,
) -> None:
    """Write the newest checkpoints (flag log and every ledger partition) to keep elsewhere."""
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.checkpoint import parse_note
    from ledger.store.integrity import take_checkpoints

    path = build_settings(duckdb=duckdb).duckdb
    try:
        data = take_checkpoints(path)
    except LedgerError as exc:
        raise fail(str(exc), code=2) from None
    _write(out, json.dumps(data, indent=2) + "\n")
    notes = [parse_note(c["note"]) for c in data["checkpoints"]]
    signed = sum(1 for n in notes if n.signed)
    typer.echo(f"wrote {len(notes)} checkpoints ({signed} signed) to {out}")
    if signed < len(notes):
        typer.echo(
            f"{len(notes) - signed} checkpoint(s) UNSIGNED: they prove only as much as the "
            "place this file is kept (set MIGRATION_LEDGER_SIGNING_KEY for the sink and worker)"
        )
    for note in notes:
        typer.echo(f"  {note.origin}: {note.size} records, root {note.root_hex[:16]}…")


def checkpoint_audit(
    ledger: Path, held_file: Path, public_key: Path | None, *, columns: bool = False
) -> tuple[str, bool]:
    """The ``audit --checkpoint`` verdict as text, and whether it passed."""
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store.integrity import audit_checkpoints, read_checkpoint_file

    held = read_checkpoint_file(held_file)
    verifier = _verifier(public_key)
    report = audit_checkpoints(ledger, held, verifier, columns=columns)  # type: ignore[arg-type]
    lines = [
        f"checkpoints: {len(held)} held tree heads, {report.trees} trees rebuilt "
        f"over {report.rows} stored rows",
        f"  {report.signature}",
    ]
    if not columns:
        lines.append(
            "  typed columns NOT compared with the wire (--columns does: in-place Parquet "
            "edits of a column alone are invisible to the trees)"
        )
    for finding in report.findings:
        mark = "ok  " if finding.ok else "FAIL"
        lines.append(f"  {mark} {finding.text}")
    lines.append(
        "CHECKPOINTS VERIFIED" if report.ok else "CHECKPOINT AUDIT FAILED: the ledger was altered"
    )
    return "\n".join(lines), report.ok


def proof(
    decision: Annotated[str, typer.Option("--decision", help="Event id of the decision.")],
    out: Annotated[Path, typer.Option("--out", help="The proof file to write (JSON).")],
    held: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Prove against these held checkpoints (else newest)."),
    ] = None,
    duckdb: DuckdbOption = None,
) -> None:
    """Write the inclusion proofs of a decision and of the flag event it used."""
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store.integrity import decision_proof, read_checkpoint_file

    path = build_settings(duckdb=duckdb).duckdb
    try:
        heads = None if held is None else read_checkpoint_file(held)
        data = decision_proof(path, decision, heads)
    except LedgerError as exc:
        raise fail(str(exc), code=2) from None
    _write(out, json.dumps(data, indent=2) + "\n")
    parts = [k for k in ("decision", "flag_event") if k in data]
    size = sum(32 * len(data[k]["proof"]) for k in parts)
    typer.echo(f"wrote the proof of {' and '.join(parts)} to {out} ({size} bytes of hashes)")


def verify_proof(
    file: Annotated[Path, typer.Argument(help="A proof file from `proof`.")],
    held: Annotated[Path, typer.Option("--checkpoint", help="The checkpoints you hold.")],
    public_key: Annotated[Path, typer.Option("--public-key", help="The signers' public key.")],
) -> None:
    """Check a proof offline: no ledger, no broker; exits 1 when anything fails."""
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.evidence import verify_proof as check
    from ledger.store.integrity import read_checkpoint_file
    from ledger.store.keys import load_verifier

    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        heads = [h.checkpoint for h in read_checkpoint_file(held)]
        verifier = load_verifier(public_key)
    except (LedgerError, OSError, ValueError) as exc:
        raise fail(f"{exc}", code=2) from None
    if not isinstance(data, dict):
        raise fail(f"{file} is not a proof file", code=2)
    problems, facts = check(data, heads, verifier)
    for fact in facts:
        typer.echo(f"ok   {fact}")
    for problem in problems:
        typer.echo(f"FAIL {problem}")
    if problems:
        typer.echo("PROOF REJECTED")
        raise typer.Exit(code=1)
    typer.echo("PROOF VERIFIED")


@keys_app.command("generate")
def generate(
    out: Annotated[Path, typer.Option("--out", help="Folder for the key pair.")],
) -> None:
    """Write a new Ed25519 key pair (private key mode 0600)."""
    # Deferred: DuckDB loads only when the ledger is read or written.
    from ledger.store.keys import write_key_pair

    try:
        private, public = write_key_pair(out)
    except LedgerError as exc:
        raise fail(str(exc), code=2) from None
    typer.echo(f"private key: {private} (set MIGRATION_LEDGER_SIGNING_KEY={private})")
    typer.echo(f"public key:  {public} (give it to auditors)")
