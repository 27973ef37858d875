"""Limits shared by every gateway process on one SQLite store: `serve --processes N`, or `serve --no-worker`
beside a `gateway worker`.

The same bookkeeping as `gateway.delivery.shared_limits` keeps in Redis, in a small SQLite file beside
the store (`gateway.db` -> `gateway.limits.db`): per destination, the in-flight slots (counted per
worker round that took them), expiring after the destination's timeout plus the lease margin (so a
process that dies mid-attempt frees its slots about when its leased deliveries come due again), and
the request starts of the longest window. One transaction per worker round counts and grants, so
processes asking at once never get more than the cap between them (they take turns through the
file's `WriteLock`). The file is written without fsync: what a power cut loses of it is at most a
few starts, which the limits then forget, never an event or a delivery.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.config.schema import DestinationConfig
from gateway.delivery.coalesce import Coalescer
from gateway.delivery.limits import Limits, SharedSettings
from gateway.delivery.worker import LEASE_MARGIN_S
from gateway.errors import StoreUnavailable
from gateway.store.write_lock import WriteLock

# `holds`: the slots in flight, one row per worker round that took some (a row per slot cost a round 32
# inserts and as many deletes for the one or two it used); `slots` is what an earlier version kept.
_SCHEMA = """
DROP TABLE IF EXISTS slots;
CREATE TABLE IF NOT EXISTS holds (
    destination TEXT NOT NULL,
    round TEXT NOT NULL,
    count INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    PRIMARY KEY (destination, round)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS starts (
    destination TEXT NOT NULL,
    slot TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (destination, slot)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS starts_at ON starts (destination, at_ms);
"""
_BUSY_TIMEOUT_S = 5.0

_T = TypeVar("_T")
_Op = Callable[..., _T]


def limits_path(store_path: Path) -> Path:
    """`data/gateway.db` -> `data/gateway.limits.db`."""
    return store_path.with_name(f"{store_path.stem}.limits{store_path.suffix or '.db'}")


class SqliteLimits(Limits):
    """`Limits` kept in one SQLite file, shared by every process that opens the same one."""

    def __init__(
        self, path: Path, destinations: Mapping[str, DestinationConfig], lease_margin_s: float = LEASE_MARGIN_S
    ) -> None:
        self._path = path
        self._lease_margin_s = lease_margin_s
        self._destinations = {name: SharedSettings.of(config, lease_margin_s) for name, config in destinations.items()}
        self._process = uuid.uuid4().hex
        self._rounds = 0
        self._reserved: dict[str, tuple[str, int]] = {}  # per destination, the last round's id and grant
        self._in_flight: dict[str, list[str]] = {}  # per destination, the round of each request in flight
        self._frees = Coalescer(self._free_each)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-sqlite-limits")
        self._conn: sqlite3.Connection | None = None
        self._lock: WriteLock | None = None

    def reconfigure(self, destinations: Mapping[str, DestinationConfig]) -> None:
        """New settings from the next `capacity` call on (a config reload); slots in flight stay counted."""
        self._destinations = {
            name: SharedSettings.of(config, self._lease_margin_s) for name, config in destinations.items()
        }

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, conn.close)
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.close()
        self._thread.shutdown(wait=False)

    async def capacity(self, destination: str, now_ms: int) -> int:
        return (await self.capacities([destination], now_ms))[destination]

    async def capacities(self, destinations: Sequence[str], now_ms: int) -> dict[str, int]:
        """Every destination's capacity in one transaction: a worker's round asks for all of them."""
        self._rounds += 1
        round_id = f"{self._process}:{self._rounds}"
        asks = [(name, self._destinations[name]) for name in destinations if name in self._destinations]
        granted = await self._run(_grant_each, asks, now_ms, round_id) if asks else []
        capacity = dict.fromkeys(destinations, 0)
        for (name, _), count in zip(asks, granted, strict=True):
            self._reserved[name] = (round_id, count)
            capacity[name] = count
        return capacity

    async def started(self, destination: str, count: int) -> None:
        await self.started_each({destination: count})

    async def started_each(self, counts: Mapping[str, int]) -> None:
        """Keep the slots used; give back the rest of the last `capacities` call in one transaction."""
        unused: list[tuple[str, str, int, int]] = []
        for name, count in counts.items():
            round_id, granted = self._reserved.pop(name, ("", 0))
            used = min(count, granted)
            self._in_flight.setdefault(name, []).extend([round_id] * used)
            if used < granted:
                unused.append((name, round_id, used, granted))
        if unused:
            await self._run(_give_back_each, unused)

    async def finished(self, destination: str) -> None:
        """Attempts ending while a transaction runs free their slots together in the next one."""
        in_flight = self._in_flight.get(destination)
        if in_flight:
            await self._frees.add((destination, in_flight.pop()))

    async def _free_each(self, slots: list[tuple[str, str]]) -> None:
        await self._run(_free_all, slots)

    async def next_ready_ms(self, destination: str, now_ms: int) -> int | None:
        limits = self._destinations.get(destination)
        if limits is None or not limits.rates:
            return None
        return await self._run(_next_ready, destination, limits, now_ms)

    async def _run(self, op: _Op[_T], *args: object) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, self._in_transaction, op, args)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"SQLite limits {self._path} cannot be used: {exc}") from exc

    def _in_transaction(self, op: _Op[_T], args: tuple[object, ...]) -> _T:
        if self._lock is None:
            self._lock = WriteLock(self._path)
        with self._lock:
            if self._conn is None:
                self._conn = _open(self._path)  # processes starting at once set the file up in turn
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = op(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return result


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.executescript(_SCHEMA)
    return conn


def _grant(conn: sqlite3.Connection, destination: str, limits: SharedSettings, now_ms: int, round_id: str) -> int:
    conn.execute("DELETE FROM holds WHERE destination = ? AND expires_at_ms <= ?", (destination, now_ms))
    (taken,) = conn.execute(
        "SELECT coalesce(sum(count), 0) FROM holds WHERE destination = ?", (destination,)
    ).fetchone()
    granted: int = limits.concurrency - taken
    if limits.rates:
        forgotten = (destination, now_ms - limits.longest_ms)
        conn.execute("DELETE FROM starts WHERE destination = ? AND at_ms <= ?", forgotten)
        for rate in limits.rates:
            granted = min(granted, rate.limit - _starts_since(conn, destination, now_ms - rate.window_ms))
    if granted <= 0:
        return 0
    conn.execute("INSERT INTO holds VALUES (?, ?, ?, ?)", (destination, round_id, granted, now_ms + limits.slot_ms))
    if limits.rates:
        starts = [(destination, f"{round_id}:{n}", now_ms) for n in range(1, granted + 1)]
        conn.executemany("INSERT INTO starts VALUES (?, ?, ?)", starts)
    return granted


def _grant_each(
    conn: sqlite3.Connection, asks: list[tuple[str, SharedSettings]], now_ms: int, round_id: str
) -> list[int]:
    return [_grant(conn, destination, limits, now_ms, round_id) for destination, limits in asks]


def _give_back_each(conn: sqlite3.Connection, unused: list[tuple[str, str, int, int]]) -> None:
    """For each destination, a round's slots from `used` + 1 to `granted` were not used: free them, and forget
    their starts."""
    for destination, round_id, used, granted in unused:
        _free(conn, destination, round_id, granted - used)
        never = [(destination, f"{round_id}:{n}") for n in range(used + 1, granted + 1)]
        conn.executemany("DELETE FROM starts WHERE destination = ? AND slot = ?", never)


def _free(conn: sqlite3.Connection, destination: str, round_id: str, count: int = 1) -> None:
    """`count` of the slots a round holds are free again."""
    key = (destination, round_id)
    conn.execute("UPDATE holds SET count = count - ? WHERE destination = ? AND round = ?", (count, *key))
    conn.execute("DELETE FROM holds WHERE destination = ? AND round = ? AND count <= 0", key)


def _free_all(conn: sqlite3.Connection, slots: list[tuple[str, str]]) -> None:
    """One slot each of these (destination, round) pairs is free again."""
    for destination, round_id in slots:
        _free(conn, destination, round_id)


def _next_ready(conn: sqlite3.Connection, destination: str, limits: SharedSettings, now_ms: int) -> int | None:
    """When every rate allows one more start, if one is full now."""
    ready: list[int] = []
    for rate in limits.rates:
        since_ms = now_ms - rate.window_ms
        used = _starts_since(conn, destination, since_ms)
        if used >= rate.limit:
            (oldest,) = conn.execute(
                "SELECT at_ms FROM starts WHERE destination = ? AND at_ms > ? ORDER BY at_ms LIMIT 1 OFFSET ?",
                (destination, since_ms, used - rate.limit),
            ).fetchone()
            ready.append(oldest + rate.window_ms)
    return max(ready, default=None)


def _starts_since(conn: sqlite3.Connection, destination: str, since_ms: int) -> int:
    (count,) = conn.execute(
        "SELECT count(*) FROM starts WHERE destination = ? AND at_ms > ?", (destination, since_ms)
    ).fetchone()
    result: int = count
    return result
