"""The whole path in one process: signed webhook in, rendered request out at a real destination."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.ingest.signature import sign
from gateway.model import DeliveryFilter, DeliveryStatus
from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import load_config
from gateway.web.app import create_app
from gateway.web.keys import STORE
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.fakes import FakeDestination, Reply, slack_ok
from tests.processes import GatewayProcess, free_port

Client = TestClient[web.Request, web.Application]


def config_text(slack_url: str, crm_url: str) -> str:
    return f"""\
storage: {{path: gateway.db}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  slack: {{type: slack, url: "{slack_url}"}}
  crm:
    url: "{crm_url}"
    headers: {{Authorization: "Bearer crm-token"}}
    retry: {{attempts: 3, backoff: 10ms, max_backoff: 50ms}}
routes:
  - name: vip
    when: {{path: "$.conversation.shared_labels[*].name", equals: VIP}}
    send:
      - to: slack
        body: {{text: "VIP: {{{{ message.subject }}}}"}}
      - to: crm
        body: {{email: "{{{{ message.from_field.address }}}}", at: "{{{{ message.delivered_at }}}}"}}
"""


async def count_with_status(client: Client, status: DeliveryStatus) -> int:
    return len(await client.app[STORE].list_deliveries(DeliveryFilter(status=status)))


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll until `check` holds (the store, which says a delivery was recorded, or a process's log)."""
    async with asyncio.timeout(10):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def wait_for_status(client: Client, status: DeliveryStatus, count: int) -> None:
    async def reached() -> bool:
        return await count_with_status(client, status) >= count

    await eventually(reached)


async def test_event_is_delivered_to_every_destination(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str], Path]
) -> None:
    async with FakeDestination([slack_ok()]) as slack, FakeDestination([503, 201]) as crm:
        loaded = load_config(write_config(config_text(slack.url("/slack"), crm.url("/notes"))), environ={})
        client = await aiohttp_client(create_app(ConfigHolder(loaded)))
        body = fixture_bytes("incoming-email-with-labels.json")
        response = await client.post("/hooks/missive", data=body, headers={"X-Hook-Signature": sign(
            FIXTURE_SECRET.encode(), body)})
        event_id = (await response.json())["event_id"]
        await wait_for_status(client, DeliveryStatus.DELIVERED, 2)
    assert json.loads(slack.received[0].body) == {"text": "VIP: Order HL-20931 arrived damaged"}
    assert [json.loads(request.body) for request in crm.received] == [
        {"email": "priya.natarajan@example.org", "at": 1717401195}
    ] * 2
    assert crm.received[0].headers["Authorization"] == "Bearer crm-token"
    assert crm.received[1].headers["Idempotency-Key"] == crm.received[0].headers["Idempotency-Key"]
    assert slack.received[0].headers["X-Gateway-Event-Id"] == event_id
    crm_delivery = (await client.app[STORE].list_deliveries(DeliveryFilter(destination="crm")))[0]
    attempts = await client.app[STORE].list_attempts(crm_delivery.id)
    assert [attempt.status_code for attempt in attempts] == [503, 201]


async def test_receiver_and_worker_split_across_two_apps_share_the_store(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str], Path]
) -> None:
    """`serve --no-worker` stores; `gateway worker` (no ingest route) delivers from the same file."""
    async with FakeDestination([slack_ok()]) as slack, FakeDestination([201]) as crm:
        path = write_config(config_text(slack.url("/slack"), crm.url("/notes")))
        receiver = await aiohttp_client(create_app(ConfigHolder(load_config(path, environ={})), run_worker=False))
        body = fixture_bytes("incoming-email-with-labels.json")
        headers = {"X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)}
        assert (await receiver.post("/hooks/missive", data=body, headers=headers)).status == 200
        worker = await aiohttp_client(create_app(ConfigHolder(load_config(path, environ={})), receive=False))
        assert (await worker.post("/hooks/missive", data=body, headers=headers)).status == 404
        assert (await worker.get("/healthz")).status == 200
        await wait_for_status(worker, DeliveryStatus.DELIVERED, 2)
    assert len(slack.received) == 1 and len(crm.received) == 1


async def test_delivered_events_are_pruned_after_the_retention_and_dead_letters_stay(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str], Path]
) -> None:
    async with FakeDestination([slack_ok()]) as slack, FakeDestination([400]) as crm:
        text = config_text(slack.url("/slack"), crm.url("/notes"))
        first = await aiohttp_client(create_app(ConfigHolder(load_config(write_config(text), environ={}))))
        body = fixture_bytes("incoming-email-with-labels.json")
        response = await first.post("/hooks/missive", data=body, headers={"X-Hook-Signature": sign(
            FIXTURE_SECRET.encode(), body)})
        event_id = (await response.json())["event_id"]
        await wait_for_status(first, DeliveryStatus.DELIVERED, 1)
        await wait_for_status(first, DeliveryStatus.DEAD, 1)
        await first.close()
        # The worker prunes when it starts, then every ten minutes.
        short = text.replace("storage: {path: gateway.db}", "storage: {path: gateway.db, retention: 1ms}")
        second = await aiohttp_client(create_app(ConfigHolder(load_config(write_config(short), environ={}))))

        async def pruned() -> bool:
            return await count_with_status(second, DeliveryStatus.DELIVERED) == 0

        await eventually(pruned)
    dead = await second.app[STORE].list_deliveries(DeliveryFilter(status=DeliveryStatus.DEAD))
    assert [delivery.destination for delivery in dead] == ["crm"]
    assert await second.app[STORE].get_event(event_id) is not None  # kept for its dead letter's replay


async def test_a_send_without_a_body_form_forwards_the_bytes_received(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str], Path]
) -> None:
    """Not re-serialised: a big integer keeps its digits and the receiver can check Missive's signature again."""
    async with FakeDestination([200]) as audit:
        loaded = load_config(write_config(f"""\
            storage: {{path: gateway.db}}
            sources:
              missive: {{secrets: ["{FIXTURE_SECRET}"]}}
            destinations:
              audit: {{url: "{audit.url('/audit')}"}}
            routes:
              - name: everything
                send: [{{to: audit}}]
            """), environ={})
        client = await aiohttp_client(create_app(ConfigHolder(loaded)))
        body = b'{ "rule": {"type": "incoming_email"},\n  "conversation": {"id": 123456789012345678901234567890},'
        body += ' "note": "caf\\u00e9 é" }\n'.encode()
        signature = sign(FIXTURE_SECRET.encode(), body)
        response = await client.post("/hooks/missive", data=body, headers={"X-Hook-Signature": signature})
        assert response.status == 200
        await wait_for_status(client, DeliveryStatus.DELIVERED, 1)
    assert audit.received[0].body == body
    assert sign(FIXTURE_SECRET.encode(), audit.received[0].body) == signature


async def test_runaway_templates_are_dead_letters_while_health_answers_and_the_rest_goes_out(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str], Path]
) -> None:
    """Rendering runs off the event loop under server.render_timeout and render_max_bytes."""
    async with FakeDestination([200]) as crm:
        loaded = load_config(write_config(f"""\
            server: {{render_timeout: 1s, render_max_bytes: 64KiB}}
            storage: {{path: gateway.db}}
            sources:
              missive: {{secrets: ["{FIXTURE_SECRET}"]}}
            destinations:
              crm: {{url: "{crm.url('/notes')}"}}
            routes:
              - name: spin
                send:
                  - to: crm
                    template: "{{% for i in range(100000) %}}{{% for j in range(100000) %}}{{% endfor %}}{{% endfor %}}"
              - name: blow-up
                send: [{{to: crm, body: {{text: "{{{{ 'a' * payload.n }}}}"}}}}]
              - name: fine
                send: [{{to: crm, body: {{subject: "{{{{ message.subject }}}}"}}}}]
            """), environ={})
        client = await aiohttp_client(create_app(ConfigHolder(loaded)))
        body = json.dumps({"rule": {"type": "incoming_email"}, "message": {"subject": "hi"}, "n": 10**12}).encode()
        posting = asyncio.ensure_future(client.post("/hooks/missive", data=body, headers={
            "X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)}))
        health_answers = 0
        while not posting.done():  # the render of `spin` takes its whole second
            assert (await client.get("/healthz")).status == 200
            health_answers += not posting.done()
            await asyncio.sleep(0.02)
        assert (await posting).status == 200
        await wait_for_status(client, DeliveryStatus.DELIVERED, 1)
        dead = {delivery.route: delivery.last_error for delivery in await client.app[STORE].list_deliveries(
            DeliveryFilter(status=DeliveryStatus.DEAD))}
    assert health_answers >= 3  # the event loop kept answering while the render ran
    assert dead == {
        "spin": "routes[0].send[0].template: rendering took longer than the 1 s allowed (server.render_timeout)",
        "blow-up": "routes[1].send[0].body: rendering made more than the 65536 bytes allowed "
                   "(server.render_max_bytes)",
    }
    assert [json.loads(request.body) for request in crm.received] == [{"subject": "hi"}]


async def test_a_real_process_says_where_it_listens_and_what_it_leaves_queued(tmp_path: Path) -> None:
    """Start-up names the address; SIGTERM lets the attempt in flight finish and says what stays queued."""
    async with FakeDestination([Reply(200, delay_s=1.0)]) as slow:
        config = tmp_path / "config.yaml"
        config.write_text(f"""\
storage: {{path: gateway.db}}
server: {{shutdown_grace: 10s}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  slow: {{url: "{slow.url()}", concurrency: 1}}
routes:
  - name: all
    send: [{{to: slow}}]
""", encoding="utf-8")
        port = free_port()
        async with GatewayProcess(config, port, tmp_path / "gateway.log") as gateway:
            await gateway.start()
            async with aiohttp.ClientSession() as session:
                for n in range(3):
                    body = fixture_bytes("new-comment.json") + b" " * n  # three distinct events
                    headers = {"X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)}
                    async with session.post(gateway.url("/hooks/missive"), data=body, headers=headers) as answer:
                        assert answer.status == 200
            await slow.wait_for_requests(1)  # one attempt in flight (concurrency 1), two waiting
            assert await gateway.stop() == 0
            log = gateway.tail()

    assert f"listening on http://0.0.0.0:{port}" in log
    assert "delivery worker stopped; attempts in flight: 1 finished, 0 cut short" in log
    assert "shutdown: 2 deliveries stay queued for the next start, 0 dead letters kept" in log
    assert len(slow.received) == 1


async def test_a_port_given_on_the_command_line_is_not_reported_as_waiting_for_a_restart(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    text = f"""\
storage: {{path: gateway.db}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
routes: []
"""
    config.write_text(text, encoding="utf-8")
    async with GatewayProcess(config, free_port(), tmp_path / "gateway.log") as gateway:  # serve --port
        await gateway.start()
        config.write_text("server: {port: 8123, shutdown_grace: 3s}\n" + text, encoding="utf-8")
        os.kill(gateway.pid, signal.SIGHUP)

        async def reloaded() -> bool:
            return "config reloaded (SIGHUP)" in gateway.tail()

        await eventually(reloaded)
        assert await gateway.stop() == 0
        log = gateway.tail()

    assert "config reload: server.port changed; the command line sets it, so it stays as it is" in log
    assert "server.shutdown_grace changed; it needs a restart to take effect" in log
    assert "server.port changed; it needs a restart" not in log


async def test_a_templated_host_reaches_no_private_address_unless_allowed(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str], Path]
) -> None:
    """The payload picks the host: refused before anything is sent, unless the destination allows private hosts."""
    async with FakeDestination([200]) as sink:
        port = sink.url().split(":")[2].split("/")[0]
        loaded = load_config(write_config(f"""\
            storage: {{path: gateway.db}}
            sources:
              missive: {{secrets: ["{FIXTURE_SECRET}"]}}
            destinations:
              guarded: {{url: "http://{{{{ payload.host }}}}:{port}/guarded"}}
              allowed: {{url: "http://{{{{ payload.host }}}}:{port}/allowed", allow_private_hosts: true}}
              literal: {{url: "http://127.0.0.1:{port}/literal/{{{{ payload.host | path_segment }}}}"}}
            routes:
              - name: everything
                send: [{{to: guarded}}, {{to: allowed}}, {{to: literal}}]
            """), environ={})
        client = await aiohttp_client(create_app(ConfigHolder(loaded)))
        for host in ("127.0.0.1", "localhost"):  # an address, and a name this machine resolves itself
            body = json.dumps({"rule": {"type": "incoming_email"}, "host": host}).encode()
            response = await client.post("/hooks/missive", data=body, headers={
                "X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)})
            assert response.status == 200
        await wait_for_status(client, DeliveryStatus.DELIVERED, 4)
        await wait_for_status(client, DeliveryStatus.DEAD, 2)
        dead = await client.app[STORE].list_deliveries(DeliveryFilter(status=DeliveryStatus.DEAD))
    assert sorted(request.path_qs for request in sink.received) == [
        "/allowed", "/allowed", "/literal/127.0.0.1", "/literal/localhost"
    ]
    assert {delivery.destination for delivery in dead} == {"guarded"}
    errors = sorted(delivery.last_error or "" for delivery in dead)
    assert errors[0] == (
        "blocked: refused to connect to 127.0.0.1 (loopback address): the URL's host came from a template; set "
        "allow_private_hosts: true on the destination if it must reach it"
    )
    assert errors[1].startswith("blocked: refused to connect to localhost (")  # 127.0.0.1 or ::1
    assert "(loopback address)" in errors[1]
