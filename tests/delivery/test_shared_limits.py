"""Shared limits: the same admission as LocalLimits, shared by replicas through one Redis server (RedisLimits)
or by processes through one SQLite file (SqliteLimits)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.clock import SystemClock
from gateway.config.schema import DestinationConfig
from gateway.delivery.limits import Limits, LocalLimits
from gateway.delivery.send import make_session
from gateway.delivery.shared_limits import RedisLimits
from gateway.delivery.sqlite_limits import SqliteLimits
from gateway.delivery.worker import LEASE_MARGIN_S, Worker
from gateway.errors import StoreUnavailable
from gateway.model import AttemptResult, Delivery, DeliveryStatus, NewDelivery, NewEvent, RenderedRequest
from gateway.store.redis import RedisStore, connect
from tests.delivery.conftest import most_in_any_window
from tests.fakes import FakeDestination, Reply
from tests.redis_server import RedisServer

T0 = 1_700_000_000_000
QUARTER_MS = 15 * 60_000
TIMEOUT_S = 10.0
SLOT_MS = round((TIMEOUT_S + LEASE_MARGIN_S) * 1000)


def destination(**fields: Any) -> DestinationConfig:
    return DestinationConfig.model_validate({"url": "http://unused.invalid/", "timeout": TIMEOUT_S, **fields})


Replicas = Callable[..., list[Limits]]


@pytest.fixture(params=["redis", "sqlite"])
async def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Replicas]:
    """`replicas(n, d=config...)`: n limits sharing one Redis prefix or one SQLite file, like n gateway processes."""
    made: list[Limits] = []
    client: Redis | None = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = connect(server.url)
        prefix = f"test-{uuid.uuid4().hex}:"

    def one(destinations: dict[str, DestinationConfig]) -> Limits:
        if client is not None:
            return RedisLimits(client, destinations, prefix=prefix)
        return SqliteLimits(tmp_path / "gateway.limits.db", destinations)

    def make(count: int = 2, **destinations: DestinationConfig) -> list[Limits]:
        made.extend(one(destinations) for _ in range(count))
        return made[-count:]

    yield make
    for limits in made:
        await limits.close()
    if client is not None:
        await client.aclose()


# --- two replicas share one concurrency cap and one rate ---


async def test_a_worker_round_asks_for_every_destination_at_once(replicas: Replicas) -> None:
    a, b = replicas(d=destination(concurrency=3), e=destination(concurrency=1))

    assert await a.capacities(["d", "e", "gone"], T0) == {"d": 3, "e": 1, "gone": 0}
    await a.started_each({"d": 2, "e": 1, "gone": 0})  # d's third slot goes back
    assert await b.capacities(["d", "e"], T0) == {"d": 1, "e": 0}
    await b.started_each({"d": 0, "e": 0})
    await a.finished("e")
    assert await b.capacities(["d", "e"], T0) == {"d": 1, "e": 1}
    await b.started_each({"d": 0, "e": 0})


async def test_attempts_ending_together_free_each_of_their_slots(replicas: Replicas) -> None:
    a, b = replicas(d=destination(concurrency=4), e=destination(concurrency=2))
    await a.capacities(["d", "e"], T0)
    await a.started_each({"d": 4, "e": 2})

    await asyncio.gather(a.finished("d"), a.finished("d"), a.finished("e"), a.finished("d"))

    assert await b.capacities(["d", "e"], T0) == {"d": 3, "e": 1}
    await b.started_each({"d": 0, "e": 0})


async def test_concurrency_is_shared_across_replicas(replicas: Replicas) -> None:
    a, b = replicas(d=destination(concurrency=3))

    assert await a.capacity("d", T0) == 3
    await a.started("d", 2)  # the third slot goes back
    assert await b.capacity("d", T0) == 1
    await b.started("d", 1)
    assert await a.capacity("d", T0) == 0
    await a.started("d", 0)
    await a.finished("d")
    assert await b.capacity("d", T0) == 1
    await b.started("d", 0)


async def test_rate_is_shared_across_replicas(replicas: Replicas) -> None:
    a, b = replicas(d=destination(concurrency=10, rate_limit="2/s"))

    assert await a.capacity("d", T0) == 2  # the whole window's count
    await a.started("d", 2)
    assert await b.capacity("d", T0 + 500) == 0
    await b.started("d", 0)
    assert await b.next_ready_ms("d", T0 + 500) == T0 + 1000
    assert await b.capacity("d", T0 + 999) == 0
    await b.started("d", 0)
    assert await b.capacity("d", T0 + 1000) == 2
    await b.started("d", 1)
    assert await a.capacity("d", T0 + 1000) == 1
    await a.started("d", 1)
    assert await a.next_ready_ms("d", T0 + 1000) == T0 + 2000


async def test_unused_starts_go_back_to_the_other_replicas(replicas: Replicas) -> None:
    a, b = replicas(d=destination(concurrency=10, rate_limit="3/s"))

    assert await a.capacity("d", T0) == 3
    await a.started("d", 1)

    assert await b.capacity("d", T0) == 2
    assert await b.next_ready_ms("d", T0) == T0 + 1000  # full while b holds the last two


async def test_replicas_never_start_901_in_any_15_minutes(replicas: Replicas) -> None:
    rng = random.Random(5)
    many = replicas(3, d=destination(concurrency=256, rate_limit=["300/m", "900/15m"]))
    starts: list[int] = []
    now_ms = T0
    while now_ms < T0 + 4 * QUARTER_MS:
        limits = rng.choice(many)
        granted = await limits.capacity("d", now_ms)
        used = rng.randint(0, granted)
        await limits.started("d", used)  # never finished: their slots expire after the lease, in fake time
        starts += [now_ms] * used
        now_ms += rng.randint(0, 15_000)

    assert most_in_any_window(starts, QUARTER_MS) == 900
    assert most_in_any_window(starts, 60_000) == 300


async def test_a_dead_replicas_slots_free_up_after_its_lease(replicas: Replicas) -> None:
    dead, alive = replicas(d=destination(concurrency=2))
    assert await dead.capacity("d", T0) == 2
    await dead.started("d", 2)  # ...and never finishes

    assert await alive.capacity("d", T0 + SLOT_MS - 1) == 0
    await alive.started("d", 0)
    assert await alive.capacity("d", T0 + SLOT_MS) == 2


async def test_replicas_asking_at_once_never_get_more_than_the_cap(replicas: Replicas) -> None:
    many = replicas(8, d=destination(concurrency=5, rate_limit="100/s"))

    granted = await asyncio.gather(*(limits.capacity("d", T0) for limits in many))

    assert sum(granted) == 5
    await asyncio.gather(*(limits.started("d", count) for limits, count in zip(many, granted, strict=True)))
    assert await many[0].capacity("d", T0 + 1000) == 0


async def test_reconfigure_applies_new_settings_and_keeps_counting_slots_in_flight(replicas: Replicas) -> None:
    (limits,) = replicas(1, d=destination(concurrency=1), gone=destination())
    assert await limits.capacity("d", T0) == 1
    await limits.started("d", 1)

    limits.reconfigure({"d": destination(concurrency=3)})

    assert await limits.capacity("d", T0) == 2
    await limits.started("d", 0)
    await limits.finished("d")
    assert await limits.capacity("d", T0) == 3
    assert await limits.capacity("gone", T0) == 0


async def test_an_unknown_destination_may_start_nothing(replicas: Replicas) -> None:
    (limits,) = replicas(1, d=destination())

    assert await limits.capacity("other", T0) == 0
    assert await limits.next_ready_ms("other", T0) is None
    assert await limits.next_ready_ms("d", T0) is None  # no rate limit: never held back by one


# --- one replica answers exactly like LocalLimits ---

Step = tuple[str, int]  # ("capacity" | "next_ready", now offset ms) | ("started", count) | ("finished", 0)


@pytest.mark.parametrize(
    ("config", "steps"),
    [
        pytest.param(
            {"concurrency": 2, "rate_limit": "1/s"},
            [("capacity", 0), ("started", 1), ("capacity", 0), ("next_ready", 0), ("started", 0),
             ("capacity", 1000), ("started", 1), ("capacity", 5000), ("started", 0), ("finished", 0),
             ("capacity", 5000), ("started", 1)],
            id="concurrency-and-rate",
        ),
        pytest.param(
            {"concurrency": 10, "rate_limit": ["4/m", "6/5m"]},
            [("capacity", 0), ("started", 3), ("next_ready", 0), ("capacity", 100), ("started", 1),
             ("next_ready", 450), ("capacity", 60_000), ("started", 2), ("next_ready", 60_000),
             ("capacity", 300_000), ("started", 3), ("capacity", 300_100), ("started", 1)],
            id="two-windows",
        ),
        pytest.param(
            {"concurrency": 3},
            [("capacity", 0), ("started", 3), ("capacity", 1), ("started", 0), ("finished", 0), ("finished", 0),
             ("capacity", 2), ("started", 1), ("next_ready", 0)],
            id="concurrency-only",
        ),
    ],
)  # fmt: skip
async def test_one_replica_answers_like_local_limits(
    replicas: Replicas, config: dict[str, Any], steps: list[Step]
) -> None:
    (shared,) = replicas(1, d=destination(**config))
    local = LocalLimits({"d": destination(**config)})

    assert await run_steps(shared, steps) == await run_steps(local, steps)


async def run_steps(limits: Limits, steps: list[Step]) -> list[int | None]:
    answers: list[int | None] = []
    for step, value in steps:
        if step == "capacity":
            answers.append(await limits.capacity("d", T0 + value))
        elif step == "started":
            await limits.started("d", value)
        elif step == "finished":
            await limits.finished("d")
        else:
            answers.append(await limits.next_ready_ms("d", T0 + value))
    return answers


# --- Redis down ---


async def test_capacity_fails_while_redis_is_down_and_a_slot_left_behind_expires(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    await asyncio.to_thread(server.start)
    client = connect(server.url)
    try:
        limits = RedisLimits(client, {"d": destination(concurrency=1)})
        assert await limits.capacity("d", T0) == 1
        await limits.started("d", 1)
        await asyncio.to_thread(server.stop)

        with pytest.raises(StoreUnavailable):
            await limits.capacity("d", T0)
        await limits.finished("d")  # cannot free the slot, and does not raise: the slot expires instead

        await asyncio.to_thread(server.start)
        assert await limits.capacity("d", T0 + SLOT_MS - 1) == 0
        await limits.started("d", 0)
        assert await limits.capacity("d", T0 + SLOT_MS) == 1
    finally:
        await client.aclose()
        await asyncio.to_thread(server.stop)


# --- two workers, two stores, one Redis: the destination sees the limits of one ---


@dataclass
class Delivered:
    results: list[AttemptResult] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, _: Delivery, result: AttemptResult) -> None:
        if result.status is DeliveryStatus.DELIVERED:
            self.results.append(result)
            self.changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(30):
            while len(self.results) < count:
                self.changed.clear()
                await self.changed.wait()


@contextlib.asynccontextmanager
async def two_replicas(
    server: RedisServer, config: DestinationConfig, url: str, count: int
) -> AsyncIterator[Delivered]:
    """`count` deliveries to `url`, and two workers, each with its own store and limits on one Redis, sending them."""
    prefix = f"test-{uuid.uuid4().hex}:"
    stores = [RedisStore(server.url, prefix=prefix) for _ in range(2)]
    delivered = Delivered()
    for store in stores:
        await store.open()
    try:
        request = RenderedRequest("POST", url, {"Content-Type": "application/json"}, b"{}")
        for n in range(count):
            event = NewEvent(f"e{n}", "missive", SystemClock().now_ms(), b"{}", f"k{n}")
            await stores[0].ingest(event, [NewDelivery(f"d{n}", "r", "d", 3, request)], dedupe_window_ms=0)
        async with make_session() as session:
            workers = [
                Worker(store, {"d": config}, session, poll_interval_s=0.05, on_attempt=delivered.record,
                       limits=RedisLimits(store.client, {"d": config}, prefix=prefix))
                for store in stores
            ]  # fmt: skip
            running = [asyncio.create_task(worker.run()) for worker in workers]
            try:
                yield delivered
            finally:
                await asyncio.gather(*(worker.stop() for worker in workers))
                await asyncio.gather(*running)
    finally:
        for store in stores:
            await store.close()


async def test_two_workers_share_the_concurrency_cap(redis_server: RedisServer) -> None:
    async with FakeDestination([Reply(200, delay_s=0.1)]) as fake:
        async with two_replicas(redis_server, destination(concurrency=2), fake.url(), count=8) as delivered:
            await delivered.wait_for(8)

    assert fake.max_in_flight == 2
    assert len(fake.received) == 8
    assert sorted(result.attempt.delivery_id for result in delivered.results) == sorted(f"d{n}" for n in range(8))


async def test_two_workers_share_the_rate(redis_server: RedisServer) -> None:
    async with FakeDestination([200]) as fake:
        config = destination(rate_limit="1/m")  # one token, then the next a minute later
        async with two_replicas(redis_server, config, fake.url(), count=3) as delivered:
            await delivered.wait_for(1)
            await asyncio.sleep(0.5)  # both workers poll every 50 ms meanwhile; one bucket each would send two

    assert len(fake.received) == len(delivered.results) == 1


async def test_a_quota_answer_pauses_the_destination_for_every_replica(redis_server: RedisServer) -> None:
    async with FakeDestination([Reply(429, "slow down", {"Retry-After": "2"}), 200]) as fake:
        config = destination(concurrency=1)  # one request at a time across both replicas
        async with two_replicas(redis_server, config, fake.url(), count=4) as delivered:
            await delivered.wait_for(4)

    paused_s = fake.arrived_at_s[1] - fake.arrived_at_s[0]
    assert 1.9 <= paused_s < 10  # neither replica sent anything while Retry-After ran
    assert len(fake.received) == 5


async def test_a_limits_file_from_before_counted_holds_is_taken_over(tmp_path: Path) -> None:
    """An earlier version kept a row per slot in `slots`; those rows were short-lived, so they are dropped."""
    path = tmp_path / "gateway.limits.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE slots (destination TEXT, slot TEXT, expires_at_ms INTEGER)")
        conn.execute("INSERT INTO slots VALUES ('d', 'old:1:1', ?)", (T0 + SLOT_MS,))
        conn.commit()
    limits = SqliteLimits(path, {"d": destination(concurrency=2)})
    try:
        assert await limits.capacity("d", T0) == 2
        await limits.started("d", 1)
        assert await limits.capacity("d", T0) == 1
        await limits.started("d", 0)
    finally:
        await limits.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "slots" not in tables and "holds" in tables
