"""Classify one V1/V2 pair into one category and build the ``ComparisonRecorded`` event.

The fingerprint groups comparisons that differ the same way: a hash of the operation, the
category, the canonical error types and the set of (path with indices folded, kind) of every
difference, so a thousand pairs whose ``items[i].price`` differ make one report row.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, JsonValue

from ledger.comparison.diff import DifferenceSink, diff_results
from ledger.comparison.rules import RuleSet
from ledger.events import ComparisonRecorded, Difference, OperationRecorded, Pool

_M = TypeVar("_M", bound=BaseModel)

__all__ = [
    "Category",
    "compare_operations",
    "comparison_id_for",
    "fingerprint",
    "missing_comparison",
]


class Category(StrEnum):
    """One category per pair (the names are part of the event contract)."""

    MATCH = "match"
    VALUE_MISMATCH = "value_mismatch"
    SHAPE_MISMATCH = "shape_mismatch"
    ERROR_MATCH = "error_match"
    ERROR_MISMATCH = "error_mismatch"
    V2_ERROR = "v2_error"
    V1_ERROR = "v1_error"
    SHADOW_MISSING = "shadow_missing"
    PRIMARY_MISSING = "primary_missing"


_TEXT: dict[Category, str] = {category: category.value for category in Category}


def comparison_id_for(correlation_id: str) -> str:
    """The comparison's id, derived from its correlation id: a re-emission is the same event."""
    return "cmp-" + hashlib.sha256(correlation_id.encode()).hexdigest()[:32]


# Fingerprints of pairs without differences repeat endlessly: remember them (bounded).
_FINGERPRINT_CACHE: dict[tuple[str, str | None, str | None, str | None], str] = {}
_FINGERPRINT_CACHE_LIMIT = 10_000


def fingerprint(
    category: str,
    operation: str | None,
    keys: set[tuple[str, str]] | frozenset[tuple[str, str]],
    v1_error: str | None = None,
    v2_error: str | None = None,
) -> str:
    """A stable hash of what makes two comparisons "the same problem"."""
    if not keys:
        cache_key = (category, operation, v1_error, v2_error)
        found = _FINGERPRINT_CACHE.get(cache_key)
        if found is None:
            found = _fingerprint(category, operation, keys, v1_error, v2_error)
            if len(_FINGERPRINT_CACHE) < _FINGERPRINT_CACHE_LIMIT:
                _FINGERPRINT_CACHE[cache_key] = found
        return found
    return _fingerprint(category, operation, keys, v1_error, v2_error)


def _fingerprint(
    category: str,
    operation: str | None,
    keys: set[tuple[str, str]] | frozenset[tuple[str, str]],
    v1_error: str | None,
    v2_error: str | None,
) -> str:
    parts = [category, operation or "", v1_error or "", v2_error or ""]
    parts.extend(f"{path}\x1f{kind}" for path, kind in sorted(keys))
    return hashlib.sha256("\x1e".join(parts).encode()).hexdigest()[:16]


def compare_operations(
    v1: OperationRecorded, v2: OperationRecorded, rules: RuleSet, *, at: datetime
) -> ComparisonRecorded:
    """Compare the V1 and V2 executions of one operation under ``rules``.

    ``v1`` is the pool-v1 half and ``v2`` the pool-v2 half whatever their roles (two halves
    passed the other way round are swapped). Raises ``ValueError`` for halves that do not
    belong together (same pool, or different correlation ids).
    """
    if v1.pool == "v2" and v2.pool == "v1":
        v1, v2 = v2, v1
    if v1.pool != "v1" or v2.pool != "v2":
        raise ValueError(f"need one v1 and one v2 execution, got {v1.pool} and {v2.pool}")
    correlation_id = v1.correlation_id
    if correlation_id != v2.correlation_id:
        raise ValueError(f"correlation ids differ: {correlation_id!r} and {v2.correlation_id!r}")
    operation = v1.operation
    v1_normalizer, v2_normalizer = rules.normalizers
    v1_error = v1_normalizer.errors.canonical(v1.error) if v1.error is not None else None
    v2_error = v2_normalizer.errors.canonical(v2.error) if v2.error is not None else None
    differences: tuple[Difference, ...] = ()
    truncated = False
    count = 0
    keys: set[tuple[str, str]] | frozenset[tuple[str, str]] = _NO_KEYS
    if v1_error is not None and v2_error is not None:
        category = Category.ERROR_MATCH if v1_error == v2_error else Category.ERROR_MISMATCH
    elif v2_error is not None:
        category = Category.V2_ERROR
    elif v1_error is not None:
        category = Category.V1_ERROR
    else:
        compiled = rules.for_operation(operation)
        sink = DifferenceSink(compiled.max_differences)
        v1_result = v1.result
        v2_result = v2.result
        if v1_normalizer.changes_results:
            v1_result = v1_normalizer.result(v1_result)
        if v2_normalizer.changes_results:
            v2_result = v2_normalizer.result(v2_result)
        diff_results(v1_result, v2_result, compiled.root, sink)
        if not sink.count:
            category = Category.MATCH
        else:
            category = Category.SHAPE_MISMATCH if sink.shape else Category.VALUE_MISMATCH
            differences = tuple(
                _difference(path, kind, a, b)
                for path, kind, a, b in sink.rendered(compiled.max_value_chars)
            )
            truncated = sink.truncated
            count = sink.count
            keys = sink.keys
    primary = v1 if v1.role == "primary" else v2
    comparison_id = comparison_id_for(correlation_id)
    v1_duration = v1.duration_ms
    v2_duration = v2.duration_ms
    return _comparison(
        {
            "event_id": comparison_id,
            "schema_version": 1,
            "type": "ComparisonRecorded",
            "comparison_id": comparison_id,
            "correlation_id": correlation_id,
            "session_id": primary.session_id,
            "operation": operation,
            "environment": primary.environment,
            "category": _TEXT[category],
            "differences": differences,
            "differences_truncated": truncated,
            "difference_count": count,
            "fingerprint": fingerprint(_TEXT[category], operation, keys, v1_error, v2_error),
            "rules_version": rules.version,
            "primary_pool": primary.pool,
            "v1_event_id": v1.event_id,
            "v2_event_id": v2.event_id,
            "v1_duration_ms": v1_duration,
            "v2_duration_ms": v2_duration,
            "latency_ratio": _ratio(v2_duration, v1_duration),
            "v1_error_type": v1_error,
            "v2_error_type": v2_error,
            "late": False,
            "at": at,
        }
    )


def _ratio(v2_duration: float, v1_duration: float) -> float | None:
    """V2's duration over V1's; None where it is not a finite number (V1 took no time, or
    the quotient overflows a double)."""
    if v1_duration <= 0:
        return None
    ratio = v2_duration / v1_duration
    return ratio if math.isfinite(ratio) else None


def missing_comparison(
    present: OperationRecorded,
    *,
    at: datetime,
    late: bool = False,
    rules: RuleSet | None = None,
) -> ComparisonRecorded:
    """The comparison of a pair whose other half did not arrive in time.

    With ``late=False`` (the pairing timer fired), ``present`` is the half that came, and the
    missing one is the other role: a present primary means ``shadow_missing``. With
    ``late=True``, ``present`` is the half that came after the timer: it *is* the missing one,
    so a late shadow is still ``shadow_missing``, now with its own figures. ``rules`` (when
    given) adds the canonical error type and the rules version.
    """
    missing_role = present.role if late else ("shadow" if present.role == "primary" else "primary")
    category = Category.SHADOW_MISSING if missing_role == "shadow" else Category.PRIMARY_MISSING
    error = None
    if present.error is not None and rules is not None:
        error = rules.canonical_error(present.pool, present.error)
    is_v1 = present.pool == "v1"
    v1_error = error if is_v1 else None
    v2_error = None if is_v1 else error
    comparison_id = comparison_id_for(present.correlation_id)
    return ComparisonRecorded(
        event_id=comparison_id,
        comparison_id=comparison_id,
        correlation_id=present.correlation_id,
        session_id=present.session_id,
        operation=present.operation,
        environment=present.environment,
        category=category.value,
        fingerprint=fingerprint(category.value, present.operation, _NO_KEYS, v1_error, v2_error),
        rules_version=rules.version if rules is not None else "none",
        primary_pool=present.pool if present.role == "primary" else _other(present.pool),
        v1_event_id=present.event_id if is_v1 else None,
        v2_event_id=None if is_v1 else present.event_id,
        v1_duration_ms=present.duration_ms if is_v1 else None,
        v2_duration_ms=None if is_v1 else present.duration_ms,
        v1_error_type=v1_error,
        v2_error_type=v2_error,
        late=late,
        at=at,
    )


def _other(pool: Pool) -> Pool:
    return "v2" if pool == "v1" else "v1"


# -- building events without re-validating them ----------------------------------------------
#
# Validating a ComparisonRecorded costs more than comparing a small pair. Every value built
# above is valid by construction (types fixed by the code, previews JSON-safe), so the event is
# assembled directly, as pydantic's own model_construct does. If the model's fields ever differ
# from the ones written here, the validated path is used instead (tests check both agree).

_NO_KEYS: frozenset[tuple[str, str]] = frozenset()
_COMPARISON_FIELDS = (
    "event_id",
    "schema_version",
    "type",
    "comparison_id",
    "correlation_id",
    "session_id",
    "operation",
    "environment",
    "category",
    "differences",
    "differences_truncated",
    "difference_count",
    "fingerprint",
    "rules_version",
    "primary_pool",
    "v1_event_id",
    "v2_event_id",
    "v1_duration_ms",
    "v2_duration_ms",
    "latency_ratio",
    "v1_error_type",
    "v2_error_type",
    "late",
    "at",
)
_DIFFERENCE_FIELDS = ("path", "kind", "v1", "v2")
TRUSTED_CONSTRUCTION = (
    tuple(ComparisonRecorded.model_fields) == _COMPARISON_FIELDS
    and tuple(Difference.model_fields) == _DIFFERENCE_FIELDS
)


_ALL_FIELDS: dict[type[BaseModel], set[str]] = {
    ComparisonRecorded: set(_COMPARISON_FIELDS),
    Difference: set(_DIFFERENCE_FIELDS),
}


# pydantic keeps these three in slots; setting them through their descriptors is cheapest.
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__


def _assemble(model: type[_M], values: dict[str, Any]) -> _M:
    event = object.__new__(model)
    object.__setattr__(event, "__dict__", values)
    # Every field is given, so one shared "fields set" serves all (pydantic only reads it).
    _SET_FIELDS_SET(event, _ALL_FIELDS[model])
    _SET_EXTRA(event, None)
    _SET_PRIVATE(event, None)
    return event


def _comparison(values: dict[str, Any]) -> ComparisonRecorded:
    if TRUSTED_CONSTRUCTION:
        return _assemble(ComparisonRecorded, values)
    return ComparisonRecorded(**values)


def _difference(path: str, kind: str, v1: JsonValue, v2: JsonValue) -> Difference:
    if TRUSTED_CONSTRUCTION:
        return _assemble(Difference, {"path": path, "kind": kind, "v1": v1, "v2": v2})
    return Difference(path=path, kind=kind, v1=v1, v2=v2)
