"""What runs inside or beside the pools: publisher, flag client, shadow runner, simulator.

Public names are imported lazily (``from producers import ShadowRunner``), so ``import
producers`` stays cheap and loads no Kafka client.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "FlagClient",
    "MigrationFlagProvider",
    "PoolError",
    "PoolResult",
    "Publisher",
    "PublisherStats",
    "ShadowRunner",
    "ShadowStats",
    "Simulator",
    "Traffic",
    "Workload",
    "parse_incidents",
]

_HOMES = {
    "FlagClient": "producers.flag_client",
    "MigrationFlagProvider": "producers.openfeature_provider",
    "PoolError": "producers.shadow",
    "PoolResult": "producers.shadow",
    "Publisher": "producers.publisher",
    "PublisherStats": "producers.publisher",
    "ShadowRunner": "producers.shadow",
    "ShadowStats": "producers.shadow",
    "Simulator": "producers.simulator",
    "Traffic": "producers.simulator",
    "Workload": "producers.simulator",
    "parse_incidents": "producers.simulator",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'producers' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
