"""OFREP answers, pure: a request body to a context, a routing to the JSON the protocol wants.

The OpenFeature Remote Evaluation Protocol (OFREP, ``open-feature/protocol``,
``service/openapi.yaml``) lets any OpenFeature SDK evaluate flags over HTTP. This module holds
the parts with no I/O, so they are tested without a server: :func:`parse_context` reads a
request body, :func:`pool_answer` / :func:`shadow_answer` turn one :class:`~producers.shadow.Route`
into an evaluation, :func:`bulk_etag` names a bulk answer for ``ETag`` / ``If-None-Match``.
The HTTP side (aiohttp) is :mod:`producers.ofrep_server`.

Flags served are the OpenFeature provider's (:mod:`producers.openfeature_provider`):

* ``migration-pool`` (string): ``value`` and ``variant`` are ``"v1"`` or ``"v2"``;
* ``migration-shadow`` (boolean): whether this evaluation also runs the other pool in the
  shadow; ``variant`` ``"on"`` / ``"off"``.

Context: ``targetingKey`` is the session id; attributes ``environment`` and
``correlation_id`` are used when they are strings. An anonymous request (no ``targetingKey``)
must give its ``correlation_id``: it is what the bucket is taken of, and the router must record
its operation under the same id, so the server cannot make one up (``TARGETING_KEY_MISSING``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from ledger.events import DecisionReason, RolloutDecided
from producers.shadow import Route

__all__ = [
    "POOL_FLAG",
    "REASONS",
    "SHADOW_FLAG",
    "OfrepContext",
    "OfrepError",
    "bulk_etag",
    "decision_metadata",
    "etag_matches",
    "flag_not_found",
    "parse_context",
    "pool_answer",
    "shadow_answer",
]

POOL_FLAG: Final = "migration-pool"
SHADOW_FLAG: Final = "migration-shadow"

#: Decision reason -> OpenFeature reason (the same table as the Python provider's).
REASONS: Final[dict[DecisionReason, str]] = {
    DecisionReason.ENVIRONMENT_OVERRIDE: "TARGETING_MATCH",
    DecisionReason.SESSION_OVERRIDE: "TARGETING_MATCH",
    DecisionReason.DISABLED: "DISABLED",
    DecisionReason.SPLIT: "SPLIT",
    DecisionReason.CIRCUIT_OPEN: "CIRCUIT_OPEN",  # OpenFeature's reason set is open
}
STALE: Final = "STALE"


class OfrepError(Exception):
    """A request OFREP answers with an error: ``error_code`` and the HTTP ``status``."""

    def __init__(self, error_code: str, details: str, status: int = 400) -> None:
        super().__init__(details)
        self.error_code = error_code
        self.details = details
        self.status = status

    def body(self, key: str | None = None) -> dict[str, Any]:
        """The ``evaluationFailure`` (with ``key``) or ``bulkEvaluationFailure`` JSON."""
        out: dict[str, Any] = {} if key is None else {"key": key}
        out["errorCode"] = self.error_code
        out["errorDetails"] = self.details
        return out


def flag_not_found(key: str) -> OfrepError:
    return OfrepError(
        "FLAG_NOT_FOUND",
        f"this server evaluates {POOL_FLAG!r} and {SHADOW_FLAG!r}, not {key!r}",
        status=404,
    )


@dataclass(frozen=True, slots=True)
class OfrepContext:
    """What an evaluation request says about the request being routed."""

    session_id: str | None
    environment: str | None
    correlation_id: str | None


def parse_context(body: bytes) -> OfrepContext:
    """The context of an ``evaluationRequest`` / ``bulkEvaluationRequest`` body.

    An empty body is an empty context. Raises :class:`OfrepError`: ``PARSE_ERROR`` for a body
    that is not a JSON object or a ``context`` that is not one, ``INVALID_CONTEXT`` for a
    ``targetingKey`` / ``environment`` / ``correlation_id`` that is not a non-empty string,
    ``TARGETING_KEY_MISSING`` when neither ``targetingKey`` nor ``correlation_id`` is given.
    """
    if body.strip():
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise OfrepError("PARSE_ERROR", f"the body is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise OfrepError("PARSE_ERROR", "the body is not a JSON object")
        context = document.get("context", {})
        if context is None:
            context = {}
        if not isinstance(context, dict):
            raise OfrepError("PARSE_ERROR", "context is not a JSON object")
    else:
        context = {}
    session_id = _text(context, "targetingKey")
    correlation_id = _text(context, "correlation_id")
    if session_id is None and correlation_id is None:
        raise OfrepError(
            "TARGETING_KEY_MISSING",
            "give context.targetingKey (the session id), or context.correlation_id for an "
            "anonymous request",
        )
    return OfrepContext(session_id, _text(context, "environment"), correlation_id)


def _text(context: dict[str, Any], name: str) -> str | None:
    value = context.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise OfrepError("INVALID_CONTEXT", f"context.{name} must be a non-empty string")
    return value


def decision_metadata(decision: RolloutDecided, *, shadow: bool) -> dict[str, bool | int | str]:
    """The ``metadata`` of both flags: what replay and audit need to find this decision."""
    metadata: dict[str, bool | int | str] = {
        "flag": decision.flag,
        "flag_version": decision.flag_version,
        "decision_reason": decision.reason.value,
        "hash_version": decision.hash_version,
        "correlation_id": decision.correlation_id,
        "decision_id": decision.event_id,
        "shadow": shadow,
    }
    if decision.bucket is not None:
        metadata["bucket"] = decision.bucket
    if decision.threshold_bp is not None:
        metadata["threshold_bp"] = decision.threshold_bp
    return metadata


def pool_answer(route: Route, *, stale: bool) -> dict[str, Any]:
    """The ``migration-pool`` evaluation of one routing (reason ``STALE`` when ``stale``)."""
    decision = route.decision
    return {
        "key": POOL_FLAG,
        "value": decision.pool,
        "variant": decision.pool,
        "reason": STALE if stale else REASONS[decision.reason],
        "metadata": decision_metadata(decision, shadow=route.shadow),
    }


def shadow_answer(route: Route, *, stale: bool) -> dict[str, Any]:
    """The ``migration-shadow`` evaluation of the same routing."""
    reason = "TARGETING_MATCH" if route.shadow else "DISABLED"
    return {
        "key": SHADOW_FLAG,
        "value": route.shadow,
        "variant": "on" if route.shadow else "off",
        "reason": STALE if stale else reason,
        "metadata": decision_metadata(route.decision, shadow=route.shadow),
    }


#: Metadata that differs on every evaluation although the answer is the same.
_PER_REQUEST = ("decision_id", "correlation_id")


def bulk_etag(answers: list[dict[str, Any]]) -> str:
    """A weak ETag of a bulk answer: equal for answers that say the same.

    Weak (``W/"…"``) because the ids of the decision itself are left out: two evaluations
    for one context under one flag version give the same values, variants, reasons and
    metadata, and a client that has one need not fetch the other.
    """
    semantic = [
        {
            **answer,
            "metadata": {
                k: v for k, v in answer.get("metadata", {}).items() if k not in _PER_REQUEST
            },
        }
        for answer in answers
    ]
    digest = hashlib.sha256(json.dumps(semantic, sort_keys=True).encode()).hexdigest()
    return f'W/"{digest[:32]}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, RFC 9110)."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False
