"""The console in a real headless Chromium against a real `gateway serve` and real sinks: what an operator does."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions

from gateway.ingest.signature import sign
from gateway.web.token_guesses import LIMIT
from tests.conftest import FIXTURE_SECRET, FIXTURES, fixture_bytes
from tests.processes import ROOT, GatewayProcess, free_port
from tests.web.console.browser import assert_usable, browser, screenshot, screenshots, wait
from tests.web.console.test_pages import XSS, hostile_email

__all__ = ["browser", "screenshots"]  # fixtures used by the tests below

TOKEN = "console-browser-token-0123456789"
CRM_TOKEN = "crm-bearer-value-42"
CONVERSATION = json.loads(fixture_bytes("incoming-email-with-labels.json"))["conversation"]["id"]
PAYLOADS = ["incoming-email-with-labels.json", "outgoing-email.json", "new-comment.json", "label-change.json"]


def config_text(archive_port: int, crm_port: int) -> str:
    return f"""\
storage: {{path: gateway.db}}
admin: {{token: "{TOKEN}"}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  archive: {{url: "http://127.0.0.1:{archive_port}/events"}}
  crm:
    url: "http://127.0.0.1:{crm_port}/notes"
    headers: {{Authorization: "Bearer ${{CRM_TOKEN}}"}}
    retry: {{attempts: 1}}
routes:
  - name: everything-to-archive
    send: [{{to: archive}}]
  - name: customer-mail-to-crm
    when:
      all:
        - {{path: $.rule.type, in: [incoming_email, outgoing_email]}}
        - {{path: "$.conversation.shared_labels[*].name", exists: true}}
    send:
      - to: crm
        body: {{subject: "{{{{ message.subject }}}}", from: "{{{{ message.from_field.address }}}}"}}
"""


@asynccontextmanager
async def sink(port: int) -> AsyncIterator[str]:
    """`tests/sink.py` as its own process on `port`: a destination that answers 200 and counts."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "tests" / "sink.py"), "--port", str(port), stdin=asyncio.subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(15), aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"{url}/count") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        yield url
    finally:
        process.kill()
        await process.wait()


async def arrivals(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/count") as answer:
        count: int = await answer.json()
        return count


async def arrived(url: str, count: int) -> None:
    """Return once the sink at `url` has taken `count` requests."""
    async with asyncio.timeout(20):
        while await arrivals(url) < count:  # noqa: ASYNC110 (the sink is another process)
            await asyncio.sleep(0.05)


async def post_events(gateway: GatewayProcess, bodies: list[bytes]) -> list[str]:
    ids = []
    async with aiohttp.ClientSession() as session:
        for body in bodies:
            headers = {"X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)}
            async with session.post(gateway.url("/hooks/missive"), data=body, headers=headers) as answer:
                assert answer.status == 200, await answer.text()
                ids.append((await answer.json())["event_id"])
    return ids


@pytest.fixture
async def running(
    tmp_path: Path, write_config: Callable[[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[GatewayProcess, str, int]]:
    """A gateway whose archive sink is up and whose CRM is down; yields it, the archive's URL and the CRM's port."""
    monkeypatch.setenv("CRM_TOKEN", CRM_TOKEN)
    archive_port, crm_port = free_port(), free_port()
    config = write_config(config_text(archive_port, crm_port), "config.yaml")
    async with sink(archive_port) as archive, GatewayProcess(config, free_port(), tmp_path / "gateway.log") as gateway:
        await gateway.start()
        yield gateway, archive, crm_port
        await gateway.stop()


def log_in(driver: WebDriver, gateway: GatewayProcess) -> None:
    """Log in with the keyboard only: type the token, press Enter."""
    driver.get(gateway.url("/console/"))
    wait(driver).until(expected_conditions.title_contains("Log in"))
    assert_usable(driver)
    field = driver.switch_to.active_element  # the token field has the focus
    assert field.get_attribute("id") == "token"
    field.send_keys(TOKEN, Keys.ENTER)
    wait(driver).until(lambda d: "/console/login" not in d.current_url)


def reloaded_until_shown(element_id: str) -> Callable[[WebDriver], bool]:
    def shown(driver: WebDriver) -> bool:
        if driver.find_elements(By.ID, element_id):
            return True
        driver.refresh()
        return False

    return shown


def status_of(driver: WebDriver, delivery_id: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"article[id='{delivery_id}'] .status").text


async def test_an_operator_replays_a_dead_letter_and_tries_the_playground(
    browser: WebDriver, running: tuple[GatewayProcess, str, int], screenshots: Path
) -> None:
    gateway, archive, crm_port = running
    event_ids = await post_events(gateway, [fixture_bytes(name) for name in PAYLOADS])
    await arrived(archive, len(PAYLOADS))  # the archive takes all four; the CRM is down: its deliveries are dead
    log_in(browser, gateway)

    wait(browser).until(expected_conditions.title_contains("Overview"))  # where logging in leads
    alarm = browser.find_element(By.CSS_SELECTOR, "tr.alarm")
    assert alarm.find_element(By.CSS_SELECTOR, "th").text.startswith("crm")
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar-delivered")) == 1  # the archive's hour
    assert_usable(browser)
    screenshot(browser, screenshots, "overview")
    screenshot(browser, screenshots, "overview-phone", phone=True)
    browser.find_element(By.LINK_TEXT, "2 dead letters").click()

    wait(browser).until(expected_conditions.title_contains("Dead letters"))
    group = browser.find_element(By.CSS_SELECTOR, "section.group")
    assert group.find_element(By.CSS_SELECTOR, "h2").text.split() == ["crm", "2"]  # incoming and outgoing email
    assert "cannot connect" in group.find_element(By.CSS_SELECTOR, ".error-text").text.lower()
    assert_usable(browser)
    screenshot(browser, screenshots, "dead-letters")

    group.find_element(By.CSS_SELECTOR, f"a[href^='/console/events/{event_ids[0]}']").click()
    wait(browser).until(expected_conditions.title_contains("Event"))
    assert event_ids[0] in browser.title
    dead_id = browser.find_element(By.CSS_SELECTOR, "article.delivery .status-dead").find_element(
        By.XPATH, "ancestor::article").get_attribute("id")  # fmt: skip
    assert dead_id and "Bearer ***" in browser.page_source and CRM_TOKEN not in browser.page_source
    assert_usable(browser)
    screenshot(browser, screenshots, "event")
    screenshot(browser, screenshots, "event-phone", phone=True)

    async with sink(crm_port) as crm:  # the CRM is back: replay from the dead letters page
        browser.get(gateway.url("/console/dead-letters"))
        browser.find_element(By.CSS_SELECTOR, "input[data-select-group]").click()  # select all in the group
        assert browser.find_element(By.CSS_SELECTOR, f"input[value='{dead_id}']").is_selected()
        browser.find_element(By.CSS_SELECTOR, "#selected button[value='0']").click()
        wait(browser).until(expected_conditions.title_contains("Replay"))
        assert "2 queued" in browser.find_element(By.CSS_SELECTOR, "[role=status]").text
        assert_usable(browser)
        screenshot(browser, screenshots, "replay")
        await arrived(crm, 2)
    browser.get(gateway.url(f"/console/events/{event_ids[0]}"))
    assert status_of(browser, dead_id) == "delivered"
    rows = browser.find_elements(By.CSS_SELECTOR, f"article[id='{dead_id}'] table.attempts tbody tr")
    assert [row.find_elements(By.TAG_NAME, "td")[2].text for row in rows] == ["–", "200"]

    browser.get(gateway.url("/console/events"))  # find an event by its conversation id, keyboard only
    search = browser.find_element(By.ID, "f-q")
    search.send_keys(CONVERSATION, Keys.ENTER)
    wait(browser).until(lambda d: "q=" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr[data-cursor]")
    assert [row.get_attribute("data-cursor").split(":")[1] for row in rows] == [event_ids[0]]  # type: ignore[union-attr]
    rows[0].find_element(By.CSS_SELECTOR, "a").click()
    wait(browser).until(expected_conditions.title_contains(event_ids[0]))

    browser.get(gateway.url("/console/events"))  # live: an event that arrives shows up without a reload
    (late,) = await post_events(gateway, [fixture_bytes("team-change.json")])
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, f"tr[data-cursor$='{late}']"))
    assert "1 new event" in browser.find_element(By.ID, "live").text
    assert_usable(browser)
    screenshot(browser, screenshots, "events")

    browser.get(gateway.url("/console/playground"))
    browser.find_element(By.ID, "file").send_keys(str(FIXTURES / "label-change.json"))
    wait(browser).until(lambda d: d.find_element(By.ID, "payload").get_attribute("value"))
    assert json.loads(browser.find_element(By.ID, "payload").get_attribute("value") or "")["rule"]["type"]
    browser.find_element(By.CSS_SELECTOR, "form[enctype] button[type=submit]").click()
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".trace"))
    verdicts = [item.text.split("\n")[0] for item in browser.find_elements(By.CSS_SELECTOR, ".trace > li")]
    assert verdicts == ["✓ everything-to-archive: matched", "✗ customer-mail-to-crm: not matched"]
    assert_usable(browser)
    screenshot(browser, screenshots, "playground")
    await arrived(archive, len(PAYLOADS) + 1)  # the late event's
    assert await arrivals(archive) == len(PAYLOADS) + 1  # and nothing from the playground

    good = gateway.config.read_text()
    gateway.config.write_text(good.replace("- to: crm", "- to: crn"))  # a typo: the reload is rejected
    browser.get(gateway.url("/console/config"))
    wait(browser).until(reloaded_until_shown("rejected-h"))  # the gateway looks at its file every second
    problems = browser.find_element(By.CSS_SELECTOR, ".problems").text
    assert "unknown destination 'crn'; did you mean 'crm'?" in problems
    assert "Bearer ***" in browser.page_source and TOKEN not in browser.page_source
    assert_usable(browser)
    screenshot(browser, screenshots, "config")


async def test_a_hostile_payload_stays_text_in_the_browser(
    browser: WebDriver, running: tuple[GatewayProcess, str, int]
) -> None:
    gateway, _, _ = running
    (event_id,) = await post_events(gateway, [hostile_email()])
    log_in(browser, gateway)
    for path in [f"/console/events/{event_id}", "/console/dead-letters", f"/console/playground?event={event_id}"]:
        browser.get(gateway.url(path))
        assert browser.execute_script("return window.pwned === undefined && document.images.length === 0")
        assert "<img src=x" not in browser.title
    browser.get(gateway.url(f"/console/events/{event_id}"))
    browser.find_element(By.XPATH, "//summary[span[@class='key' and text()='conversation']]").click()
    shown = browser.find_element(By.XPATH, "//li[span[@class='key' and text()='subject']]")
    assert shown.text == f'subject: "{XSS}"'  # shown, as text


async def test_a_login_mistyped_too_often_says_how_long_to_wait(
    browser: WebDriver, running: tuple[GatewayProcess, str, int], screenshots: Path
) -> None:
    gateway, _, _ = running
    browser.get(gateway.url("/console/login"))
    for attempt in range(LIMIT + 1):
        field = browser.find_element(By.ID, "token")
        field.send_keys(f"guess-{attempt}", Keys.ENTER)
        wait(browser).until(expected_conditions.staleness_of(field))  # the answer's page replaced the form
    alert = browser.find_element(By.CSS_SELECTOR, "[role=alert]").text
    assert alert.startswith("Too many wrong admin tokens from this address: try again in "), alert
    assert_usable(browser)
    screenshot(browser, screenshots, "login-wait")
