"""Webhook ingest against a real server and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.ingest.signature import sign
from gateway.model import DeliveryFilter, DeliveryStatus
from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import load_config
from gateway.store.sqlite import SqliteStore
from gateway.web.app import create_app
from gateway.web.keys import STORE
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.store.test_sqlite_file import overwrite_pages_of, store_with_pending

CONFIG = f"""\
server: {{max_body: 64KiB}}
storage: {{path: gateway.db}}
sources:
  missive:
    secrets: ["old-secret-rotated-out", "{FIXTURE_SECRET}"]
    dedupe_window: 10m
  open:
    path: /hooks/unsigned
destinations:
  slack: {{type: slack, url: "http://127.0.0.1:9/slack"}}
  crm: {{url: "http://127.0.0.1:9/crm"}}
routes:
  - name: vip
    source: missive
    when: {{path: "$.conversation.shared_labels[*].name", equals: VIP}}
    send:
      - to: slack
        body: {{text: "VIP: {{{{ message.subject }}}}", at: "{{{{ message.delivered_at }}}}"}}
      - to: crm
        body: {{note: "{{{{ message.no_such_field }}}}"}}
  - name: every-event
    source: missive
    send: [{{to: crm}}]
  - name: open-route
    source: open
    send: [{{to: crm}}]
"""

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[], Awaitable[Client]]


@pytest.fixture
def make_client(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str], Path]
) -> MakeClient:
    async def make() -> Client:
        loaded = load_config(write_config(CONFIG), environ={})
        return await aiohttp_client(create_app(ConfigHolder(loaded)))

    return make


def signed(body: bytes, secret: str = FIXTURE_SECRET) -> dict[str, str]:
    return {"X-Hook-Signature": sign(secret.encode(), body), "Content-Type": "application/json"}


async def assert_error(response: Any, status: int, fragment: str) -> None:
    """Every error answers the same JSON shape."""
    assert response.status == status
    body = await response.json()
    assert set(body) == {"error", "status"}
    assert body["status"] == status
    assert fragment in body["error"]


async def stored_deliveries(client: Client) -> list[Any]:
    return await client.app[STORE].list_deliveries(DeliveryFilter())


async def test_signed_event_is_routed_rendered_and_stored(make_client: MakeClient) -> None:
    client = await make_client()
    body = fixture_bytes("incoming-email-with-labels.json")
    assert signed(body)["X-Hook-Signature"] == (
        "sha256=5fbffe3545047b6bffed5f68d3650c28c38d78e1046c2e8b85b77f69004a3d65"
    )
    response = await client.post("/hooks/missive", data=body, headers=signed(body))
    assert response.status == 200
    answer = await response.json()
    assert answer["deliveries"] == 3
    event = await client.app[STORE].get_event(answer["event_id"])
    assert event is not None and event.body == body and event.source == "missive"
    by_route = {(d.route, d.destination): d for d in await stored_deliveries(client)}
    slack = by_route[("vip", "slack")]
    assert slack.status is DeliveryStatus.PENDING and slack.request is not None
    assert json.loads(slack.request.body) == {"text": "VIP: Order HL-20931 arrived damaged", "at": 1717401195}
    assert slack.request.headers["X-Gateway-Event-Id"] == answer["event_id"]
    broken = by_route[("vip", "crm")]
    assert broken.status is DeliveryStatus.DEAD and broken.request is None
    assert broken.last_error is not None and "no_such_field" in broken.last_error
    assert by_route[("every-event", "crm")].status is DeliveryStatus.PENDING


async def test_event_is_durable_when_the_answer_arrives(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client()
    body = fixture_bytes("new-comment.json")
    response = await client.post("/hooks/missive", data=body, headers=signed(body))
    event_id = (await response.json())["event_id"]
    # closing(): a connection's own `with` ends a transaction but leaves the connection open.
    with closing(sqlite3.connect(tmp_path / "gateway.db")) as other_reader:
        rows = other_reader.execute("SELECT count(*) FROM events WHERE id = ?", (event_id,)).fetchone()
    assert rows == (1,)


async def test_a_second_secret_also_signs(make_client: MakeClient) -> None:
    client = await make_client()
    body = fixture_bytes("new-comment.json")
    response = await client.post("/hooks/missive", data=body, headers=signed(body, "old-secret-rotated-out"))
    assert response.status == 200


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        pytest.param({}, "missing X-Hook-Signature", id="missing"),
        pytest.param({"X-Hook-Signature": "sha256=" + "0" * 64}, "does not match", id="wrong"),
        pytest.param({"X-Hook-Signature": "md5=abc"}, "sha256=<hex>", id="malformed"),
        pytest.param(signed(b"other body"), "does not match", id="other-body"),
    ],
)
async def test_bad_signature_is_401_and_nothing_is_stored(
    make_client: MakeClient, headers: dict[str, str], fragment: str
) -> None:
    client = await make_client()
    body = fixture_bytes("incoming-email-with-labels.json")
    response = await client.post("/hooks/missive", data=body, headers=headers)
    await assert_error(response, 401, fragment)
    assert await stored_deliveries(client) == []
    assert (await client.app[STORE].stats()).pending == 0


async def test_body_over_max_body_is_413(make_client: MakeClient) -> None:
    client = await make_client()
    big = b'{"rule": {"type": "x"}, "pad": "' + b"x" * 70_000 + b'"}'
    await assert_error(await client.post("/hooks/missive", data=big, headers=signed(big)), 413, "max_body")

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 10_000

    await assert_error(await client.post("/hooks/missive", data=chunks()), 413, "max_body")
    assert await stored_deliveries(client) == []


async def test_invalid_json_is_400_with_a_reason(make_client: MakeClient) -> None:
    client = await make_client()
    body = b'{"rule": '
    await assert_error(await client.post("/hooks/missive", data=body, headers=signed(body)), 400, "not valid JSON")


@pytest.mark.parametrize("body", [b"", b"{}", b"{}\n", b'{"hello": "missive"}', b"[1, 2]"])
async def test_validation_requests_get_200_and_route_nothing(make_client: MakeClient, body: bytes) -> None:
    client = await make_client()
    response = await client.post("/hooks/missive", data=body, headers=signed(body))
    assert response.status == 200
    assert (await response.json())["deliveries"] == 0
    assert await stored_deliveries(client) == []


async def test_same_body_within_window_is_routed_once(make_client: MakeClient) -> None:
    client = await make_client()
    body = fixture_bytes("incoming-email-with-labels.json")
    first = await (await client.post("/hooks/missive", data=body, headers=signed(body))).json()
    again = await client.post("/hooks/missive", data=body, headers=signed(body))
    assert again.status == 200
    assert await again.json() == {"event_id": first["event_id"], "duplicate": True, "deliveries": 0}
    assert len(await stored_deliveries(client)) == first["deliveries"]


async def test_unsigned_source_accepts_and_warns(make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        client = await make_client()
    assert any("SOURCE open HAS NO SECRETS" in record.message for record in caplog.records)
    assert any("POST /hooks/unsigned" in record.message for record in caplog.records)
    body = fixture_bytes("team-change.json")
    response = await client.post("/hooks/unsigned", data=body)
    assert response.status == 200
    assert (await response.json())["deliveries"] == 1


async def test_unknown_path_and_method_answer_json(make_client: MakeClient) -> None:
    client = await make_client()
    await assert_error(await client.post("/hooks/nobody", data=b"{}"), 404, "/hooks/nobody")
    await assert_error(await client.get("/hooks/missive"), 405, "")


async def test_health_and_readiness(make_client: MakeClient) -> None:
    client = await make_client()
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json()) == {"status": "ready"}


async def test_a_template_failing_at_ingest_is_a_warning_and_a_dead_delivery_in_metrics(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    body = fixture_bytes("incoming-email-with-labels.json")
    with caplog.at_level(logging.INFO, logger="gateway.ingest"):
        assert (await client.post("/hooks/missive", data=body, headers=signed(body))).status == 200
    dead = [record for record in caplog.records if record.name == "gateway.ingest" and record.levelname == "WARNING"]
    assert len(dead) == 1
    line = dead[0].getMessage()
    assert "route=vip" in line and "destination=crm" in line and "has no attribute 'no_such_field'" in line
    metrics = await (await client.get("/metrics")).text()
    assert 'gateway_deliveries_total{destination="crm",outcome="dead"} 1.0' in metrics
    assert 'gateway_deliveries_total{destination="slack",outcome="dead"} 0.0' in metrics


async def test_a_store_the_worker_cannot_read_is_not_ready_and_ingest_answers_503(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    """Damage the start-up check had no time to find: /readyz says so and no event gets a 200 it would not keep."""
    path = tmp_path / "gateway.db"
    await store_with_pending(path)
    overwrite_pages_of(path, "deliveries_due")  # what the worker reads to know when work is due
    config = write_config(f"""\
        sources: {{missive: {{secrets: ["{FIXTURE_SECRET}"]}}}}
        destinations: {{crm: {{url: "http://127.0.0.1:9/crm"}}}}
        routes: [{{name: broken, send: [{{to: crm, body: {{x: "{{{{ no_such_name }}}}"}}}}]}}]
        """)  # only dead deliveries: storing this event writes nothing the damage is in
    loaded = load_config(config, environ={})
    client = await aiohttp_client(create_app(ConfigHolder(loaded), store=SqliteStore(path, check_budget_s=0)))
    async with asyncio.timeout(10):  # until the worker's own reads have met the damage (readyz's ping may first)
        while "the worker cannot read" not in await (ready := await client.get("/readyz")).text():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    await assert_error(ready, 503, "database disk image is malformed")
    body = fixture_bytes("new-comment.json")  # its deliveries would be stored as if all were well
    await assert_error(await client.post("/hooks/missive", data=body, headers=signed(body)), 503, "cannot")
