"""What one attempt's outcome does to its delivery: delivered, tried again later, waiting for a quota, or dead.

A quota answer (429, a 503 with Retry-After, Salesforce's REQUEST_LIMIT_EXCEEDED...) is not a
failure: it spends none of `retry.attempts`, the wait is the service's hint however long
(past `max_backoff`, up to `retry.max_wait`), and the whole destination pauses for as long,
so the deliveries behind it stop hitting it too. A hint beyond `max_wait` is a dead letter.
"""

from __future__ import annotations

import random

from gateway.clock import utc_text
from gateway.config.schema import DestinationConfig
from gateway.delivery.auth import TokenFailure
from gateway.delivery.backoff import next_delay_s, quota_wait_s
from gateway.delivery.classify import Outcome
from gateway.delivery.send import Response, TransportFailure
from gateway.model import Attempt, AttemptResult, Delivery, DeliveryStatus, DestinationPause

Answer = Response | TransportFailure | TokenFailure


def waiting_for_quota(until_ms: int) -> str:
    """How the gateway says a delivery waits for its destination's quota, in logs, tables and the admin API."""
    return f"waiting for quota until {utc_text(until_ms)}"


def next_state(
    delivery: Delivery, config: DestinationConfig, started_at_ms: int, answer: Answer, outcome: Outcome,
    now_ms: int, rng: random.Random,
) -> AttemptResult:  # fmt: skip
    """The attempt record and the delivery's next state, for an attempt started at `started_at_ms`."""
    if outcome.kind == "delivered":
        return AttemptResult(attempt_record(delivery, started_at_ms, answer, None), DeliveryStatus.DELIVERED)
    if outcome.kind == "quota":
        return _quota_wait(delivery, config, started_at_ms, answer, outcome, now_ms)
    spent = delivery.attempts + 1
    if outcome.kind == "retry" and spent < delivery.max_attempts:
        delay_s = next_delay_s(spent, config.retry, rng, outcome.retry_after_s)
        attempt = attempt_record(delivery, started_at_ms, answer, outcome.reason)
        return AttemptResult(attempt, DeliveryStatus.PENDING, now_ms + round(delay_s * 1000))
    reason = outcome.reason if outcome.kind == "dead" else f"{outcome.reason} (gave up after {spent} attempts)"
    return dead(delivery, started_at_ms, answer, reason)


def _quota_wait(
    delivery: Delivery, config: DestinationConfig, started_at_ms: int, answer: Answer, outcome: Outcome, now_ms: int
) -> AttemptResult:
    retry = config.retry
    until_ms = now_ms + round(quota_wait_s(delivery.quota_waits + 1, retry, outcome.retry_after_s) * 1000)
    if outcome.retry_after_s is not None and outcome.retry_after_s > retry.max_wait:
        # The others wait as long as they may, then hear for themselves.
        pause = DestinationPause(delivery.destination, now_ms + round(retry.max_wait * 1000), outcome.reason)
        reason = f"quota exhausted until {utc_text(until_ms)}, beyond retry.max_wait: {outcome.reason}"
        attempt = attempt_record(delivery, started_at_ms, answer, reason)
        return AttemptResult(attempt, DeliveryStatus.DEAD, counted=False, pause=pause)
    attempt = attempt_record(delivery, started_at_ms, answer, f"{waiting_for_quota(until_ms)}: {outcome.reason}")
    pause = DestinationPause(delivery.destination, until_ms, outcome.reason)
    return AttemptResult(attempt, DeliveryStatus.PENDING, until_ms, counted=False, pause=pause)


def attempt_record(delivery: Delivery, started_at_ms: int, answer: Answer | None, error: str | None) -> Attempt:
    """The attempt as the log keeps it; its number counts every try, quota answers included."""
    response = answer if isinstance(answer, Response) else None
    return Attempt(
        delivery_id=delivery.id,
        number=delivery.attempts + delivery.quota_waits + 1,
        started_at_ms=started_at_ms,
        elapsed_ms=answer.elapsed_ms if answer is not None else 0.0,
        status_code=response.status if response is not None else None,
        error=error,
        response_excerpt=response.body if response is not None else None,
    )


def dead(delivery: Delivery, started_at_ms: int, answer: Answer | None, reason: str) -> AttemptResult:
    return AttemptResult(attempt_record(delivery, started_at_ms, answer, reason), DeliveryStatus.DEAD)
