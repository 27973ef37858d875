"""RedisStore beyond the shared store contract: outages, replicas sharing one server, durability, scale."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.config.schema import StorageConfig
from gateway.errors import StoreUnavailable
from gateway.model import AttemptResult, DeliveryFilter, DeliveryStatus
from gateway.store.factory import make_store
from gateway.store.redis import DATA_VERSION, RedisStore, connect
from tests.redis_server import RedisServer, redis_server_path
from tests.store.test_contract import LEASE_MS, T0, WINDOW_MS, attempt_of, ids, new_delivery, new_event, put, stored


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex}:"


@pytest.fixture
async def replicas(redis_server: RedisServer, prefix: str) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two stores on one server and prefix, as two gateway replicas have."""
    pair = (RedisStore(redis_server.url, prefix), RedisStore(redis_server.url, prefix))
    for store in pair:
        await store.open()
    yield pair
    for store in pair:
        await store.close()


@pytest.fixture
async def own_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A server this test may stop, kill and start again (same port, same AOF directory)."""
    server = RedisServer(tmp_path / "redis")
    await asyncio.to_thread(server.start)
    yield server
    await asyncio.to_thread(server.stop)


# --- outages ---


async def test_unavailable_while_redis_is_down_and_back_with_its_data_after(own_server: RedisServer) -> None:
    store = RedisStore(own_server.url)
    await store.open()
    try:
        await put(store, "before", T0, new_delivery("d-before"))
        await asyncio.to_thread(own_server.kill)  # SIGKILL: only the fsync'd AOF survives

        calls: list[Callable[[], Awaitable[object]]] = [
            store.ping,
            lambda: store.ingest(new_event("during"), [new_delivery("d-during")], WINDOW_MS),
            lambda: store.claim({"slack": 10}, T0, LEASE_MS),
            store.stats,
            lambda: store.get_event("before"),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable):
                await call()

        await asyncio.to_thread(own_server.start)
        await store.ping()  # the same store object: its pool reconnects, its scripts load again
        assert await store.get_event("before") == stored(new_event("before"))
        await put(store, "after", T0 + 1, new_delivery("d-after"))
        assert sorted(ids(await store.claim({"slack": 10}, T0 + 1, LEASE_MS))) == ["d-after", "d-before"]
        assert await store.get_event("during") is None
    finally:
        await store.close()


async def test_close_lets_calls_in_flight_end_and_refuses_new_ones(redis_server: RedisServer, prefix: str) -> None:
    store = RedisStore(redis_server.url, prefix)
    await store.open()
    writes = [asyncio.ensure_future(store.ingest(new_event(f"e{n}"), [], WINDOW_MS)) for n in range(50)]
    await asyncio.sleep(0)  # let every ingest start

    await store.close()

    assert [write.result().event_id for write in writes] == [f"e{n}" for n in range(50)]
    with pytest.raises(StoreUnavailable, match="not open"):
        await store.get_event("e1")
    reopened = RedisStore(redis_server.url, prefix)
    await reopened.open()
    try:
        assert [await reopened.get_event(f"e{n}") is not None for n in range(50)] == [True] * 50
    finally:
        await reopened.close()


async def test_open_fails_when_redis_is_not_there(own_server: RedisServer) -> None:
    await asyncio.to_thread(own_server.stop)

    with pytest.raises(StoreUnavailable, match="cannot open"):
        await RedisStore(own_server.url).open()


@pytest.mark.parametrize(
    ("appendonly", "appendfsync", "warned"),
    [
        pytest.param("yes", "always", False, id="fsync-always"),
        pytest.param("yes", "everysec", True, id="fsync-every-second"),
        pytest.param("no", "always", True, id="no-aof"),
    ],
)
async def test_open_warns_when_redis_may_lose_acknowledged_events(
    own_server: RedisServer, caplog: pytest.LogCaptureFixture, appendonly: str, appendfsync: str, warned: bool
) -> None:
    client = connect(own_server.url)
    await client.config_set("appendonly", appendonly)
    await client.config_set("appendfsync", appendfsync)
    await client.aclose()

    store = RedisStore(own_server.url)
    await store.open()
    await store.close()

    warnings = [record.getMessage() for record in caplog.records if "can be lost" in record.getMessage()]
    assert bool(warnings) is warned
    assert all(f"appendonly={appendonly} appendfsync={appendfsync}" in warning for warning in warnings)


async def test_open_refuses_data_from_a_newer_gateway(redis_server: RedisServer, prefix: str) -> None:
    client: Redis = connect(redis_server.url)
    await client.set(f"{prefix}version", DATA_VERSION + 1)
    await client.aclose()

    with pytest.raises(StoreUnavailable, match=f"version {DATA_VERSION + 1} is newer"):
        await RedisStore(redis_server.url, prefix).open()


# --- replicas sharing one server ---


async def test_replicas_claiming_at_once_never_share_a_delivery(replicas: tuple[RedisStore, RedisStore]) -> None:
    a, b = replicas
    for n in range(10):
        await put(a, f"e{n}", T0, *(new_delivery(f"d{n}-{k}") for k in range(20)))

    claimed: list[str] = []
    while batches := await asyncio.gather(*(store.claim({"slack": 7}, T0, LEASE_MS) for store in (a, b, a, b))):
        if not any(batches):
            break
        claimed += [delivery.id for batch in batches for delivery in batch]

    assert len(claimed) == len(set(claimed)) == 200


async def test_the_dedupe_window_holds_across_replicas(replicas: tuple[RedisStore, RedisStore]) -> None:
    a, b = replicas
    await a.ingest(new_event("first", T0, key="same-body"), [new_delivery("d1")], WINDOW_MS)

    again = await b.ingest(new_event("again", T0 + 1, key="same-body"), [new_delivery("d2")], WINDOW_MS)

    assert (again.event_id, again.deliveries, again.duplicate) == ("first", 0, True)


async def test_a_dead_replicas_lease_passes_to_another(replicas: tuple[RedisStore, RedisStore]) -> None:
    dead, alive = replicas
    await put(dead, "e1", T0, new_delivery("d1"))
    (lost,) = await dead.claim({"slack": 5}, T0, LEASE_MS)

    assert await alive.claim({"slack": 5}, T0 + LEASE_MS - 1, LEASE_MS) == []
    (taken,) = await alive.claim({"slack": 5}, T0 + LEASE_MS, LEASE_MS)
    delivered = AttemptResult(attempt_of(taken, T0 + LEASE_MS, 200, None), DeliveryStatus.DELIVERED)
    assert await alive.finish(taken, delivered)
    late = AttemptResult(attempt_of(lost, T0 + LEASE_MS + 1, 500, "HTTP 500"), DeliveryStatus.DEAD)
    assert not await dead.finish(lost, late)

    after = await alive.get_delivery("d1")
    assert after is not None and (after.status, after.attempts) == (DeliveryStatus.DELIVERED, 1)


async def test_prefixes_keep_gateways_apart(redis_server: RedisServer) -> None:
    one, other = (RedisStore(redis_server.url, f"{name}-{uuid.uuid4().hex}:") for name in ("one", "two"))
    await one.open()
    await other.open()
    try:
        await put(one, "e1", T0, new_delivery("d1"))

        assert await other.get_event("e1") is None
        assert await other.claim({"slack": 5}, T0, LEASE_MS) == []
        assert (await other.stats()).pending == 0
        assert (await one.stats()).pending == 1
    finally:
        await one.close()
        await other.close()


# --- more than one page or chunk ---


async def test_listing_walks_past_one_page_of_the_index(replicas: tuple[RedisStore, RedisStore]) -> None:
    store, _ = replicas
    await asyncio.gather(
        *(put(store, f"e{n:03}", T0 + n, new_delivery(f"d{n:03}", "slack" if n % 3 else "hubspot")) for n in range(600))
    )

    found = await store.list_deliveries(DeliveryFilter(destination="hubspot", limit=150))

    assert ids(found) == [f"d{n:03}" for n in range(597, 147, -3)]


async def test_prune_works_through_many_chunks(replicas: tuple[RedisStore, RedisStore]) -> None:
    store, _ = replicas
    await asyncio.gather(*(put(store, f"e{n}", T0, new_delivery(f"d{n}")) for n in range(1_200)))
    (kept,) = await store.claim({"slack": 1}, T0, LEASE_MS)
    while claimed := await store.claim({"slack": 100}, T0, LEASE_MS):
        for delivery in claimed:
            result = AttemptResult(attempt_of(delivery, T0, 200, None), DeliveryStatus.DELIVERED)
            assert await store.finish(delivery, result)

    assert await store.prune(before_ms=T0 + 1) == 1_199

    assert (await store.stats()).pending == 1
    assert ids(await store.list_deliveries(DeliveryFilter())) == [kept.id]


async def test_the_factory_builds_a_redis_store_from_the_config(redis_server: RedisServer, tmp_path: Path) -> None:
    store = make_store(StorageConfig.model_validate({"backend": "redis", "url": redis_server.url}), tmp_path)
    assert isinstance(store, RedisStore)
    await store.open()
    try:
        await store.ping()
    finally:
        await store.close()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        pytest.param("true", pytest.fail.Exception, id="ci-fails"),
        pytest.param(None, pytest.skip.Exception, id="locally-skips"),
    ],
)
def test_a_missing_redis_server_skips_locally_but_fails_on_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str | None, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)

    with pytest.raises(outcome, match="apt-get install redis-server"):
        redis_server_path()
