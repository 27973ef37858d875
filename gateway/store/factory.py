"""Building the store a config asks for."""

from __future__ import annotations

from pathlib import Path

from gateway.config.schema import StorageConfig
from gateway.store.base import Store


def make_store(storage: StorageConfig, base_dir: Path) -> Store:
    """The configured backend, not yet opened. SQLite paths are relative to the config file."""
    if storage.backend == "redis":
        from gateway.store.redis import RedisStore

        assert storage.url is not None, "StorageConfig requires a url for redis"
        return RedisStore(storage.url)
    from gateway.store.sqlite import SqliteStore

    return SqliteStore(base_dir / storage.path)
