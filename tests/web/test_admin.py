"""The admin API on a real server: token, filters, replay end to end, events, and the masked config."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from gateway.clock import Clock, FakeClock, utc_text
from gateway.delivery.send import make_session
from gateway.delivery.worker import Worker
from gateway.ingest.signature import sign
from gateway.model import DeliveryFilter, DeliveryStatus
from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import LoadedConfig, load_config
from gateway.web.app import create_app
from gateway.web.keys import CONFIG, STORE, WORKER
from gateway.web.token_guesses import LIMIT, WINDOW_MS
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.delivery.test_dead_letters import BROKEN_BODY, CRM_TOKEN, EITHER_EMAIL, EMAIL, SECRETS, config_text
from tests.fakes import FakeDestination, Reply

Client = TestClient[web.Request, web.Application]
ADMIN_TOKEN = "admin-token-value-123"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ENV = {"CRM_TOKEN": CRM_TOKEN, "OLD_SECRET": "rotated-old-secret"}
ADMIN = f'admin: {{token: "{ADMIN_TOKEN}"}}\n'


@pytest.fixture
def gateway(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str, str], Path]
) -> Callable[..., Awaitable[Client]]:
    """Start a gateway on `text` (plus the admin token unless `admin` is empty); no worker unless asked."""

    async def start(text: str, admin: str = ADMIN, run_worker: bool = False, clock: Clock | None = None) -> Client:
        loaded = load_config(write_config(text + admin, "config.yaml"), environ=ENV)
        return await aiohttp_client(create_app(ConfigHolder(loaded), run_worker=run_worker, clock=clock))

    return start


def load(write_config: Callable[[str, str], Path], text: str, name: str) -> LoadedConfig:
    return load_config(write_config(text + ADMIN, name), environ=ENV)


async def post_event(client: Client, fixture: str = EMAIL) -> str:
    body = fixture_bytes(fixture)
    response = await client.post("/hooks/missive", data=body, headers={
        "X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)})  # fmt: skip
    assert response.status == 200
    event_id: str = (await response.json())["event_id"]
    return event_id


async def deliver(client: Client) -> None:
    """Run a worker until nothing is pending (the destinations here answer at once)."""
    async with make_session() as session:
        await Worker(client.app[STORE], client.app[CONFIG].active.loaded.config.destinations, session).drain()


async def wait_for_status(client: Client, status: DeliveryStatus, count: int) -> None:
    async with asyncio.timeout(10):
        while True:
            if len(await client.app[STORE].list_deliveries(DeliveryFilter(status=status))) >= count:
                return
            await asyncio.sleep(0.02)


async def ok(response: ClientResponse) -> Any:
    assert response.status == 200, await response.text()
    return await response.json()


async def error_of(response: ClientResponse, status: int) -> str:
    """The message of a JSON error answer, checking its shape on the way."""
    assert response.status == status
    document = await response.json()
    assert set(document) == {"error", "status"} and document["status"] == status
    message: str = document["error"]
    return message


async def two_dead_letters(gateway: Callable[..., Awaitable[Client]], crm: FakeDestination) -> tuple[Client, str]:
    """A gateway holding two dead deliveries (one per event); returns it and the first event's id."""
    client = await gateway(config_text(crm.url("/notes"), when=EITHER_EMAIL))
    event_id = await post_event(client)
    await post_event(client, "outgoing-email.json")
    await deliver(client)
    return client, event_id


@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", "/admin/deliveries", id="list"),
        pytest.param("POST", "/admin/replay", id="replay"),
        pytest.param("GET", "/admin/config", id="config"),
        pytest.param("DELETE", "/admin/whatever", id="anything-else"),
    ],
)
async def test_admin_api_is_off_without_a_token(
    gateway: Callable[..., Awaitable[Client]], method: str, path: str
) -> None:
    client = await gateway(config_text("http://127.0.0.1:9/"), admin="")
    message = await error_of(await client.request(method, path, headers=AUTH), 404)
    assert message == "the admin API is off; set admin.token to turn it on"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="missing"),
        pytest.param({"Authorization": "Bearer wrong-token"}, 401, id="wrong"),
        pytest.param({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, 401, id="longer"),
        pytest.param({"Authorization": f"Basic {ADMIN_TOKEN}"}, 401, id="other-scheme"),
        pytest.param({"Authorization": ADMIN_TOKEN}, 401, id="no-scheme"),
        pytest.param({"Authorization": f"Bearer {ADMIN_TOKEN}"}, 200, id="right"),
        pytest.param({"Authorization": f"bearer {ADMIN_TOKEN}"}, 200, id="scheme-is-case-insensitive"),
    ],
)
async def test_admin_api_needs_the_token(
    gateway: Callable[..., Awaitable[Client]], headers: dict[str, str], status: int
) -> None:
    client = await gateway(config_text("http://127.0.0.1:9/"))
    response = await client.get("/admin/deliveries", headers=headers)
    if status == 200:
        assert await ok(response) == {"deliveries": [], "count": 0, "limit": 100, "waiting_for_quota": []}
    else:
        assert "missing or wrong admin token" in await error_of(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_unknown_admin_paths_need_the_token_too(gateway: Callable[..., Awaitable[Client]]) -> None:
    client = await gateway(config_text("http://127.0.0.1:9/"))
    assert "missing or wrong" in await error_of(await client.get("/admin/secrets"), 401)
    message = await error_of(await client.get("/admin/secrets", headers=AUTH), 404)
    assert message == "no admin endpoint GET /admin/secrets"


async def test_token_is_compared_in_constant_time(
    gateway: Callable[..., Awaitable[Client]], monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    client = await gateway(config_text("http://127.0.0.1:9/"))
    await error_of(await client.get("/admin/config", headers={"Authorization": "Bearer guess"}), 401)
    assert compared == [(b"guess", ADMIN_TOKEN.encode())]


async def test_a_client_that_sent_too_many_wrong_tokens_waits_even_with_the_right_one(
    gateway: Callable[..., Awaitable[Client]],
) -> None:
    clock = FakeClock()
    client = await gateway(config_text("http://127.0.0.1:9/"), clock=clock)
    for n in range(LIMIT):
        await error_of(await client.get("/admin/config", headers={"Authorization": f"Bearer guess-{n}"}), 401)
        clock.advance(10)

    refused = await client.get("/admin/config", headers=AUTH)
    seconds = (WINDOW_MS - LIMIT * 10_000) // 1000  # until the first wrong token leaves the window
    assert await error_of(refused, 429) == f"too many wrong admin tokens from this address: try again in {seconds} s"
    assert refused.headers["Retry-After"] == str(seconds)
    clock.advance(seconds)
    assert (await client.get("/admin/config", headers=AUTH)).status == 200


async def test_the_right_token_starts_the_count_again(gateway: Callable[..., Awaitable[Client]]) -> None:
    client = await gateway(config_text("http://127.0.0.1:9/"), clock=FakeClock())
    for _ in range(3):
        for _ in range(LIMIT - 1):
            await error_of(await client.get("/admin/config", headers={"Authorization": "Bearer guess"}), 401)
        assert (await client.get("/admin/config", headers=AUTH)).status == 200


async def test_dead_letter_replayed_through_the_api_wakes_the_worker_and_is_delivered(
    gateway: Callable[..., Awaitable[Client]]
) -> None:
    async with FakeDestination([Reply(400, "missing field"), 200]) as crm:
        client = await gateway(config_text(crm.url("/notes")))
        async with make_session() as session:
            # It polls once an hour: only a wake-up gets the replayed delivery sent within the test.
            worker = Worker(client.app[STORE], client.app[CONFIG].active.loaded.config.destinations, session,
                            poll_interval_s=3600)  # fmt: skip
            client.app[WORKER].worker = worker
            running = asyncio.create_task(worker.run())
            await post_event(client)
            await wait_for_status(client, DeliveryStatus.DEAD, 1)
            (dead,) = (await ok(await client.get("/admin/deliveries?status=dead", headers=AUTH)))["deliveries"]
            replayed = await ok(await client.post(f"/admin/deliveries/{dead['id']}/replay", headers=AUTH))
            await wait_for_status(client, DeliveryStatus.DELIVERED, 1)
            await worker.stop()
            await running

    assert dead["last_error"] == "HTTP 400: missing field"
    assert replayed["queued"] == 1 and replayed["deliveries"][0]["outcome"] == "queued"
    assert [request.body for request in crm.received] == [crm.received[0].body] * 2
    shown = await ok(await client.get(f"/admin/deliveries/{dead['id']}", headers=AUTH))
    assert (shown["status"], [a["status_code"] for a in shown["attempt_log"]]) == ("delivered", [400, 200])


async def test_template_fix_then_rerender_through_the_api(
    gateway: Callable[..., Awaitable[Client]], write_config: Callable[[str, str], Path]
) -> None:
    async with FakeDestination([200]) as crm:
        client = await gateway(config_text(crm.url(), body=BROKEN_BODY), run_worker=True)
        event_id = await post_event(client)
        (dead,) = (await ok(await client.get("/admin/deliveries?status=dead", headers=AUTH)))["deliveries"]
        replay_path = f"/admin/deliveries/{dead['id']}/replay"
        plain = await ok(await client.post(replay_path, headers=AUTH))
        client.app[CONFIG].swap(load(write_config, config_text(crm.url()), "fixed.yaml"))  # as a reload does
        rerendered = await ok(await client.post(f"{replay_path}?rerender=true", headers=AUTH))
        await wait_for_status(client, DeliveryStatus.DELIVERED, 1)

    assert dead["request"] is None and "'nope' is undefined" in dead["last_error"]
    assert plain["deliveries"][0]["outcome"] == "skipped"
    assert rerendered["queued"] == 1
    (received,) = crm.received
    assert json.loads(received.body)["subject"] == "Order HL-20931 arrived damaged"
    assert received.headers["X-Gateway-Event-Id"] == event_id


async def test_replay_by_filter_from_a_json_body_or_the_query_queues_once(
    gateway: Callable[..., Awaitable[Client]]
) -> None:
    async with FakeDestination([400]) as crm:
        client, first_event = await two_dead_letters(gateway, crm)
    by_body = await ok(await client.post("/admin/replay", json={"status": "dead", "event_id": first_event},
                                         headers=AUTH))  # fmt: skip
    by_query = await ok(await client.post("/admin/replay?status=dead&route=vip", headers=AUTH))
    again = await ok(await client.post("/admin/replay", json={"status": "dead"}, headers=AUTH))

    assert (by_body["queued"], by_query["queued"]) == (1, 1)
    assert again == {"queued": 0, "skipped": 0, "failed": 0, "more": False, "deliveries": []}
    assert len(await client.app[STORE].list_deliveries(DeliveryFilter(status=DeliveryStatus.PENDING))) == 2


@pytest.mark.parametrize(
    ("query", "count"),
    [
        pytest.param("", 2, id="all"),
        pytest.param("?status=dead&route=vip&destination=crm", 2, id="status-route-destination"),
        pytest.param("?destination=other", 0, id="other-destination"),
        pytest.param("?status=delivered", 0, id="delivered"),
        pytest.param("?since=1h&limit=1", 1, id="since-and-limit"),
    ],
)
async def test_listing_filters(gateway: Callable[..., Awaitable[Client]], query: str, count: int) -> None:
    async with FakeDestination([400]) as crm:
        client, first_event = await two_dead_letters(gateway, crm)
    assert (await ok(await client.get(f"/admin/deliveries{query}", headers=AUTH)))["count"] == count
    by_event = await ok(await client.get(f"/admin/deliveries?event_id={first_event}", headers=AUTH))
    assert [doc["event_id"] for doc in by_event["deliveries"]] == [first_event]


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        pytest.param("GET", "/admin/deliveries?status=gone", None, "unknown status 'gone'; use one of", id="status"),
        pytest.param("GET", "/admin/deliveries?since=yesterday", None, "since: 'yesterday' is not a duration",
                     id="since"),
        pytest.param("GET", "/admin/deliveries?limit=-1", None, "limit '-1' must be a whole number", id="limit"),
        pytest.param("GET", "/admin/deliveries?rout=vip", None, "unknown filter 'rout'", id="unknown-filter"),
        pytest.param("POST", "/admin/replay", None, "replay by filter needs status dead", id="replay-everything"),
        pytest.param("POST", "/admin/replay", "[1]", "the body must be a JSON object", id="body-not-object"),
        pytest.param("POST", "/admin/replay", "{nope", "the body must be a JSON object", id="body-not-json"),
        pytest.param("POST", "/admin/replay?status=dead&rerender=maybe", None, "rerender must be true or false",
                     id="rerender-flag"),
        pytest.param("POST", "/admin/replay", '{"status": "dead", "limit": 1.5}', "limit '1.5' must be",
                     id="json-limit"),
    ],
)  # fmt: skip
async def test_bad_filters_are_400(
    gateway: Callable[..., Awaitable[Client]], method: str, path: str, body: str | None, message: str
) -> None:
    client = await gateway(config_text("http://127.0.0.1:9/"))
    response = await client.request(method, path, data=body, headers=AUTH)
    assert (await error_of(response, 400)).startswith(message)


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        pytest.param("GET", "/admin/deliveries/dlv_nope", "no delivery with id 'dlv_nope'", id="delivery"),
        pytest.param("POST", "/admin/deliveries/dlv_nope/replay", "no delivery with id 'dlv_nope'", id="replay"),
        pytest.param("GET", "/admin/events/evt_nope", "no event with id 'evt_nope'", id="event"),
    ],
)
async def test_unknown_ids_are_404(
    gateway: Callable[..., Awaitable[Client]], method: str, path: str, message: str
) -> None:
    client = await gateway(config_text("http://127.0.0.1:9/"))
    assert await error_of(await client.request(method, path, headers=AUTH), 404) == message


async def test_event_and_delivery_views_mask_secrets(gateway: Callable[..., Awaitable[Client]]) -> None:
    async with FakeDestination([Reply(400, f"bad token {CRM_TOKEN}")]) as crm:
        client, event_id = await two_dead_letters(gateway, crm)
    event = await ok(await client.get(f"/admin/events/{event_id}", headers=AUTH))
    (delivery,) = event["deliveries"]
    detail = await ok(await client.get(f"/admin/deliveries/{delivery['id']}", headers=AUTH))
    listing = await ok(await client.get("/admin/deliveries", headers=AUTH))
    replayed = await ok(await client.post(f"/admin/deliveries/{delivery['id']}/replay", headers=AUTH))

    assert event["body"] == json.loads(fixture_bytes(EMAIL))
    assert (event["id"], event["source"]) == (event_id, "missive")
    assert detail["request"]["url"].endswith("/notes?api_token=***")
    assert detail["request"]["headers"]["Authorization"] == "Bearer ***"
    assert json.loads(detail["request"]["body"]) == {"subject": "Order HL-20931 arrived damaged", "key": "***"}
    assert detail["attempt_log"][0]["response_excerpt"] == "bad token ***"
    assert replayed["queued"] == 1
    shown = json.dumps([event, detail, listing, replayed])
    assert not [secret for secret in SECRETS if secret in shown]


SECRET_CONFIG = """\
sources:
  missive: {secrets: ["fixture-secret-do-not-use", "${OLD_SECRET}"]}
destinations:
  crm:
    url: "https://api.crm.example/notes?api_token=querysecret123"
    headers: {Authorization: "Bearer literal-crm-bearer", X-Team: support}
    sign: {secret: outbound-signing-key}
  chat: {type: discord, url: "https://discord.com/api/webhooks/123/discordwebhooktoken"}
  inbox: {type: missive, token: missive-api-token}
  sf:
    url: https://sf.example/services/data
    auth: {type: oauth2_client_credentials, token_url: https://sf.example/token, client_id: gw,
           client_secret: oauth-client-secret}
  basic: {url: "https://basic.example/", auth: {type: basic, username: api, password: basic-password}}
routes:
  - name: vip
    send: [{to: crm, body: {team: "{{ conversation.team.name }}"}}]
"""
CONFIG_SECRETS = [
    ADMIN_TOKEN, FIXTURE_SECRET, "rotated-old-secret", "querysecret123", "literal-crm-bearer", "outbound-signing-key",
    "discordwebhooktoken", "missive-api-token", "oauth-client-secret", "basic-password",
]


async def test_config_shows_every_secret_masked(gateway: Callable[..., Awaitable[Client]]) -> None:
    client = await gateway(SECRET_CONFIG)
    response = await client.get("/admin/config", headers=AUTH)
    text = await response.text()
    config = (await ok(response))["config"]

    assert not [secret for secret in CONFIG_SECRETS if secret in text]
    assert config["admin"]["token"] == "***"
    assert config["sources"]["missive"]["secrets"] == ["***", "***"]
    assert config["destinations"]["crm"]["sign"]["secret"] == "***"
    assert config["destinations"]["inbox"]["token"] == "***"
    assert config["destinations"]["sf"]["auth"]["client_secret"] == "***"
    assert config["destinations"]["basic"]["auth"] == {**config["destinations"]["basic"]["auth"], "password": "***",
                                                       "username": "api"}
    assert config["destinations"]["crm"]["headers"] == {"Authorization": "Bearer ***", "X-Team": "support"}
    assert config["destinations"]["crm"]["url"] == "https://api.crm.example/notes?api_token=***"
    assert config["destinations"]["chat"]["url"] == "https://discord.com/api/webhooks/123/***"
    assert config["routes"][0]["send"][0]["body"] == {"team": "{{ conversation.team.name }}"}
    assert config["routes"][0]["continue"] is True
    assert config["storage"]["retention"] == 7 * 86400


async def test_deliveries_queued_under_an_earlier_config_stay_masked_after_a_reload(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str, str], Path]
) -> None:
    """The stored request carries the key of the config it was rendered under; a reload must not unmask it."""
    text = config_text("http://127.0.0.1:9/crm").replace("api_token=", "k=${CRM_KEY}&api_token=")
    old_key, new_key = "old-crm-key-value-1", "new-crm-key-value-2"
    first = load_config(write_config(text + ADMIN, "config.yaml"), environ={**ENV, "CRM_KEY": old_key})
    holder = ConfigHolder(first)
    client = await aiohttp_client(create_app(holder, run_worker=False))
    await post_event(client)
    holder.swap(load_config(write_config(text + ADMIN, "config.yaml"), environ={**ENV, "CRM_KEY": new_key}))
    listed = json.dumps(await ok(await client.get("/admin/deliveries", headers=AUTH)))
    assert "k=***&" in listed
    assert old_key not in listed and new_key not in listed


async def test_deliveries_and_destinations_say_waiting_for_quota_until(
    gateway: Callable[..., Awaitable[Client]],
) -> None:
    async with FakeDestination([Reply(429, "daily limit reached", {"Retry-After": "3600"})]) as crm:
        client = await gateway(config_text(crm.url("/notes")), run_worker=True)
        await post_event(client)
        await crm.wait_for_requests(1)
        async with asyncio.timeout(10):
            while True:  # the worker records the attempt and the pause just after the answer
                if await client.app[STORE].pauses(0):
                    break
                await asyncio.sleep(0.02)

        listed = await ok(await client.get("/admin/deliveries", headers=AUTH))
        destinations = await ok(await client.get("/admin/destinations", headers=AUTH))

    [delivery] = listed["deliveries"]
    until_ms = delivery["waiting_for_quota_until_ms"]
    assert (delivery["status"], delivery["attempts"], delivery["quota_waits"]) == ("pending", 0, 1)
    assert delivery["last_error"] == f"waiting for quota until {utc_text(until_ms)}: HTTP 429: daily limit reached"
    [waiting] = listed["waiting_for_quota"]
    assert waiting == {"destination": "crm", "until_ms": until_ms, "reason": "HTTP 429: daily limit reached",
                       "text": f"waiting for quota until {utc_text(until_ms)}: HTTP 429: daily limit reached"}
    assert destinations == {"destinations": [
        {"name": "crm", "type": "http", "waiting_for_quota": waiting},
        {"name": "other", "type": "http", "waiting_for_quota": None},
    ]}  # fmt: skip
