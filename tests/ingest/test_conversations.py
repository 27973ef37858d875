"""Routing that knows conversations, on a real server with SQLite and with Redis: `changes`, once_per, two
events of one conversation at once, duplicates, and a config that needs no state paying nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.clock import FakeClock
from gateway.delivery.dead_letters import ReplayOutcome, replay
from gateway.delivery.send import make_session
from gateway.delivery.worker import Worker
from gateway.ingest.signature import sign
from gateway.model import DeliveryFilter, StateKeys
from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import load_config
from gateway.web.app import create_app
from gateway.web.keys import STORE
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.fakes import FakeApi, json_reply

Client = TestClient[web.Request, web.Application]
Start = Callable[..., Awaitable[Client]]
CONVERSATION = "d1773781-5438-45b5-87bd-a21c604af42a"

ROUTES = """\
routes:
  - name: urgent-added
    when: {path: "$.changes.labels_added[*]", equals: Urgent}
    send:
      - to: chat
        body: {text: "Urgent: {{ conversation.subject }} (added {{ changes.labels_added | join(', ') }})"}
  - name: once-per-conversation
    once_per: {key: "{{ conversation.id }}", window: 30m}
    send: [{to: chat, body: {text: "{{ conversation.id }}"}}]
"""


def config_text(storage: str, routes: str = ROUTES) -> str:
    return f"""\
{storage}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  chat: {{url: "http://127.0.0.1:9/chat"}}
{routes}"""


def label_change(labels: list[str], conversation: str = CONVERSATION, nonce: int = 0) -> bytes:
    """label-change.json with these shared labels (the nonce makes bodies differ, so dedupe keeps out of it)."""
    payload: dict[str, Any] = json.loads(fixture_bytes("label-change.json"))
    payload["conversation"]["id"] = conversation
    payload["conversation"]["shared_labels"] = [{"name": name} for name in labels]
    payload["nonce"] = nonce
    return json.dumps(payload).encode()


@pytest.fixture
def start(
    storage: str, aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    write_config: Callable[[str, str], Path],
) -> Start:  # fmt: skip
    """A gateway (no worker) on `storage`; several started in one test share the store, as replicas do."""

    async def started(routes: str = ROUTES, clock: FakeClock | None = None, name: str = "config.yaml") -> Client:
        loaded = load_config(write_config(config_text(storage, routes), name))
        return await aiohttp_client(create_app(ConfigHolder(loaded), clock=clock, run_worker=False))

    return started


async def post(client: Client, body: bytes) -> dict[str, Any]:
    response = await client.post("/hooks/missive", data=body,
                                 headers={"X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)})  # fmt: skip
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def changes_of(client: Client, event_id: str) -> dict[str, Any]:
    event = await client.app[STORE].get_event(event_id)
    assert event is not None and event.changes is not None
    changes: dict[str, Any] = json.loads(event.changes)
    return changes


async def routes_of(client: Client, event_id: str) -> list[str]:
    return sorted(d.route for d in await client.app[STORE].list_deliveries(DeliveryFilter(event_id=event_id)))


async def metric(client: Client, line_start: str) -> float:
    text = await (await client.get("/metrics")).text()
    (line,) = [line for line in text.splitlines() if line.startswith(line_start)]
    return float(line.split()[-1])


URGENT_ONLY = ROUTES.split("  - name: once-per-conversation")[0]
assert "once_per" not in URGENT_ONLY and "urgent-added" in URGENT_ONLY


async def test_a_route_hears_of_a_label_only_when_it_is_added(start: Start) -> None:
    client = await start(URGENT_ONLY)
    history = [["Billing"], ["Billing", "Urgent"], ["Billing", "Urgent", "VIP"], ["Billing"], ["Urgent", "Billing"]]
    answers = [await post(client, label_change(labels, nonce=n)) for n, labels in enumerate(history)]

    assert [answer["deliveries"] for answer in answers] == [0, 1, 0, 0, 1]
    seen = [await changes_of(client, answer["event_id"]) for answer in answers]
    assert [(c["labels_added"], c["labels_removed"], c["first_seen"]) for c in seen] == [
        (["Billing"], [], True), (["Urgent"], [], False), (["VIP"], [], False), ([], ["Urgent", "VIP"], False),
        (["Urgent"], [], False),
    ]  # fmt: skip
    (delivery,) = await client.app[STORE].list_deliveries(DeliveryFilter(event_id=answers[1]["event_id"]))
    assert delivery.request is not None
    assert json.loads(delivery.request.body) == {"text": "Urgent: Invoice 2024-0611 charged twice (added Urgent)"}


async def test_assignees_and_other_conversations(start: Start) -> None:
    client = await start(URGENT_ONLY)
    first = json.loads(fixture_bytes("label-change.json"))  # assigned to Alma and Boris, labels Billing and Urgent
    answer = await post(client, json.dumps(first).encode())
    first["conversation"]["assignees"] = first["conversation"]["assignees"][1:] + [
        {"id": "u-dev", "name": "Dev Patel", "email": "dev.patel@support.example.com"}]  # fmt: skip
    del first["conversation"]["shared_labels"]  # says nothing of labels: they stay
    again = await post(client, json.dumps(first).encode())
    other = await post(client, label_change(["Urgent"], conversation="another"))

    assert (answer["deliveries"], again["deliveries"], other["deliveries"]) == (1, 0, 1)
    changes = await changes_of(client, again["event_id"])
    assert changes["assignees_added"] == [
        {"id": "u-dev", "name": "Dev Patel", "email": "dev.patel@support.example.com"}]  # fmt: skip
    assert [person["name"] for person in changes["assignees_removed"]] == ["Alma Reyes"]
    assert (changes["labels_added"], changes["labels_removed"]) == ([], [])
    state = await client.app[STORE].read_state(StateKeys(("missive", CONVERSATION)), 0)
    assert state.conversation is not None and state.conversation.labels == ("Billing", "Urgent")
    assert state.version == 2


async def test_once_per_conversation_within_the_window(start: Start) -> None:
    clock = FakeClock()
    client = await start(clock=clock)
    answers = [await post(client, label_change(["Billing"], nonce=n)) for n in range(3)]
    elsewhere = await post(client, label_change(["Billing"], conversation="another"))
    clock.advance(30 * 60)
    later = await post(client, label_change(["Billing"], nonce=9))

    assert [answer["deliveries"] for answer in answers] == [1, 0, 0]
    assert await routes_of(client, answers[0]["event_id"]) == ["once-per-conversation"]
    assert await routes_of(client, elsewhere["event_id"]) == ["once-per-conversation"]
    assert await routes_of(client, later["event_id"]) == ["once-per-conversation"]
    assert await metric(client, 'gateway_route_suppressed_total{route="once-per-conversation"}') == 2
    assert await metric(client, 'gateway_route_matches_total{route="once-per-conversation"}') == 3


async def test_a_duplicate_changes_nothing(start: Start) -> None:
    client = await start()
    body = label_change(["Billing"])
    first = await post(client, body)
    keys = StateKeys(("missive", CONVERSATION), (("once-per-conversation", CONVERSATION),))
    before = await client.app[STORE].read_state(keys, 0)
    again = await post(client, body)

    assert (first["deliveries"], again["duplicate"], again["event_id"]) == (1, True, first["event_id"])
    assert await client.app[STORE].read_state(keys, 0) == before
    assert before.version == 1
    assert await metric(client, 'gateway_route_suppressed_total{route="once-per-conversation"}') == 0


def serial_order(label_sets: list[list[str]], changes: list[dict[str, Any]]) -> list[int]:
    """The order in which events with these labels must have been applied for each to see `changes`; fails
    when no order explains what every event saw."""
    before = [
        (set(labels) - set(change["labels_added"])) | set(change["labels_removed"])
        for labels, change in zip(label_sets, changes, strict=True)
    ]
    (first,) = [n for n, change in enumerate(changes) if change["first_seen"]]
    assert before[first] == set()
    order = [first]
    while len(order) < len(label_sets):
        (following,) = [n for n in range(len(label_sets)) if n not in order and before[n] == set(label_sets[order[-1]])]
        order.append(following)
    return order


async def test_events_of_one_conversation_at_once_see_one_order(start: Start, storage: str) -> None:
    replicas = [await start()]
    if "redis" in storage:
        replicas.append(await start(name="replica.yaml"))  # a second gateway on the same Redis
    label_sets = [["Billing", f"L{n}"] for n in range(12)]
    answers = await asyncio.gather(*(
        post(replicas[n % len(replicas)], label_change(labels, nonce=n)) for n, labels in enumerate(label_sets)
    ))  # fmt: skip

    changes = [await changes_of(replicas[0], answer["event_id"]) for answer in answers]
    order = serial_order(label_sets, changes)
    state = await replicas[0].app[STORE].read_state(StateKeys(("missive", CONVERSATION)), 0)
    assert state.conversation is not None and list(state.conversation.labels) == label_sets[order[-1]]
    assert state.version == len(label_sets)
    assert sum(answer["deliveries"] for answer in answers) == 1  # once per conversation, across replicas
    assert [answer["deliveries"] for answer in answers].index(1) == order[0]


async def test_a_config_without_changes_or_once_per_keeps_no_state(start: Start) -> None:
    plain = "routes:\n  - name: all\n    send: [{to: chat}]\n"
    client = await start(plain)
    answer = await post(client, label_change(["Urgent"]))

    assert answer["deliveries"] == 1
    event = await client.app[STORE].get_event(answer["event_id"])
    assert event is not None and event.changes is None
    state = await client.app[STORE].read_state(StateKeys(("missive", CONVERSATION)), 0)
    assert (state.conversation, state.version) == (None, 0)


async def test_replay_rerenders_on_the_changes_the_event_saw(
    start: Start, storage: str, write_config: Callable[[str, str], Path]
) -> None:
    broken = URGENT_ONLY.replace("{{ conversation.subject }}", "{{ conversation.nope }}")
    client = await start(broken)
    await post(client, label_change(["Billing"]))
    answer = await post(client, label_change(["Billing", "Urgent"], nonce=1))
    await post(client, label_change(["Billing", "Urgent", "VIP"], nonce=2))  # the state moves on meanwhile
    (dead,) = await client.app[STORE].list_deliveries(DeliveryFilter(event_id=answer["event_id"]))
    fixed = load_config(write_config(config_text(storage, URGENT_ONLY), "fixed.yaml"))

    report = await replay(fixed, client.app[STORE], DeliveryFilter(ids=(dead.id,)), 0, rerender=True)

    assert [(item.outcome, item.reason) for item in report.items] == [(ReplayOutcome.QUEUED, None)]
    again = await client.app[STORE].get_delivery(dead.id)
    assert again is not None and again.request is not None
    assert json.loads(again.request.body) == {"text": "Urgent: Invoice 2024-0611 charged twice (added Urgent)"}


async def test_a_chained_request_sees_the_changes_its_event_saw(storage: str, write_config: Callable[[str, str], Path]
                                                                ) -> None:  # fmt: skip
    async with FakeApi({"/contacts": [json_reply(201, {"id": "51"})], "/notes": [json_reply(201, {})]}) as crm:
        routes = f"""\
routes:
  - name: urgent-added
    when: {{path: "$.changes.labels_added[*]", equals: Urgent}}
    send:
      - {{to: chat, id: contact, url: "{crm.url('/contacts')}", body: {{id: "{{{{ conversation.id }}}}"}}}}
      - to: chat
        after: contact
        url: "{crm.url('/notes')}"
        body: {{contact: "{{{{ steps.contact.json.id }}}}", added: "{{{{ changes.labels_added }}}}"}}
"""
        loaded = load_config(write_config(config_text(storage, routes), "config.yaml"))
        app = create_app(ConfigHolder(loaded), run_worker=False)
        async with TestClient(TestServer(app)) as client:
            await post(client, label_change(["Billing"]))
            await post(client, label_change(["Billing", "Urgent"], nonce=1))
            async with make_session() as session:
                await Worker(client.app[STORE], loaded.config.destinations, session).drain()
        assert [json.loads(request.body) for request in crm.to("/notes")] == [{"contact": "51", "added": ["Urgent"]}]
