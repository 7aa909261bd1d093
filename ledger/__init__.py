"""Migration ledger: the pure domain of moving live traffic from pool V1 to pool V2.

Importing ``ledger`` loads no Kafka, Faust or DuckDB code; adapters live in their own modules
(``ledger.store``, ``ledger.kafka.broker``, ``ledger.cli.app``) and are imported explicitly.
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
from ledger.flags import FlagCommand, FlagState, decide_command, decode_command, encode_command
from ledger.replay import ChainReport, Explanation, chain_report, verify_chain
from ledger.rollout import DecisionContext

__all__ = [
    "ChainError",
    "ChainReport",
    "CommandError",
    "CommandRejected",
    "ComparisonRecorded",
    "DeadLettered",
    "DecisionContext",
    "DecisionReason",
    "EventDecodeError",
    "Explanation",
    "FlagChanged",
    "FlagCommand",
    "FlagState",
    "HealthAssessed",
    "LedgerError",
    "OperationRecorded",
    "RolloutDecided",
    "RulesError",
    "chain_report",
    "decide_command",
    "decode_command",
    "decode_event",
    "encode_command",
    "encode_event",
    "verify_chain",
]
