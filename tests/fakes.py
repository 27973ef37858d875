"""Fake destinations: small aiohttp servers that answer like the real services, from a script.

    async with FakeDestination([500, 503, 200]) as fake:
        ... send to fake.url() ...
        assert len(fake.received) == 3

Each request gets the next reply of the script; the last one repeats once the script runs out.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `hang`: never answer (until the fake closes); `drop`: close the connection instead."""

    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hang: bool = False
    drop: bool = False


def json_reply(status: int, document: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(document), {"Content-Type": "application/json", **(headers or {})})


def retry_after(seconds: int | str, status: int = 429) -> Reply:
    """A rate-limit answer with a Retry-After header (delta-seconds or an HTTP date), as Slack and Missive send."""
    return Reply(status, "rate limited", {"Retry-After": str(seconds)})


def slack_ok() -> Reply:
    """What a Slack incoming webhook answers on success."""
    return Reply(200, "ok", {"Content-Type": "text/html"})


def slack_api_error(error: str) -> Reply:
    """What Slack's chat.postMessage answers on failure: HTTP 200 with `ok: false`."""
    return json_reply(200, {"ok": False, "error": error})


def discord_rate_limited(retry_after_s: float) -> Reply:
    """Discord's 429: the wait is a float in the JSON body."""
    return json_reply(429, {"message": "You are being rate limited.", "retry_after": retry_after_s, "global": False})


HANG = Reply(hang=True)
DROP = Reply(drop=True)


@dataclass(frozen=True)
class Received:
    method: str
    path_qs: str
    headers: CIMultiDictProxy[str]
    body: bytes


class FakeDestination:
    """A real HTTP server on 127.0.0.1 replaying `script`; it records every request and the peak concurrency."""

    def __init__(self, script: Sequence[Reply | int] = (200,)) -> None:
        if not script:
            raise ValueError("a script needs at least one reply")
        self._script = [reply if isinstance(reply, Reply) else Reply(reply) for reply in script]
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._arrived = asyncio.Condition()
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app)

    async def __aenter__(self) -> FakeDestination:
        await self._server.start_server()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
        await self._server.close()

    def release(self) -> None:
        """Let hung requests answer; from now on `hang` replies answer at once."""
        self._released.set()

    def url(self, path: str = "/hook") -> str:
        return str(self._server.make_url(path))

    async def wait_for_requests(self, count: int, timeout_s: float = 10.0) -> None:
        """Return once `count` requests have arrived (raise TimeoutError after `timeout_s`)."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self._script[min(len(self.received), len(self._script) - 1)]
        async with self._arrived:
            self.received.append(Received(request.method, request.path_qs, request.headers, body))
            self._arrived.notify_all()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if reply.drop and request.transport is not None:
                request.transport.close()
            if reply.hang:
                await self._released.wait()
            await asyncio.sleep(reply.delay_s)
            return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
        finally:
            self.in_flight -= 1


def refused_url(path: str = "/hook") -> str:
    """A URL on a local port with nothing listening: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
