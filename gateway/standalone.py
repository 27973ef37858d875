"""`gateway worker`: deliver without receiving, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from gateway.clock import SystemClock
from gateway.config import LoadedConfig
from gateway.delivery_service import running_worker
from gateway.store.factory import make_store

log = logging.getLogger("gateway.worker")


async def run_worker(loaded: LoadedConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = make_store(loaded.config.storage, loaded.file.parent)
    await store.open()
    try:
        async with running_worker(loaded, store, SystemClock()):
            log.info("worker delivering to %s", ", ".join(sorted(loaded.config.destinations)) or "(no destinations)")
            await stop.wait()
            log.info("stopping: attempts in flight get %g s to finish", loaded.config.server.shutdown_grace)
    finally:
        await store.close()
