"""Serving the application on its listening sockets (`gateway.web.listeners.bind`): every answer (aiohttp's own
to requests it cannot parse included) has the JSON error shape, and a client gets `read_timeout` to send its
request headers.

`gateway serve` and `gateway worker` run `serve`; tests run `serving` inside their own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web

from gateway.web.errors import error_response

log = logging.getLogger("gateway.http")


class _Protocol(web.RequestHandler):
    """aiohttp's HTTP/1 protocol, answering the requests it cannot parse or handle in the JSON error shape."""

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("error answering %s %s", request.method, request.path, exc_info=exc)
        else:  # a malformed request: the client's problem, not ours
            log.debug("bad request from %s: %s", request.remote, message or exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer was sent in part already; cannot send an error instead")
        text = message if status < 500 and message else "the request could not be handled"
        response = error_response(status, text)
        response.force_close()
        return response


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, sockets: Sequence[socket.socket], read_timeout_s: float, shutdown_grace_s: float,
    handle_signals: bool = False,
) -> AsyncIterator[None]:
    """Start `app` (its store, its worker), answer on `sockets` while the block runs, then shut down gracefully.

    A connection is closed when it has not sent a whole request head `read_timeout_s` after it opened or after
    its previous answer (aiohttp's keep-alive timer covers both); bodies get their own limit in the handler.
    """
    runner = web.AppRunner(app, handle_signals=handle_signals, shutdown_timeout=shutdown_grace_s)
    await runner.setup()
    try:
        manager = runner.server
        assert manager is not None, "set up above"
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {
            "keepalive_timeout": read_timeout_s,
            "lingering_time": read_timeout_s,  # reading what is left of a refused body is reading too
            "access_log": None,  # one log line per event comes from ingest itself
        }
        listeners = []
        for index, sock in enumerate(sockets):
            listeners.append(await loop.create_server(lambda: _Protocol(manager, loop=loop, **options), sock=sock))
            log.info("listening on %s%s", address_of(sock), "" if index == 0 else " (/admin/, /console/, /metrics)")
        try:
            yield
        finally:
            log.info("shutting down: no new requests; work in flight gets up to %g s to finish", shutdown_grace_s)
            for listener in listeners:
                listener.close()
    finally:
        await runner.cleanup()


def address_of(sock: socket.socket) -> str:
    """`http://127.0.0.1:8080`, `http://[::]:8080`: where a listening socket answers."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    app: web.Application, sockets: Sequence[socket.socket], read_timeout_s: float, shutdown_grace_s: float,
    loop: asyncio.AbstractEventLoop | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then let requests and attempts in flight finish within `shutdown_grace_s`."""

    async def run() -> None:
        async with serving(app, sockets, read_timeout_s, shutdown_grace_s, handle_signals=True):
            await asyncio.Event().wait()

    loop = loop or asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(run())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():  # stopped by a signal: shut down inside `serving`
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)
