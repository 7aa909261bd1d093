"""Migration ledger: the pure domain of moving live traffic from pool V1 to pool V2.

Importing ``ledger`` loads no Kafka, Faust or DuckDB code; adapters live in their own modules
(``ledger.store``, ``ledger.local_kafka``, ``ledger.cli``) and are imported explicitly.
"""

from ledger.errors import (
    ChainError,
    CommandError,
    EventDecodeError,
    LedgerError,
    RulesError,
)
from ledger.events import (
    CommandRejected,
    ComparisonRecorded,
    DeadLettered,
    DecisionReason,
    FlagChanged,
    HealthAssessed,
    OperationRecorded,
    RolloutDecided,
    decode_event,
    encode_event,
)

__all__ = [
    "ChainError",
    "CommandError",
    "CommandRejected",
    "ComparisonRecorded",
    "DeadLettered",
    "DecisionReason",
    "EventDecodeError",
    "FlagChanged",
    "HealthAssessed",
    "LedgerError",
    "OperationRecorded",
    "RolloutDecided",
    "RulesError",
    "decode_event",
    "encode_event",
]
