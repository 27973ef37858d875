"""Time as the gateway sees it: a real clock in production, a fake one in tests."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from datetime import UTC, datetime


class Clock(ABC):
    """Wall-clock milliseconds and sleeping, injectable so tests need not wait."""

    @abstractmethod
    def now_ms(self) -> int: ...

    @abstractmethod
    async def sleep(self, seconds: float) -> None: ...


class SystemClock(Clock):
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock(Clock):
    """A clock that only moves when told to; `sleep` moves it at once and yields to the loop."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, seconds: float) -> None:
        self._now_ms += max(0, round(seconds * 1000))

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)


def utc_text(at_ms: int) -> str:
    """A moment as people read it in logs and tables: `2026-12-01 10:15:00Z`."""
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
