"""OFREP: request contexts, answers that agree with the flag client, the HTTP layer (aiohttp)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from openfeature.evaluation_context import EvaluationContext
from producer_fakes import ListSink
from test_flag_client import changes

from ledger.events import DecisionReason
from ledger.settings import Settings
from producers.flag_client import FlagClient
from producers.ofrep import (
    POOL_FLAG,
    REASONS,
    SHADOW_FLAG,
    OfrepContext,
    OfrepError,
    bulk_etag,
    etag_matches,
    parse_context,
)
from producers.ofrep_server import OfrepService, bind_refusal, is_loopback, make_app
from producers.openfeature_provider import MigrationFlagProvider

FLAG = "v2_migration"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def flag_client(*commands: dict[str, Any]) -> FlagClient:
    client = FlagClient(Settings(flag=FLAG), environ={}, clock=lambda: T0)
    client.ingest_all(changes(*commands))
    return client


def body(context: dict[str, Any] | None = None) -> bytes:
    return json.dumps({"context": context or {}}).encode()


RAMP = ({"command": "enable"}, {"command": "set_percentage", "percentage_bp": 5_000})

# --- contexts -----------------------------------------------------------------------------


def test_a_context_gives_session_environment_and_correlation() -> None:
    given_body = body({"targetingKey": "s-1", "environment": "eu", "correlation_id": "c-9"})
    assert parse_context(given_body) == OfrepContext("s-1", "eu", "c-9")
    assert parse_context(body({"targetingKey": "s-1", "plan": 3})) == OfrepContext(
        "s-1", None, None
    )
    assert parse_context(body({"correlation_id": "c-9"})) == OfrepContext(None, None, "c-9")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "TARGETING_KEY_MISSING"),
        (b"{}", "TARGETING_KEY_MISSING"),
        (b'{"context": {"environment": "eu"}}', "TARGETING_KEY_MISSING"),
        (b"{not json", "PARSE_ERROR"),
        (b"[1, 2]", "PARSE_ERROR"),
        (b'{"context": "s-1"}', "PARSE_ERROR"),
        (b"\xff\xfe", "PARSE_ERROR"),
        (b'{"context": {"targetingKey": 7}}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": ""}}', "INVALID_CONTEXT"),
        (b'{"context": {"targetingKey": "s", "environment": ["eu"]}}', "INVALID_CONTEXT"),
    ],
)
def test_a_request_that_cannot_be_evaluated_is_a_400_with_its_code(raw: bytes, code: str) -> None:
    with pytest.raises(OfrepError) as caught:
        parse_context(raw)
    assert (caught.value.error_code, caught.value.status) == (code, 400)


def test_etag_matching_is_weak_and_takes_lists() -> None:
    tag = 'W/"abc"'
    assert etag_matches('W/"abc"', tag)
    assert etag_matches('"abc"', tag)
    assert etag_matches('W/"x", W/"abc"', tag)
    assert etag_matches("*", tag)
    assert not etag_matches('W/"abd"', tag)
    assert not etag_matches(None, tag)
    assert not etag_matches("", tag)


# --- answers agree with the flag client and the Python provider ------------------------------


@settings(max_examples=60, deadline=None)
@given(
    # Session ids as the wire contract admits them: no NUL, no lone surrogate.
    sessions=st.lists(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            min_size=1,
            max_size=12,
        ),
        min_size=1,
        max_size=8,
    ),
    percentage_bp=st.integers(0, 10_000),
    override=st.sampled_from([None, "v1", "v2"]),
)
def test_an_ofrep_evaluation_is_the_flag_clients_decision_and_the_providers_answer(
    sessions: list[str], percentage_bp: int, override: str | None
) -> None:
    commands: list[dict[str, Any]] = [{"command": "enable"}]
    if percentage_bp:
        commands.append({"command": "set_percentage", "percentage_bp": percentage_bp})
    if override:
        commands.append(
            {"command": "set_session_override", "session_id": sessions[0], "pool": override}
        )
    client = flag_client(*commands)
    sink = ListSink()
    service = OfrepService(client, sink)
    provider = MigrationFlagProvider(client)
    for session in sessions:
        status, answer = service.evaluate(POOL_FLAG, body({"targetingKey": session}))
        decision = client.decide(session)
        details = provider.resolve_string_details(
            POOL_FLAG, "v1", EvaluationContext(targeting_key=session)
        )
        assert status == 200
        assert answer["value"] == answer["variant"] == decision.pool == details.value
        assert answer["reason"] == details.reason
        metadata = answer["metadata"]
        assert metadata["bucket"] == decision.bucket
        assert metadata["threshold_bp"] == decision.threshold_bp == percentage_bp
        assert metadata["flag_version"] == decision.flag_version == len(commands)
        assert metadata["decision_reason"] == decision.reason.value
        ids = ("decision_id", "correlation_id")
        assert {k: v for k, v in metadata.items() if k not in ids} == {
            k: v for k, v in (details.flag_metadata or {}).items() if k not in ids
        }
    recorded = sink.decisions()
    assert [d.session_id for d in recorded] == sessions
    assert all(d.event_id and d.pool in ("v1", "v2") for d in recorded)


def test_every_decision_reason_has_the_providers_openfeature_reason() -> None:
    from producers import openfeature_provider

    assert {k: str(v) for k, v in openfeature_provider._REASONS.items()} == REASONS
    assert set(REASONS) == set(DecisionReason)


def test_a_recorded_decision_is_the_one_described_by_the_answer() -> None:
    sink = ListSink()
    service = OfrepService(flag_client(*RAMP), sink)
    context = {"targetingKey": "s-1", "environment": "eu", "correlation_id": "op-7"}
    _, answer = service.evaluate(POOL_FLAG, body(context))
    [decision] = sink.decisions()
    assert answer["metadata"]["decision_id"] == decision.event_id
    assert (decision.correlation_id, decision.environment, decision.session_id) == (
        "op-7",
        "eu",
        "s-1",
    )
    assert decision.pool == answer["value"]


def test_an_override_is_a_targeting_match_and_a_disabled_flag_says_so() -> None:
    client = flag_client(
        {"command": "set_environment_override", "environment": "canary", "pool": "v2"}
    )
    service = OfrepService(client)
    _, answer = service.evaluate(POOL_FLAG, body({"targetingKey": "s", "environment": "canary"}))
    assert (answer["value"], answer["reason"]) == ("v2", "TARGETING_MATCH")
    _, answer = service.evaluate(POOL_FLAG, body({"targetingKey": "s"}))
    assert (answer["value"], answer["reason"]) == ("v1", "DISABLED")


def test_a_client_that_lost_the_log_answers_stale() -> None:
    client = flag_client(*RAMP)
    client.staleness = lambda: 120.0  # type: ignore[method-assign]
    service = OfrepService(client, stale_after=30.0)
    for key in (POOL_FLAG, SHADOW_FLAG):
        status, answer = service.evaluate(key, body({"targetingKey": "s-1"}))
        assert (status, answer["reason"]) == (200, "STALE")


def test_the_shadow_flag_follows_the_sample_and_records_nothing() -> None:
    sink = ListSink()
    client = flag_client({"command": "set_shadow_mode", "enabled": False})
    service = OfrepService(client, sink)
    status, answer = service.evaluate(SHADOW_FLAG, body({"targetingKey": "s-1"}))
    assert (status, answer["value"], answer["variant"], answer["reason"]) == (
        200,
        False,
        "off",
        "DISABLED",
    )
    service = OfrepService(flag_client(), sink)  # the defaults: shadow everything
    _, answer = service.evaluate(SHADOW_FLAG, body({"targetingKey": "s-1"}))
    assert (answer["value"], answer["variant"]) == (True, "on")
    assert sink.events == []


def test_the_bulk_etag_ignores_the_decision_ids_but_not_the_answer() -> None:
    service = OfrepService(flag_client(*RAMP))
    context = body({"targetingKey": "s-1"})
    _, first, tag = service.evaluate_bulk(context, None)
    _, second, tag_again = service.evaluate_bulk(context, None)
    assert first is not None
    assert second is not None
    assert first != second  # new decision ids
    assert tag == tag_again == bulk_etag(second["flags"])
    _, _, other = service.evaluate_bulk(body({"targetingKey": "s-2"}), None)
    assert other != tag  # another session, another bucket


# --- HTTP --------------------------------------------------------------------------------------

Scenario = Callable[[TestClient[Any, Any]], Awaitable[None]]


def http(service: OfrepService, scenario: Scenario, *, token: str | None = None) -> None:
    async def run() -> None:
        async with TestClient(TestServer(make_app(service, token=token))) as client:
            await scenario(client)

    asyncio.run(run())


def test_http_single_evaluation_not_found_and_bad_requests() -> None:
    sink = ListSink()
    client = flag_client(*RAMP)
    service = OfrepService(client, sink)

    async def scenario(http_client: TestClient[Any, Any]) -> None:
        url = f"/ofrep/v1/evaluate/flags/{POOL_FLAG}"
        response = await http_client.post(url, json={"context": {"targetingKey": "s-1"}})
        assert response.status == 200
        assert response.content_type == "application/json"
        answer = await response.json()
        assert answer["key"] == POOL_FLAG
        assert answer["value"] == client.decide("s-1").pool
        assert answer["reason"] == "SPLIT"

        response = await http_client.post("/ofrep/v1/evaluate/flags/nope", json={"context": {}})
        assert response.status == 404
        assert await response.json() == {
            "key": "nope",
            "errorCode": "FLAG_NOT_FOUND",
            "errorDetails": "this server evaluates 'migration-pool' and 'migration-shadow', "
            "not 'nope'",
        }
        response = await http_client.post(url, data=b"{oops")
        assert response.status == 400
        assert (await response.json())["errorCode"] == "PARSE_ERROR"
        response = await http_client.post(url, json={"context": {"environment": "eu"}})
        assert response.status == 400
        assert (await response.json())["errorCode"] == "TARGETING_KEY_MISSING"

    http(service, scenario)
    assert [d.session_id for d in sink.decisions()] == ["s-1"]  # errors record nothing


def test_http_bulk_answers_304_to_its_etag_until_the_flag_changes() -> None:
    sink = ListSink()
    client = flag_client(*RAMP)
    service = OfrepService(client, sink)
    url = "/ofrep/v1/evaluate/flags"
    request = {"context": {"targetingKey": "s-1"}}

    async def scenario(http_client: TestClient[Any, Any]) -> None:
        response = await http_client.post(url, json=request)
        assert response.status == 200
        tag = response.headers["ETag"]
        flags = (await response.json())["flags"]
        assert [f["key"] for f in flags] == [POOL_FLAG, SHADOW_FLAG]
        assert flags[0]["metadata"]["flag_version"] == 2

        response = await http_client.post(url, json=request, headers={"If-None-Match": tag})
        assert response.status == 304
        assert response.headers["ETag"] == tag
        assert await response.read() == b""

        client.ingest_all(changes(*RAMP, {"command": "set_percentage", "percentage_bp": 100})[2:])
        response = await http_client.post(url, json=request, headers={"If-None-Match": tag})
        assert response.status == 200
        assert response.headers["ETag"] != tag
        assert (await response.json())["flags"][0]["metadata"]["flag_version"] == 3

        response = await http_client.post(url, data=b"[]")
        assert response.status == 400
        assert await response.json() == {
            "errorCode": "PARSE_ERROR",
            "errorDetails": "the body is not a JSON object",
        }

    http(service, scenario)
    assert [d.flag_version for d in sink.decisions()] == [2, 3]  # the 304 is not a new decision


def test_http_configuration_names_the_supported_types() -> None:
    async def scenario(http_client: TestClient[Any, Any]) -> None:
        response = await http_client.get("/ofrep/v1/configuration")
        assert response.status == 200
        document = await response.json()
        assert document["name"] == "migration-ledger"
        assert document["capabilities"]["flagEvaluation"]["supportedTypes"] == [
            "string",
            "boolean",
        ]

    http(OfrepService(flag_client()), scenario)


def test_with_a_token_every_request_must_carry_it() -> None:
    service = OfrepService(flag_client(*RAMP), ListSink())
    url = f"/ofrep/v1/evaluate/flags/{POOL_FLAG}"
    request = {"context": {"targetingKey": "s-1"}}

    async def scenario(http_client: TestClient[Any, Any]) -> None:
        assert (await http_client.post(url, json=request)).status == 401
        wrong = {"Authorization": "Bearer guess"}
        assert (await http_client.post(url, json=request, headers=wrong)).status == 401
        assert (await http_client.get("/ofrep/v1/configuration")).status == 401
        right = {"Authorization": "Bearer s3cret"}
        assert (await http_client.post(url, json=request, headers=right)).status == 200

    http(service, scenario, token="s3cret")


def test_an_unexpected_failure_is_a_500_general_error() -> None:
    client = flag_client(*RAMP)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom")

    client.route = broken  # type: ignore[method-assign]

    async def scenario(http_client: TestClient[Any, Any]) -> None:
        response = await http_client.post(
            f"/ofrep/v1/evaluate/flags/{POOL_FLAG}", json={"context": {"targetingKey": "s"}}
        )
        assert response.status == 500
        assert await response.json() == {"errorDetails": "RuntimeError: boom"}

    http(OfrepService(client), scenario)


# --- binding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("myhost.example", False),
    ],
)
def test_only_loopback_binds_without_a_token(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (bind_refusal(host, None) is None) is loopback
    assert bind_refusal(host, "token") is None


# --- the live page ------------------------------------------------------------------------------


def test_the_status_follows_the_flag_and_counts_what_was_served() -> None:
    client = flag_client(*RAMP)
    service = OfrepService(client, ListSink())

    async def scenario(http_client: TestClient[Any, Any]) -> None:
        response = await http_client.get("/api/status")
        assert response.status == 200
        status = await response.json()
        assert (status["flag_version"], status["stage"], status["v2_rollout_bp"]) == (
            2,
            "ramping",
            5_000,
        )
        nothing = {"evaluations": 0, "not_modified": 0, "pools": {"v1": 0, "v2": 0}}
        assert status["served"] == nothing
        for n in range(10):
            await http_client.post(
                f"/ofrep/v1/evaluate/flags/{POOL_FLAG}", json={"context": {"targetingKey": f"s{n}"}}
            )
        client.ingest_all(changes(*RAMP, {"command": "freeze"})[2:])
        status = await (await http_client.get("/api/status")).json()
        assert (status["flag_version"], status["stage"], status["frozen"]) == (3, "frozen", True)
        pools = status["served"]["pools"]
        assert pools == {
            "v1": sum(client.decide(f"s{n}").pool == "v1" for n in range(10)),
            "v2": sum(client.decide(f"s{n}").pool == "v2" for n in range(10)),
        }

        page = await http_client.get("/")
        assert page.status == 200
        assert page.content_type == "text/html"
        assert "api/status" in await page.text()

    http(service, scenario)
