"""The one base of the core's immutable value models (not events: ``ledger.events`` has its own,
strict, base for what goes on the wire)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Frozen"]


class Frozen(BaseModel):
    """Immutable, and refuses unknown fields: a typo in a policy file or a slot is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")
