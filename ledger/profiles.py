"""Environment profiles: one TOML file, one ``[env.NAME]`` table per deployment environment.

```toml
[env.prod]
bootstrap_servers = "kafka-1.internal:9093"
topic_prefix = "prod."
partitions = 12
retention_days = 30                 # live ledger kept this long before `archive`
plan = "default"                    # a named plan, or a table with stages (below)

[env.prod.topic_retention_ms]       # per logical topic; the flag log must stay -1 (forever)
operations = 604800000

[env.prod.flag_defaults]
v2_pool_enabled = false
rollout_pct = 0
shadow_mode_enabled = true
shadow_sample_pct = 10

[env.prod.health]                   # keys of ledger.policy.HealthPolicy
error_rate_ratio = 3.0
```

:func:`check_profile` collects every problem (unknown keys, impossible thresholds, plan
stages, topics, secrets) instead of stopping at the first, so one ``check --env prod`` lists
them all. Secrets (passwords, tokens, keys) are refused here: they come only from the
environment. :func:`settings_values` is what ``ledger.settings`` takes from a profile.

Reads the one file a user names (``load_profiles``) and hands the text to a pure parser.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from ledger.errors import ConfigurationError
from ledger.frozen import Frozen
from ledger.policy import HealthPolicy
from ledger.switchover import PLANS, SwitchoverPlan

__all__ = [
    "FLAG_LOG_TOPICS",
    "SECRET_KEYS",
    "SETTINGS_KEYS",
    "FlagDefaults",
    "Profile",
    "ProfileCheck",
    "check_profile",
    "diff_profiles",
    "load_profiles",
    "parse_profiles",
    "settings_values",
]

#: Keys that are secrets: only ever from MIGRATION_LEDGER_* environment variables.
SECRET_KEYS = ("sasl_password", "serve_token", "signing_key")
#: Profile keys that are also ``Settings`` fields (a profile supplies their defaults).
SETTINGS_KEYS = (
    "bootstrap_servers",
    "topic_prefix",
    "partitions",
    "flag",
    "pairing_timeout",
    "health_window",
    "health_grace",
)
#: The flag log's topics: retention must keep them forever (the log is the flag's truth).
FLAG_LOG_TOPICS = ("flag_events",)
_TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]*")
_KAFKA_TOPIC_MAX = 249


class FlagDefaults(Frozen):
    """The flag's state an environment starts from (before any command)."""

    v2_pool_enabled: bool = False
    rollout_pct: float = Field(default=0.0, ge=0, le=100)
    shadow_mode_enabled: bool = True
    shadow_sample_pct: float = Field(default=100.0, ge=0, le=100)


class Profile(Frozen):
    """One environment's configuration (unknown keys are refused)."""

    bootstrap_servers: str | None = None
    topic_prefix: str = ""
    partitions: int = Field(default=4, ge=1)
    flag: str = Field(default="v2_migration", min_length=1)
    pairing_timeout: float | None = Field(default=None, gt=0)
    health_window: float | None = Field(default=None, gt=0)
    health_grace: float | None = Field(default=None, ge=0)
    retention_days: float | None = Field(default=None, gt=0)
    topic_retention_ms: dict[str, int] = Field(default_factory=dict)
    flag_defaults: FlagDefaults = FlagDefaults()
    #: A named plan (``default``, ``demo``) or a table: name, gates, ``[[stages]]``.
    plan: str | dict[str, Any] = "default"
    #: Keys of ``ledger.policy.HealthPolicy`` (``cooldown`` in seconds).
    health: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class ProfileCheck:
    """What ``check --env`` prints: the problems (none: valid) and the parsed profile."""

    name: str
    problems: tuple[str, ...]
    profile: Profile | None

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_profiles(text: str, source: str) -> dict[str, dict[str, Any]]:
    """The ``[env.*]`` tables of a profiles file, unvalidated (``check_profile`` validates)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: invalid TOML: {exc}") from exc
    unknown = sorted(set(document) - {"env"})
    if unknown:
        raise ConfigurationError(
            f"{source}: unknown top-level keys {', '.join(unknown)} (profiles go in [env.NAME])"
        )
    envs = document.get("env", {})
    if not isinstance(envs, dict) or not all(isinstance(v, dict) for v in envs.values()):
        raise ConfigurationError(f"{source}: [env] must hold one table per environment")
    return {name: dict(table) for name, table in envs.items()}


def load_profiles(path: Path) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read the profiles file: {exc}") from exc
    return parse_profiles(text, str(path))


def _plan(value: str | Mapping[str, Any], name: str) -> SwitchoverPlan:
    """The plan a profile names (``ValueError`` / ``ConfigurationError`` when it is wrong)."""
    if isinstance(value, str):
        if value not in PLANS:
            raise ConfigurationError(f"unknown plan {value!r}; known: {', '.join(PLANS)}")
        return PLANS[value]
    data = dict(value)
    stages = []
    for i, stage in enumerate(data.pop("stages", [])):
        stage = dict(stage)
        if "percentage" in stage:
            stage["percentage_bp"] = round(float(stage.pop("percentage")) * 100)
        if not isinstance(stage.get("percentage_bp"), int):
            raise ConfigurationError(f"stages[{i}]: percentage required")
        stages.append(stage)
    return SwitchoverPlan.model_validate({"name": f"{name}-plan", **data, "stages": stages})


def _errors(prefix: str, exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        out.append(f"{prefix}.{where}: {message}" if where else f"{prefix}: {message}")
    return out


def check_profile(name: str, table: Mapping[str, Any]) -> ProfileCheck:
    """Every problem of profile ``name`` (``table`` is its ``[env.NAME]`` table)."""
    prefix = f"env.{name}"
    problems: list[str] = []
    secrets = sorted(set(table) & set(SECRET_KEYS))
    problems += [
        f"{prefix}.{key}: secrets come only from the environment "
        f"(MIGRATION_LEDGER_{key.upper()}), never from a profile"
        for key in secrets
    ]
    try:
        profile: Profile | None = Profile.model_validate(
            {k: v for k, v in table.items() if k not in SECRET_KEYS}
        )
    except ValidationError as exc:
        return ProfileCheck(name, (*problems, *_errors(prefix, exc)), None)
    assert profile is not None
    # Topics: Kafka's legal characters and length, the logical names, the flag log's retention.
    if _TOPIC_CHARS.fullmatch(profile.topic_prefix) is None:
        problems.append(
            f"{prefix}.topic_prefix: {profile.topic_prefix!r} has characters Kafka refuses "
            "(letters, digits, '.', '_', '-' only)"
        )
    # Deferred: ledger.settings imports this module (its profile source reads profiles).
    from ledger.settings import TOPICS

    longest = max(len(topic) for topic in TOPICS.values())
    if len(profile.topic_prefix) + longest > _KAFKA_TOPIC_MAX:
        problems.append(f"{prefix}.topic_prefix: topic names would exceed {_KAFKA_TOPIC_MAX}")
    for topic, retention in sorted(profile.topic_retention_ms.items()):
        if topic not in TOPICS:
            problems.append(
                f"{prefix}.topic_retention_ms.{topic}: unknown topic (known: {', '.join(TOPICS)})"
            )
        elif topic in FLAG_LOG_TOPICS and retention != -1:
            problems.append(
                f"{prefix}.topic_retention_ms.{topic}: the flag log is kept forever (-1), "
                f"not {retention} ms"
            )
        elif retention == 0 or retention < -1:
            problems.append(f"{prefix}.topic_retention_ms.{topic}: {retention} is not a retention")
    # The flag's starting state.
    defaults = profile.flag_defaults
    if defaults.rollout_pct > 0 and not defaults.v2_pool_enabled:
        problems.append(
            f"{prefix}.flag_defaults: rollout_pct {defaults.rollout_pct:g} with "
            "v2_pool_enabled false sends nothing to V2"
        )
    # Health thresholds: each in its range (HealthPolicy), and ordered so that they can fire.
    try:
        health = HealthPolicy.model_validate(profile.health)
    except ValidationError as exc:
        problems += _errors(f"{prefix}.health", exc)
    else:
        if health.warn_error_rate >= health.error_rate_without_baseline:
            problems.append(
                f"{prefix}.health.warn_error_rate: {health.warn_error_rate:g} is not below "
                f"error_rate_without_baseline {health.error_rate_without_baseline:g}: "
                "the warning could never come before the rollback"
            )
    # The switchover plan: rising stages, ending at 100 %.
    try:
        plan = _plan(profile.plan, name)
    except ValidationError as exc:
        problems += _errors(f"{prefix}.plan", exc)
    except ConfigurationError as exc:
        problems.append(f"{prefix}.plan: {exc}")
    else:
        last = plan.stages[-1].percentage_bp
        if last != 10_000:
            problems.append(
                f"{prefix}.plan: the last stage is {last / 100:g} %: the ramp never reaches 100 %"
            )
    return ProfileCheck(name, tuple(problems), profile)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(_flat(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def diff_profiles(a: Profile, b: Profile) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every effective setting that differs."""
    left, right = _flat(a.model_dump(mode="json")), _flat(b.model_dump(mode="json"))
    return [
        (key, left.get(key), right.get(key))
        for key in sorted(set(left) | set(right))
        if left.get(key) != right.get(key)
    ]


def settings_values(profile: Profile) -> dict[str, Any]:
    """The ``Settings`` fields this profile sets (None: not set, the default stays)."""
    dumped = profile.model_dump()
    return {key: dumped[key] for key in SETTINGS_KEYS if dumped.get(key) is not None}
