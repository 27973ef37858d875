"""A destination that is down for a few seconds, then back: everything arrives, nothing is dead-lettered,
and a healthy destination fed by the same events is not held up meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from gateway.ingest.signature import sign
from gateway.model import Delivery, DeliveryFilter, DeliveryStatus
from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import load_config
from gateway.web.app import create_app
from gateway.web.keys import STORE
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.fakes import refused_url
from tests.sink import Sink

EVENTS = 20
OUTAGE_S = 3.0

Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[web.Application], Awaitable[Client]]
ServerFactory = Callable[..., Awaitable[TestServer]]


def config_text(down_url: str, healthy_url: str) -> str:
    return f"""\
storage: {{path: gateway.db}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  down:
    url: "{down_url}"
    retry: {{attempts: 50, backoff: 100ms, max_backoff: 500ms}}
  healthy:
    url: "{healthy_url}"
    retry: {{attempts: 50, backoff: 100ms, max_backoff: 500ms}}
routes:
  - name: both
    send:
      - {{to: down, body: {{seq: "{{{{ outage_test.seq }}}}"}}}}
      - {{to: healthy, body: {{seq: "{{{{ outage_test.seq }}}}"}}}}
"""


async def post_events(client: Client, count: int) -> list[str]:
    """POST `count` distinct signed events; returns their event ids."""
    payload = json.loads(fixture_bytes("incoming-email-with-labels.json"))
    event_ids = []
    for seq in range(count):
        body = json.dumps({**payload, "outage_test": {"seq": seq}}).encode()
        answer = await client.post("/hooks/missive", data=body, headers={
            "X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)})
        assert answer.status == 200, await answer.text()
        event_ids.append((await answer.json())["event_id"])
    return event_ids


async def deliveries(client: Client, **where: Any) -> list[Delivery]:
    return await client.app[STORE].list_deliveries(DeliveryFilter(**where))


async def wait_for_delivered(client: Client, destination: str, count: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if len(await deliveries(client, destination=destination, status=DeliveryStatus.DELIVERED)) >= count:
                return
            await asyncio.sleep(0.05)


async def test_a_destination_down_for_seconds_gets_everything_once_back_and_the_other_is_not_held_up(
    aiohttp_client: ClientFactory, aiohttp_server: ServerFactory, write_config: Callable[[str], Path]
) -> None:
    down_url = URL(refused_url("/down"))
    healthy = Sink()
    healthy_server = await aiohttp_server(healthy.app())
    loaded = load_config(write_config(config_text(str(down_url), str(healthy_server.make_url("/healthy")))), environ={})
    client = await aiohttp_client(create_app(ConfigHolder(loaded)))
    outage_started_s = time.time()
    event_ids = await post_events(client, EVENTS)

    await wait_for_delivered(client, "healthy", EVENTS, timeout_s=OUTAGE_S)
    healthy_done_s = time.time()
    assert await deliveries(client, destination="down", status=DeliveryStatus.DELIVERED) == []
    await asyncio.sleep(max(0.0, outage_started_s + OUTAGE_S - time.time()))

    back = Sink()
    back_at_s = time.time()
    await aiohttp_server(back.app(), port=down_url.port)
    await wait_for_delivered(client, "down", EVENTS, timeout_s=10)

    assert healthy_done_s < back_at_s
    assert max(arrival.at_s for arrival in healthy.arrivals) < back_at_s
    assert sorted(arrival.event_id for arrival in back.arrivals) == sorted(event_ids)  # each once, none lost
    assert await deliveries(client, status=DeliveryStatus.DEAD) == []
    for delivery in await deliveries(client, destination="down"):
        attempts = await client.app[STORE].list_attempts(delivery.id)
        assert len(attempts) >= 2 and attempts[-1].status_code == 200
        refused = [attempt for attempt in attempts[:-1] if "cannot connect" in (attempt.error or "")]
        assert refused == attempts[:-1]
