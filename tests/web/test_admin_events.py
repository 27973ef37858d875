"""Event lookups on a real server, on SQLite and on Redis: `GET /admin/events` and `gateway events`, one query."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import load_config
from gateway.web.app import create_app
from tests.delivery.test_dead_letters import CRM_TOKEN, QUERY_SECRET, cli
from tests.fakes import FakeDestination, Reply
from tests.web.test_admin import ADMIN, AUTH, deliver, error_of, ok, post_event

Client = TestClient[web.Request, web.Application]

LABELS = "d1773781-5438-45b5-87bd-a21c604af42a"  # label-change.json's conversation, from tomasz.w@example.org
EMAIL_CONVERSATION = "af5d8bb0-9f2e-4ea4-b658-90e0f94855d0"  # incoming-email-with-labels.json
FIXTURES = ["incoming-email-with-labels.json", "label-change.json", "new-comment.json", "outgoing-email.json"]


def config_text(storage: str, crm_url: str) -> str:
    return f"""\
{storage}
sources:
  missive: {{secrets: ["fixture-secret-do-not-use"]}}
destinations:
  crm:
    url: "{crm_url}?api_token={QUERY_SECRET}"
    headers: {{Authorization: "Bearer ${{CRM_TOKEN}}"}}
    retry: {{attempts: 1}}
routes:
  - name: notes
    when: {{path: $.rule.type, in: [incoming_email, label_change]}}
    send: [{{to: crm, body: {{id: "{{{{ conversation.id }}}}"}}}}]
{ADMIN}"""


@pytest.fixture
async def looked_up(
    storage: str, aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    write_config: Callable[[str, str], Path], monkeypatch: pytest.MonkeyPatch,
) -> tuple[Client, Path]:  # fmt: skip
    """A gateway that received the four fixtures; the email's delivery went dead (the CRM echoed its token)."""
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    async with FakeDestination([Reply(400, f"bad token {CRM_TOKEN}"), Reply(200)]) as crm:
        path = write_config(config_text(storage, crm.url("/notes")), "config.yaml")
        client = await aiohttp_client(create_app(ConfigHolder(load_config(path)), run_worker=False))
        await post_event(client, FIXTURES[0])
        await deliver(client)
        for fixture in FIXTURES[1:]:
            await post_event(client, fixture)
    return client, path


async def listed(client: Client, query: str) -> dict[str, Any]:
    document: dict[str, Any] = await ok(await client.get(f"/admin/events{query}", headers=AUTH))
    return document


async def test_events_come_newest_first_with_facts_and_delivery_statuses(looked_up: tuple[Client, Path]) -> None:
    client, _ = looked_up
    document = await listed(client, "")

    assert [event["rule_type"] for event in document["events"]] == [
        "outgoing_email", "new_comment", "label_change", "incoming_email"]  # fmt: skip
    assert (document["count"], document["limit"], document["next_cursor"]) == (4, 50, None)
    email = document["events"][-1]
    assert email["conversation_id"] == EMAIL_CONVERSATION
    assert (email["from"], email["subject"], email["source"]) == (
        "priya.natarajan@example.org", "Order HL-20931 arrived damaged", "missive")
    (dead,) = email["deliveries"]
    assert (dead["route"], dead["destination"], dead["status"], dead["attempts"]) == ("notes", "crm", "dead", 1)
    assert dead["last_error"] == "HTTP 400: bad token ***"
    assert [item["status"] for item in document["events"][1]["deliveries"]] == []
    assert [item["status"] for item in document["events"][2]["deliveries"]] == ["pending"]
    assert CRM_TOKEN not in json.dumps(document)


@pytest.mark.parametrize(
    ("query", "types"),
    [
        pytest.param(f"?conversation={LABELS}", ["label_change"], id="conversation"),
        pytest.param("?from=Tomasz.W@Example.org", ["label_change"], id="from-any-case"),
        pytest.param("?q=hl-20931", ["new_comment", "incoming_email"], id="q-subject"),
        pytest.param("?q=alma.reyes", ["new_comment"], id="q-sender"),
        pytest.param(f"?q={LABELS[:8]}", ["label_change"], id="q-conversation"),
        pytest.param("?subject=quote", ["outgoing_email"], id="subject"),
        pytest.param("?type=new_comment", ["new_comment"], id="type"),
        pytest.param("?status=dead", ["incoming_email"], id="status"),
        pytest.param("?route=notes&status=pending", ["label_change"], id="route-and-status"),
        pytest.param("?destination=crm", ["label_change", "incoming_email"], id="destination"),
        pytest.param("?since=1h&source=missive", ["outgoing_email", "new_comment", "label_change", "incoming_email"],
                     id="since"),
        pytest.param("?until=2000-01-01T00:00:00Z", [], id="until-a-time"),
        pytest.param("?q=&type=", ["outgoing_email", "new_comment", "label_change", "incoming_email"],
                     id="empty-means-any"),
    ],
)  # fmt: skip
async def test_filters(looked_up: tuple[Client, Path], query: str, types: list[str]) -> None:
    client, _ = looked_up
    assert [event["rule_type"] for event in (await listed(client, query))["events"]] == types


async def test_pages_by_cursor(looked_up: tuple[Client, Path]) -> None:
    client, _ = looked_up
    first = await listed(client, "?limit=3")
    second = await listed(client, f"?limit=3&cursor={first['next_cursor']}")

    assert first["count"] == 3 and first["next_cursor"] is not None
    assert second["count"] == 1 and second["next_cursor"] is None
    everything = await listed(client, "")
    assert [event["id"] for event in first["events"] + second["events"]] == [e["id"] for e in everything["events"]]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        pytest.param("?sender=a@b.c", "unknown filter 'sender'; filters are: q, conversation, from", id="unknown"),
        pytest.param("?status=gone", "unknown status 'gone'", id="status"),
        pytest.param("?since=yesterday", "since: 'yesterday' is not a duration", id="since"),
        pytest.param("?until=soon", "until: 'soon' is not a duration", id="until"),
        pytest.param("?cursor=page2", "cursor: 'page2' is not a cursor", id="cursor"),
        pytest.param("?limit=1001", "limit '1001' must be a whole number from 1 to 1000", id="limit"),
    ],
)
async def test_bad_filters_are_400(looked_up: tuple[Client, Path], query: str, message: str) -> None:
    client, _ = looked_up
    assert (await error_of(await client.get(f"/admin/events{query}", headers=AUTH), 400)).startswith(message)


async def test_the_cli_shows_what_the_api_answers(
    looked_up: tuple[Client, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    client, config = looked_up
    from_api = await listed(client, f"?conversation={EMAIL_CONVERSATION}")
    code, as_json, _ = await cli(capsys, "events", "-c", str(config), "--conversation", EMAIL_CONVERSATION, "--json")
    _, table, _ = await cli(capsys, "events", "-c", str(config), "--from", "TOMASZ.W@example.org", "--since", "1h")
    _, paged, _ = await cli(capsys, "events", "-c", str(config), "--limit", "1", "--subject", "order")
    _, refused, error = await cli(capsys, "events", "-c", str(config), "--status", "gone")

    assert code == 0
    assert json.loads(as_json) == from_api
    header, row, footer = table.splitlines()
    assert header.split() == ["ID", "RECEIVED", "TYPE", "CONVERSATION", "FROM", "SUBJECT", "DELIVERIES"]
    assert "label_change" in row and LABELS in row and "notes→crm pending" in row
    assert footer == "1 event"
    newest_order = (await listed(client, "?subject=order&limit=1"))
    assert paged.splitlines()[-1] == f"1 event; more match: add --cursor {newest_order['next_cursor']}"
    assert (refused, error.strip()) == ("", "error: unknown status 'gone'; use one of pending, held, delivered, dead")
    for output in (as_json, table, paged):
        assert CRM_TOKEN not in output and QUERY_SECRET not in output
