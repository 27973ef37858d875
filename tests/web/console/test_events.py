"""The event list: the shared lookup as a page, with filters, pages by cursor, and rows that arrive while it is open."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable

from markupsafe import escape

from tests.conftest import fixture_bytes
from tests.delivery.test_dead_letters import EITHER_EMAIL, EMAIL, config_text
from tests.fakes import FakeDestination, Reply
from tests.web.console.conftest import Console
from tests.web.console.test_pages import XSS, hostile_email, post_body
from tests.web.test_admin import deliver, post_event

Start = Callable[..., Awaitable[Console]]
CONVERSATION = json.loads(fixture_bytes(EMAIL))["conversation"]["id"]


def shown(page: str) -> list[str]:
    """The ids of the events a page lists, in order."""
    return re.findall(r'<tr data-cursor="\d+:(evt_[-\w]+)">', page)


async def three_events(console: Start) -> tuple[Console, list[str]]:
    async with FakeDestination([Reply(400, "missing field")]) as crm:
        gateway = await console(config_text(crm.url("/notes"), when=EITHER_EMAIL))
        ids = [await post_event(gateway.client, name)
               for name in (EMAIL, "outgoing-email.json", "label-change.json")]  # fmt: skip
        await deliver(gateway.client)
    await gateway.login()
    return gateway, ids


async def test_events_are_listed_newest_first_with_their_deliveries(console: Start) -> None:
    gateway, ids = await three_events(console)
    page = await gateway.page("/console/events")
    assert shown(page) == ids[::-1]
    first = page[page.index(ids[0]) - 200:]
    assert 'class="status status-dead" title="vip → crm: dead: HTTP 400: missing field">crm</span>' in first
    assert "incoming_email" in first and "priya.natarajan@example.org" in first
    assert 'data-live="/console/events/rows?"' in page
    empty = await gateway.page("/console/events?type=nothing-of-this-type")
    after = re.search(r'data-after="([^"]+)"', empty)
    assert after and shown(await gateway.page(f"/console/events/rows?type=&after={after.group(1)}")) == []


async def test_finding_a_conversation_by_its_id(console: Start) -> None:
    gateway, ids = await three_events(console)
    page = await gateway.page(f"/console/events?q={CONVERSATION}")
    assert shown(page) == [ids[0]]
    assert f'value="{CONVERSATION}"' in page  # the form keeps what was asked


async def test_filters_combine(console: Start) -> None:
    gateway, ids = await three_events(console)
    assert shown(await gateway.page("/console/events?type=label_change")) == [ids[2]]
    assert shown(await gateway.page("/console/events?status=dead&destination=crm")) == ids[1::-1]
    assert shown(await gateway.page("/console/events?route=vip&since=1h&until=")) == ids[1::-1]
    assert "No event matches these filters" in await gateway.page("/console/events?destination=other")


async def test_pages_follow_the_cursor(console: Start) -> None:
    gateway, ids = await three_events(console)
    first = await gateway.page("/console/events?limit=2&type=")
    older = re.search(r'href="(/console/events\?[^"]*cursor=[^"]+)" rel="next"', first)
    assert shown(first) == [ids[2], ids[1]] and older
    last = await gateway.page(html.unescape(older.group(1)))
    assert shown(last) == [ids[0]]
    assert 'rel="next"' not in last and 'href="/console/events?limit=2">Newest</a>' in last
    assert "data-live" not in last  # only the newest page stays live


async def test_bad_filters_are_explained(console: Start) -> None:
    gateway, _ = await three_events(console)
    assert "since: " in html.unescape(await gateway.page("/console/events?since=yesterday", status=400))
    assert "unknown status" in await gateway.page("/console/events?status=lost", status=400)


async def test_newer_rows_are_those_after_the_newest_shown(console: Start) -> None:
    gateway, ids = await three_events(console)
    cursors = re.findall(r'<tr data-cursor="([^"]+)">', await gateway.page("/console/events"))
    assert await gateway.page(f"/console/events/rows?after={cursors[0]}") == ""
    assert shown(await gateway.page(f"/console/events/rows?after={cursors[2]}")) == [ids[2], ids[1]]
    assert shown(await gateway.page(f"/console/events/rows?type=label_change&after={cursors[1]}")) == [ids[2]]
    assert shown(await gateway.page(f"/console/events/rows?type=outgoing_email&after={cursors[1]}")) == []
    assert "after: " in await gateway.page("/console/events/rows?after=nonsense", status=400)


async def test_an_event_list_keeps_hostile_text_as_text(console: Start) -> None:
    gateway = await console(config_text("http://127.0.0.1:9/"))
    await post_body(gateway, hostile_email())
    await gateway.login()
    page = await gateway.page("/console/events")
    assert "<script>window.pwned" not in page and "<img src=x" not in page
    assert str(escape(XSS)) in page


async def test_a_whole_conversation_id_or_address_is_found_by_its_index(console: Start) -> None:
    gateway, ids = await three_events(console)
    by_id = await gateway.page(f"/console/events?q={CONVERSATION}")
    by_address = await gateway.page("/console/events?q=Priya.Natarajan@example.org")
    by_part = await gateway.page("/console/events?q=natarajan")
    assert (shown(by_id), shown(by_address), shown(by_part)) == ([ids[0]], [ids[0]], [ids[0]])
    assert f"conversation <code>{CONVERSATION}</code>, found by its index" in by_id
    assert "sender <code>Priya.Natarajan@example.org</code>" in by_address
    assert "found by its index" not in by_part  # a part of a text: the text search
    assert f'data-live="/console/events/rows?conversation={CONVERSATION}"' in by_id
