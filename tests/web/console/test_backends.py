"""The console's pages on each store backend: the same figures, lists and replays from SQLite and from Redis."""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable

from tests.conftest import fixture_bytes
from tests.delivery.test_dead_letters import EITHER_EMAIL, EMAIL, config_text
from tests.fakes import FakeDestination, Reply
from tests.web.console.conftest import Console
from tests.web.console.test_actions import groups_of
from tests.web.console.test_events import shown
from tests.web.console.test_overview import cells, row_of
from tests.web.test_admin import deliver, post_event

Start = Callable[..., Awaitable[Console]]


async def test_every_page_reads_the_backend_in_use(console: Start, storage: str) -> None:
    async with FakeDestination([Reply(400, "missing field")]) as crm:
        text = config_text(crm.url("/notes"), when=EITHER_EMAIL).replace("storage: {path: gateway.db}", storage)
        gateway = await console(text)
        first = await post_event(gateway.client)
        second = await post_event(gateway.client, "outgoing-email.json")
        await deliver(gateway.client)
    await gateway.login()
    conversation = json.loads(fixture_bytes(EMAIL))["conversation"]["id"]

    overview = await gateway.page("/console/")
    assert cells(row_of(overview, "crm"))["Dead"] == "2" and cells(row_of(overview, "missive"))["Last hour"] == "2"
    assert shown(await gateway.page("/console/events")) == [second, first]
    assert shown(await gateway.page(f"/console/events?q={conversation}")) == [first]
    assert "HTTP 400: missing field" in html.unescape(await gateway.page(f"/console/events/{first}"))
    assert groups_of(await gateway.page("/console/dead-letters")) == [("crm", 2, "HTTP 400: missing field")]
    replayed = await gateway.post("/console/dead-letters/replay", {"scope": "filter", "destination": "crm"})
    assert '<span class="status status-delivered">2 queued</span>' in await replayed.text()
    assert cells(row_of(await gateway.page("/console/"), "crm"))["Waiting"] == "2"
