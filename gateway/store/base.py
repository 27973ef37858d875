"""The interface every store backend implements (SQLite embedded, Redis shared).

Time is always passed in by the caller (`now_ms`), so backends never read a clock and
tests can drive them with an injected one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

from gateway.hashing import blake2b_64
from gateway.model import (
    Activity,
    Attempt,
    AttemptResult,
    Delivery,
    DeliveryFilter,
    DestinationPause,
    EventPage,
    EventQuery,
    IngestResult,
    NewDelivery,
    NewEvent,
    QueueStats,
    RenderedRequest,
    StateKeys,
    StateSnapshot,
    StateWrite,
    StoredEvent,
)


def dedupe_key(body: bytes) -> str:
    """What tells a body seen again: 64 bits of BLAKE2b, in hex (two bodies match by chance once in 2^64)."""
    return blake2b_64(body).hex()


class Store(ABC):
    """Durable home of events, deliveries and attempts; also the delivery queue."""

    @abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema."""

    @abstractmethod
    async def close(self) -> None:
        """Flush pending writes and disconnect."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the store takes a write and answers a read of the queue; raise StoreUnavailable otherwise
        (for /readyz)."""

    @abstractmethod
    async def ingest(
        self, event: NewEvent, deliveries: list[NewDelivery], dedupe_window_ms: int, state: StateWrite | None = None
    ) -> IngestResult:
        """Store an event and all its deliveries atomically, unless its body was seen before.

        If an event of the same source with the same `dedupe_key` was stored less than
        `dedupe_window_ms` before `event.received_at_ms`, nothing is stored and the result
        names the first event with `duplicate=True, deliveries=0`. Deliveries with a request
        start pending and due at `received_at_ms`; those without one start dead with `error`,
        or, chained ones without an error, held (never claimed until a `finish` releases them).
        With `state`, the conversation state and once_per windows it writes are stored in the same
        transaction, but only if `read_state(state.keys, event.received_at_ms)` still equals `state.seen`
        (version and windows); otherwise nothing is stored and the result says `conflict=True`.
        Returns only after the write is durable. Raises StoreUnavailable when it cannot write.
        """

    @abstractmethod
    async def read_state(self, keys: StateKeys, now_ms: int) -> StateSnapshot:
        """The conversation state and the once_per windows still running at `now_ms` of `keys`."""

    @abstractmethod
    async def claim(self, capacity: Mapping[str, int], now_ms: int, lease_ms: int) -> list[Delivery]:
        """Lease up to `capacity[destination]` due pending deliveries per destination, oldest due first.

        Nothing is claimed for a destination paused beyond `now_ms` (see `finish`). A claimed
        delivery is not due again until `now_ms + lease_ms`: if its worker dies, it is claimed
        again after that. Each returned delivery carries a fresh `lease_token`.
        """

    @abstractmethod
    async def finish(self, delivery: Delivery, result: AttemptResult) -> bool:
        """Record an attempt and move the delivery to its next state.

        The attempt is always recorded, and so is `result.pause` (a destination's pause only ever
        grows longer). The state changes only if `delivery.lease_token` still holds the lease;
        returns False when another worker has taken it over since. A `counted` result adds one to
        `attempts`, another to `quota_waits`. With the state, and only then, each of
        `result.released` that is not pending becomes pending with its request (attempts 0, due
        when the attempt ended) or dead with its error, keeping its `steps`.
        """

    @abstractmethod
    async def next_due_ms(self) -> int | None:
        """When the earliest pending delivery is due (None when nothing is pending); a delivery of a paused
        destination is due when the pause ends at the earliest."""

    @abstractmethod
    async def pauses(self, now_ms: int) -> list[DestinationPause]:
        """The destinations paused beyond `now_ms`, by name."""

    @abstractmethod
    async def get_event(self, event_id: str) -> StoredEvent | None: ...

    @abstractmethod
    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    @abstractmethod
    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        """Attempts of one delivery, oldest first."""

    @abstractmethod
    async def list_deliveries(self, where: DeliveryFilter) -> list[Delivery]:
        """Deliveries matching the filter, newest first, at most `where.limit`."""

    @abstractmethod
    async def find_events(self, query: EventQuery) -> EventPage:
        """Events matching every filter of `query`, newest first (by receive time, then id), at most `query.limit`.

        Each comes with its deliveries (by creation time, then id); `next_cursor` continues after the last
        one when more match.
        """

    @abstractmethod
    async def requeue(
        self, delivery_ids: list[str], now_ms: int, requests: Mapping[str, RenderedRequest] | None = None
    ) -> int:
        """Make dead or delivered deliveries pending again, due now, with their attempt and quota counts reset.

        Pending and held ones are left alone, so replaying twice queues nothing twice. `requests`
        replaces the stored request of the named deliveries (replay with re-rendering).
        Returns how many were re-queued.
        """

    @abstractmethod
    async def prune(self, before_ms: int) -> int:
        """Delete delivered deliveries, their attempts and events older than `before_ms` whose
        deliveries are all delivered; dead letters stay. Forget conversations last seen and once_per
        windows ended before `before_ms`. Returns the number of events deleted."""

    @abstractmethod
    async def stats(self) -> QueueStats:
        """Queue depth, dead letters and the oldest due time, for metrics (due as `next_due_ms` counts it)."""

    @abstractmethod
    async def activity(self, since_ms: int, bucket_ms: int, buckets: int, now_ms: int) -> Activity:
        """Events per source and deliveries per destination over `buckets` stretches of `bucket_ms` from
        `since_ms`, with each destination's queue now (see `Activity`), for the console's overview."""
