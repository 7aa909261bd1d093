"""The migration flag through the standard OpenFeature API.

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    api.set_provider(MigrationFlagProvider(flag_client, publisher=publisher))
    details = api.get_client().get_string_details(
        "migration-pool", "v1", EvaluationContext(targeting_key=session_id)
    )
    details.value            # "v1" or "v2"
    details.variant          # the same
    details.reason           # SPLIT, TARGETING_MATCH (an override), DISABLED, STALE, ...
    details.flag_metadata    # flag, flag_version, bucket, threshold_bp, decision_reason, ...

Flags served: the string flag ``migration-pool`` (the pool) and the boolean flag
``migration-shadow`` (whether this evaluation would also run the other pool in the shadow).
Context: ``targeting_key`` is the session id; attributes ``environment`` and
``correlation_id`` are used when present. When the client has not confirmed it is current for
``stale_after`` seconds the reason is ``STALE`` (the value is still the cached decision).
With a ``publisher`` every pool evaluation is recorded as a ``RolloutDecided``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from ledger.events import DecisionReason
from producers.flag_client import FlagClient
from producers.ofrep import decision_metadata
from producers.publisher import EventSink
from producers.shadow import Route

__all__ = ["POOL_FLAG", "SHADOW_FLAG", "MigrationFlagProvider"]

POOL_FLAG = "migration-pool"
SHADOW_FLAG = "migration-shadow"

_REASONS: dict[DecisionReason, str] = {
    DecisionReason.ENVIRONMENT_OVERRIDE: Reason.TARGETING_MATCH,
    DecisionReason.SESSION_OVERRIDE: Reason.TARGETING_MATCH,
    DecisionReason.DISABLED: Reason.DISABLED,
    DecisionReason.SPLIT: Reason.SPLIT,
    DecisionReason.CIRCUIT_OPEN: "CIRCUIT_OPEN",  # OpenFeature's reason set is open
}


class MigrationFlagProvider(AbstractProvider):
    """An OpenFeature provider answering from a :class:`FlagClient`'s cached state."""

    def __init__(
        self,
        client: FlagClient,
        *,
        publisher: EventSink | None = None,
        pool_flag: str = POOL_FLAG,
        shadow_flag: str = SHADOW_FLAG,
        stale_after: float = 30.0,
    ) -> None:
        super().__init__()
        self.client = client
        self.publisher = publisher
        self.pool_flag = pool_flag
        self.shadow_flag = shadow_flag
        self.stale_after = stale_after

    def get_metadata(self) -> Metadata:
        return Metadata(name="migration-ledger")

    # -- string: the pool ---------------------------------------------------------------------

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        if flag_key != self.pool_flag:
            return self._not_found(flag_key, default_value)
        route = self._route(evaluation_context)
        decision = route.decision
        if self.publisher is not None:
            self.publisher.publish(decision)
        return FlagResolutionDetails(
            value=decision.pool,
            variant=decision.pool,
            reason=self._reason(_REASONS[decision.reason]),
            flag_metadata=decision_metadata(decision, shadow=route.shadow),
        )

    async def resolve_string_details_async(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return self.resolve_string_details(flag_key, default_value, evaluation_context)

    # -- boolean: shadow or not -------------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        if flag_key != self.shadow_flag:
            return self._not_found(flag_key, default_value)
        route = self._route(evaluation_context)
        return FlagResolutionDetails(
            value=route.shadow,
            variant="on" if route.shadow else "off",
            reason=self._reason(Reason.TARGETING_MATCH if route.shadow else Reason.DISABLED),
            flag_metadata=decision_metadata(route.decision, shadow=route.shadow),
        )

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self.resolve_boolean_details(flag_key, default_value, evaluation_context)

    # -- the rest: not served ----------------------------------------------------------------------

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return self._not_found(flag_key, default_value)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._not_found(flag_key, default_value)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Any,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        return self._not_found(flag_key, default_value)

    def _route(self, evaluation_context: EvaluationContext | None) -> Route:
        """Route the context's session; both flags answer from this one routing."""
        session_id, environment, correlation_id = _context(evaluation_context)
        return self.client.route(
            session_id,
            correlation_id=correlation_id or self.client.new_correlation_id(),
            environment=environment,
        )

    def _not_found(self, flag_key: str, default_value: Any) -> FlagResolutionDetails[Any]:
        return FlagResolutionDetails(
            value=default_value,
            reason=Reason.ERROR,
            error_code=ErrorCode.FLAG_NOT_FOUND,
            error_message=(
                f"this provider serves {self.pool_flag!r} and {self.shadow_flag!r}, "
                f"not {flag_key!r}"
            ),
        )

    def _reason(self, reason: str) -> str:
        stale = not self.client.ever_current or self.client.staleness() > self.stale_after
        return Reason.STALE if stale else reason


def _context(context: EvaluationContext | None) -> tuple[str | None, str | None, str | None]:
    if context is None:
        return None, None, None
    attributes = context.attributes
    environment = attributes.get("environment")
    correlation_id = attributes.get("correlation_id")
    return (
        context.targeting_key,
        environment if isinstance(environment, str) else None,
        correlation_id if isinstance(correlation_id, str) else None,
    )
