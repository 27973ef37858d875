"""The notification examples end to end, against fakes that answer as Slack, Teams Workflows, Missive's API and
PagerDuty do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.clock import FakeClock
from gateway.model import DeliveryStatus
from gateway.store.sqlite import SqliteStore
from tests.examples.rig import START_MS, load_example, payload
from tests.services.apis import MissiveApi, PagerDutyEvents
from tests.services.chat import SlackWebhook, TeamsWorkflow

EMAIL = "incoming-email-with-labels.json"


def vip(document: dict[str, Any]) -> None:
    document["conversation"]["shared_labels"].append({"id": "vip-label", "name": "VIP"})


def vip_without_preview_or_name(document: dict[str, Any]) -> None:
    """A VIP's mail with only an attachment, from a client that sends no display name."""
    vip(document)
    document["message"]["preview"] = ""
    document["message"]["from_field"]["name"] = None


async def test_slack_vip_alert_survives_an_empty_preview_and_a_missing_name(
    sqlite_store: SqliteStore, tmp_path: Path
) -> None:
    clock = FakeClock(START_MS)
    async with SlackWebhook(now_ms=clock.now_ms) as slack:
        example = load_example("slack-vip", sqlite_store, tmp_path, clock, SLACK_WEBHOOK_URL=slack.url(slack.path))
        async with example:
            await example.receive(payload(EMAIL))
            await example.receive(payload(EMAIL, vip_without_preview_or_name))
            deliveries = await example.deliver()

    assert [d.status for d in deliveries] == [DeliveryStatus.DELIVERED] * 2
    assert [d.attempts for d in deliveries] == [1, 1]  # no invalid_blocks: Slack took both at once (1/s apart)
    alert = slack.posted[1]
    assert alert["text"] == "VIP mail from priya.natarajan@example.org: Order HL-20931 arrived damaged"
    assert alert["blocks"][1]["elements"][0]["text"] == "_(no preview)_"


async def test_teams_cards_reach_the_channel(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    clock = FakeClock(START_MS)
    async with TeamsWorkflow(now_ms=clock.now_ms) as teams:
        example = load_example("teams", sqlite_store, tmp_path, clock, TEAMS_WORKFLOW_URL=teams.workflow_url())
        async with example:
            await example.receive(payload("new-comment.json"))
            await example.receive(payload(EMAIL, vip))
            deliveries = await example.deliver()

    assert [d.status for d in deliveries] == [DeliveryStatus.DELIVERED] * 2
    assert teams.flow_failures == []  # a 202 proves nothing: the flow ran and posted both cards
    assert [card["body"][0]["text"] for card in teams.posted_cards] == [
        "Comment by Alma Reyes on Order HL-20931 arrived damaged",
        "VIP mail: Order HL-20931 arrived damaged",
    ]


async def test_missive_postback_posts_once_within_missives_limits(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    clock = FakeClock(START_MS)
    async with MissiveApi(now_ms=clock.now_ms) as missive:
        urls = {"missive-api": missive.posts_url()}
        example = load_example("missive-postback", sqlite_store, tmp_path, clock, urls=urls,
                               MISSIVE_API_TOKEN=missive.token, MISSIVE_TRIAGED_LABEL_ID="triaged-label")
        async with example:
            assert await example.receive(payload(EMAIL)) == 1

            def triaged(document: dict[str, Any]) -> None:  # the same conversation after the post's label
                document["conversation"]["shared_labels"].append({"id": "triaged-label", "name": "Triaged"})

            assert await example.receive(payload(EMAIL, triaged)) == 0  # the guard: no loop
            assert await example.receive(payload("label-change.json")) == 0
            [delivery] = await example.deliver()

    assert delivery.status is DeliveryStatus.DELIVERED
    [post] = missive.posts
    assert (post["conversation"], post["add_shared_labels"]) == ("af5d8bb0-9f2e-4ea4-b658-90e0f94855d0",
                                                                 ["triaged-label"])
    missive_api = example.config.config.destinations["missive-api"]
    assert missive_api.concurrency == missive.MAX_CONCURRENT
    assert [rate.text for rate in missive_api.rate_limit or ()] == ["300/m", "900/15m"]


async def test_pagerduty_pages_once_per_vip_conversation(sqlite_store: SqliteStore, tmp_path: Path) -> None:
    clock = FakeClock(START_MS)
    async with PagerDutyEvents(now_ms=clock.now_ms) as pagerduty:
        example = load_example("pagerduty", sqlite_store, tmp_path, clock, urls={"pagerduty": pagerduty.events_url()},
                               PAGERDUTY_ROUTING_KEY=pagerduty.routing_key)
        async with example:

            def labelled_vip(urgent: bool) -> bytes:
                def change(document: dict[str, Any]) -> None:
                    document["conversation"]["shared_labels"] = [{"name": "VIP"}, *([{"name": "Urgent"}] * urgent)]

                return payload("label-change.json", change)

            await example.receive(labelled_vip(urgent=False))
            await example.receive(labelled_vip(urgent=True))  # labelled again: the same alert, not a second page
            deliveries = await example.deliver()

    assert [d.status for d in deliveries] == [DeliveryStatus.DELIVERED] * 2
    [(dedup_key, events)] = pagerduty.alerts.items()
    assert dedup_key.startswith("missive-vip-") and len(events) == 2
    assert events[0]["payload"]["severity"] == "critical"
    assert events[0]["payload"]["summary"].startswith("VIP: Invoice 2024-0611 charged twice (")
    assert all(d.request is not None and pagerduty.routing_key.encode() in d.request.body for d in deliveries)
