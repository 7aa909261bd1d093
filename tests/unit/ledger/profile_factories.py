"""A profiles file with three sound environments, for the profile and settings tests."""

from __future__ import annotations

PROFILES = """
[env.dev]
topic_prefix = "dev."
partitions = 1
plan = "demo"

[env.dev.flag_defaults]
shadow_sample_pct = 100

[env.staging]
bootstrap_servers = "127.0.0.1:9192"
topic_prefix = "staging."
partitions = 4
retention_days = 14

[env.staging.health]
error_rate_ratio = 2.5

[env.prod]
bootstrap_servers = "127.0.0.1:9292"
topic_prefix = "prod."
partitions = 12
retention_days = 30

[env.prod.topic_retention_ms]
operations = 604800000
flag_events = -1

[env.prod.flag_defaults]
shadow_sample_pct = 10

[env.prod.health]
error_rate_ratio = 3.0

[env.prod.plan]
min_samples = 500
stages = [
  { percentage = 1, soak_s = 7200 },
  { percentage = 10, soak_s = 7200 },
  { percentage = 100, soak_s = 0 },
]
"""
