"""How many requests each destination may start now: in-flight concurrency and a token-bucket rate.

The worker asks `capacity` for each destination, claims at most that many deliveries, then
reports `started` with how many it actually started, and `finished` after each attempt.
`capacity` may hold what it returns for the caller until `started` (a shared implementation
takes tokens there and gives back the unused ones), so every `capacity` call is followed by
one `started` call, with 0 if nothing started. Methods are async so that an implementation
shared by several replicas (Redis) fits the same interface.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config.schema import DestinationConfig

# Floating-point refills can land a hair under a whole token at the instant it is due.
_TOKEN_EPSILON = 1e-9


class Limits(ABC):
    """Per-destination admission: concurrency and rate."""

    @abstractmethod
    async def capacity(self, destination: str, now_ms: int) -> int:
        """How many requests to `destination` may start now (0 for a destination it does not know)."""

    @abstractmethod
    async def started(self, destination: str, count: int) -> None:
        """`count` requests started after the last `capacity` call (the rest of that capacity is unused)."""

    @abstractmethod
    async def finished(self, destination: str) -> None:
        """One request to `destination` has ended (whatever its outcome)."""

    @abstractmethod
    async def next_ready_ms(self, destination: str) -> int | None:
        """When the rate limit next lets `destination` start a request; None when it is not holding it back."""

    def reconfigure(self, destinations: Mapping[str, DestinationConfig]) -> None:  # noqa: B027 - optional
        """Apply new settings from the next `capacity` call on (a config reload); requests in flight stay counted.

        By default the limits keep the settings they were built with.
        """


@dataclass
class _Bucket:
    """A token bucket: `rate_per_s` tokens a second, up to `burst`; full at first."""

    rate_per_s: float
    burst: float
    tokens: float
    updated_ms: int | None = None

    def refill(self, now_ms: int) -> None:
        if self.updated_ms is not None and now_ms > self.updated_ms:
            self.tokens = min(self.burst, self.tokens + (now_ms - self.updated_ms) * self.rate_per_s / 1000)
        self.updated_ms = now_ms if self.updated_ms is None else max(self.updated_ms, now_ms)

    def whole_tokens(self) -> int:
        return math.floor(self.tokens + _TOKEN_EPSILON)

    def next_token_ms(self) -> int | None:
        if self.whole_tokens() >= 1 or self.updated_ms is None:
            return None
        return self.updated_ms + math.ceil((1 - self.tokens) / self.rate_per_s * 1000)


@dataclass
class _Slot:
    concurrency: int
    bucket: _Bucket | None
    in_flight: int = 0


class LocalLimits(Limits):
    """Limits kept in this process: right for one gateway, or per replica when several run."""

    def __init__(self, destinations: Mapping[str, DestinationConfig]) -> None:
        self._slots = {name: _slot(config) for name, config in destinations.items()}

    def reconfigure(self, destinations: Mapping[str, DestinationConfig]) -> None:
        """New settings; requests in flight stay counted and a rate keeps its tokens (up to the new burst)."""
        old_slots, self._slots = self._slots, {name: _slot(config) for name, config in destinations.items()}
        for name, slot in self._slots.items():
            old = old_slots.get(name)
            if old is None:
                continue
            slot.in_flight = old.in_flight
            if slot.bucket is not None and old.bucket is not None:
                slot.bucket.tokens = min(slot.bucket.burst, old.bucket.tokens)
                slot.bucket.updated_ms = old.bucket.updated_ms

    async def capacity(self, destination: str, now_ms: int) -> int:
        slot = self._slots.get(destination)
        if slot is None:
            return 0
        free = slot.concurrency - slot.in_flight
        if slot.bucket is None:
            return max(0, free)
        slot.bucket.refill(now_ms)
        return max(0, min(free, slot.bucket.whole_tokens()))

    async def started(self, destination: str, count: int) -> None:
        slot = self._slots.get(destination)
        if slot is None or count <= 0:
            return
        slot.in_flight += count
        if slot.bucket is not None:
            slot.bucket.tokens -= count

    async def finished(self, destination: str) -> None:
        slot = self._slots.get(destination)
        if slot is not None and slot.in_flight > 0:
            slot.in_flight -= 1

    async def next_ready_ms(self, destination: str) -> int | None:
        slot = self._slots.get(destination)
        return slot.bucket.next_token_ms() if slot is not None and slot.bucket is not None else None


def _slot(config: DestinationConfig) -> _Slot:
    if config.rate_limit is None:
        return _Slot(config.concurrency, None)
    # A burst of one second's worth (at least one request): '1/s' sends one at a time, '300/m' up to five at once.
    burst = max(1.0, config.rate_limit)
    return _Slot(config.concurrency, _Bucket(rate_per_s=config.rate_limit, burst=burst, tokens=burst))
