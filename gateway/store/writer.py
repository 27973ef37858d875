"""Group commit: one thread owns SQLite's write connection and commits queued work together.

Callers on the event loop submit operations and await a future. The thread takes every
operation queued so far, runs them in one transaction, commits once, and settles all the
futures with one call into the loop. One fsync then serves a whole burst of concurrent
requests. Should an operation fail, the batch runs again with each operation in its own
SAVEPOINT, so that a failing one does not undo its neighbours; operations must therefore
have no effect outside the database (they may run twice). Each transaction holds the
`WriteLock` of the file, so processes sharing it take turns without sleeping, and what is
queued while another process commits joins the next transaction. An operation may come with a
`prepare` step (compressing what it stores, building its rows) that runs before the lock is
taken: the other processes wait only for the database work.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from gateway.store.write_lock import WriteLock

_Prepare = Callable[..., Any]
_Op = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", _Prepare | None]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class GroupCommitWriter:
    """The thread that owns the write connection and commits queued operations in groups."""

    def __init__(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, lock: WriteLock) -> None:
        self._conn = conn
        self._lock = lock
        self._loop = loop
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._serve, name="gateway-sqlite-writer", daemon=True)
        self._thread.start()

    def submit(
        self, op: Callable[..., Any], args: tuple[Any, ...], prepare: _Prepare | None = None
    ) -> asyncio.Future[Any]:
        """Run `op(conn, *args)` in the next transaction; with `prepare`, run `op(conn, prepare(*args))`, calling
        `prepare` before taking the write lock."""
        future = self._loop.create_future()
        self._queue.put((op, args, future, prepare))
        return future

    async def stop(self) -> None:
        """Commit everything queued so far, then close the connection and end the thread."""
        self._queue.put(None)
        await self._stopped

    def _serve(self) -> None:
        try:
            stopping = False
            while not stopping:
                batch, failed, stopping = self._take_prepared([self._queue.get()])
                with self._lock:  # what is queued while another process commits joins this transaction
                    more, more_failed, stop_queued = self._take_prepared([])
                    stopping = stopping or stop_queued
                    batch += more
                    outcomes = failed + more_failed + (self._commit(batch) if batch else [])
                if outcomes:
                    self._notify(outcomes)
        finally:
            self._conn.close()
            self._lock.close()
            self._notify([(self._stopped, None, None)])

    def _take_prepared(self, items: list[_Op | None]) -> tuple[list[_Op], list[_Outcome], bool]:
        """`items` and all that is queued after them, their `prepare` steps run: the operations ready to commit,
        the outcomes of those whose step failed, and whether the stop marker was among them."""
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        batch = [item for item in items if item is not None]
        ready, failed = _prepared(batch)
        return ready, failed, len(batch) < len(items)

    def _commit(self, batch: list[_Op]) -> list[_Outcome]:
        """Run `batch` in one transaction, the write lock held. Operations rarely fail, so they first run side
        by side; if one does, the transaction is rolled back and the batch runs again, each in its own
        savepoint."""
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes: list[_Outcome] = [(future, op(conn, *args), None) for op, args, future, _ in batch]
            conn.execute("COMMIT")
        except Exception as exc:
            _roll_back(conn)
            if len(batch) == 1:
                return [(batch[0][2], None, exc)]
            return self._commit_each_in_a_savepoint(batch)
        return outcomes

    def _commit_each_in_a_savepoint(self, batch: list[_Op]) -> list[_Outcome]:
        conn = self._conn
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, args, future, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((future, op(conn, *args), None))
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((future, None, exc))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except Exception as exc:
            _roll_back(conn)
            return [(future, None, exc) for _, _, future, _ in batch]
        return outcomes

    def _notify(self, outcomes: list[_Outcome]) -> None:
        try:
            self._loop.call_soon_threadsafe(_settle, outcomes)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more


def _prepared(batch: list[_Op]) -> tuple[list[_Op], list[_Outcome]]:
    """`batch` with each `prepare` step run (its result the operation's one argument), and the outcomes of
    those whose step failed."""
    ready: list[_Op] = []
    failed: list[_Outcome] = []
    for op, args, future, prepare in batch:
        if prepare is None:
            ready.append((op, args, future, None))
            continue
        try:
            ready.append((op, (prepare(*args),), future, None))
        except Exception as exc:
            failed.append((future, None, exc))
    return ready, failed


def _roll_back(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the batch fails with the first error either way


def _settle(outcomes: list[_Outcome]) -> None:
    for future, value, exc in outcomes:
        if future.cancelled():
            continue
        if exc is None:
            future.set_result(value)
        else:
            future.set_exception(exc)
