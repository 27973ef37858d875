"""LocalLimits: concurrency and sliding-window rates, and what a config reload keeps."""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.config.schema import DestinationConfig
from gateway.delivery.limits import Limits, LocalLimits
from tests.delivery.conftest import most_in_any_window

T0 = 1_700_000_000_000
MINUTE_MS, QUARTER_MS = 60_000, 15 * 60_000


def destination(**fields: Any) -> DestinationConfig:
    return DestinationConfig.model_validate({"url": "http://unused.invalid/", **fields})


async def take(limits: Limits, now_ms: int, wanted: int = 1_000_000, name: str = "d") -> int:
    """Start as many requests as the limits allow now (up to `wanted`), each ending at once."""
    taken = 0
    while taken < wanted:
        granted = min(wanted - taken, await limits.capacity(name, now_ms))
        await limits.started(name, granted)
        for _ in range(granted):
            await limits.finished(name)
        if not granted:
            break
        taken += granted
    return taken


async def test_concurrency_and_a_rate_combine() -> None:
    limits = LocalLimits({"d": destination(concurrency=2, rate_limit="1/s")})

    assert await limits.capacity("d", T0) == 1
    await limits.started("d", 1)
    assert await limits.capacity("d", T0) == 0
    assert await limits.next_ready_ms("d", T0) == T0 + 1000
    await limits.started("d", 0)
    assert await limits.capacity("d", T0 + 1000) == 1
    await limits.started("d", 1)
    assert await limits.capacity("d", T0 + 5000) == 0  # two in flight: the concurrency is full
    await limits.started("d", 0)
    await limits.finished("d")
    assert await limits.capacity("d", T0 + 5000) == 1
    assert await limits.capacity("unknown", T0) == 0


async def test_a_window_lets_its_whole_count_through_then_nothing_until_it_slides() -> None:
    limits = LocalLimits({"d": destination(concurrency=100, rate_limit="5/10s")})

    assert await take(limits, T0, wanted=3) == 3
    assert await take(limits, T0 + 4000) == 2
    assert await take(limits, T0 + 9999) == 0
    assert await limits.next_ready_ms("d", T0 + 9999) == T0 + 10_000  # the first three leave the window
    assert await take(limits, T0 + 10_000) == 3
    assert await limits.next_ready_ms("d", T0 + 10_000) == T0 + 14_000
    assert await take(limits, T0 + 14_000) == 2


async def test_every_rate_of_a_list_must_allow() -> None:
    limits = LocalLimits({"d": destination(concurrency=256, rate_limit=["300/m", "900/15m"])})

    for minute in range(3):
        assert await take(limits, T0 + minute * MINUTE_MS) == 300
    assert await take(limits, T0 + 3 * MINUTE_MS) == 0  # 300/m allows more, 900/15m does not
    assert await limits.next_ready_ms("d", T0 + 3 * MINUTE_MS) == T0 + QUARTER_MS
    assert await take(limits, T0 + QUARTER_MS) == 300


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_900_per_15_minutes_never_sees_901_in_any_15_minutes(seed: int) -> None:
    """Requests come at random moments, as many as allowed each time, over two hours of fake time."""
    rng = random.Random(seed)
    limits = LocalLimits({"d": destination(concurrency=256, rate_limit=["300/m", "900/15m"])})
    starts: list[int] = []
    now_ms = T0
    while now_ms < T0 + 8 * QUARTER_MS:
        granted = await take(limits, now_ms, wanted=rng.randint(1, 400))
        starts += [now_ms] * granted
        now_ms += rng.randint(1, 20_000)

    assert most_in_any_window(starts, QUARTER_MS) == 900
    assert most_in_any_window(starts, MINUTE_MS) == 300
    assert len(starts) >= 8 * 900 - 900  # nearly every window is used in full


async def test_requests_in_flight_count_against_the_new_concurrency() -> None:
    limits = LocalLimits({"d": destination(concurrency=2)})
    assert await limits.capacity("d", T0) == 2
    await limits.started("d", 2)

    limits.reconfigure({"d": destination(concurrency=3)})

    assert await limits.capacity("d", T0) == 1
    await limits.started("d", 0)
    await limits.finished("d")
    assert await limits.capacity("d", T0) == 2


@pytest.mark.parametrize(
    ("new_rate", "capacity_at_reload", "capacity_1s_later"),
    [
        pytest.param("5/s", 0, 5, id="same-rate-no-fresh-window"),
        pytest.param("2/s", 0, 2, id="lower-rate"),
        pytest.param("5/2s", 0, 0, id="longer-window-still-counts-the-past"),
        pytest.param(None, 10, 10, id="rate-removed"),
    ],
)
async def test_a_reload_keeps_the_starts_counted(
    new_rate: str | None, capacity_at_reload: int, capacity_1s_later: int
) -> None:
    limits = LocalLimits({"d": destination(concurrency=10, rate_limit="5/s")})
    assert await take(limits, T0) == 5

    limits.reconfigure({"d": destination(concurrency=10, rate_limit=new_rate)})

    assert await limits.capacity("d", T0) == capacity_at_reload
    await limits.started("d", 0)
    assert await limits.capacity("d", T0 + 1000) == capacity_1s_later


async def test_destinations_added_and_removed() -> None:
    limits = LocalLimits({"gone": destination(concurrency=1)})
    assert await limits.capacity("gone", T0) == 1
    await limits.started("gone", 1)

    limits.reconfigure({"added": destination(concurrency=4)})

    assert await limits.capacity("gone", T0) == 0
    await limits.finished("gone")  # an attempt that outlived its destination ends quietly
    assert await limits.capacity("added", T0) == 4
