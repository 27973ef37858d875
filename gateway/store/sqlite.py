"""The embedded store: one SQLite file in WAL mode.

Nothing here touches SQLite on the event loop. Every write goes through one writer thread
that commits whatever has queued up in one transaction (group commit, `synchronous=FULL`);
one failing operation does not undo its neighbours (`gateway.store.writer`).
Reads run on a second thread with their own connection; WAL lets them run beside writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

from gateway.errors import StoreUnavailable
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
from gateway.store import sqlite_pauses
from gateway.store import sqlite_queue as queue
from gateway.store.base import Store
from gateway.store.compression import Codec, Dictionary
from gateway.store.sqlite_activity import read_activity
from gateway.store.sqlite_events import find_events
from gateway.store.sqlite_file import QUICK_CHECK_BUDGET_S, DamagedFile
from gateway.store.sqlite_queue import PRUNE_CHUNK
from gateway.store.sqlite_schema import connect, open_writer_connection
from gateway.store.sqlite_state import prune_state, read_state
from gateway.store.writer import GroupCommitWriter

_PING_TIMEOUT_S = 5.0

T = TypeVar("T")
P = TypeVar("P")
Ts = TypeVarTuple("Ts")


class SqliteStore(Store):
    """The `Store` in one SQLite file; the file (0600) and its folder (0700) are created on open, and an existing
    file is checked for damage (`gateway.store.sqlite_file`) for up to `check_budget_s`."""

    def __init__(self, path: str | Path, check_budget_s: float = QUICK_CHECK_BUDGET_S) -> None:
        self._path = Path(path)
        self._check_budget_s = check_budget_s
        self._writer: GroupCommitWriter | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._codec: Codec | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def path(self) -> Path:
        return self._path

    async def open(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        try:
            write_conn, lock = await asyncio.to_thread(open_writer_connection, self._path, self._check_budget_s)
            self._writer = GroupCommitWriter(write_conn, loop, lock)
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-sqlite-reader")
            self._read_conn = await loop.run_in_executor(self._reader, connect, self._path, True)
            known = await self._write(queue.load_dictionaries)
            self._codec = Codec(known, self._keep_dictionary, self._find_dictionary)
        except DamagedFile as exc:
            await self.close()
            raise StoreUnavailable(str(exc)) from exc
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StoreUnavailable(f"SQLite store {self._path} cannot be opened: {exc}") from exc

    async def pragmas(self) -> dict[str, object]:
        """The write connection's journal_mode and synchronous, as SQLite reports them (2 is FULL)."""
        return await self._write(queue.pragmas)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.stop()
        reader, self._reader = self._reader, None
        read_conn, self._read_conn = self._read_conn, None
        if reader is not None:
            if read_conn is not None:
                await asyncio.get_running_loop().run_in_executor(reader, read_conn.close)
            reader.shutdown(wait=False)

    async def ping(self) -> None:
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S):
                await self._write(queue.touch)
                await self._read(sqlite_pauses.next_due_ms)  # what the worker reads before every claim
        except TimeoutError as exc:
            raise StoreUnavailable(f"SQLite store {self._path} did not answer within {_PING_TIMEOUT_S:g}s") from exc

    async def ingest(
        self, event: NewEvent, deliveries: list[NewDelivery], dedupe_window_ms: int, state: StateWrite | None = None
    ) -> IngestResult:
        rows = (self._require_codec(), event, deliveries, dedupe_window_ms, state)
        return await self._write_prepared(queue.ingest_rows, queue.ingest, *rows)

    async def read_state(self, keys: StateKeys, now_ms: int) -> StateSnapshot:
        return await self._read(read_state, keys, now_ms)

    async def claim(self, capacity: Mapping[str, int], now_ms: int, lease_ms: int) -> list[Delivery]:
        return await self._write(queue.claim, self._require_codec(), capacity, now_ms, lease_ms)

    async def finish(self, delivery: Delivery, result: AttemptResult) -> bool:
        return await self._write(queue.finish, self._require_codec(), delivery, result)

    async def next_due_ms(self) -> int | None:
        return await self._read(sqlite_pauses.next_due_ms)

    async def pauses(self, now_ms: int) -> list[DestinationPause]:
        return await self._read(sqlite_pauses.active, now_ms)

    async def get_event(self, event_id: str) -> StoredEvent | None:
        return await self._read(queue.get_event, self._require_codec(), event_id)

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        return await self._read(queue.get_delivery, self._require_codec(), delivery_id)

    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        return await self._read(queue.list_attempts, delivery_id)

    async def list_deliveries(self, where: DeliveryFilter) -> list[Delivery]:
        return await self._read(queue.list_deliveries, self._require_codec(), where)

    async def find_events(self, query: EventQuery) -> EventPage:
        return await self._read(find_events, query)

    async def requeue(
        self, delivery_ids: list[str], now_ms: int, requests: Mapping[str, RenderedRequest] | None = None
    ) -> int:
        return await self._write(queue.requeue, self._require_codec(), delivery_ids, now_ms, requests or {})

    async def prune(self, before_ms: int) -> int:
        # In chunks, each its own write, so a large prune never holds up ingest for long.
        events = 0
        while True:
            chunk_deliveries, chunk_events = await self._write(queue.prune_chunk, before_ms)
            events += chunk_events
            if chunk_deliveries < PRUNE_CHUNK and chunk_events < PRUNE_CHUNK:
                break
        while await self._write(prune_state, before_ms, PRUNE_CHUNK) >= PRUNE_CHUNK:
            pass
        return events

    async def stats(self) -> QueueStats:
        return await self._read(queue.stats)

    async def activity(self, since_ms: int, bucket_ms: int, buckets: int, now_ms: int) -> Activity:
        return await self._read(read_activity, since_ms, bucket_ms, buckets, now_ms)

    def _require_codec(self) -> Codec:
        if self._codec is None:
            raise StoreUnavailable(f"SQLite store {self._path} is not open")
        return self._codec

    def _keep_dictionary(self, dictionary: Dictionary) -> None:
        """Called from the codec's training thread: commit the dictionary before the codec compresses with it."""
        if self._loop is None:
            raise StoreUnavailable(f"SQLite store {self._path} is not open")
        kept = asyncio.run_coroutine_threadsafe(
            self._write(queue.keep_dictionary, dictionary, int(time.time() * 1000)), self._loop
        )
        kept.result(timeout=_PING_TIMEOUT_S)

    def _find_dictionary(self, dictionary_id: int) -> Dictionary | None:
        """A dictionary another process trained, read on the calling thread with a connection of its own."""
        with contextlib.closing(connect(self._path, read_only=True)) as conn:
            return queue.find_dictionary(conn, dictionary_id)

    async def _write(self, op: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        result: T = await self._submit(op, args, None)
        return result

    async def _write_prepared(
        self, prepare: Callable[[*Ts], P], op: Callable[[sqlite3.Connection, P], T], *args: *Ts
    ) -> T:
        """`op(conn, prepare(*args))`, `prepare` running in the writer thread before it takes the write lock."""
        result: T = await self._submit(op, args, prepare)
        return result

    async def _submit(self, op: Callable[..., Any], args: tuple[Any, ...], prepare: Callable[..., Any] | None) -> Any:
        if self._writer is None:
            raise StoreUnavailable(f"SQLite store {self._path} is not open")
        try:
            return await self._writer.submit(op, args, prepare)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self._path} cannot write: {exc}") from exc

    async def _read(self, op: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        if self._reader is None or self._read_conn is None:
            raise StoreUnavailable(f"SQLite store {self._path} is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader, op, self._read_conn, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store {self._path} cannot read: {exc}") from exc


