"""How many requests each destination may start now: in-flight concurrency and sliding-window rates.

A rate `N/W` allows at most N requests to start in any window of length W, the way services
count their quotas: the start times of the longest window are kept, and a request may start
when every rate counts fewer than its N starts in the W before now. (A bucket that refills
continuously would let a burst through and more before the window ends: 901 in 15 minutes
under a quota of 900.)

The worker asks `capacity` for each destination, claims at most that many deliveries, then
reports `started` with how many it actually started, and `finished` after each attempt.
`capacity` may hold what it returns for the caller until `started` (a shared implementation
records the starts there and gives back the unused ones), so every `capacity` call is followed
by one `started` call, with 0 if nothing started. Methods are async so that an implementation
shared by several replicas (Redis) fits the same interface.
"""

from __future__ import annotations

import bisect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.config.schema import DestinationConfig
from gateway.config.units import RateWindow


class Limits(ABC):
    """Per-destination admission: concurrency and rates."""

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
    async def next_ready_ms(self, destination: str, now_ms: int) -> int | None:
        """When the rates next let `destination` start a request; None when they are not holding it back."""

    async def capacities(self, destinations: Sequence[str], now_ms: int) -> dict[str, int]:
        """`capacity` of each of `destinations` (limits kept in a file or a server may ask once for all)."""
        return {name: await self.capacity(name, now_ms) for name in destinations}

    async def started_each(self, counts: Mapping[str, int]) -> None:
        """`started` for each destination of `counts`, after a `capacities` call."""
        for name, count in counts.items():
            await self.started(name, count)

    def reconfigure(self, destinations: Mapping[str, DestinationConfig]) -> None:  # noqa: B027 - optional
        """Apply new settings from the next `capacity` call on (a config reload); requests in flight stay counted.

        By default the limits keep the settings they were built with.
        """

    async def close(self) -> None:  # noqa: B027 - optional
        """Let go of what the limits hold open (a connection, a thread); by default nothing."""


@dataclass(frozen=True)
class SharedSettings:
    """What limits shared between processes keep of a destination: its cap, how long a slot lives, its rates.

    A slot expires after the destination's timeout plus the lease margin, so the slots of a process that
    died mid-attempt free up about when its leased deliveries come due again.
    """

    concurrency: int
    slot_ms: int
    rates: tuple[RateWindow, ...]

    @classmethod
    def of(cls, config: DestinationConfig, lease_margin_s: float) -> SharedSettings:
        return cls(config.concurrency, round((config.timeout + lease_margin_s) * 1000), config.rate_limit or ())

    @property
    def longest_ms(self) -> int:
        return max((rate.window_ms for rate in self.rates), default=0)


def _free_under(rates: tuple[RateWindow, ...], starts_ms: list[int], now_ms: int) -> int:
    """How many more requests `rates` (at least one) allow at `now_ms`, given the sorted start times."""
    return min(rate.limit - _count_since(starts_ms, now_ms - rate.window_ms) for rate in rates)


def _next_free_ms(rates: tuple[RateWindow, ...], starts_ms: list[int], now_ms: int) -> int | None:
    """When every rate allows one more request, if one is full at `now_ms`; None when none is."""
    ready: list[int] = []
    for rate in rates:
        recent = starts_ms[bisect.bisect_right(starts_ms, now_ms - rate.window_ms):]
        if len(recent) >= rate.limit:
            ready.append(recent[len(recent) - rate.limit] + rate.window_ms)
    return max(ready, default=None)


def _count_since(starts_ms: list[int], after_ms: int) -> int:
    return len(starts_ms) - bisect.bisect_right(starts_ms, after_ms)


@dataclass
class _Slot:
    concurrency: int
    rates: tuple[RateWindow, ...]
    in_flight: int = 0
    starts_ms: list[int] = field(default_factory=list)  # sorted, within the longest window
    asked_at_ms: int = 0

    def trim(self, now_ms: int) -> None:
        longest_ms = max((rate.window_ms for rate in self.rates), default=0)
        del self.starts_ms[: bisect.bisect_right(self.starts_ms, now_ms - longest_ms)]


class LocalLimits(Limits):
    """Limits kept in this process: right for one gateway, or per replica when several run."""

    def __init__(self, destinations: Mapping[str, DestinationConfig]) -> None:
        self._slots = {name: _slot(config) for name, config in destinations.items()}

    def reconfigure(self, destinations: Mapping[str, DestinationConfig]) -> None:
        """New settings; requests in flight stay counted and past starts count against the new rates."""
        old_slots, self._slots = self._slots, {name: _slot(config) for name, config in destinations.items()}
        for name, slot in self._slots.items():
            old = old_slots.get(name)
            if old is not None:
                slot.in_flight, slot.starts_ms, slot.asked_at_ms = old.in_flight, old.starts_ms, old.asked_at_ms

    async def capacity(self, destination: str, now_ms: int) -> int:
        slot = self._slots.get(destination)
        if slot is None:
            return 0
        slot.trim(now_ms)
        slot.asked_at_ms = now_ms
        free = slot.concurrency - slot.in_flight
        if slot.rates:
            free = min(free, _free_under(slot.rates, slot.starts_ms, now_ms))
        return max(0, free)

    async def started(self, destination: str, count: int) -> None:
        slot = self._slots.get(destination)
        if slot is None or count <= 0:
            return
        slot.in_flight += count
        if slot.rates:
            for _ in range(count):
                bisect.insort(slot.starts_ms, slot.asked_at_ms)

    async def finished(self, destination: str) -> None:
        slot = self._slots.get(destination)
        if slot is not None and slot.in_flight > 0:
            slot.in_flight -= 1

    async def next_ready_ms(self, destination: str, now_ms: int) -> int | None:
        slot = self._slots.get(destination)
        return _next_free_ms(slot.rates, slot.starts_ms, now_ms) if slot is not None else None


def _slot(config: DestinationConfig) -> _Slot:
    return _Slot(config.concurrency, config.rate_limit or ())
