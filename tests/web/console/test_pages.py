"""The event and config pages: the payload, the routing trace, each delivery and attempt, always masked and escaped."""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Awaitable, Callable

import pytest
from markupsafe import escape

from gateway.clock import SystemClock
from gateway.ingest.signature import sign
from gateway.web.keys import CONFIG, STORE
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.delivery.test_dead_letters import CRM_TOKEN, EITHER_EMAIL, EMAIL, SECRETS, config_text
from tests.fakes import FakeDestination, Reply, retry_after
from tests.web.console.conftest import Console
from tests.web.test_admin import ADMIN, CONFIG_SECRETS, SECRET_CONFIG, deliver, post_event

Start = Callable[..., Awaitable[Console]]
XSS = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def hostile_email() -> bytes:
    """The email fixture with a subject and a sender name an attacker chose."""
    payload = json.loads(fixture_bytes(EMAIL))
    payload["conversation"]["subject"] = XSS
    payload["message"]["subject"] = XSS
    payload["message"]["from_field"]["name"] = XSS
    return json.dumps(payload).encode()


async def post_body(gateway: Console, body: bytes) -> str:
    response = await gateway.client.post("/hooks/missive", data=body, headers={
        "X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)})  # fmt: skip
    assert response.status == 200
    event_id: str = (await response.json())["event_id"]
    return event_id


async def test_the_event_page_shows_payload_trace_deliveries_and_attempts_masked(console: Start) -> None:
    async with FakeDestination([Reply(503, f"upstream down for {CRM_TOKEN}"), Reply(400, "missing field")]) as crm:
        gateway = await console(config_text(crm.url("/notes"), when=EITHER_EMAIL))
        event_id = await post_event(gateway.client)
        await deliver(gateway.client)
    await gateway.login()
    page = await gateway.page(f"/console/events/{event_id}")
    text = html.unescape(page)

    assert f"Event <code>{event_id}</code>" in page
    assert "Order HL-20931 arrived damaged" in text  # the payload
    assert "✓" in page and "<strong>vip</strong>: matched" in page  # the trace
    assert "vip → crm" in text and "status-dead" in page
    assert "/notes?api_token=***" in text and "Bearer ***" in text  # the rendered request, masked
    assert "upstream down for ***" in text and "missing field" in text  # both attempts' answers
    assert [code in page for code in ('"Status">503</td>', '"Status">400</td>')] == [True, True]
    assert not [secret for secret in SECRETS if secret in text]


async def test_the_trace_says_which_condition_failed_and_what_it_saw(console: Start) -> None:
    gateway = await console(config_text("http://127.0.0.1:9/", when="{path: $.rule.type, equals: label_change}"))
    event_id = await post_event(gateway.client)
    await gateway.login()
    text = html.unescape(await gateway.page(f"/console/events/{event_id}"))
    assert "vip</strong>: not matched" in text
    assert "$.rule.type equals 'label_change' failed: saw 'incoming_email'" in text
    assert "None: no route matched" in text


async def test_payload_text_stays_text(console: Start) -> None:
    async with FakeDestination([Reply(400, XSS)]) as crm:
        gateway = await console(config_text(crm.url("/notes")))
        event_id = await post_body(gateway, hostile_email())
        await deliver(gateway.client)
    await gateway.login()
    pages = [
        await gateway.page(f"/console/events/{event_id}"),
        await gateway.page("/console/dead-letters"),
        await gateway.page(f"/console/playground?event={event_id}"),
    ]
    ran = await gateway.post("/console/playground", {"payload": hostile_email().decode()})
    pages.append(await ran.text())
    for page in pages:
        assert "<script>alert" not in page and "<img src=x" not in page
    assert str(escape(XSS)) in pages[0]  # the subject, in the payload and the rendered body
    assert str(escape(XSS)) in pages[1]  # the destination's answer, as the group's reason


async def test_an_unknown_event_is_a_404_page(console: Start) -> None:
    gateway = await console(config_text("http://127.0.0.1:9/"))
    await gateway.login()
    assert "no event with id &#39;evt_nope&#39;" in await gateway.page("/console/events/evt_nope", status=404)


async def test_the_config_page_is_masked_and_says_when_it_was_loaded(console: Start) -> None:
    gateway = await console(SECRET_CONFIG)
    await gateway.login()
    page = html.unescape(await gateway.page("/console/config"))
    assert not [secret for secret in CONFIG_SECRETS if secret in page]
    assert "api_token=***" in page and "Bearer ***" in page and "token: '***'" in page
    assert "Loaded" in page and "No reload has been rejected" in page


async def test_the_config_page_shows_the_last_rejected_reload(console: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)  # a reload reads the environment
    gateway = await console(config_text("http://127.0.0.1:9/"))
    await gateway.login()
    loaded_file = gateway.app[CONFIG].active.loaded.file
    broken = config_text("http://127.0.0.1:9/").replace("to: crm", "to: crn") + ADMIN
    loaded_file.write_text(broken)
    async with asyncio.timeout(10):  # the file watcher looks every second
        while gateway.app[CONFIG].last_rejected is None:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    page = html.unescape(await gateway.page("/console/config"))
    assert "Last rejected reload" in page and "(file changed)" in page
    assert "routes[0].send[0].to: unknown destination 'crn'" in page
    assert "keeps serving until they are fixed" in page


CHAIN = """\
storage: {path: gateway.db}
sources:
  missive: {secrets: ["fixture-secret-do-not-use"]}
destinations:
  crm: {url: "http://127.0.0.1:9/contacts"}
routes:
  - name: contact-then-note
    send:
      - {to: crm, id: contact}
      - {to: crm, after: contact, url: "http://127.0.0.1:9/notes/{{ steps.contact.status }}"}
"""


async def test_a_chained_request_shows_as_held_and_cannot_be_replayed_yet(console: Start) -> None:
    gateway = await console(CHAIN)
    event_id = await post_event(gateway.client)
    await gateway.login()
    page = await gateway.page(f"/console/events/{event_id}")
    held = page[page.index('<span class="status status-held">'):]
    assert "Not rendered yet: it is rendered from the answer of the step it runs after." in held
    assert '<button type="submit" name="rerender" value="0" disabled>Replay</button>' in held
    assert "Held until the step it runs after is delivered." in held
    assert "Rendered from the answer of step <code>contact</code> once it is delivered." in page  # the trace


async def test_a_destination_waiting_for_its_quota_says_until_when(console: Start) -> None:
    async with FakeDestination([retry_after(600)]) as crm:
        gateway = await console(config_text(crm.url("/notes")), run_worker=True)
        event_id = await post_event(gateway.client)
        await crm.wait_for_requests(1)
        async with asyncio.timeout(10):
            while not (await gateway.app[STORE].pauses(SystemClock().now_ms())):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        await gateway.login()
        event = " ".join(html.unescape(await gateway.page(f"/console/events/{event_id}")).split())
        overview = " ".join(html.unescape(await gateway.page("/console/")).split())

    assert "Quota waits</dt><dd>1</dd>" in event and "Waiting for quota</dt><dd class=\"waiting-text\">until " in event
    assert "Waiting for quota until " in overview and "HTTP 429" in overview
    assert "Nothing needs a person" in overview  # a wait the service asked for is not a problem
