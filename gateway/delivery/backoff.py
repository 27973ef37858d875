"""When to try a failed delivery again: exponential backoff with full jitter, and Retry-After; how long to wait
for a spent quota."""

from __future__ import annotations

import random
import re
from datetime import UTC
from email.utils import parsedate_to_datetime

from gateway.config.schema import RetryConfig

_DELTA_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")


def backoff_s(attempt: int, retry: RetryConfig, rng: random.Random) -> float:
    """A random wait after failed attempt number `attempt` (1-based), between 0 and the exponential ceiling."""
    return rng.uniform(0.0, _ceiling_s(attempt, retry))


def _ceiling_s(attempt: int, retry: RetryConfig) -> float:
    return min(retry.max_backoff, retry.backoff * 2.0 ** min(attempt - 1, 64))


def parse_retry_after(value: str, now_ms: int) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or an HTTP date); None when unreadable."""
    text = value.strip()
    if _DELTA_SECONDS.match(text):
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # the asctime form carries no zone; HTTP dates are always GMT
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now_ms / 1000)


def next_delay_s(attempt: int, retry: RetryConfig, rng: random.Random, hint_s: float | None = None) -> float:
    """The wait before the next attempt: backoff, never sooner than the service's hint, at most max_backoff."""
    delay_s = backoff_s(attempt, retry, rng)
    if hint_s is not None:
        delay_s = max(delay_s, hint_s)
    return min(delay_s, retry.max_backoff)


# The shortest wait for a quota: a hint of 0 (or none) must not turn into a loop of requests.
QUOTA_MIN_WAIT_S = 1.0


def quota_wait_s(waits: int, retry: RetryConfig, hint_s: float | None) -> float:
    """The wait after quota answer number `waits` (1-based, in a row): the service's hint however long, or without
    one the backoff's ceiling (no jitter: the whole destination waits, there is nothing to spread)."""
    if hint_s is not None:
        return max(hint_s, QUOTA_MIN_WAIT_S)
    return max(_ceiling_s(waits, retry), QUOTA_MIN_WAIT_S)
