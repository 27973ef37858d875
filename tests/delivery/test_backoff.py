"""Retry maths: backoff ceilings, full jitter, Retry-After and the cap."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from gateway.config.schema import RetryConfig
from gateway.delivery.backoff import backoff_s, next_delay_s, parse_retry_after, quota_wait_s

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
RETRY = RetryConfig.model_validate({"attempts": 10, "backoff": 2.0, "max_backoff": 60.0})


class Highest(random.Random):
    """Always draws the top of the range: shows the ceiling the jitter draws under."""

    def uniform(self, a: float, b: float) -> float:
        return b


def http_date(offset_s: int) -> str:
    return format_datetime(NOW + timedelta(seconds=offset_s), usegmt=True)


@pytest.mark.parametrize(
    ("attempt", "ceiling_s"),
    [
        pytest.param(1, 2.0, id="first-failure-waits-up-to-the-base"),
        pytest.param(2, 4.0, id="doubles"),
        pytest.param(5, 32.0, id="keeps-doubling"),
        pytest.param(6, 60.0, id="capped-at-max-backoff"),
        pytest.param(100, 60.0, id="huge-attempt-stays-capped"),
    ],
)
def test_backoff_ceiling(attempt: int, ceiling_s: float) -> None:
    assert backoff_s(attempt, RETRY, Highest()) == ceiling_s


def test_backoff_draws_across_the_whole_range() -> None:
    rng = random.Random(7)
    draws = [backoff_s(4, RETRY, rng) for _ in range(2000)]

    assert all(0.0 <= draw <= 16.0 for draw in draws)
    assert min(draws) < 1.0 and max(draws) > 15.0  # full jitter: from zero to the ceiling


@pytest.mark.parametrize(
    ("value", "expected_s"),
    [
        pytest.param("2", 2.0, id="delta-seconds"),
        pytest.param(" 120 ", 120.0, id="padded"),
        pytest.param("1.5", 1.5, id="fractional"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(http_date(30), 30.0, id="http-date"),
        pytest.param(http_date(-30), 0.0, id="http-date-in-the-past"),
        pytest.param("Sun, 01 Mar 2026 12:01:00 GMT", 60.0, id="imf-fixdate"),
        pytest.param("Sunday, 01-Mar-26 12:01:00 GMT", 60.0, id="rfc850-date"),
        pytest.param("Sun Mar  1 12:01:00 2026", 60.0, id="asctime-date"),
        pytest.param("-1", None, id="negative"),
        pytest.param("1e3", None, id="exponent"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_retry_after(value: str, expected_s: float | None) -> None:
    assert parse_retry_after(value, NOW_MS) == expected_s


@pytest.mark.parametrize(
    ("attempt", "hint_s", "expected_s"),
    [
        pytest.param(1, None, 2.0, id="no-hint-is-backoff"),
        pytest.param(1, 10.0, 10.0, id="hint-longer-than-backoff-wins"),
        pytest.param(3, 1.0, 8.0, id="backoff-longer-than-hint-wins"),
        pytest.param(1, 3600.0, 60.0, id="hint-capped-at-max-backoff"),
        pytest.param(1, 0.0, 2.0, id="zero-hint"),
    ],
)
def test_next_delay(attempt: int, hint_s: float | None, expected_s: float) -> None:
    assert next_delay_s(attempt, RETRY, Highest(), hint_s) == expected_s


def test_next_delay_is_never_sooner_than_the_hint() -> None:
    rng = random.Random(3)
    assert all(next_delay_s(1, RETRY, rng, 2.0) >= 2.0 for _ in range(500))


@pytest.mark.parametrize(
    ("waits", "hint_s", "expected_s"),
    [
        pytest.param(1, 900.0, 900.0, id="hint-beyond-max-backoff-is-honoured"),
        pytest.param(1, 86_400.0, 86_400.0, id="a-day"),
        pytest.param(1, 0.0, 1.0, id="a-zero-hint-still-waits-a-second"),
        pytest.param(1, None, 2.0, id="no-hint-first-backoff"),
        pytest.param(3, None, 8.0, id="no-hint-doubles"),
        pytest.param(10, None, 60.0, id="no-hint-capped-at-max-backoff"),
    ],
)
def test_quota_wait(waits: int, hint_s: float | None, expected_s: float) -> None:
    assert quota_wait_s(waits, RETRY, hint_s) == expected_s
