"""Processes sharing one SQLite file take turns through its write lock: a writer waits in the kernel while
another holds it (never in SQLite's sleeping busy handler), and goes on as soon as it is let go."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.config.schema import DestinationConfig
from gateway.delivery.sqlite_limits import SqliteLimits
from gateway.model import IngestResult, NewDelivery, NewEvent, RenderedRequest
from gateway.store.sqlite import SqliteStore
from gateway.store.write_lock import WriteLock, lock_path
from gateway.store.writer import GroupCommitWriter

T0 = 1_700_000_000_000


@contextmanager
def held_elsewhere(database: Path) -> Iterator[Callable[[], None]]:
    """Hold `database`'s write lock through a file description of our own, as another process would; the
    context gives a function that lets it go."""
    fd = os.open(lock_path(database), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield lambda: fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


async def waits_for_the_lock(database: Path, write: Awaitable[object]) -> object:
    """Start `write` while the lock is held elsewhere: it must not finish until the lock is let go."""
    with held_elsewhere(database) as let_go:
        task = asyncio.ensure_future(write)
        done, _ = await asyncio.wait([task], timeout=0.3)
        assert not done, "the write went ahead while another process held the write lock"
        let_go()
        return await asyncio.wait_for(task, timeout=10)


async def test_a_store_write_waits_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    store = SqliteStore(database)
    await store.open()
    try:
        request = RenderedRequest("POST", "http://127.0.0.1:9/", {}, b"{}")
        event = NewEvent("evt_1", "missive", T0, b'{"rule": {}}', "key-1")
        delivery = NewDelivery("dlv_1", "r", "crm", 3, request)
        result = await waits_for_the_lock(database, store.ingest(event, [delivery], 0))

        assert isinstance(result, IngestResult) and (result.event_id, result.deliveries) == ("evt_1", 1)
        assert await store.get_event("evt_1") is not None
    finally:
        await store.close()


async def test_shared_limits_wait_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    database = tmp_path / "gateway.limits.db"
    crm = DestinationConfig.model_validate({"url": "http://127.0.0.1:9/", "concurrency": 2})
    limits = SqliteLimits(database, {"crm": crm})
    try:
        assert await limits.capacity("crm", T0) == 2  # the file and its lock exist from the first call on
        await limits.started("crm", 0)

        assert await waits_for_the_lock(database, limits.capacity("crm", T0)) == 2
    finally:
        await limits.close()


async def test_writes_queued_while_another_process_commits_join_one_transaction(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (n INTEGER)")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    writer = GroupCommitWriter(conn, asyncio.get_running_loop(), WriteLock(database))
    try:
        with held_elsewhere(database) as let_go:
            first = writer.submit(insert, (1,))
            await asyncio.sleep(0.2)  # the writer took the first and waits for the lock
            later = [writer.submit(insert, (n,)) for n in (2, 3)]
            let_go()
            await asyncio.wait_for(asyncio.gather(first, *later), timeout=10)
    finally:
        await writer.stop()

    assert statements.count("BEGIN IMMEDIATE") == 1
    assert statements.count("COMMIT") == 1


def insert(conn: sqlite3.Connection, n: int) -> None:
    conn.execute("INSERT INTO t VALUES (?)", (n,))


async def test_a_writes_prepare_step_runs_before_the_lock_is_taken(tmp_path: Path) -> None:
    """What can be done without the database (compressing, building rows) does not make other processes wait."""
    database = tmp_path / "gateway.db"
    conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (n INTEGER)")
    prepared = asyncio.Event()
    loop = asyncio.get_running_loop()

    def double(n: int) -> int:
        loop.call_soon_threadsafe(prepared.set)
        return 2 * n

    writer = GroupCommitWriter(conn, loop, WriteLock(database))
    try:
        with held_elsewhere(database) as let_go:
            written = writer.submit(insert, (21,), prepare=double)
            await asyncio.wait_for(prepared.wait(), timeout=10)  # while another process holds the lock
            assert not written.done()
            let_go()
            await asyncio.wait_for(written, timeout=10)
    finally:
        await writer.stop()
    with contextlib.closing(sqlite3.connect(database)) as reader:
        assert reader.execute("SELECT n FROM t").fetchall() == [(42,)]


async def test_a_failing_prepare_step_fails_its_own_write_only(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE t (n INTEGER)")

    def refuse(n: int) -> int:
        raise ValueError(f"cannot prepare {n}")

    writer = GroupCommitWriter(conn, asyncio.get_running_loop(), WriteLock(database))
    try:
        with held_elsewhere(database) as let_go:  # both writes wait for one transaction
            failing = writer.submit(insert, (1,), prepare=refuse)
            fine = writer.submit(insert, (2,))
            let_go()
            results = await asyncio.wait_for(asyncio.gather(failing, fine, return_exceptions=True), timeout=10)
    finally:
        await writer.stop()
    assert [str(result) for result in results] == ["cannot prepare 1", "None"]
    with contextlib.closing(sqlite3.connect(database)) as reader:
        assert reader.execute("SELECT n FROM t").fetchall() == [(2,)]


@pytest.mark.parametrize("name", ["gateway.db", "data.sqlite"])
def test_the_lock_file_sits_beside_the_database(tmp_path: Path, name: str) -> None:
    assert lock_path(tmp_path / name) == tmp_path / f"{name}.write-lock"
