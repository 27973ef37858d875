"""LocalLimits.reconfigure: a config reload changes the settings, not what is in flight or the tokens spent."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.schema import DestinationConfig
from gateway.delivery.limits import LocalLimits

T0 = 1_700_000_000_000


def destination(**fields: Any) -> DestinationConfig:
    return DestinationConfig.model_validate({"url": "http://unused.invalid/", **fields})


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
        pytest.param("5/s", 0, 5, id="same-rate-no-fresh-burst"),
        pytest.param("2/s", 0, 2, id="lower-rate-refills-slower"),
        pytest.param(None, 10, 10, id="rate-removed"),
    ],
)
async def test_a_reload_keeps_the_tokens_spent(
    new_rate: str | None, capacity_at_reload: int, capacity_1s_later: int
) -> None:
    limits = LocalLimits({"d": destination(concurrency=10, rate_limit="5/s")})
    assert await limits.capacity("d", T0) == 5
    await limits.started("d", 5)
    for _ in range(5):
        await limits.finished("d")

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
