"""Exceptions raised by the migration ledger.

    LedgerError
    ├── EventDecodeError(ValueError)      bytes or JSON that are not a valid event
    ├── RulesError(ValueError)            a comparison-rules file that cannot be used
    ├── CommandError(ValueError)          a flag command that is malformed before it is decided
    ├── ChainError(ValueError)            a flag log whose hash chain is broken
    ├── ConfigurationError(ValueError)    settings that cannot work together
    ├── SwitchoverError(ValueError)       a switchover instruction its current state refuses
    ├── BrokerError(RuntimeError)         the local Kafka broker cannot be started or reached
    ├── PublishError(RuntimeError)        an event could not be handed to Kafka
    └── StoreError(RuntimeError)          the DuckDB ledger cannot be read or written

Adapters convert library exceptions at the boundary (``raise PublishError(...) from exc``),
so callers only ever need to catch ``LedgerError`` or one of its children.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "ChainError",
    "CommandError",
    "ConfigurationError",
    "EventDecodeError",
    "LedgerError",
    "PublishError",
    "RulesError",
    "StoreError",
    "SwitchoverError",
]


class LedgerError(Exception):
    """Base of every error this project raises on purpose."""


class EventDecodeError(LedgerError, ValueError):
    """Input that is not a valid event; the message names the offending field."""


class RulesError(LedgerError, ValueError):
    """A comparison-rules file that cannot be used; the message names line and problem."""


class CommandError(LedgerError, ValueError):
    """A flag command that is malformed before it can even be decided."""


class ChainError(LedgerError, ValueError):
    """A flag log whose hash chain does not verify."""


class ConfigurationError(LedgerError, ValueError):
    """Settings that cannot work together."""


class SwitchoverError(LedgerError, ValueError):
    """A switchover instruction the controller's current state refuses (e.g. promote when idle)."""


class BrokerError(LedgerError, RuntimeError):
    """The local Kafka broker cannot be fetched, started, stopped or reached."""


class PublishError(LedgerError, RuntimeError):
    """An event could not be handed to Kafka."""


class StoreError(LedgerError, RuntimeError):
    """The DuckDB ledger cannot be read or written."""
