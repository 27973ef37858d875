"""Fixtures shared by the whole suite: payload fixtures, config files, signing, a Redis server, storage."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.store.sqlite import SqliteStore
from tests.redis_server import RedisServer, running_server

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "missive"
FIXTURE_SECRET = "fixture-secret-do-not-use"


def fixture_bytes(name: str) -> bytes:
    """The exact bytes of a Missive payload fixture (signatures are over these bytes)."""
    return (FIXTURES / name).read_bytes()


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write a YAML config (dedented) into a temp dir and return its path."""

    def write(text: str, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by key prefix, or flush it (`storage`)."""
    yield from running_server(tmp_path_factory.mktemp("redis"))


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"), pytest.param("redis", id="redis")])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A config's `storage` line, for each backend: a SQLite file next to the config, or the session's Redis
    server with its keys flushed first (the gateway's own prefix is fixed)."""
    if request.param == "sqlite":
        yield "storage: {path: gateway.db}"
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = Redis.from_url(server.url)
    await client.flushdb()
    await client.aclose()
    yield f'storage: {{backend: redis, url: "{server.url}"}}'


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """An open SQLite store in a fresh file."""
    opened = SqliteStore(tmp_path / "gateway.db")
    await opened.open()
    yield opened
    await opened.close()
