"""The delivery tests' rig: a real SQLite store, a client session and a fake clock, with helpers."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.clock import Clock, FakeClock
from gateway.config.schema import DestinationConfig
from gateway.delivery.send import make_session
from gateway.delivery.worker import Worker
from gateway.model import Attempt, AttemptResult, Delivery, DeliveryStatus, NewDelivery, NewEvent, RenderedRequest
from gateway.store.sqlite import SqliteStore

START_MS = 1_772_366_400_000


def destination(**fields: Any) -> DestinationConfig:
    """A destination with quick retries (1 s base backoff) unless told otherwise."""
    fields.setdefault("retry", {"attempts": 5, "backoff": "1s", "max_backoff": "60s"})
    return DestinationConfig.model_validate({"url": "http://unused.invalid/", **fields})


@dataclass
class Rig:
    """A SQLite store, a client session and a clock, with helpers to queue and inspect deliveries."""

    store: SqliteStore
    session: aiohttp.ClientSession
    clock: Clock = field(default_factory=lambda: FakeClock(START_MS))
    results: list[tuple[Delivery, AttemptResult]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def worker(self, destinations: dict[str, DestinationConfig], **options: Any) -> Worker:
        return Worker(
            self.store, destinations, self.session, clock=self.clock, rng=random.Random(1), on_attempt=self._record,
            **options,
        )

    async def enqueue(
        self, dest: str, url: str, count: int = 1, max_attempts: int = 5, route: str = "r", untrusted_host: bool = False
    ) -> list[str]:
        ids = []
        for n in range(count):
            event_id = uuid.uuid4().hex
            delivery = NewDelivery(
                id=uuid.uuid4().hex,
                route=route,
                destination=dest,
                max_attempts=max_attempts,
                request=RenderedRequest(
                    "POST", url, {"Content-Type": "application/json"}, b'{"n": %d}' % n, untrusted_host
                ),
            )
            event = NewEvent(event_id, "missive", self.clock.now_ms(), b"{}", dedupe_key=event_id)
            await self.store.ingest(event, [delivery], dedupe_window_ms=0)
            ids.append(delivery.id)
        return ids

    async def delivery(self, delivery_id: str) -> Delivery:
        found = await self.store.get_delivery(delivery_id)
        assert found is not None
        return found

    async def attempts(self, delivery_id: str) -> list[Attempt]:
        return await self.store.list_attempts(delivery_id)

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait (real time) until `condition` holds after some attempt has been recorded."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    def finished(self, status: DeliveryStatus, dest: str | None = None) -> int:
        return sum(1 for d, r in self.results if r.status is status and dest in (None, d.destination))

    def _record(self, delivery: Delivery, result: AttemptResult) -> None:
        self.results.append((delivery, result))
        self._changed.set()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        async with make_session() as session:
            yield Rig(store, session)
    finally:
        await store.close()


def most_in_any_window(starts_ms: list[int], window_ms: int) -> int:
    """The most start times found in any window [t, t + window_ms), counted directly from the times."""
    ordered = sorted(starts_ms)
    most, first = 0, 0
    for last, at_ms in enumerate(ordered):
        while ordered[first] <= at_ms - window_ms:
            first += 1
        most = max(most, last - first + 1)
    return most
