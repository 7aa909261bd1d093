"""Per-pool normalizers: unwrapping, renaming and the canonical error taxonomy."""

from __future__ import annotations

import pytest

from ledger.comparison import CANONICAL_ERRORS, RuleSet, parse_rules
from ledger.events import OperationError


def _error(kind: str, **extra: object) -> OperationError:
    return OperationError.model_validate({"type": kind, "message": "boom", **extra})


@pytest.mark.parametrize(
    ("pool", "native", "canonical"),
    [
        ("v1", "pool_timeout", "timeout"),
        ("v2", "timeout_error", "timeout"),
        ("v2", "checkout_timeout", "timeout"),
        ("v1", "connection_refused", "connection"),
        ("v1", "worker_spawn_failed", "initialization"),
        ("v1", "heartbeat_failed", "health_check"),
        ("v1", "session_expired", "session"),
        ("v1", "out_of_memory", "resource"),
        ("v1", "ZeroDivisionError", "python"),
        ("v1", "ConnectionError", "connection"),
        ("v1", "socket_read_timeout", "timeout"),
        ("v2", "resource_exhausted", "resource"),
        ("v1", "something_new", "system"),
        ("v2", "timeout", "timeout"),
    ],
)
def test_default_mapping_sends_native_errors_to_the_canonical_taxonomy(
    default_rules: RuleSet, pool: str, native: str, canonical: str
) -> None:
    assert default_rules.canonical_error(pool, _error(native)) == canonical


def test_v2_errors_carry_their_own_category(default_rules: RuleSet) -> None:
    error = _error("WorkerCrashed", category="health_check")
    assert default_rules.canonical_error("v2", error) == "health_check"


def test_a_category_outside_the_taxonomy_is_not_trusted(default_rules: RuleSet) -> None:
    error = _error("WorkerCrashed", category="catastrophe")
    assert default_rules.canonical_error("v2", error) == "system"


def test_every_default_mapping_lands_in_the_taxonomy(default_rules: RuleSet) -> None:
    for pool in ("v1", "v2"):
        mapping = default_rules.pools[pool].errors
        assert set(mapping.exact.values()) <= set(CANONICAL_ERRORS)
        assert {target for _, target in mapping.globs} <= set(CANONICAL_ERRORS)


def test_error_type_can_come_from_another_field() -> None:
    rules = parse_rules(
        "[pools.v1]\nerror_type_field = 'code'\n[pools.v1.errors]\nE_TIMEOUT = 'timeout'\n", "r"
    )
    assert rules.canonical_error("v1", _error("PoolError", code="E_TIMEOUT")) == "timeout"
    assert rules.canonical_error("v1", _error("PoolError")) == "system"


def test_a_custom_taxonomy_and_unmapped_type() -> None:
    rules = parse_rules(
        "taxonomy = ['slow', 'broken']\n[pools.v1]\nunmapped_error = 'broken'\n"
        "[pools.v1.errors]\npool_timeout = 'slow'\n",
        "r",
    )
    assert rules.canonical_error("v1", _error("pool_timeout")) == "slow"
    assert rules.canonical_error("v1", _error("other")) == "broken"


def test_v1_results_are_unwrapped_and_v2_results_kept(default_rules: RuleSet) -> None:
    wrapped = {"status": "ok", "data": {"rows": 3}}
    assert default_rules.pools["v1"].result(wrapped) == {"rows": 3}
    assert default_rules.pools["v2"].result(wrapped) == wrapped


def test_a_result_without_the_wrapper_is_compared_as_it_is(default_rules: RuleSet) -> None:
    assert default_rules.pools["v1"].result({"rows": 3}) == {"rows": 3}
    assert default_rules.pools["v1"].result([1, 2]) == [1, 2]
    assert default_rules.pools["v1"].result(None) is None


def test_renames_apply_at_every_depth_without_touching_the_input() -> None:
    rules = parse_rules(
        "[pools.v1]\nunwrap = 'data.payload'\nrename = { programId = 'program_id' }\n", "r"
    )
    original = {"data": {"payload": {"programId": 1, "runs": [{"programId": 2, "x": [3]}]}}}
    result = rules.pools["v1"].result(original)
    assert result == {"program_id": 1, "runs": [{"program_id": 2, "x": [3]}]}
    assert original["data"]["payload"]["programId"] == 1  # type: ignore[index]


def test_renaming_a_very_deep_result_does_not_recurse() -> None:
    rules = parse_rules("[pools.v2]\nrename = { k = 'key' }\n", "r")
    deep: object = 0
    for _ in range(50_000):
        deep = {"k": [deep]}
    renamed = rules.pools["v2"].result(deep)  # type: ignore[arg-type]
    depth = 0
    while isinstance(renamed, dict):
        assert list(renamed) == ["key"]
        renamed = renamed["key"][0]  # type: ignore[index]
        depth += 1
    assert depth == 50_000
