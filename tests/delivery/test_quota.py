"""Quotas are waits, not failures: a 429 spends no attempt, its hint is honoured past max_backoff up to
max_wait, and the whole destination pauses meanwhile."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.clock import utc_text
from gateway.model import Attempt, DeliveryStatus
from tests.delivery.conftest import START_MS, Rig, destination
from tests.fakes import FakeDestination, Reply, json_reply, retry_after

DAY_S = 86_400
SALESFORCE_LIMIT = json_reply(403, [{"message": "TotalRequests Limit exceeded.",
                                     "errorCode": "REQUEST_LIMIT_EXCEEDED"}])  # fmt: skip


def starts(attempts: list[Attempt]) -> list[int]:
    return [attempt.started_at_ms - START_MS for attempt in attempts]


async def test_quota_answers_spend_no_attempt_and_their_wait_passes_max_backoff(rig: Rig) -> None:
    async with FakeDestination([retry_after(900)] * 4 + [Reply(200)]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url(), max_attempts=2)
        await rig.worker({"crm": destination(retry={"attempts": 2, "max_backoff": "60s"})}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, delivery.attempts, delivery.quota_waits) == (DeliveryStatus.DELIVERED, 1, 4)
    attempts = await rig.attempts(delivery_id)
    assert starts(attempts) == [0, 900_000, 1_800_000, 2_700_000, 3_600_000]  # 15 minutes each, not 60 s
    assert attempts[0].error == f"waiting for quota until {utc_text(START_MS + 900_000)}: HTTP 429: rate limited"
    assert [a.number for a in attempts] == [1, 2, 3, 4, 5]
    assert len(fake.received) == 5


async def test_the_whole_destination_pauses_while_one_delivery_waits(rig: Rig) -> None:
    async with FakeDestination([retry_after(120), 200]) as crm, FakeDestination([200]) as other:
        crm_ids = await rig.enqueue("crm", crm.url(), count=5)
        other_ids = await rig.enqueue("other", other.url(), count=3)
        await rig.worker({"crm": destination(concurrency=1), "other": destination(concurrency=1)}).drain()

    first, *rest = [starts(await rig.attempts(i)) for i in crm_ids]
    assert first == [0, 120_000]
    assert all(later[0] >= 120_000 for later in rest)  # none sent while the quota was spent
    assert [starts(await rig.attempts(i)) for i in other_ids] == [[0], [0], [0]]  # other destinations go on
    assert len(crm.received) == 6


async def test_a_hint_beyond_max_wait_is_a_dead_letter_and_the_others_wait_max_wait(rig: Rig) -> None:
    async with FakeDestination([retry_after(3 * DAY_S), 200]) as fake:
        first, *rest = await rig.enqueue("crm", fake.url(), count=3)
        await rig.worker({"crm": destination(concurrency=1, retry={"max_wait": "1h"})}).drain()

    dead = await rig.delivery(first)
    assert (dead.status, dead.attempts) == (DeliveryStatus.DEAD, 0)
    assert dead.last_error == (f"quota exhausted until {utc_text(START_MS + 3 * DAY_S * 1000)}, beyond "
                               "retry.max_wait: HTTP 429: rate limited")  # fmt: skip
    assert [starts(await rig.attempts(i)) for i in rest] == [[3_600_000], [3_600_000]]
    assert [(await rig.delivery(i)).status for i in rest] == [DeliveryStatus.DELIVERED] * 2


async def test_the_default_max_wait_is_a_day(rig: Rig) -> None:
    async with FakeDestination([retry_after(DAY_S), retry_after(DAY_S + 1), 200]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url())
        await rig.worker({"crm": destination()}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, len(fake.received)) == (DeliveryStatus.DEAD, 2)
    assert delivery.last_error is not None and delivery.last_error.startswith("quota exhausted until ")


@pytest.mark.parametrize(
    ("answer", "waits_ms"),
    [
        pytest.param(SALESFORCE_LIMIT, [1000, 2000, 4000], id="salesforce-403-backs-off"),
        pytest.param(Reply(503, "busy", {"Retry-After": "30"}), [30_000] * 3, id="503-with-retry-after"),
    ],
)
async def test_quota_answers_a_preset_knows(rig: Rig, answer: Reply, waits_ms: list[int]) -> None:
    async with FakeDestination([answer] * 3 + [Reply(201)]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url(), max_attempts=1)
        await rig.worker({"crm": destination(retry={"attempts": 1})}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, delivery.attempts, delivery.quota_waits) == (DeliveryStatus.DELIVERED, 1, 3)
    at = starts(await rig.attempts(delivery_id))
    assert [later - earlier for earlier, later in zip(at, at[1:], strict=False)] == waits_ms
    assert len(fake.received) == 4


async def test_a_503_without_a_hint_is_a_failure(rig: Rig) -> None:
    async with FakeDestination([503]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url(), max_attempts=2)
        await rig.worker({"crm": destination(retry={"attempts": 2})}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, delivery.attempts, delivery.quota_waits) == (DeliveryStatus.DEAD, 2, 0)
    assert len(fake.received) == 2


async def test_the_log_says_waiting_for_quota_until(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.worker")
    async with FakeDestination([retry_after(60), 200]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url(), route="vip")
        await rig.worker({"crm": destination()}).drain()

    waiting: Any = next(r for r in caplog.records if "waiting" in r.getMessage())
    assert waiting.getMessage().startswith(
        f"delivery {delivery_id} waiting for quota until {utc_text(START_MS + 60_000)}: route=vip destination=crm "
        "attempt=0/5 status=429 "
    )
    assert waiting.getMessage().endswith(" error=HTTP 429: rate limited")
    assert (waiting.outcome, waiting.waiting_until_ms) == ("waiting", START_MS + 60_000)
