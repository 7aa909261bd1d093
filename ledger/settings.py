"""Configuration from ``MIGRATION_LEDGER_*`` environment variables and an environment profile.

Built once at the edge (CLI, worker, sink) and passed down as values; tests build it with
keyword arguments. Topic names are fixed; ``topic_prefix`` is put in front of each.

Precedence, highest first (pydantic-settings sources, ``settings_customise_sources``):

1. keyword arguments (the command line's flags),
2. ``MIGRATION_LEDGER_*`` environment variables,
3. the profile ``[env.NAME]`` of the profiles file, when an environment is chosen
   (``env=`` / ``--env`` / ``MIGRATION_LEDGER_ENV``; the file: ``profiles=`` /
   ``MIGRATION_LEDGER_PROFILES``, default ``environments.toml``),
4. the defaults below.

Secrets (``sasl_password``, ``serve_token``, ``signing_key``) come only from 1 and 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ledger.errors import ConfigurationError
from ledger.profiles import check_profile, load_profiles, settings_values

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
    "checkpoints": "ledger.checkpoints",
}


class ProfileSource(PydanticBaseSettingsSource):
    """The chosen environment's profile: below the environment variables, above the defaults.

    An environment named but absent from the file, or a profile with problems, is an error
    (a deployment must not start on half a configuration).
    """

    def __init__(self, settings_cls: type[BaseSettings], init: InitSettingsSource) -> None:
        super().__init__(settings_cls)
        self._init = init.init_kwargs

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ gives every value at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        env = self._init.get("env") or os.environ.get("MIGRATION_LEDGER_ENV")
        if not env:
            return {}
        path = Path(
            self._init.get("profiles")
            or os.environ.get("MIGRATION_LEDGER_PROFILES")
            or "environments.toml"
        )
        tables = load_profiles(path)
        if env not in tables:
            known = ", ".join(sorted(tables)) or "none"
            raise ConfigurationError(f"{path}: no profile [env.{env}] (profiles: {known})")
        checked = check_profile(env, tables[env])
        if checked.profile is None or not checked.ok:
            raise ConfigurationError(f"{path}: " + "; ".join(checked.problems))
        return settings_values(checked.profile)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIGRATION_LEDGER_", frozen=True)

    #: The deployment environment whose profile applies (None: no profile).
    env: str | None = None
    #: The profiles file (``[env.dev]``, ``[env.staging]``, ``[env.prod]``).
    profiles: Path = Path("environments.toml")

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
    #: Ed25519 key signing checkpoints: a file path or the key itself (PEM, or base64 of the
    #: 32-byte seed). None: checkpoints are unsigned. Never logged (a SecretStr).
    signing_key: SecretStr | None = None

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(init_settings, InitSettingsSource)
        profile = ProfileSource(settings_cls, init_settings)
        return init_settings, env_settings, profile, dotenv_settings, file_secret_settings

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
