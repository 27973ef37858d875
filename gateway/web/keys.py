"""Typed keys for what the application holds."""

from __future__ import annotations

from aiohttp import web

from gateway.clock import Clock
from gateway.delivery.worker import Worker
from gateway.ops.config_holder import ConfigHolder
from gateway.store.base import Store
from gateway.web.token_guesses import TokenGuesses


class WorkerSlot:
    """The in-process worker, once started (None with --no-worker or before start-up)."""

    worker: Worker | None = None

    def wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    @property
    def store_problem(self) -> str | None:
        """Why the worker cannot use the store right now (None when it can, or when there is no worker)."""
        return self.worker.store_problem if self.worker is not None else None


CONFIG = web.AppKey("config", ConfigHolder)
STORE = web.AppKey("store", Store)
CLOCK = web.AppKey("clock", Clock)
WORKER = web.AppKey("worker", WorkerSlot)
RECEIVES = web.AppKey("receives", bool)  # False in `gateway worker`: no ingest route
OVERRIDDEN = web.AppKey("overridden", frozenset[str])  # settings the command line gave, e.g. server.port
TOKEN_GUESSES = web.AppKey("token_guesses", TokenGuesses)  # wrong admin tokens, by client
ADMIN_PORT = web.AppKey[int | None]("admin_port")  # admin.port as bound at start-up (reloads do not move it)
