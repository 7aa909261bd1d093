"""Environment profiles: validation lists every problem; settings take a profile below env vars."""

from __future__ import annotations

from pathlib import Path

import pytest
from profile_factories import PROFILES

from ledger.errors import ConfigurationError
from ledger.profiles import Profile, check_profile, diff_profiles, parse_profiles
from ledger.settings import Settings


def profile(text: str, name: str = "prod") -> list[str]:
    return list(check_profile(name, parse_profiles(text, "p.toml")[name]).problems)


def test_the_three_sample_profiles_are_sound() -> None:
    tables = parse_profiles(PROFILES, "p.toml")
    assert sorted(tables) == ["dev", "prod", "staging"]
    for name, table in tables.items():
        assert check_profile(name, table).problems == (), name


def test_unknown_keys_are_named_with_their_place() -> None:
    problems = profile("[env.prod]\npartitons = 3\n[env.prod.flag_defaults]\nrolout_pct = 5\n")
    assert sorted(problems) == [
        "env.prod.flag_defaults.rolout_pct: unknown key",
        "env.prod.partitons: unknown key",
    ]


def test_impossible_thresholds_are_refused() -> None:
    problems = profile(
        "[env.prod.health]\nerror_rate_ratio = 0.5\n[env.prod.flag_defaults]\nrollout_pct = 10\n"
    )
    assert (
        problems[0]
        == "env.prod.flag_defaults: rollout_pct 10 with v2_pool_enabled false sends nothing to V2"
    )
    assert problems[1].startswith(
        "env.prod.health.error_rate_ratio: Input should be greater than 1"
    )
    ordering = profile("[env.prod.health]\nwarn_error_rate = 0.2\n")
    assert ordering == [
        "env.prod.health.warn_error_rate: 0.2 is not below error_rate_without_baseline 0.1: "
        "the warning could never come before the rollback"
    ]


def test_plan_stages_must_rise_and_reach_100_percent() -> None:
    falling = profile(
        "[env.prod.plan]\nstages = [{percentage = 50, soak_s = 1}, {percentage = 10, soak_s = 1}]\n"
    )
    assert falling == ["env.prod.plan: Value error, stages: percentages must strictly increase"]
    short = profile("[env.prod.plan]\nstages = [{percentage = 5, soak_s = 1}]\n")
    assert short == ["env.prod.plan: the last stage is 5 %: the ramp never reaches 100 %"]
    assert profile('[env.prod]\nplan = "fast"\n') == [
        "env.prod.plan: unknown plan 'fast'; known: default, demo"
    ]


def test_topics_secrets_and_the_flag_log_retention_are_checked() -> None:
    problems = profile(
        '[env.prod]\ntopic_prefix = "prod/"\nsasl_password = "hunter2"\n'
        "[env.prod.topic_retention_ms]\nflag_events = 86400000\nmetrics = 1\n"
    )
    assert problems == [
        "env.prod.sasl_password: secrets come only from the environment "
        "(MIGRATION_LEDGER_SASL_PASSWORD), never from a profile",
        "env.prod.topic_prefix: 'prod/' has characters Kafka refuses "
        "(letters, digits, '.', '_', '-' only)",
        "env.prod.topic_retention_ms.flag_events: the flag log is kept forever (-1), "
        "not 86400000 ms",
        "env.prod.topic_retention_ms.metrics: unknown topic (known: operations, comparisons, "
        "flag_commands, flag_events, decisions, health, dead_letters, checkpoints)",
    ]


def test_diff_lists_every_effective_difference() -> None:
    tables = parse_profiles(PROFILES, "p.toml")
    staging = Profile.model_validate(tables["staging"])
    prod = Profile.model_validate(tables["prod"])
    rows = {key: (a, b) for key, a, b in diff_profiles(staging, prod)}
    assert rows["partitions"] == (4, 12)
    assert rows["topic_prefix"] == ("staging.", "prod.")
    assert rows["flag_defaults.shadow_sample_pct"] == (100.0, 10.0)
    assert rows["health.error_rate_ratio"] == (2.5, 3.0)
    assert rows["topic_retention_ms.flag_events"] == (None, -1)
    assert "flag" not in rows


def test_settings_take_the_profile_below_env_vars_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "environments.toml"
    path.write_text(PROFILES)
    monkeypatch.delenv("MIGRATION_LEDGER_TOPIC_PREFIX", raising=False)
    monkeypatch.setenv("MIGRATION_LEDGER_PROFILES", str(path))
    monkeypatch.setenv("MIGRATION_LEDGER_ENV", "prod")
    settings = Settings()
    assert (settings.topic_prefix, settings.partitions) == ("prod.", 12)
    monkeypatch.setenv("MIGRATION_LEDGER_PARTITIONS", "6")  # env var beats the profile
    assert Settings().partitions == 6
    assert Settings(partitions=2).partitions == 2  # a flag beats both
    assert Settings(env="staging").topic_prefix == "staging."  # --env beats MIGRATION_LEDGER_ENV
    with pytest.raises(ConfigurationError, match=r"no profile \[env.qa\]"):
        Settings(env="qa")


def test_a_profile_with_problems_stops_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[env.prod]\npartitions = 0\n")
    with pytest.raises(ConfigurationError, match="partitions"):
        Settings(env="prod", profiles=path)
