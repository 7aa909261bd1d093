"""Configuration from ``MIGRATION_LEDGER_*`` environment variables.

Built once at the edge (CLI, worker, sink) and passed down as values; tests build it with
keyword arguments. Topic names are fixed; ``topic_prefix`` is put in front of each.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["TOPICS", "Settings"]

#: Logical topic name -> fixed Kafka topic name (before the prefix).
TOPICS: dict[str, str] = {
    "operations": "pool.operations",
    "comparisons": "ledger.comparisons",
    "flag_commands": "ledger.flag-commands",
    "flag_events": "ledger.flag-events",
    "decisions": "ledger.decisions",
    "health": "ledger.health",
    "dead_letters": "ledger.dead-letters",
}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIGRATION_LEDGER_", frozen=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    duckdb: Path = Path("ledger.duckdb")
    flag: str = Field(default="v2_migration", min_length=1)
    pairing_timeout: float = Field(default=30.0, gt=0)
    partitions: int = Field(default=4, ge=1)
    cache_dir: Path = Path.home() / ".cache" / "migration-ledger"
    #: Health windows: length and how long after its end a window waits for late executions.
    health_window: float = Field(default=60.0, gt=0)
    health_grace: float = Field(default=5.0, ge=0)
    #: A TOML health policy (``ledger.policy.load_policy``); None = the defaults.
    health_policy: Path | None = None
    #: Bearer token of ``migration-ledger serve``; required when it binds beyond loopback.
    serve_token: SecretStr | None = None

    def topic(self, logical: str) -> str:
        """The Kafka topic for a logical name such as ``"operations"``."""
        return f"{self.topic_prefix}{TOPICS[logical]}"
