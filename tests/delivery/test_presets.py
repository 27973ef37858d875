"""Each preset end to end: a config, a Missive payload, the worker, and a fake that answers as the service does."""

from __future__ import annotations

import asyncio
import random
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.clock import FakeClock
from gateway.config.presets import TEAMS_CARD_CONTENT_TYPE
from gateway.delivery.send import make_session
from gateway.delivery.worker import Worker
from gateway.ingest.accept import accept
from gateway.model import Attempt, Delivery, DeliveryFilter, DeliveryStatus
from gateway.routing.compiled import LoadedConfig, load_config
from gateway.store.sqlite import SqliteStore
from tests.conftest import fixture_bytes
from tests.delivery.conftest import most_in_any_window
from tests.fakes import json_reply
from tests.services.apis import MissiveApi, PagerDutyEvents
from tests.services.chat import (
    DiscordWebhook,
    GoogleChatWebhook,
    MattermostWebhook,
    SlackApi,
    SlackWebhook,
    TeamsWorkflow,
)

START_MS = 1_772_366_400_000
DELIVERED, DEAD = DeliveryStatus.DELIVERED, DeliveryStatus.DEAD
EMAIL, NULLS = "incoming-email-with-labels.json", "null-fields.json"
CONVERSATION = "af5d8bb0-9f2e-4ea4-b658-90e0f94855d0"  # in EMAIL


@dataclass
class Gateway:
    """A config written from YAML, a SQLite store and a fake clock the services' fakes share."""

    tmp_path: Path
    store: SqliteStore
    clock: FakeClock
    loaded: LoadedConfig | None = None

    def configure(self, destination: str, send: str) -> LoadedConfig:
        """One destination `d` and one route `r` sending to it; both given as YAML mappings' bodies."""
        text = "sources: {missive: {}}\ndestinations:\n  d:\n" + textwrap.indent(textwrap.dedent(destination), "    ")
        text += "routes:\n  - name: r\n    send:\n      - to: d\n" + textwrap.indent(textwrap.dedent(send), "        ")
        path = self.tmp_path / "config.yaml"
        path.write_text(text, encoding="utf-8")
        self.loaded = load_config(path, environ={})
        return self.loaded

    async def receive(self, fixture: str = EMAIL, times: int = 1) -> None:
        """Accept `times` copies of a payload fixture (told apart by trailing spaces, so none is a duplicate)."""
        loaded, now_ms = self.loaded, self.clock.now_ms()
        assert loaded is not None
        bodies = [fixture_bytes(fixture).rstrip() + b" " * n for n in range(times)]
        for accepted in await asyncio.gather(*(accept(loaded, self.store, "missive", body, None, now_ms)
                                               for body in bodies)):  # fmt: skip
            assert accepted.result is not None and accepted.result.deliveries == 1

    async def deliver(self) -> list[Delivery]:
        assert self.loaded is not None
        async with make_session() as session:
            worker = Worker(self.store, self.loaded.config.destinations, session, clock=self.clock,
                            rng=random.Random(7))  # fmt: skip
            await worker.drain()
        return await self.store.list_deliveries(DeliveryFilter())

    async def attempts(self, delivery: Delivery) -> list[Attempt]:
        return await self.store.list_attempts(delivery.id)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    yield Gateway(tmp_path, store, FakeClock(START_MS))
    await store.close()


def statuses(deliveries: list[Delivery]) -> list[DeliveryStatus]:
    return [delivery.status for delivery in deliveries]


def spread_ms(attempts: list[Attempt]) -> int:
    return attempts[-1].started_at_ms - attempts[0].started_at_ms


# --- Slack ------------------------------------------------------------------------------------------------------

SLACK_BLOCKS = """\
body:
  text: "VIP mail from {{ message.from_field.name | default('someone', true) }}"
  blocks:
    - type: section
      text: {type: mrkdwn, text: "%s"}
"""


@pytest.mark.parametrize(
    ("preview", "status", "error"),
    [
        pytest.param("{{ message.preview }}", DEAD, "HTTP 400: invalid_blocks", id="empty-text-object-is-a-400"),
        pytest.param("{{ message.preview | default('(no preview)', true) }}", DELIVERED, None, id="guarded"),
    ],
)
async def test_slack_refuses_an_empty_text_object_and_the_guard_avoids_it(
    gw: Gateway, preview: str, status: DeliveryStatus, error: str | None
) -> None:
    async with SlackWebhook(now_ms=gw.clock.now_ms) as slack:
        gw.configure(f"type: slack\nurl: {slack.url(slack.path)}\n", SLACK_BLOCKS % preview)
        await gw.receive(NULLS)
        [delivery] = await gw.deliver()

    assert (delivery.status, delivery.attempts, delivery.last_error) == (status, 1, error)
    if status is DELIVERED:
        assert slack.posted[0]["blocks"][0]["text"]["text"] == "(no preview)"
        assert slack.posted[0]["text"] == "VIP mail from someone"


async def test_slack_webhook_429_waits_its_retry_after(gw: Gateway) -> None:
    async with SlackWebhook(now_ms=gw.clock.now_ms) as slack:
        gw.configure(f"type: slack\nurl: {slack.url(slack.path)}\nretry: {{backoff: 1ms}}\n", 'body: {text: "hi"}\n')
        await gw.receive(times=3)
        deliveries = await gw.deliver()

    assert statuses(deliveries) == [DELIVERED] * 3
    assert len(slack.posted) == 3
    assert all(b - a >= 1000 for a, b in zip(slack.accepted_at_ms, slack.accepted_at_ms[1:], strict=False))


@pytest.mark.parametrize(
    ("error", "status", "tries"),
    [
        pytest.param("team_added_to_org", DELIVERED, 2, id="org-migration-is-temporary"),
        pytest.param("org_login_required", DELIVERED, 2, id="org-login-is-temporary"),
        pytest.param("fatal_error", DEAD, 1, id="fatal-error-may-have-posted-so-not-retried"),
        pytest.param("channel_not_found", DEAD, 1, id="channel-not-found"),
    ],
)
async def test_slack_api_errors(gw: Gateway, error: str, status: DeliveryStatus, tries: int) -> None:
    async with SlackApi(now_ms=gw.clock.now_ms) as slack:
        slack.answer_next(json_reply(200, {"ok": False, "error": error}))
        gw.configure(f"type: slack\nurl: {slack.url('/api/chat.postMessage')}\ntoken: {slack.token}\n"
                     "retry: {backoff: 1s}\n", 'body: {channel: C0001, text: "hi"}\n')  # fmt: skip
        await gw.receive()
        [delivery] = await gw.deliver()

    assert (delivery.status, len(slack.received)) == (status, tries)
    assert [a.error for a in await gw.attempts(delivery)][0] == f"HTTP 200: slack error {error}"


# --- Discord ----------------------------------------------------------------------------------------------------


async def test_discord_pasted_url_is_pinned_to_v10_and_its_429_wait_is_seconds(gw: Gateway) -> None:
    async with DiscordWebhook(now_ms=gw.clock.now_ms) as discord:
        gw.configure(f"type: discord\nurl: {discord.pasted_url()}\nretry: {{backoff: 1ms}}\n",
                     'body: {content: "{{ message.subject }}"}\n')  # fmt: skip
        await gw.receive(times=7)  # the webhook takes 5 per 2 s
        deliveries = await gw.deliver()

    assert statuses(deliveries) == [DELIVERED] * 7
    assert {r.path_qs for r in discord.received} == {f"/api/v10/webhooks/{discord.webhook_id}/{discord.token}"
                                                     "?wait=true"}  # fmt: skip
    assert [r.status_code for d in deliveries for r in await gw.attempts(d)].count(429) >= 2
    # read as milliseconds (the unversioned API's unit) the waits would be minutes
    assert discord.accepted_at_ms[-1] - discord.accepted_at_ms[0] <= 5_000


async def test_discord_refuses_an_empty_message(gw: Gateway) -> None:
    async with DiscordWebhook(now_ms=gw.clock.now_ms) as discord:
        gw.configure(f"type: discord\nurl: {discord.pasted_url()}\n", 'body: {content: "{{ message.preview }}"}\n')
        await gw.receive(NULLS)
        [delivery] = await gw.deliver()

    assert (delivery.status, delivery.last_error) == (DEAD, 'HTTP 400: {"message": "Cannot send an empty message", '
                                                            '"code": 50006}')  # fmt: skip


# --- Teams ------------------------------------------------------------------------------------------------------

TEAMS_CARD = """\
card:
  type: AdaptiveCard
  version: "1.4"
  body:
    - {type: TextBlock, wrap: true, text: "Mail from {{ message.from_field.name }}"}
"""


async def test_teams_card_is_wrapped_and_the_flow_posts_it(gw: Gateway) -> None:
    async with TeamsWorkflow(now_ms=gw.clock.now_ms) as teams:
        gw.configure(f"type: teams\nurl: {teams.workflow_url()}\n", TEAMS_CARD)
        await gw.receive()
        [delivery] = await gw.deliver()

    assert (delivery.status, teams.flow_failures) == (DELIVERED, [])
    assert teams.posted_cards == [{"type": "AdaptiveCard", "version": "1.4",
                                   "body": [{"type": "TextBlock", "wrap": True, "text": "Mail from Priya Natarajan"}]}]


async def test_teams_bad_signature_is_a_dead_letter(gw: Gateway) -> None:
    async with TeamsWorkflow(now_ms=gw.clock.now_ms) as teams:
        gw.configure(f"type: teams\nurl: {teams.workflow_url().replace(teams.sig, 'wrong')}\n", TEAMS_CARD)
        await gw.receive()
        [delivery] = await gw.deliver()

    assert delivery.status is DEAD
    assert delivery.last_error is not None and "DirectApiAuthorizationRequired" in delivery.last_error


async def test_teams_body_the_flow_would_drop_is_never_sent(gw: Gateway) -> None:
    template = 'template: \'{"type": "message", "text": "{{ message.subject }}"} {# attachments: %s #}\'\n'
    async with TeamsWorkflow(now_ms=gw.clock.now_ms) as teams:
        gw.configure(f"type: teams\nurl: {teams.workflow_url()}\n", template % TEAMS_CARD_CONTENT_TYPE)
        await gw.receive()
        [delivery] = await gw.deliver()

    assert teams.received == []
    assert delivery.status is DEAD and delivery.request is None
    assert delivery.last_error is not None and "would be dropped by Teams" in delivery.last_error


# --- Missive ----------------------------------------------------------------------------------------------------

MISSIVE_POST = 'body: {posts: {conversation: "{{ conversation.id }}", markdown: "seen by the gateway"}}\n'


async def test_missive_preset_keeps_five_requests_in_flight_at_most(gw: Gateway) -> None:
    async with MissiveApi(now_ms=gw.clock.now_ms, answer_delay_s=0.1) as missive:
        loaded = gw.configure(f"type: missive\nurl: {missive.posts_url()}\ntoken: {missive.token}\n", MISSIVE_POST)
        await gw.receive(times=12)
        deliveries = await gw.deliver()

    assert loaded.config.destinations["d"].concurrency == 5
    assert statuses(deliveries) == [DELIVERED] * 12
    assert (missive.max_in_flight, missive.too_many_at_once) == (5, 0)


async def test_missive_preset_keeps_to_300_a_minute_and_900_per_15_minutes(gw: Gateway) -> None:
    async with MissiveApi(now_ms=gw.clock.now_ms) as missive:
        loaded = gw.configure(f"type: missive\nurl: {missive.posts_url()}\ntoken: {missive.token}\n", MISSIVE_POST)
        await gw.receive(times=950)
        deliveries = await gw.deliver()

    assert [rate.text for rate in loaded.config.destinations["d"].rate_limit or ()] == ["300/m", "900/15m"]
    assert statuses(deliveries) == [DELIVERED] * 950
    assert len(missive.received) == 950  # not one 429: the gateway kept to Missive's limits
    starts = missive.accepted_at_ms
    assert (most_in_any_window(starts, 15 * 60_000), most_in_any_window(starts, 60_000)) == (900, 300)
    assert starts[900] - starts[0] == 15 * 60_000  # the 901st waits until the first leaves the window


async def test_missive_429_waits_its_retry_after(gw: Gateway) -> None:
    async with MissiveApi(now_ms=gw.clock.now_ms) as missive:
        missive.answer_next(json_reply(429, {"error": "Rate limit exceeded"}, {"Retry-After": "40"}))
        gw.configure(f"type: missive\nurl: {missive.posts_url()}\ntoken: {missive.token}\nretry: {{backoff: 1ms}}\n",
                     MISSIVE_POST)  # fmt: skip
        await gw.receive()
        [delivery] = await gw.deliver()

    attempts = await gw.attempts(delivery)
    assert [a.status_code for a in attempts] == [429, 200]
    assert spread_ms(attempts) >= 40_000
    assert missive.posts == [{"conversation": CONVERSATION, "markdown": "seen by the gateway"}]


# --- Google Chat ------------------------------------------------------------------------------------------------


async def test_google_chat_keeps_to_a_message_a_second_per_space(gw: Gateway) -> None:
    async with GoogleChatWebhook(now_ms=gw.clock.now_ms) as chat:
        loaded = gw.configure(f"type: google_chat\nurl: {chat.webhook_url()}\n",
                              'body: {text: "{{ message.subject }}"}\n')  # fmt: skip
        await gw.receive(times=5)
        deliveries = await gw.deliver()

    assert [rate.text for rate in loaded.config.destinations["d"].rate_limit or ()] == ["1/s"]
    assert statuses(deliveries) == [DELIVERED] * 5
    assert {a.status_code for d in deliveries for a in await gw.attempts(d)} == {200}  # never a 429
    assert most_in_any_window(chat.accepted_at_ms, 1000) == 1


async def test_google_chat_delivers_and_waits_out_resource_exhausted(gw: Gateway) -> None:
    async with GoogleChatWebhook(now_ms=gw.clock.now_ms) as chat:
        loaded = gw.configure(f"type: google_chat\nurl: {chat.webhook_url()}\nretry: {{backoff: 1s}}\n"
                              "rate_limit: 10/s\n",  # above the space's one message a second
                              'body: {text: "{{ message.subject }}"}\n')  # fmt: skip
        await gw.receive(times=3)
        deliveries = await gw.deliver()
        shown = loaded.masker.url(chat.webhook_url())

    assert statuses(deliveries) == [DELIVERED] * 3
    assert [m["text"] for m in chat.posted] == ["Order HL-20931 arrived damaged"] * 3
    assert {a.status_code for d in deliveries for a in await gw.attempts(d)} == {200, 429}
    assert chat.key not in shown and chat.token not in shown and "key=***&token=***" in shown


async def test_google_chat_bad_token_is_a_dead_letter(gw: Gateway) -> None:
    async with GoogleChatWebhook(now_ms=gw.clock.now_ms) as chat:
        gw.configure(f"type: google_chat\nurl: {chat.webhook_url().replace(chat.token, 'wrong-token')}\n",
                     'body: {text: "hi"}\n')  # fmt: skip
        await gw.receive()
        [delivery] = await gw.deliver()

    assert (delivery.status, delivery.attempts) == (DEAD, 1)
    assert delivery.last_error is not None and "UNAUTHENTICATED" in delivery.last_error


# --- Mattermost -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "status", "error"),
    [
        pytest.param("New mail: {{ message.subject }}", DELIVERED, None, id="slack-style-body"),
        pytest.param("{{ message.preview }}", DEAD, "No text specified.", id="empty-text"),
    ],
)
async def test_mattermost_takes_slack_style_bodies(gw: Gateway, text: str, status: DeliveryStatus,
                                                   error: str | None) -> None:  # fmt: skip
    async with MattermostWebhook(now_ms=gw.clock.now_ms) as mattermost:
        gw.configure(f"type: mattermost\nurl: {mattermost.url('/hooks/' + mattermost.hook_id)}\n",
                     f'body: {{text: "{text}", username: gateway}}\n')  # fmt: skip
        await gw.receive(NULLS if status is DEAD else EMAIL)
        [delivery] = await gw.deliver()

    assert delivery.status is status
    if error is None:
        assert mattermost.posted == [{"text": "New mail: Order HL-20931 arrived damaged", "username": "gateway"}]
    else:
        assert delivery.last_error is not None and error in delivery.last_error


# --- PagerDuty --------------------------------------------------------------------------------------------------

PAGERDUTY_EVENT = """\
body:
  event_action: trigger
  payload: {summary: "VIP mail: {{ message.subject }}", source: missive, severity: %s}
"""


async def page(gw: Gateway, pagerduty: PagerDutyEvents, severity: str = "critical") -> Delivery:
    """Configure a pagerduty destination pointing at the fake, receive one email and deliver it."""
    gw.configure(f"type: pagerduty\nurl: {pagerduty.events_url()}\nrouting_key: {pagerduty.routing_key}\n",
                 PAGERDUTY_EVENT % severity)  # fmt: skip
    await gw.receive()
    [delivery] = await gw.deliver()
    return delivery


async def test_pagerduty_event_carries_the_routing_key_and_a_stable_dedup_key(gw: Gateway) -> None:
    async with PagerDutyEvents(now_ms=gw.clock.now_ms) as pagerduty:
        delivery = await page(gw, pagerduty)
        await gw.store.requeue([delivery.id], gw.clock.now_ms())  # a replay: the same incident, not a second one
        await gw.deliver()

    assert delivery.status is DELIVERED
    [(dedup_key, events)] = pagerduty.alerts.items()
    assert dedup_key == f"{delivery.event_id}:r" and len(events) == 2
    assert events[0]["routing_key"] == pagerduty.routing_key
    assert events[0]["payload"]["summary"] == "VIP mail: Order HL-20931 arrived damaged"


async def test_pagerduty_invalid_event_is_a_dead_letter_with_its_errors(gw: Gateway) -> None:
    async with PagerDutyEvents(now_ms=gw.clock.now_ms) as pagerduty:
        delivery = await page(gw, pagerduty, severity="urgent")

    assert (delivery.status, delivery.attempts) == (DEAD, 1)
    assert delivery.last_error is not None and "'payload.severity' is invalid" in delivery.last_error


async def test_pagerduty_throttle_is_waited_out(gw: Gateway) -> None:
    async with PagerDutyEvents(now_ms=gw.clock.now_ms) as pagerduty:
        pagerduty.answer_next(json_reply(429, {"status": "throttle event", "message": "Requests for this service "
                                                                                      "are arriving too quickly."}))
        delivery = await page(gw, pagerduty)

    assert delivery.status is DELIVERED
    assert [a.status_code for a in await gw.attempts(delivery)] == [429, 202]


async def test_pagerduty_preset_keeps_to_120_events_a_minute(gw: Gateway) -> None:
    async with PagerDutyEvents(now_ms=gw.clock.now_ms) as pagerduty:
        loaded = gw.configure(f"type: pagerduty\nurl: {pagerduty.events_url()}\nrouting_key: {pagerduty.routing_key}\n",
                              PAGERDUTY_EVENT % "info")  # fmt: skip
        await gw.receive(times=130)
        deliveries = await gw.deliver()

    assert [rate.text for rate in loaded.config.destinations["d"].rate_limit or ()] == ["120/m"]
    assert statuses(deliveries) == [DELIVERED] * 130
    assert {a.status_code for d in deliveries for a in await gw.attempts(d)} == {202}  # not one throttle
    assert most_in_any_window(pagerduty.accepted_at_ms, 60_000) == 120


def test_pagerduty_url_is_the_events_api_by_default(gw: Gateway) -> None:
    loaded = gw.configure("type: pagerduty\nrouting_key: R0UT1NGKEY0123456789abcdefghijkl\n",
                          PAGERDUTY_EVENT % "info")  # fmt: skip
    assert loaded.config.destinations["d"].url == "https://events.pagerduty.com/v2/enqueue"
    assert "R0UT1NGKEY0123456789abcdefghijkl" in loaded.secrets
