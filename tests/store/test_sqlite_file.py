"""The SQLite file: created private, checked for damage at start, opened with the pragmas durability needs."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from gateway.errors import StoreUnavailable
from gateway.model import NewDelivery, NewEvent, RenderedRequest
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_file import DamagedFile, check_integrity


async def store_with_pending(path: Path, count: int = 20, destination: str = "crm") -> None:
    """A closed store file holding `count` pending deliveries to `destination`."""
    store = SqliteStore(path)
    await store.open()
    try:
        for n in range(count):
            request = RenderedRequest("POST", "http://127.0.0.1:9/", {}, b"{}")
            delivery = NewDelivery(f"dlv_{n}", "r", destination, 3, request)
            await store.ingest(NewEvent(f"evt_{n}", "missive", 1_000 + n, b"{}", f"key-{n}"), [delivery], 0)
    finally:
        await store.close()


def overwrite_pages_of(path: Path, name: str) -> None:
    """Overwrite the root page of table or index `name` with zeros, as a disk fault would."""
    with sqlite3.connect(path) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with path.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\0" * page_size)


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)  # the common default, under which files are readable by every local user
    try:
        yield
    finally:
        os.umask(previous)


async def test_the_file_and_its_folder_are_private(tmp_path: Path, umask_022: None) -> None:
    path = tmp_path / "data" / "gateway.db"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.ping()  # a write: the -wal and -shm files exist now
        modes = {file.name: stat.S_IMODE(file.stat().st_mode) for file in [path.parent, *path.parent.iterdir()]}
    finally:
        await store.close()
    assert modes == {
        "data": 0o700, "gateway.db": 0o600, "gateway.db-wal": 0o600, "gateway.db-shm": 0o600,
        "gateway.db.write-lock": 0o600,
    }  # fmt: skip


async def test_a_live_store_writes_with_wal_and_synchronous_full(tmp_path: Path) -> None:
    """kill -9 cannot tell synchronous=FULL from OFF (the page cache survives it): read them back."""
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        assert await store.pragmas() == {"journal_mode": "wal", "synchronous": 2}
    finally:
        await store.close()


async def test_a_damaged_file_is_refused_at_open_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    await store_with_pending(path)
    overwrite_pages_of(path, "deliveries_due")
    store = SqliteStore(path)
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    message = str(caught.value)
    assert message.startswith(f"SQLite store {path} is damaged (Page ")
    assert "restore a backup" in message and ".recover" in message and "\n" not in message


async def test_a_check_out_of_time_lets_the_store_open_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.db"
    await store_with_pending(path)
    store = SqliteStore(path, check_budget_s=0)
    with caplog.at_level(logging.WARNING, logger="gateway.store"):
        await store.open()
    await store.close()
    assert [record.getMessage() for record in caplog.records] == [
        f"SQLite store {path} not fully checked: quick_check did not finish within 0 s"
    ]


def test_check_integrity_passes_a_sound_file(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "sound.db") as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(1000)])
        check_integrity(conn, tmp_path / "sound.db")
        with pytest.raises(DamagedFile):
            overwrite_pages_of(tmp_path / "sound.db", "t")
            with closing(sqlite3.connect(tmp_path / "sound.db")) as damaged:  # Python 3.13 reports one left open
                check_integrity(damaged, tmp_path / "sound.db")
    conn.close()


async def test_serve_refuses_a_damaged_store_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "data" / "gateway.db"
    await store_with_pending(path)
    overwrite_pages_of(path, "deliveries_due")
    config = tmp_path / "config.yaml"
    config.write_text("storage: {path: data/gateway.db}\nsources: {missive: {secrets: [a-secret]}}\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "-c", str(config), "--host", "127.0.0.1", "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, stderr = await process.communicate()
    assert process.returncode == 1
    errors = [line for line in stderr.decode().splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith(f"error: SQLite store {path} is damaged"), stderr
