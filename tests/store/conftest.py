"""Stores for the tests of this folder: every backend, on a real SQLite file or a real Redis server.

Adding a backend is one entry in BACKENDS and one branch in `store_factory`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.store.base import Store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests.redis_server import RedisServer

BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("redis", id="redis")]

StoreFactory = Callable[[], Store]


def store_factory(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> StoreFactory:
    """Builds unopened stores that all see the same data, so a test can close and reopen."""
    if backend == "sqlite":
        return lambda: SqliteStore(tmp_path / "data" / "gateway.db")
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix = f"test-{uuid.uuid4().hex}:"  # one server for the session, its own keys for each test
        return lambda: RedisStore(server.url, prefix=prefix)
    raise ValueError(f"no store backend named {backend!r}")


@pytest.fixture(params=BACKENDS)
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    backend: str = request.param
    return store_factory(backend, tmp_path, request)


@pytest.fixture
async def store(new_store: StoreFactory) -> AsyncIterator[Store]:
    opened = new_store()
    await opened.open()
    yield opened
    await opened.close()
