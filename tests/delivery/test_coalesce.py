"""Coalescer: items added while a flush runs go out together in the next one."""

from __future__ import annotations

import asyncio

import pytest

from gateway.delivery.coalesce import Coalescer


class Flushes:
    """A flush that records each batch and waits for `release` before ending the first one."""

    def __init__(self, failing: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()
        self._called = asyncio.Event()
        self._failing = failing

    async def __call__(self, items: list[str]) -> None:
        self.batches.append(items)
        self._called.set()
        if len(self.batches) == 1:
            await self.release.wait()
        if self._failing in items:
            raise OSError(f"cannot write {self._failing}")

    async def started(self, count: int) -> None:
        """Return once `count` flushes have started."""
        async with asyncio.timeout(5):
            while len(self.batches) < count:
                self._called.clear()
                await self._called.wait()


async def test_items_added_while_a_flush_runs_go_out_together_in_the_next() -> None:
    flushes = Flushes()
    coalescer = Coalescer(flushes)
    first = asyncio.create_task(coalescer.add("a"))
    await flushes.started(1)
    rest = [asyncio.create_task(coalescer.add(item)) for item in "bcd"]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in [first, *rest])  # each waits for the flush that holds its item

    flushes.release.set()
    await asyncio.gather(first, *rest)

    assert flushes.batches == [["a"], ["b", "c", "d"]]


async def test_a_failed_flush_fails_its_own_callers_only() -> None:
    flushes = Flushes(failing="b")
    coalescer = Coalescer(flushes)
    first = asyncio.create_task(coalescer.add("a"))
    await flushes.started(1)
    failing = [asyncio.create_task(coalescer.add(item)) for item in "bc"]
    flushes.release.set()
    await first

    for task in failing:
        with pytest.raises(OSError, match="cannot write b"):
            await task
    await coalescer.add("d")  # the next flush runs as usual
    assert flushes.batches == [["a"], ["b", "c"], ["d"]]


async def test_a_cancelled_caller_leaves_its_item_to_be_flushed() -> None:
    flushes = Flushes()
    coalescer = Coalescer(flushes)
    first = asyncio.create_task(coalescer.add("a"))
    await flushes.started(1)
    cancelled = asyncio.create_task(coalescer.add("b"))
    await asyncio.sleep(0)
    cancelled.cancel()
    flushes.release.set()
    await first
    await flushes.started(2)

    assert flushes.batches == [["a"], ["b"]]
    assert cancelled.cancelled()
