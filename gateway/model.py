"""The records that move between ingest, the store and the worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class DeliveryStatus(StrEnum):
    """Where a delivery stands. `pending` covers both "waiting" and "claimed by a worker"."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class RenderedRequest:
    """The exact request a destination will receive; rendered once, at ingest."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class NewEvent:
    """An accepted webhook, as it goes into the store."""

    id: str
    source: str
    received_at_ms: int
    body: bytes
    dedupe_key: str


@dataclass(frozen=True)
class NewDelivery:
    """One rendered request for one route and destination.

    `request` is None when rendering failed; `error` then says why and the store keeps the
    delivery as dead so it can be fixed and replayed with `--rerender`.
    """

    id: str
    route: str
    destination: str
    max_attempts: int
    request: RenderedRequest | None
    error: str | None = None


@dataclass(frozen=True)
class IngestResult:
    event_id: str
    deliveries: int
    duplicate: bool = False


@dataclass(frozen=True)
class StoredEvent:
    id: str
    source: str
    received_at_ms: int
    body: bytes


@dataclass(frozen=True)
class Delivery:
    """A delivery as the store holds it. `lease_token` is set on deliveries returned by a claim."""

    id: str
    event_id: str
    route: str
    destination: str
    status: DeliveryStatus
    attempts: int
    max_attempts: int
    next_attempt_at_ms: int
    created_at_ms: int
    updated_at_ms: int
    request: RenderedRequest | None
    last_error: str | None = None
    lease_token: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One try at sending a delivery."""

    delivery_id: str
    number: int
    started_at_ms: int
    elapsed_ms: float
    status_code: int | None
    error: str | None
    response_excerpt: str | None


@dataclass(frozen=True)
class AttemptResult:
    """What the worker tells the store after an attempt: the attempt and the delivery's next state."""

    attempt: Attempt
    status: DeliveryStatus
    next_attempt_at_ms: int | None = None


@dataclass(frozen=True)
class DeliveryFilter:
    """Which deliveries to list or replay; None means "any"."""

    status: DeliveryStatus | None = None
    route: str | None = None
    destination: str | None = None
    event_id: str | None = None
    since_ms: int | None = None
    ids: tuple[str, ...] | None = None
    limit: int = 1000


@dataclass(frozen=True)
class QueueStats:
    pending: int
    dead: int
    oldest_due_ms: int | None
    by_destination: dict[str, int] = field(default_factory=dict)
