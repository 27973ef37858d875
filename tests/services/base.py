"""What every service fake shares: the server, the record of requests, forced answers, sliding-window limits."""

from __future__ import annotations

import bisect
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.clock import SystemClock
from tests.fakes import LocalServer, Received, Reply

NowMs = Callable[[], int]


@dataclass
class Window:
    """At most `limit` accepted requests in any `window_ms`, as the service counts them."""

    limit: int
    window_ms: int
    accepted_ms: list[int] = field(default_factory=list)

    def wait_ms(self, now_ms: int) -> int:
        """0 when a request may pass now; else how long until one may."""
        recent = self.accepted_ms[bisect.bisect_right(self.accepted_ms, now_ms - self.window_ms):]
        if len(recent) < self.limit:
            return 0
        return recent[len(recent) - self.limit] + self.window_ms - now_ms

    def accept(self, now_ms: int) -> None:
        bisect.insort(self.accepted_ms, now_ms)


def json_response(status: int, document: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(document), content_type="application/json", headers=headers)


def parse_json(body: bytes) -> Any:
    """The body's JSON, or None when it is not JSON."""
    try:
        return json.loads(body)
    except ValueError:
        return None


class ServiceFake(LocalServer):
    """A real HTTP server playing one service. Subclasses route requests to `serve` and answer in `answer`."""

    def __init__(self, limits: Sequence[tuple[int, float]] = (), now_ms: NowMs | None = None) -> None:
        self.received: list[Received] = []
        self.accepted_at_ms: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._forced: deque[Reply] = deque()
        self._now_ms = now_ms or SystemClock().now_ms
        self._windows = [Window(limit, round(seconds * 1000)) for limit, seconds in limits]
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.add_routes(app.router)
        super().__init__(app)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/{tail:.*}", self.serve)

    def url(self, path: str = "/") -> str:
        """The address of `path` on this server, its query written as is (Teams' `sp=%2F...` stays encoded)."""
        return super().url("/").rstrip("/") + path

    def answer_next(self, *replies: Reply) -> None:
        """Answer the next requests with `replies`, in order, before the service's own behaviour resumes."""
        self._forced.extend(replies)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.method, request.path_qs, request.headers, body))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._forced:
                reply = self._forced.popleft()
                return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
            now_ms = self._now_ms()
            refused = self.refuse(request, body)
            if refused is not None:
                return refused
            wait_ms = max((window.wait_ms(now_ms) for window in self._windows), default=0)
            if wait_ms:
                return self.rate_limited(wait_ms / 1000, request)
            for window in self._windows:
                window.accept(now_ms)
            self.accepted_at_ms.append(now_ms)
            return await self.answer(request, body)
        finally:
            self.in_flight -= 1

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        """The service's answer to a request it refuses before counting it (a bad credential); None to go on."""
        return None

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        raise NotImplementedError

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        raise NotImplementedError
