"""Coalescing: what many callers ask for while one flush runs goes out together in the next flush."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Hands `flush` every item added since its last call: one flush runs at a time, and the items added
    meanwhile wait for the next one, together (the attempts of a worker round that end at about the same
    time free their slots in one transaction, not one each)."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[None]]) -> None:
        self._flush = flush
        self._waiting: list[T] = []
        self._next: asyncio.Future[None] | None = None  # ends when the flush holding `_waiting` has run
        self._flushing: asyncio.Task[None] | None = None

    async def add(self, item: T) -> None:
        """Return once a flush holding `item` has run; raise what it raised. A caller cancelled meanwhile
        leaves its item to be flushed all the same."""
        self._waiting.append(item)
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        flushed = self._next
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush_while_waiting())
        await asyncio.shield(flushed)

    async def _flush_while_waiting(self) -> None:
        try:
            while self._next is not None:
                items, flushed = self._waiting, self._next
                self._waiting, self._next = [], None
                try:
                    await self._flush(items)
                except Exception as exc:  # noqa: BLE001 - handed to the callers waiting on these items
                    flushed.set_exception(exc)
                else:
                    flushed.set_result(None)
        finally:
            self._flushing = None
