"""The delivery loop against a real SQLite store and real local HTTP servers."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping, Sequence

import pytest

from gateway.clock import SystemClock, utc_text
from gateway.config.schema import DestinationConfig
from gateway.delivery.limits import LocalLimits
from gateway.delivery.send import signature
from gateway.model import Attempt, DeliveryStatus
from tests.delivery.conftest import START_MS, Rig, destination, most_in_any_window
from tests.fakes import (
    DROP,
    HANG,
    FakeDestination,
    Reply,
    discord_rate_limited,
    json_reply,
    refused_url,
    retry_after,
    slack_api_error,
    slack_ok,
)

SECRET_PATH = "/services/T000/B000/XXXXsecretXXXX"


def gaps_ms(starts_ms: list[int]) -> list[int]:
    return [later - earlier for earlier, later in itertools.pairwise(starts_ms)]


def starts_ms(attempts: list[Attempt]) -> list[int]:
    return [attempt.started_at_ms for attempt in attempts]


# --- outcomes and spacing, one destination ---------------------------------------------------------------------


async def test_retries_until_delivered(rig: Rig) -> None:
    async with FakeDestination([500, 503, 200]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url())
        await rig.worker({"crm": destination()}).drain()

    assert len(fake.received) == 3
    assert (await rig.delivery(delivery_id)).status is DeliveryStatus.DELIVERED
    attempts = await rig.attempts(delivery_id)
    assert [(a.number, a.status_code, a.error) for a in attempts] == [
        (1, 500, "HTTP 500"),
        (2, 503, "HTTP 503"),
        (3, 200, None),
    ]
    # full jitter: each wait is under its doubling ceiling (1 s, then 2 s)
    assert all(gap <= 1000 * 2**n for n, gap in enumerate(gaps_ms(starts_ms(attempts))))


async def test_retry_after_is_honoured(rig: Rig) -> None:
    async with FakeDestination([retry_after(2), 200]) as fake:
        [delivery_id] = await rig.enqueue("missive", fake.url())
        config = destination(type="missive", retry={"attempts": 3, "backoff": "1ms"})
        await rig.worker({"missive": config}).drain()

    attempts = await rig.attempts(delivery_id)
    assert [a.status_code for a in attempts] == [429, 200]
    assert gaps_ms(starts_ms(attempts))[0] >= 2000
    assert len(fake.received) == 2


async def test_discord_wait_comes_from_the_body(rig: Rig) -> None:
    async with FakeDestination([discord_rate_limited(1.5), 204]) as fake:
        [delivery_id] = await rig.enqueue("discord", fake.url())
        await rig.worker({"discord": destination(type="discord", retry={"backoff": "1ms"})}).drain()

    attempts = await rig.attempts(delivery_id)
    assert [a.status_code for a in attempts] == [429, 204]
    assert gaps_ms(starts_ms(attempts))[0] >= 1500
    assert (await rig.delivery(delivery_id)).status is DeliveryStatus.DELIVERED


async def test_slack_ok_false_is_a_dead_letter_at_once(rig: Rig) -> None:
    async with FakeDestination([slack_api_error("channel_not_found")]) as fake:
        [delivery_id] = await rig.enqueue("slack", fake.url())
        await rig.worker({"slack": destination(type="slack")}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DEAD, 1)
    assert delivery.last_error == "HTTP 200: slack error channel_not_found"
    assert len(fake.received) == 1


async def test_slack_ratelimited_is_retried_after_its_hint(rig: Rig) -> None:
    limited = json_reply(200, {"ok": False, "error": "ratelimited"}, {"Retry-After": "3"})
    async with FakeDestination([limited, slack_ok()]) as fake:
        [delivery_id] = await rig.enqueue("slack", fake.url())
        await rig.worker({"slack": destination(type="slack", retry={"backoff": "1ms"})}).drain()

    attempts = await rig.attempts(delivery_id)
    assert [a.error for a in attempts] == [f"waiting for quota until {utc_text(START_MS + 3000)}: HTTP 200: slack "
                                           "error ratelimited", None]  # fmt: skip
    assert gaps_ms(starts_ms(attempts))[0] >= 3000
    delivered = await rig.delivery(delivery_id)
    assert (delivered.status, delivered.attempts) == (DeliveryStatus.DELIVERED, 1)


async def test_a_permanent_error_is_not_retried(rig: Rig) -> None:
    async with FakeDestination([Reply(400, '{"message": "bad property"}')]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url())
        await rig.worker({"crm": destination()}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DEAD, 1)
    assert delivery.last_error == 'HTTP 400: {"message": "bad property"}'
    assert [a.response_excerpt for a in await rig.attempts(delivery_id)] == ['{"message": "bad property"}']
    assert len(fake.received) == 1


async def test_gives_up_after_max_attempts_with_capped_waits(rig: Rig) -> None:
    async with FakeDestination([503]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url(), max_attempts=4)
        config = destination(retry={"attempts": 4, "backoff": "100s", "max_backoff": "5s"})
        await rig.worker({"crm": config}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DEAD, 4)
    assert delivery.last_error == "HTTP 503 (gave up after 4 attempts)"
    assert len(fake.received) == 4
    assert all(0 <= gap <= 5000 for gap in gaps_ms(starts_ms(await rig.attempts(delivery_id))))


async def test_a_hanging_destination_times_out_and_is_retried(rig: Rig) -> None:
    async with FakeDestination([HANG, 200]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url())
        await rig.worker({"crm": destination(timeout="200ms")}).drain()

    attempts = await rig.attempts(delivery_id)
    assert [(a.status_code, a.error) for a in attempts] == [(None, "timeout: no answer within 0.2 s"), (200, None)]
    assert (await rig.delivery(delivery_id)).status is DeliveryStatus.DELIVERED
    assert len(fake.received) == 2


async def test_a_dropped_connection_is_retried(rig: Rig) -> None:
    async with FakeDestination([DROP, 200]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url())
        await rig.worker({"crm": destination()}).drain()

    attempts = await rig.attempts(delivery_id)
    assert attempts[0].error == "connection: the server closed the connection without answering"
    assert (await rig.delivery(delivery_id)).status is DeliveryStatus.DELIVERED
    assert len(fake.received) == 2


async def test_a_refused_connection_ends_as_a_dead_letter(rig: Rig) -> None:
    [delivery_id] = await rig.enqueue("crm", refused_url(), max_attempts=2)
    await rig.worker({"crm": destination()}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DEAD, 2)
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("connection: cannot connect to 127.0.0.1:")
    assert delivery.last_error.endswith("(gave up after 2 attempts)")


async def test_a_destination_gone_from_the_config_is_a_dead_letter(rig: Rig) -> None:
    async with FakeDestination([200]) as fake:
        [delivery_id] = await rig.enqueue("gone", fake.url())
        await rig.worker({"crm": destination()}).drain()

    delivery = await rig.delivery(delivery_id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DEAD, 1)
    assert delivery.last_error == "destination 'gone' is not in the config; add it back and replay"
    assert fake.received == []


async def test_outgoing_bodies_are_signed(rig: Rig) -> None:
    async with FakeDestination([200]) as fake:
        await rig.enqueue("crm", fake.url())
        config = destination(sign={"secret": "outbound-key", "header": "X-Gateway-Signature"})
        await rig.worker({"crm": config}).drain()

    [received] = fake.received
    assert received.headers["X-Gateway-Signature"] == signature("outbound-key", received.body)


async def test_one_log_line_per_state_change_without_the_url(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.worker")
    async with FakeDestination([500, 200]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url(SECRET_PATH), route="vip")
        await rig.worker({"crm": destination()}).drain()

    lines = [record.getMessage() for record in caplog.records if record.name == "gateway.worker"]
    assert len(lines) == 2
    assert lines[0].startswith(f"delivery {delivery_id} pending: route=vip destination=crm attempt=1/5 status=500 ")
    assert "retry_in_s=" in lines[0] and "error=HTTP 500" in lines[0]
    assert lines[1].startswith(f"delivery {delivery_id} delivered: route=vip destination=crm attempt=2/5 status=200 ")
    assert all("elapsed_ms=" in line and "secret" not in line for line in lines)


# --- several destinations, limits --------------------------------------------------------------------------------


async def test_a_refusing_destination_does_not_hold_back_the_others(rig: Rig) -> None:
    async with FakeDestination([200]) as healthy:
        down_ids = await rig.enqueue("down", refused_url(), count=5, max_attempts=3)
        up_ids = await rig.enqueue("up", healthy.url(), count=5)
        await rig.worker({"down": destination(concurrency=1), "up": destination(concurrency=1)}).drain()

    assert len(healthy.received) == 5
    assert [(await rig.delivery(i)).status for i in up_ids] == [DeliveryStatus.DELIVERED] * 5
    assert [(await rig.delivery(i)).attempts for i in down_ids] == [3] * 5
    assert [(await rig.delivery(i)).status for i in down_ids] == [DeliveryStatus.DEAD] * 5


async def test_a_hanging_destination_does_not_delay_the_others(rig: Rig) -> None:
    async with FakeDestination([HANG]) as slow, FakeDestination([200]) as fast:
        await rig.enqueue("slow", slow.url(), count=3)
        await rig.enqueue("fast", fast.url(), count=10)
        worker = rig.worker({"slow": destination(concurrency=2, timeout="60s"), "fast": destination()})
        draining = asyncio.create_task(worker.drain())

        await rig.wait_until(lambda: rig.finished(DeliveryStatus.DELIVERED, "fast") == 10)
        assert (slow.in_flight, len(slow.received)) == (2, 2)  # the slow one still hangs, within its own slots
        assert len(fast.received) == 10

        slow.release()
        await draining

    assert rig.finished(DeliveryStatus.DELIVERED, "slow") == 3


async def test_concurrency_limit_is_respected(rig: Rig) -> None:
    """Staggered answers: when a quick one ends, a slow one is still in flight and must still count."""
    script = [Reply(200, delay_s=0.05), Reply(200, delay_s=0.4)] * 3
    async with FakeDestination(script) as fake:
        await rig.enqueue("crm", fake.url(), count=6)
        await rig.worker({"crm": destination(concurrency=2)}).drain()

    assert fake.max_in_flight == 2
    assert rig.finished(DeliveryStatus.DELIVERED) == 6


@pytest.mark.parametrize(
    ("rate", "count"),
    [
        pytest.param("1/s", 6, id="one-per-second"),
        pytest.param(["3/s", "5/10s"], 12, id="all-rates-must-allow"),
    ],
)
async def test_rate_limit_is_respected(rig: Rig, rate: str | list[str], count: int) -> None:
    async with FakeDestination([200]) as fake:
        ids = await rig.enqueue("slack", fake.url(), count=count)
        config = destination(rate_limit=rate, concurrency=10)
        await rig.worker({"slack": config}).drain()

    starts = sorted([(await rig.attempts(i))[0].started_at_ms for i in ids])
    assert config.rate_limit is not None
    for window in config.rate_limit:
        assert most_in_any_window(starts, window.window_ms) == window.limit  # full use, never more
    assert len(fake.received) == count


# --- the serving loop: wake-ups and graceful stop ----------------------------------------------------------------


async def test_wake_sends_new_deliveries_at_once(rig: Rig) -> None:
    rig.clock = SystemClock()
    async with FakeDestination([200]) as fake:
        await rig.enqueue("crm", fake.url())
        worker = rig.worker({"crm": destination()}, poll_interval_s=3600)
        running = asyncio.create_task(worker.run())
        await rig.wait_until(lambda: rig.finished(DeliveryStatus.DELIVERED) == 1)
        await asyncio.sleep(0.05)  # let the loop settle into its hour-long wait

        await rig.enqueue("crm", fake.url())
        worker.wake()
        await rig.wait_until(lambda: rig.finished(DeliveryStatus.DELIVERED) == 2)

        await worker.stop(grace_s=1)
        await running
    assert len(fake.received) == 2


class CountedRounds(LocalLimits):
    """Local limits that count the worker's rounds (each asks for every destination's capacity once)."""

    def __init__(self, destinations: Mapping[str, DestinationConfig]) -> None:
        super().__init__(destinations)
        self.rounds = 0
        self.round_started = asyncio.Event()

    async def capacities(self, destinations: Sequence[str], now_ms: int) -> dict[str, int]:
        self.rounds += 1
        self.round_started.set()
        return await super().capacities(destinations, now_ms)


async def test_after_a_round_that_sent_nothing_a_wake_up_starts_a_round_at_once(rig: Rig) -> None:
    """Spacing rounds only helps when they send: a replica whose rounds find the slots taken by the others must
    keep trying on every event, or it never gets one."""
    rig.clock = SystemClock()
    async with FakeDestination([200]) as fake:
        worker = rig.worker({"crm": destination()}, poll_interval_s=3600, round_spacing_s=3600)
        running = asyncio.create_task(worker.run())
        await asyncio.sleep(0.1)  # the first round found nothing to send
        await rig.enqueue("crm", fake.url())
        worker.wake()
        await rig.wait_until(lambda: rig.finished(DeliveryStatus.DELIVERED) == 1)  # not an hour later
        await worker.stop(grace_s=1)
        await running
    assert len(fake.received) == 1


async def test_events_stored_soon_after_a_round_that_sent_wait_for_the_spacing_and_go_in_one_round(
    rig: Rig,
) -> None:
    rig.clock = SystemClock()
    async with FakeDestination([200]) as fake:
        destinations = {"crm": destination()}
        limits = CountedRounds(destinations)
        worker = rig.worker(destinations, poll_interval_s=3600, limits=limits, round_spacing_s=1.5)
        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(limits.round_started.wait(), 5)  # the first round, at start: nothing to claim
        await asyncio.sleep(0.1)  # and let it settle into its hour-long wait
        await rig.enqueue("crm", fake.url())
        worker.wake()  # the last round sent nothing: this one starts at once
        await rig.wait_until(lambda: rig.finished(DeliveryStatus.DELIVERED) == 1)

        for _ in range(3):
            await rig.enqueue("crm", fake.url())
            worker.wake()
        await asyncio.sleep(0.05)
        assert (limits.rounds, len(fake.received)) == (2, 1)  # 1.5 s have not passed since the round that sent

        await rig.wait_until(lambda: rig.finished(DeliveryStatus.DELIVERED) == 4)
        await worker.stop(grace_s=1)
        await running
    assert limits.rounds == 3  # the three claimed together


async def test_a_finished_attempt_frees_its_slot_for_a_waiting_delivery_at_once(rig: Rig) -> None:
    rig.clock = SystemClock()
    async with FakeDestination([Reply(200, delay_s=0.05)]) as fake:
        await rig.enqueue("crm", fake.url(), count=3)
        worker = rig.worker({"crm": destination(concurrency=1)}, poll_interval_s=3600)
        running = asyncio.create_task(worker.run())

        await rig.wait_until(lambda: rig.finished(DeliveryStatus.DELIVERED) == 3)  # not an hour's poll apart
        await worker.stop(grace_s=1)
        await running
    assert fake.max_in_flight == 1


async def test_a_retry_goes_out_when_due_without_waiting_for_a_poll(rig: Rig) -> None:
    rig.clock = SystemClock()
    async with FakeDestination([500, 200]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url())
        worker = rig.worker({"crm": destination(retry={"backoff": "10ms"})}, poll_interval_s=3600)
        running = asyncio.create_task(worker.run())

        await rig.wait_until(lambda: rig.finished(DeliveryStatus.DELIVERED) == 1)
        await worker.stop(grace_s=1)
        await running
    assert [attempt.status_code for attempt in await rig.attempts(delivery_id)] == [500, 200]


async def test_stop_cancels_late_attempts_and_leaves_them_pending(rig: Rig) -> None:
    rig.clock = SystemClock()
    async with FakeDestination([HANG]) as slow, FakeDestination([200]) as fast:
        [slow_id] = await rig.enqueue("slow", slow.url())
        [fast_id] = await rig.enqueue("fast", fast.url())
        worker = rig.worker({"slow": destination(timeout="60s"), "fast": destination()})
        running = asyncio.create_task(worker.run())
        await slow.wait_for_requests(1)
        await rig.wait_until(lambda: rig.finished(DeliveryStatus.DELIVERED) == 1)

        await worker.stop(grace_s=0.1)
        assert running.done()

    assert (await rig.delivery(fast_id)).status is DeliveryStatus.DELIVERED
    stranded = await rig.delivery(slow_id)
    assert (stranded.status, stranded.attempts) == (DeliveryStatus.PENDING, 0)
    assert await rig.attempts(slow_id) == []
    now_ms = rig.clock.now_ms()
    assert await rig.store.claim({"slow": 1}, now_ms, 1000) == []  # still leased to the stopped worker
    reclaimed = await rig.store.claim({"slow": 1}, now_ms + worker.lease_ms + 1, 1000)
    assert [d.id for d in reclaimed] == [slow_id]


async def test_stop_lets_attempts_in_flight_finish_within_the_grace(rig: Rig) -> None:
    rig.clock = SystemClock()
    async with FakeDestination([Reply(200, delay_s=0.3)]) as fake:
        [delivery_id] = await rig.enqueue("crm", fake.url())
        worker = rig.worker({"crm": destination()})
        running = asyncio.create_task(worker.run())
        await fake.wait_for_requests(1)

        await worker.stop(grace_s=30)
        await running

    assert (await rig.delivery(delivery_id)).status is DeliveryStatus.DELIVERED
    assert len(await rig.attempts(delivery_id)) == 1


class LogSeen(logging.Handler):
    """Sets `seen` once a record containing `text` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


async def test_the_loop_outlives_a_store_outage(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.worker")
    rig.clock = SystemClock()
    outage = LogSeen("store unavailable")
    logging.getLogger("gateway.worker").addHandler(outage)
    try:
        async with FakeDestination([200]) as fake:
            worker = rig.worker({"crm": destination()}, poll_interval_s=0.05)
            running = asyncio.create_task(worker.run())
            await rig.store.close()
            await asyncio.wait_for(outage.seen.wait(), timeout=10)
            await asyncio.sleep(0.2)  # several polls while the store is down

            await rig.store.open()
            await rig.enqueue("crm", fake.url())
            await rig.wait_until(lambda: rig.finished(DeliveryStatus.DELIVERED) == 1)
            await worker.stop(grace_s=1)
            await running
    finally:
        logging.getLogger("gateway.worker").removeHandler(outage)
    assert len(fake.received) == 1
    messages = [record.getMessage() for record in caplog.records]
    assert sum("store unavailable" in message for message in messages) == 1  # one warning per outage, not per poll
    assert "store available again" in messages
