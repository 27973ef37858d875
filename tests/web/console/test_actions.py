"""The console's forms: dead letters grouped and replayed, a delivery replayed from its event, the playground."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable

from gateway.model import DeliveryFilter, DeliveryStatus
from gateway.web.keys import STORE
from tests.conftest import fixture_bytes
from tests.delivery.test_dead_letters import BROKEN_BODY, CRM_TOKEN, EITHER_EMAIL, EMAIL, SECRETS, config_text
from tests.fakes import FakeDestination, Reply
from tests.web.console.conftest import Console
from tests.web.test_admin import deliver, post_event, wait_for_status

Start = Callable[..., Awaitable[Console]]
TWO_DESTINATIONS = """\
  - name: copy
    when: {path: $.rule.type, equals: incoming_email}
    send:
      - to: other
"""


async def dead_letters_in_two_groups(console: Start) -> Console:
    """crm answers 400 (two events: one group), other 404 (one event: a second group)."""
    crm_script, other_script = [Reply(400, "missing field")], [Reply(404, "no such hook")]
    async with FakeDestination(crm_script) as crm, FakeDestination(other_script) as other:
        text = config_text(crm.url("/notes"), when=EITHER_EMAIL)
        text = text.replace(f'other: {{url: "{crm.url("/notes")}"}}', f'other: {{url: "{other.url()}"}}')
        gateway = await console(text + TWO_DESTINATIONS)
        await post_event(gateway.client)
        await post_event(gateway.client, "outgoing-email.json")
        await deliver(gateway.client)
    await gateway.login()
    return gateway


def groups_of(page: str) -> list[tuple[str, int, str]]:
    """(destination, count, reason) of each group on the dead letters page."""
    found = re.findall(
        r'<span class="dest">([^<]+)</span> <span class="count">(\d+)</span>.*?<p class="error-text">([^<]+)</p>',
        page, re.DOTALL,
    )
    return [(destination, int(count), html.unescape(reason)) for destination, count, reason in found]


async def test_dead_letters_are_grouped_by_destination_and_reason(console: Start) -> None:
    gateway = await dead_letters_in_two_groups(console)
    page = await gateway.page("/console/dead-letters")
    assert groups_of(page) == [("crm", 2, "HTTP 400: missing field"), ("other", 1, "HTTP 404: no such hook")]
    assert "3 dead letters, in 2 groups." in page
    filtered = await gateway.page("/console/dead-letters?destination=other")
    assert groups_of(filtered) == [("other", 1, "HTTP 404: no such hook")]


async def test_replaying_ticked_dead_letters_shows_each_result(console: Start) -> None:
    gateway = await dead_letters_in_two_groups(console)
    dead = await gateway.app[STORE].list_deliveries(DeliveryFilter(status=DeliveryStatus.DEAD, destination="crm"))
    response = await gateway.post("/console/dead-letters/replay", [("id", dead[0].id), ("rerender", "0")])
    page = await response.text()
    assert response.status == 200
    assert '<span class="status status-delivered">1 queued</span>' in page and "more may match" not in page
    assert re.search(rf"<code>{dead[0].id}</code>.*?>queued</span>", page, re.DOTALL)
    pending = await gateway.app[STORE].list_deliveries(DeliveryFilter(status=DeliveryStatus.PENDING))
    assert [delivery.id for delivery in pending] == [dead[0].id]
    again = await (await gateway.post("/console/dead-letters/replay", [("id", dead[0].id)])).text()
    assert ">skipped</span>" in again and "already pending" in again


async def test_replaying_all_that_match_the_filter(console: Start) -> None:
    gateway = await dead_letters_in_two_groups(console)
    response = await gateway.post("/console/dead-letters/replay", {"scope": "filter", "destination": "crm"})
    assert '<span class="status status-delivered">2 queued</span>' in await response.text()
    still_dead = await gateway.app[STORE].list_deliveries(DeliveryFilter(status=DeliveryStatus.DEAD))
    assert [delivery.destination for delivery in still_dead] == ["other"]


async def test_replaying_nothing_ticked_says_what_to_do(console: Start) -> None:
    gateway = await dead_letters_in_two_groups(console)
    response = await gateway.post("/console/dead-letters/replay", {"rerender": "0"})
    assert response.status == 400
    assert "tick at least one dead letter" in await response.text()


async def test_a_dead_letter_replayed_from_its_event_page_is_delivered(console: Start) -> None:
    async with FakeDestination([Reply(400, "missing field"), 200]) as crm:
        gateway = await console(config_text(crm.url("/notes")), run_worker=True)
        event_id = await post_event(gateway.client)
        await wait_for_status(gateway.client, DeliveryStatus.DEAD, 1)
        await gateway.login()
        (dead,) = await gateway.app[STORE].list_deliveries(DeliveryFilter(event_id=event_id))
        replayed = await gateway.post(f"/console/deliveries/{dead.id}/replay", {"rerender": "0"})
        assert "1 queued" in await replayed.text()
        await wait_for_status(gateway.client, DeliveryStatus.DELIVERED, 1)
    page = await gateway.page(f"/console/events/{event_id}")
    assert "status-delivered" in page and '"Status">400</td>' in page and '"Status">200</td>' in page
    assert [request.body for request in crm.received] == [crm.received[0].body] * 2


async def test_replay_with_rerender_after_a_template_fix(console: Start) -> None:
    async with FakeDestination([200]) as crm:
        gateway = await console(config_text(crm.url(), body=BROKEN_BODY))
        event_id = await post_event(gateway.client)
        await gateway.login()
        (dead,) = await gateway.app[STORE].list_deliveries(DeliveryFilter(event_id=event_id))
        plain = await (await gateway.post(f"/console/deliveries/{dead.id}/replay", {"rerender": "0"})).text()
        assert "it has no request (rendering failed)" in plain
        rerendered = await (await gateway.post(f"/console/deliveries/{dead.id}/replay", {"rerender": "1"})).text()
        assert "Replay with re-render" in rerendered and "still cannot render" in html.unescape(rerendered)


async def test_the_playground_runs_a_pasted_payload_and_sends_nothing(console: Start) -> None:
    async with FakeDestination([200]) as crm:
        url = crm.url("/notes")
        gateway = await console(config_text(url), run_worker=True)
        await gateway.login()
        response = await gateway.post("/console/playground", {"payload": fixture_bytes(EMAIL).decode()})
        page = html.unescape(await response.text())
    assert response.status == 200
    assert "<strong>vip</strong>: matched" in page
    assert f"POST {url}?api_token=***" in page and "Bearer ***" in page
    assert '"subject": "Order HL-20931 arrived damaged"' in page
    assert "the original payload" not in page  # a body of its own is shown as it is
    assert not [secret for secret in SECRETS if secret in page]
    assert crm.received == [] and await gateway.app[STORE].list_deliveries(DeliveryFilter()) == []


async def test_the_playground_folds_a_forwarded_original_payload(console: Start) -> None:
    gateway = await console(config_text("http://127.0.0.1:9/").replace("        body: ", "        headers: "))
    await gateway.login()
    page = await (await gateway.post("/console/playground", {"payload": fixture_bytes(EMAIL).decode()})).text()
    size = len(fixture_bytes(EMAIL))
    assert f"<summary>Body: the original payload ({size} bytes), as received</summary>" in page


async def test_the_playground_takes_an_upload(console: Start) -> None:
    gateway = await console(config_text("http://127.0.0.1:9/", when="{path: $.rule.type, equals: label_change}"))
    await gateway.login()
    response = await gateway.upload("/console/playground", "file", fixture_bytes(EMAIL), payload="")
    page = html.unescape(await response.text())
    assert "$.rule.type equals 'label_change' failed: saw 'incoming_email'" in page
    assert json.loads(fixture_bytes(EMAIL))["conversation"]["id"] in page  # the upload fills the text area


async def test_the_playground_loads_a_stored_event_and_explains_bad_input(console: Start) -> None:
    gateway = await console(config_text("http://127.0.0.1:9/"))
    event_id = await post_event(gateway.client)
    await gateway.login()
    loaded = html.unescape(await gateway.page(f"/console/playground?event={event_id}"))
    assert fixture_bytes(EMAIL).decode() in loaded
    bad = html.unescape(await (await gateway.post("/console/playground", {"payload": "{nope"})).text())
    assert 'class="alert"' in bad and "not valid JSON" in bad
    assert CRM_TOKEN not in bad


STATEFUL = """\
storage: {path: gateway.db}
sources:
  missive: {secrets: ["fixture-secret-do-not-use"]}
destinations:
  crm: {url: "http://127.0.0.1:9/notes"}
routes:
  - name: vip-added
    when: {path: "$.changes.labels_added[*]", equals: VIP}
    send: [{to: crm}]
  - name: once-a-conversation
    once_per: {key: "{{ conversation.id }}", window: 30m}
    send: [{to: crm}]
"""


async def test_the_playground_routes_on_the_state_the_store_has_now(console: Start) -> None:
    gateway = await console(STATEFUL)
    conversation = json.loads(fixture_bytes(EMAIL))["conversation"]["id"]
    await gateway.login()

    async def try_it() -> str:
        response = await gateway.post("/console/playground", {"payload": fixture_bytes(EMAIL).decode()})
        return " ".join(html.unescape(await response.text()).split())

    first = await try_it()
    await post_event(gateway.client)  # the gateway now knows the conversation, and the window is open
    again = await try_it()

    assert f"Conversation <code>{conversation}</code>: new to the gateway." in first
    assert "<strong>vip-added</strong>: matched" in first and "<strong>once-a-conversation</strong>: matched" in first
    assert f"Conversation <code>{conversation}</code>: known, with labels Customers, VIP" in again
    assert "<strong>vip-added</strong>: not matched" in again
    assert "<strong>once-a-conversation</strong>: not matched" in again
    assert f"(key <code>{conversation}</code>)" in again  # suppressed by once_per
    assert "0 of 2 routes matched: 0 requests would be sent." in again
