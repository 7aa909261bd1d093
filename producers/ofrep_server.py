"""The OFREP endpoints over HTTP (aiohttp), answering from a flag client.

    service = OfrepService(flag_client, publisher)
    app = make_app(service, token=None)          # aiohttp.web.Application

Routes (OFREP core, plus its configuration extension):

* ``POST /ofrep/v1/evaluate/flags/{key}`` — one flag; ``404 FLAG_NOT_FOUND`` for a key this
  server does not serve, ``400`` with ``PARSE_ERROR`` / ``INVALID_CONTEXT`` /
  ``TARGETING_KEY_MISSING`` for a request it cannot evaluate;
* ``POST /ofrep/v1/evaluate/flags`` — both flags from one routing, with a weak ``ETag``; an
  ``If-None-Match`` naming it gets ``304`` and is *not* recorded (the client keeps the answer
  it already has, which was recorded when it was given);
* ``GET /ofrep/v1/configuration`` — name, polling and the supported types;
* ``GET /api/status`` — the flag as this server sees it and what it served; ``GET /`` — a
  small live page polling it (``producers/static/live.html``).

Every answered evaluation of ``migration-pool`` (and every ``200`` bulk answer, which holds it)
publishes its ``RolloutDecided`` through the same :class:`~producers.publisher.EventSink` the
shadow runner uses, so ``replay`` and ``audit`` cover routers in any language. Evaluating
``migration-shadow`` alone records nothing, like the Python provider's boolean flag.

With a ``token`` every route asks for ``Authorization: Bearer <token>`` (``401``
otherwise). :func:`bind_refusal` says when a bind address needs one.

The handlers run on the event loop without awaiting anything but the body: ``route`` is a
hash on an immutable snapshot and ``publish`` a deque append, both well under a millisecond.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

from aiohttp import web

from producers.flag_client import FlagClient
from producers.ofrep import (
    POOL_FLAG,
    SHADOW_FLAG,
    OfrepContext,
    OfrepError,
    bulk_etag,
    etag_matches,
    flag_not_found,
    parse_context,
    pool_answer,
    shadow_answer,
)
from producers.publisher import EventSink
from producers.shadow import Route

__all__ = ["OfrepService", "bind_refusal", "is_loopback", "make_app"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: ``GET /``: the live page (HTML and JS, no build step), shipped in the package.
LIVE_PAGE: bytes = files("producers").joinpath("static/live.html").read_bytes()

#: The polling interval offered to static-context (browser) providers.
MIN_POLLING_INTERVAL_MS = 1_000


class OfrepService:
    """OFREP evaluations on a :class:`FlagClient`, recorded through ``publisher``."""

    def __init__(
        self,
        client: FlagClient,
        publisher: EventSink | None = None,
        *,
        stale_after: float = 30.0,
    ) -> None:
        self.client = client
        self.publisher = publisher
        self.stale_after = stale_after
        self.evaluations = 0
        self.not_modified = 0
        #: Recorded pool decisions by pool, since start (the live page shows the split).
        self.pools: dict[str, int] = {"v1": 0, "v2": 0}

    def _route(self, context: OfrepContext) -> Route:
        return self.client.route(
            context.session_id,
            correlation_id=context.correlation_id or self.client.new_correlation_id(),
            environment=context.environment,
        )

    def _stale(self) -> bool:
        return not self.client.ever_current or self.client.staleness() > self.stale_after

    def _record(self, route: Route) -> None:
        self.evaluations += 1
        self.pools[route.decision.pool] += 1
        if self.publisher is not None:
            self.publisher.publish(route.decision)

    def evaluate(self, key: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """One flag: the HTTP status and the JSON body."""
        try:
            if key not in (POOL_FLAG, SHADOW_FLAG):
                raise flag_not_found(key)
            context = parse_context(body)
        except OfrepError as exc:
            return exc.status, exc.body(key)
        route = self._route(context)
        stale = self._stale()
        if key == POOL_FLAG:
            self._record(route)
            return 200, pool_answer(route, stale=stale)
        return 200, shadow_answer(route, stale=stale)

    def evaluate_bulk(
        self, body: bytes, if_none_match: str | None
    ) -> tuple[int, dict[str, Any] | None, str | None]:
        """Both flags: status, JSON body (None for 304) and ETag."""
        try:
            context = parse_context(body)
        except OfrepError as exc:
            return exc.status, exc.body(), None
        route = self._route(context)
        stale = self._stale()
        answers = [pool_answer(route, stale=stale), shadow_answer(route, stale=stale)]
        etag = bulk_etag(answers)
        if etag_matches(if_none_match, etag):
            self.not_modified += 1
            return 304, None, etag
        self._record(route)
        return 200, {"flags": answers}, etag

    def status(self) -> dict[str, Any]:
        """The flag as this server sees it, and what it served (``GET /api/status``)."""
        state = self.client.state
        values = state.values
        staleness = self.client.staleness()
        if values.frozen:
            stage = "frozen"
        elif not values.v2_pool_enabled:
            stage = "V2 off"
        elif values.v2_rollout_bp >= 10_000:
            stage = "V2 at 100%"
        elif values.v2_rollout_bp > 0:
            stage = "ramping"
        else:
            stage = "V2 on, 0%"
        return {
            "flag": state.flag,
            "flag_version": state.version,
            "stage": stage,
            "described": values.describe(),
            "v2_pool_enabled": values.v2_pool_enabled,
            "v2_rollout_bp": values.v2_rollout_bp,
            "shadow_mode_enabled": values.shadow_mode_enabled,
            "shadow_sample_bp": values.shadow_sample_bp,
            "session_overrides": len(values.session_overrides),
            "environment_overrides": dict(values.environment_overrides),
            "frozen": values.frozen,
            "changed_at": state.changed_at.isoformat() if state.changed_at else None,
            "staleness_s": round(staleness, 3),
            "stale": staleness > self.stale_after,
            "served": {
                "evaluations": self.evaluations,
                "not_modified": self.not_modified,
                "pools": dict(self.pools),
            },
        }

    def configuration(self) -> dict[str, Any]:
        return {
            "name": "migration-ledger",
            "capabilities": {
                "cacheInvalidation": {
                    "polling": {"enabled": True, "minPollingIntervalMs": MIN_POLLING_INTERVAL_MS}
                },
                "flagEvaluation": {"supportedTypes": ["string", "boolean"]},
            },
        }


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        headers=headers,
    )


def make_app(service: OfrepService, *, token: str | None = None) -> web.Application:
    """The aiohttp application serving OFREP from ``service``."""

    async def evaluate(request: web.Request) -> web.Response:
        status, body = service.evaluate(request.match_info["key"], await request.read())
        return _json(status, body)

    async def evaluate_bulk(request: web.Request) -> web.Response:
        status, body, etag = service.evaluate_bulk(
            await request.read(), request.headers.get("If-None-Match")
        )
        headers = {"ETag": etag} if etag else None
        if body is None:
            return web.Response(status=304, headers=headers)
        return _json(status, body, headers)

    async def configuration(_request: web.Request) -> web.Response:
        return _json(200, service.configuration())

    async def status(_request: web.Request) -> web.Response:
        return _json(200, service.status(), {"Cache-Control": "no-store"})

    async def page(_request: web.Request) -> web.Response:
        return web.Response(body=LIVE_PAGE, content_type="text/html", charset="utf-8")

    middlewares: list[Any] = [_errors]
    if token:
        middlewares.append(_bearer(token))
    app = web.Application(middlewares=middlewares)
    app.router.add_post("/ofrep/v1/evaluate/flags/{key}", evaluate)
    app.router.add_post("/ofrep/v1/evaluate/flags", evaluate_bulk)
    app.router.add_get("/ofrep/v1/configuration", configuration)
    app.router.add_get("/api/status", status)
    app.router.add_get("/", page)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unexpected failures as OFREP's ``generalErrorResponse`` (500), logged."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("ofrep: %s %s failed", request.method, request.path)
        return _json(500, {"errorDetails": f"{type(exc).__name__}: {exc}"})


def _bearer(token: str) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return _json(
                401,
                {"errorDetails": "missing or wrong bearer token"},
                {"WWW-Authenticate": 'Bearer realm="migration-ledger"'},
            )
        return await handler(request)

    return check


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (a name other than localhost: no)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_refusal(host: str, token: str | None) -> str | None:
    """Why binding ``host`` is refused (no token beyond loopback), or None when it is fine."""
    if is_loopback(host) or token:
        return None
    return (
        f"--host {host} is reachable beyond this machine: set MIGRATION_LEDGER_SERVE_TOKEN "
        "(clients then send 'Authorization: Bearer <token>'), or bind to 127.0.0.1"
    )
