"""The overview: events per source, each destination's queue and chart, and red where a person is needed."""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable

from gateway.clock import FakeClock, SystemClock
from tests.delivery.test_dead_letters import EITHER_EMAIL, config_text
from tests.fakes import FakeDestination, Reply
from tests.web.console.conftest import Console
from tests.web.test_admin import deliver, post_event

Start = Callable[..., Awaitable[Console]]


def row_of(page: str, name: str) -> str:
    heading = rf'<th scope="row" data-label="(?:Destination|Source)">(?:<a [^>]+>)?{name}\b'
    found = re.search(rf"<tr[^>]*>\s*{heading}.*?</tr>", page, re.S)
    assert found, f"no row for {name}"
    return found.group(0)


def cells(row: str) -> dict[str, str]:
    return {label: re.sub(r"<[^>]+>", "", value).strip()
            for label, value in re.findall(r'<td[^>]*data-label="([^"]+)"[^>]*>(.*?)</td>', row, re.S)}  # fmt: skip


async def test_dead_letters_are_red_and_counted_per_destination(console: Start) -> None:
    async with FakeDestination([Reply(400, "missing field")]) as crm:
        gateway = await console(config_text(crm.url("/notes"), when=EITHER_EMAIL))
        await post_event(gateway.client)
        await post_event(gateway.client, "outgoing-email.json")
        await deliver(gateway.client)
    await gateway.login()
    page = await gateway.page("/console/")
    crm_row, other_row, source_row = row_of(page, "crm"), row_of(page, "other"), row_of(page, "missive")

    assert "Needs a person" in page and '<a href="/console/dead-letters?destination=crm">2 dead letters</a>' in page
    assert 'class="alarm"' in crm_row and "alarm" not in other_row
    assert {**cells(crm_row), "Last 24 hours": "(the chart)"} == {
        "Delivered (24 h)": "0", "Waiting": "0", "Retrying": "0", "In flight": "0", "Dead": "2", "Oldest pending": "–",
        "Last 24 hours": "(the chart)"}  # fmt: skip
    assert "Last error" in crm_row and "HTTP 400: missing field" in html.unescape(crm_row)
    assert '<rect class="bar-dead"' in crm_row and ": 0 delivered, 0 pending, 2 dead</title>" in crm_row
    assert "<rect" not in other_row  # nothing went there
    assert (cells(source_row)["Last hour"], cells(source_row)["Last day"]) == ("2", "2")


async def test_a_delivery_pending_for_long_needs_a_person(console: Start) -> None:
    clock = FakeClock(SystemClock().now_ms())
    gateway = await console(config_text("http://127.0.0.1:9/"), clock=clock)
    await post_event(gateway.client)
    await gateway.login()
    calm = await gateway.page("/console/")
    clock.advance(6 * 60)
    late = await gateway.page("/console/")

    assert "Nothing needs a person" in calm and cells(row_of(calm, "crm"))["Waiting"] == "1"
    assert "the oldest pending delivery has waited 6 min" in late
    assert cells(row_of(late, "crm"))["Oldest pending"] == "6 min" and 'class="alarm"' in row_of(late, "crm")
