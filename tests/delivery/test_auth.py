"""Destination auth at send time: fixed bearer and basic credentials, and OAuth2 client credentials against a fake
provider that counts token requests, expires tokens and answers 401 to stale ones."""

from __future__ import annotations

import base64
import logging
from typing import Any
from urllib.parse import parse_qs

import pytest

from gateway.clock import FakeClock, utc_text
from gateway.config.schema import DestinationConfig
from gateway.model import DeliveryStatus
from tests.delivery.conftest import Rig, destination
from tests.fakes import FakeDestination, FakeOAuthApi, Reply, json_reply

CLIENT_ID = "gateway-client"
CLIENT_SECRET = "client-secret-9Qx"


def oauth(provider: FakeOAuthApi, **fields: Any) -> DestinationConfig:
    auth = {"type": "oauth2_client_credentials", "token_url": provider.url("/oauth/token"), "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET, **fields.pop("auth", {})}
    return destination(url=provider.url("/api/contacts"), auth=auth, **fields)


def fake_clock(rig: Rig) -> FakeClock:
    assert isinstance(rig.clock, FakeClock)
    return rig.clock


def form_of(body: bytes) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(body.decode(), strict_parsing=True).items()}


# --- fixed credentials -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param({"token": "xoxb-1-2"}, "Bearer xoxb-1-2", id="token"),
        pytest.param({"auth": {"type": "bearer", "token": "tok{{en}}"}}, "Bearer tok{{en}}", id="bearer-as-written"),
        pytest.param({"auth": {"type": "basic", "username": "api", "password": "pa:ss"}},
                     "Basic " + base64.b64encode(b"api:pa:ss").decode(), id="basic"),
    ],
)
async def test_fixed_credentials_are_added_when_sent(rig: Rig, config: dict[str, Any], expected: str) -> None:
    async with FakeDestination([200]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url())
        await rig.worker({"crm": destination(**config)}).drain()

    [received] = fake.received
    assert received.headers.getall("Authorization") == [expected]
    assert (await rig.delivery(delivery_id)).status is DeliveryStatus.DELIVERED


async def test_the_current_credentials_replace_a_stored_authorization(rig: Rig) -> None:
    """Deliveries queued before an upgrade (or a token rotation) go out with the credentials in force."""
    async with FakeDestination([200]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url())
        delivery = await rig.delivery(delivery_id)
        assert delivery.request is not None
        await rig.store.requeue([delivery_id], rig.clock.now_ms(), {delivery_id: type(delivery.request)(
            "POST", fake.url(), {"authorization": "Bearer old-token"}, b"{}")})
        await rig.worker({"crm": destination(token="new-token")}).drain()

    assert fake.received[0].headers.getall("Authorization") == ["Bearer new-token"]


# --- OAuth2 client credentials ---------------------------------------------------------------------------------------


async def test_one_token_request_serves_many_concurrent_deliveries(rig: Rig) -> None:
    async with FakeOAuthApi(fake_clock(rig), token_delay_s=0.05) as provider:
        ids = await rig.enqueue("crm", provider.url("/api/contacts"), count=12)
        config = oauth(provider, concurrency=6, auth={"scope": "api write", "audience": "https://api.example"})
        await rig.worker({"crm": config}).drain()

    assert [(await rig.delivery(i)).status for i in ids] == [DeliveryStatus.DELIVERED] * 12
    [token_request] = provider.token_requests
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form_of(token_request.body) == {
        "grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "scope": "api write", "audience": "https://api.example",
    }
    assert len(provider.authorized) == len(provider.api_requests) == 12
    assert len({request.headers["Authorization"] for request in provider.api_requests}) == 1


async def test_client_auth_basic_sends_the_client_as_http_basic(rig: Rig) -> None:
    secret = "s3cret:with/odd&chars"
    async with FakeOAuthApi(fake_clock(rig), client_secret=secret) as provider:
        [delivery_id] = await rig.enqueue("crm", provider.url("/api/contacts"))
        config = oauth(provider, auth={"client_auth": "basic", "client_secret": secret})
        await rig.worker({"crm": config}).drain()

    assert (await rig.delivery(delivery_id)).status is DeliveryStatus.DELIVERED
    [token_request] = provider.token_requests
    assert form_of(token_request.body) == {"grant_type": "client_credentials"}
    assert token_request.headers["Authorization"].startswith("Basic ")


async def test_a_token_is_kept_until_shortly_before_it_expires(rig: Rig) -> None:
    clock = fake_clock(rig)
    async with FakeOAuthApi(clock, lifetime_s=3600) as provider:
        worker = rig.worker({"crm": oauth(provider)})
        for advance_s, token_requests in ((0, 1), (3500, 1), (50, 2), (1800, 2)):
            clock.advance(advance_s)
            await rig.enqueue("crm", provider.url("/api/contacts"))
            await worker.drain()
            assert len(provider.token_requests) == token_requests

    assert len(provider.api_requests) == len(provider.authorized) == 4  # renewed before expiry: never a 401
    assert rig.finished(DeliveryStatus.DELIVERED) == 4


async def test_a_401_renews_the_token_once_and_sends_again_in_the_same_attempt(rig: Rig) -> None:
    """Tokens without expires_in (Salesforce's) last until the API says 401; the deliveries that meet it at
    the same moment share one new token, and none of them spends an attempt on it."""
    session_expired = json_reply(401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    async with FakeOAuthApi(fake_clock(rig), lifetime_s=None, unauthorized=session_expired,
                            token_delay_s=0.05) as provider:
        worker = rig.worker({"crm": oauth(provider, concurrency=5)})
        await rig.enqueue("crm", provider.url("/api/contacts"))
        await worker.drain()
        provider.revoke_all()
        ids = await rig.enqueue("crm", provider.url("/api/contacts"), count=5)
        await worker.drain()

    assert len(provider.token_requests) == 2
    assert [(await rig.delivery(i)).attempts for i in ids] == [1] * 5
    assert [(await rig.delivery(i)).status for i in ids] == [DeliveryStatus.DELIVERED] * 5
    assert [[a.status_code for a in await rig.attempts(i)] for i in ids] == [[201]] * 5
    assert len(provider.authorized) == 6 and len(provider.api_requests) == 11  # five 401s, each sent again


async def test_a_401_to_a_new_token_is_a_dead_letter(rig: Rig) -> None:
    forbidden = json_reply(401, {"error": "insufficient_scope"})
    async with FakeOAuthApi(fake_clock(rig), api_script=[forbidden]) as provider:
        [delivery_id] = await rig.enqueue("crm", provider.url("/api/contacts"))
        await rig.worker({"crm": oauth(provider)}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DEAD, 1)
    assert delivery.last_error == 'HTTP 401: {"error": "insufficient_scope"}'
    assert len(provider.token_requests) == 2 and len(provider.api_requests) == 2


async def test_a_failing_token_endpoint_is_retried_like_a_destination(rig: Rig) -> None:
    failures = [Reply(503, "upstream unavailable"), json_reply(429, {"error": "slow_down"}, {"Retry-After": "30"})]
    async with FakeOAuthApi(fake_clock(rig), token_failures=failures) as provider:
        [delivery_id] = await rig.enqueue("crm", provider.url("/api/contacts"))
        await rig.worker({"crm": oauth(provider)}).drain()

    attempts = await rig.attempts(delivery_id)
    waited_until = utc_text(attempts[1].started_at_ms + 30_000)
    assert [(a.status_code, a.error) for a in attempts] == [
        (None, "token: HTTP 503: upstream unavailable"),
        (None, f'waiting for quota until {waited_until}: token: HTTP 429: {{"error": "slow_down"}}'),
        (201, None),
    ]
    assert attempts[2].started_at_ms - attempts[1].started_at_ms >= 30_000
    delivered = await rig.delivery(delivery_id)
    assert (delivered.status, delivered.attempts, delivered.quota_waits) == (DeliveryStatus.DELIVERED, 2, 1)
    assert len(provider.api_requests) == 1


async def test_a_rejected_client_is_a_dead_letter_at_once(rig: Rig) -> None:
    async with FakeOAuthApi(fake_clock(rig), client_secret="the-right-one") as provider:
        [delivery_id] = await rig.enqueue("crm", provider.url("/api/contacts"))
        await rig.worker({"crm": oauth(provider)}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DEAD, 1)
    assert delivery.last_error == (
        'token: HTTP 400: {"error": "invalid_client", "error_description": "invalid client credentials"}'
    )
    assert provider.api_requests == []


async def test_a_token_the_api_echoes_is_masked_in_attempts_and_logs(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.worker")
    echo = Reply(400, "bad request from {authorization}")
    async with FakeOAuthApi(fake_clock(rig), api_script=[echo]) as provider:
        [delivery_id] = await rig.enqueue("crm", provider.url("/api/contacts"))
        await rig.worker({"crm": oauth(provider)}).drain()

    sent = provider.api_requests[0].headers["Authorization"].removeprefix("Bearer ")
    delivery = await rig.delivery(delivery_id)
    [attempt] = await rig.attempts(delivery_id)
    assert delivery.last_error == attempt.error == "HTTP 400: bad request from Bearer ***"
    assert attempt.response_excerpt == "bad request from Bearer ***"
    assert sent not in caplog.text and "bad request from Bearer ***" in caplog.text
