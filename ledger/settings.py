"""Configuration from ``MIGRATION_LEDGER_*`` environment variables.

Built once at the edge (CLI, worker, sink) and passed down as values; tests build it with
keyword arguments. Topic names are fixed; ``topic_prefix`` is put in front of each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["TOPICS", "SaslMechanism", "SecurityProtocol", "Settings"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

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

    #: How every Kafka client connects (``ledger.kafka.clients`` turns these into each
    #: library's options). The password is a SecretStr: it never shows in a repr or a log.
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: The CA that signed the brokers' certificates (SSL, SASL_SSL); None = the system's.
    ssl_cafile: Path | None = None
    #: A client certificate and its key, for mutual TLS.
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @model_validator(mode="after")
    def _security_is_complete(self) -> Self:
        """Refuse half a configuration now, rather than a hang at the first connection."""
        sasl = self.security_protocol.startswith("SASL_")
        given = {
            "MIGRATION_LEDGER_SASL_MECHANISM": self.sasl_mechanism,
            "MIGRATION_LEDGER_SASL_USERNAME": self.sasl_username,
            "MIGRATION_LEDGER_SASL_PASSWORD": self.sasl_password,
        }
        if sasl:
            missing = [name for name, value in given.items() if not value]
            if missing:
                raise ValueError(
                    f"security_protocol {self.security_protocol} needs {', '.join(missing)}"
                )
        elif any(given.values()):
            raise ValueError(
                "SASL settings are given but security_protocol is "
                f"{self.security_protocol}; use SASL_SSL or SASL_PLAINTEXT"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                "mutual TLS needs both MIGRATION_LEDGER_SSL_CERTFILE and "
                "MIGRATION_LEDGER_SSL_KEYFILE"
            )
        tls = self.security_protocol in ("SSL", "SASL_SSL")
        if not tls and (self.ssl_cafile or self.ssl_certfile):
            raise ValueError(
                f"TLS files are given but security_protocol is {self.security_protocol}; "
                "use SSL or SASL_SSL"
            )
        return self

    def topic(self, logical: str) -> str:
        """The Kafka topic for a logical name such as ``"operations"``."""
        return f"{self.topic_prefix}{TOPICS[logical]}"
