"""When to try a failed delivery again: exponential backoff with full jitter, and Retry-After."""

from __future__ import annotations

import random
import re
from datetime import UTC
from email.utils import parsedate_to_datetime

from gateway.config.schema import RetryConfig

_DELTA_SECONDS = re.compile(r"^\d+(?:\.\d+)?$")


def backoff_s(attempt: int, retry: RetryConfig, rng: random.Random) -> float:
    """A random wait after failed attempt number `attempt` (1-based), between 0 and the exponential ceiling."""
    ceiling_s = min(retry.max_backoff, retry.backoff * 2.0 ** min(attempt - 1, 64))
    return rng.uniform(0.0, ceiling_s)


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
