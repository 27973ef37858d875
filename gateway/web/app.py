"""Wiring: build the aiohttp application from a config. No logic lives here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.delivery.service import running_worker
from gateway.errors import StoreUnavailable, plural
from gateway.ops.config_holder import ConfigHolder
from gateway.ops.logs import remember_secrets
from gateway.ops.metrics import METRICS, Metrics
from gateway.ops.reload import Reloader
from gateway.routing.compiled import LoadedConfig
from gateway.store.base import Store
from gateway.store.factory import make_store
from gateway.web import hooks as handlers
from gateway.web.admin import add_admin_routes
from gateway.web.console.routes import add_console_routes
from gateway.web.errors import json_errors
from gateway.web.keys import ADMIN_PORT, CLOCK, CONFIG, OVERRIDDEN, RECEIVES, STORE, TOKEN_GUESSES, WORKER, WorkerSlot
from gateway.web.listeners import split_listeners
from gateway.web.token_guesses import TokenGuesses

log = logging.getLogger("gateway.server")


def create_app(
    holder: ConfigHolder,
    store: Store | None = None,
    clock: Clock | None = None,
    run_worker: bool = True,
    receive: bool = True,
    overridden: frozenset[str] = frozenset(),
) -> web.Application:
    """The gateway's application. `store` defaults to the configured backend, opened and closed with the app.

    The delivery worker runs inside unless `run_worker` is false (`serve --no-worker`); webhooks are received
    unless `receive` is false (`gateway worker`, which keeps health, metrics, admin and reloads). `overridden`
    names the settings the command line gave (`server.port`), which reloads do not report as needing a restart.
    """
    loaded = holder.active.loaded
    app = web.Application(middlewares=[json_errors, split_listeners], client_max_size=loaded.config.server.max_body)
    app[ADMIN_PORT] = loaded.config.admin.port
    app[CONFIG] = holder
    app[CLOCK] = clock or SystemClock()
    app[STORE] = store or make_store(loaded.config.storage, loaded.file.parent)
    app[WORKER] = WorkerSlot()
    app[TOKEN_GUESSES] = TokenGuesses()
    app[METRICS] = Metrics()
    app[METRICS].track_config(loaded)
    remember_secrets(loaded)
    app.cleanup_ctx.append(_store_ctx)
    if run_worker:
        app.cleanup_ctx.append(_worker_ctx)
    app.cleanup_ctx.append(_reload_ctx)
    app[RECEIVES] = receive
    app[OVERRIDDEN] = overridden
    if receive:
        app.on_startup.append(_announce)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    add_admin_routes(app)  # always: it answers 404 while admin.token is unset, and follows reloads
    add_console_routes(app)  # the same
    if receive:  # any method, so that a GET on an unknown path is a 404 and on a source's path a 405
        app.router.add_route("*", "/{path:.*}", handlers.ingest, expect_handler=handlers.expect_continue)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[STORE].open()
    yield
    await _log_what_stays(app[STORE])
    await app[STORE].close()


async def _log_what_stays(store: Store) -> None:
    """At shutdown, after the worker stopped: what the next start (or another replica) will find."""
    try:
        stats = await store.stats()
    except StoreUnavailable as exc:
        log.warning("shutdown: cannot tell what stays queued, the store is unavailable: %s", exc)
        return
    log.info(
        "shutdown: %s stay queued for the next start, %s kept",
        plural(stats.pending, "delivery", "deliveries"), plural(stats.dead, "dead letter"),
    )


async def _worker_ctx(app: web.Application) -> AsyncIterator[None]:
    async with running_worker(
        app[CONFIG].active.loaded, app[STORE], app[CLOCK], on_attempt=app[METRICS].attempted
    ) as worker:
        app[WORKER].worker = worker
        yield
        app[WORKER].worker = None


async def _reload_ctx(app: web.Application) -> AsyncIterator[None]:
    """Reload the config on SIGHUP and when its file changes; pass a new one on to metrics and the worker."""

    async def apply(loaded: LoadedConfig) -> None:
        app[METRICS].track_config(loaded)
        worker = app[WORKER].worker
        if worker is not None:
            await worker.reconfigure(loaded.config.destinations, loaded.masker)
        if app[RECEIVES]:
            _describe(loaded)

    async with Reloader(app[CONFIG], apply, app[METRICS], overridden=app[OVERRIDDEN]).running():
        yield


async def _announce(app: web.Application) -> None:
    _describe(app[CONFIG].active.loaded)


def _describe(loaded: LoadedConfig) -> None:
    for name in loaded.config.sources:
        routes = [route.name for route in loaded.routes_for(name)]
        log.info("source %s: POST %s -> routes %s", name, loaded.source_path(name), routes or "(none)")
    for warning in loaded.warnings():
        log.warning("%s", warning)
