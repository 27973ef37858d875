"""Running the delivery worker next to a store: one client session, the worker loop, pruning.

`gateway serve` runs it inside the web application; `gateway worker` runs it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from gateway.clock import Clock
from gateway.delivery.limits import Limits, LocalLimits
from gateway.delivery.send import make_session
from gateway.delivery.shared_limits import RedisLimits
from gateway.delivery.sqlite_limits import SqliteLimits, limits_path
from gateway.delivery.worker import OnAttempt, Worker
from gateway.errors import StoreUnavailable
from gateway.routing.compiled import LoadedConfig
from gateway.store.base import Store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore

log = logging.getLogger("gateway.worker")

PRUNE_INTERVAL_S = 600.0


@contextlib.asynccontextmanager
async def running_worker(
    loaded: LoadedConfig, store: Store, clock: Clock, on_attempt: OnAttempt | None = None
) -> AsyncIterator[Worker]:
    """Deliver in the background while the block runs; on exit stop within `server.shutdown_grace`."""
    limits = _shared_limits(loaded, store)
    async with make_session() as session, make_session(public_only=True) as public_session:
        worker = Worker(
            store, loaded.config.destinations, session, clock=clock, on_attempt=on_attempt,
            lease_margin_s=loaded.config.storage.lease_margin, limits=limits,
            masker=loaded.masker,
            public_session=public_session,
        )
        tasks = [
            asyncio.create_task(worker.run(), name="worker"),
            asyncio.create_task(_prune_forever(store, clock, loaded.config.storage.retention), name="prune"),
        ]
        try:
            yield worker
        finally:
            tasks[1].cancel()
            await worker.stop(loaded.config.server.shutdown_grace)
            await asyncio.gather(*tasks, return_exceptions=True)
            await limits.close()


def _shared_limits(loaded: LoadedConfig, store: Store) -> Limits:
    """Limits every process on the same store shares: replicas on one Redis, processes on one SQLite file."""
    destinations, margin_s = loaded.config.destinations, loaded.config.storage.lease_margin
    if isinstance(store, RedisStore):
        return RedisLimits(store.client, destinations, prefix=store.prefix, lease_margin_s=margin_s)
    if isinstance(store, SqliteStore):
        return SqliteLimits(limits_path(store.path), destinations, lease_margin_s=margin_s)
    return LocalLimits(destinations)


async def _prune_forever(store: Store, clock: Clock, retention_s: float) -> None:
    """Delete delivered events older than the retention, now and every PRUNE_INTERVAL_S."""
    while True:
        try:
            pruned = await store.prune(clock.now_ms() - round(retention_s * 1000))
        except StoreUnavailable as exc:
            log.warning("pruning skipped: %s", exc)
        else:
            if pruned:
                log.info("pruned %d delivered events older than %g s", pruned, retention_s)
        await asyncio.sleep(PRUNE_INTERVAL_S)
