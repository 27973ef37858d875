"""Hot reload: on SIGHUP, and when the config file changes, load it in full and swap it in whole.

A config that fails to load changes nothing: the old one keeps serving and every problem is
logged. Requests in flight finish under the config they started with (they read
`ConfigHolder.active` once). Settings bound at start-up are reported as needing a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from gateway.clock import SystemClock
from gateway.config.schema import GatewayConfig, StorageConfig
from gateway.errors import ConfigError, plural
from gateway.ops.config_holder import ConfigHolder, RejectedReload
from gateway.ops.logs import SECRETS, remember_secrets
from gateway.ops.metrics import Metrics
from gateway.routing.compiled import LoadedConfig, load_config

log = logging.getLogger("gateway.reload")

POLL_INTERVAL_S = 1.0
# Bound at start-up: the listening sockets, the drain on shutdown, the store connection.
RESTART_ONLY: dict[str, tuple[str, ...]] = {
    "server": ("host", "port", "shutdown_grace"),
    "storage": tuple(StorageConfig.model_fields),
    "admin": ("host", "port"),
}

Fingerprint = tuple[int, int, str]
OnApplied = Callable[[LoadedConfig], Awaitable[None]]


def needs_restart(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Settings that differ between `old` and `new` but only take effect on a restart, as YAML paths."""
    return [
        f"{section}.{name}"
        for section, names in RESTART_ONLY.items()
        for name in names
        if getattr(getattr(old, section), name) != getattr(getattr(new, section), name)
    ]


def fingerprint(path: Path) -> Fingerprint | None:
    """mtime, size and content hash of `path`; None while it cannot be read (an editor replacing it)."""
    try:
        stat = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, digest


class Reloader:
    """Reloads the file of `holder`'s config; `on_applied` passes a new config on (to the worker...)."""

    def __init__(
        self,
        holder: ConfigHolder,
        on_applied: OnApplied,
        metrics: Metrics | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        overridden: frozenset[str] = frozenset(),
    ) -> None:
        """`overridden`: settings the command line gave (`server.port` for `--port`), which a reload leaves as
        they are without asking for a restart."""
        self._holder = holder
        self._overridden = overridden
        self._on_applied = on_applied
        self._metrics = metrics
        self._poll_interval_s = poll_interval_s
        self._requested = asyncio.Event()
        # Settings bound at start-up stay as they were then, whatever later reloads said: compare with these.
        self._in_force = holder.active.loaded.config

    def request(self) -> None:
        """Reload as soon as possible, whether or not the file changed (SIGHUP)."""
        self._requested.set()

    async def reload(self, why: str) -> bool:
        """Load the config file again and apply it if valid; True when applied."""
        old = self._holder.active.loaded
        try:
            new = await asyncio.to_thread(load_config, old.file)
        except ConfigError as exc:
            log.error(
                "config reload (%s) rejected, %s; still serving the previous config",
                why, plural(len(exc.problems), "problem"), extra={"config": exc.file},
            )
            for problem in exc.problems:
                log.error("%s: %s", exc.file, problem, extra={"config": exc.file})
            lines = tuple(SECRETS.mask(f"{exc.file}: {problem}") for problem in exc.problems)
            self._holder.reject(RejectedReload(SystemClock().now_ms(), why, lines))
            self._count(applied=False)
            return False
        remember_secrets(new)
        self._holder.swap(new)
        await self._on_applied(new)
        for setting in needs_restart(self._in_force, new.config):
            if setting in self._overridden:
                log.info("config reload: %s changed; the command line sets it, so it stays as it is", setting)
            else:
                log.warning("config reload: %s changed; it needs a restart to take effect", setting)
        log.info("config reloaded (%s): %s", why, new.summary(), extra={"config": str(new.file)})
        self._count(applied=True)
        return True

    async def _watch(self, path: Path, seen: Fingerprint | None) -> None:
        """Reload on `request()` and whenever the file's fingerprint differs from `seen`, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval_s):
                    await self._requested.wait()
            current = await asyncio.to_thread(fingerprint, path)
            if self._requested.is_set():
                self._requested.clear()
                seen = current
                await self._reload_logged("SIGHUP")
            elif current is not None and current != seen:
                seen = current
                await self._reload_logged("file changed")

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Watch the file and answer SIGHUP while the block runs."""
        loop = asyncio.get_running_loop()
        path = self._holder.active.loaded.file
        # Taken before the block runs, so that an edit made as soon as the gateway is up is seen as one.
        seen = await asyncio.to_thread(fingerprint, path)
        try:
            loop.add_signal_handler(signal.SIGHUP, self.request)
            hooked = True
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or no SIGHUP here
            hooked = False
        task = asyncio.create_task(self._watch(path, seen), name="config-reload")
        try:
            yield
        finally:
            if hooked:
                loop.remove_signal_handler(signal.SIGHUP)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _reload_logged(self, why: str) -> None:
        try:
            await self.reload(why)
        except Exception:  # a bug must not end the watch: later edits still get their chance
            log.exception("config reload (%s) failed unexpectedly", why)
            self._count(applied=False)

    def _count(self, applied: bool) -> None:
        if self._metrics is not None:
            self._metrics.reloaded(applied)
