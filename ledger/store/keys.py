"""Where the checkpoint signing key comes from: ``MIGRATION_LEDGER_SIGNING_KEY``.

The setting holds a file path or the key itself (PEM, or the base64 of a 32-byte Ed25519
seed). It is a ``SecretStr``: nothing here logs or prints it, and an error names the setting,
never its value.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from ledger.checkpoint import CheckpointError, Signer, Verifier, generate_key_pair

__all__ = ["PRIVATE_FILE", "PUBLIC_FILE", "load_signer", "load_verifier", "write_key_pair"]

PRIVATE_FILE = "ledger-signing.key"
PUBLIC_FILE = "ledger-signing.pub"


def load_signer(secret: SecretStr | None) -> Signer | None:
    """The signer of the setting, or None when it is unset (checkpoints stay unsigned)."""
    if secret is None or not secret.get_secret_value().strip():
        return None
    value = secret.get_secret_value().strip()
    text: str | bytes = value
    if "\n" not in value and len(value) < 4096:
        path = Path(value).expanduser()
        try:
            if path.is_file():
                text = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(
                f"MIGRATION_LEDGER_SIGNING_KEY names an unreadable file: {exc.strerror}"
            ) from None
    try:
        return Signer.from_text(text)
    except CheckpointError:
        raise CheckpointError(
            "MIGRATION_LEDGER_SIGNING_KEY is neither an Ed25519 private key nor a file holding one"
        ) from None


def load_verifier(path: Path) -> Verifier:
    """A public key file (PEM or base64), as written by ``keys generate``."""
    try:
        return Verifier.from_text(path.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"cannot read the public key {path}: {exc.strerror}") from None


def write_key_pair(folder: Path) -> tuple[Path, Path]:
    """A new Ed25519 pair in ``folder``: the private key readable by its owner only."""
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / PRIVATE_FILE, folder / PUBLIC_FILE
    if private.exists():
        raise CheckpointError(f"{private} exists; refusing to overwrite a signing key")
    signer = generate_key_pair()
    fd_path = private.with_name(private.name + ".tmp")
    fd_path.touch(mode=0o600)
    fd_path.chmod(0o600)
    fd_path.write_bytes(signer.private_pem())
    fd_path.rename(private)
    public.write_bytes(signer.verifier().public_pem())
    return private, public
