"""Fake destinations: small aiohttp servers that answer like the real services, from a script.

    async with FakeDestination([500, 503, 200]) as fake:
        ... send to fake.url() ...
        assert len(fake.received) == 3

Each request gets the next reply of the script; the last one repeats once the script runs out.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from gateway.clock import Clock


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


class LocalServer:
    """An aiohttp application served on 127.0.0.1 for the length of an `async with`."""

    def __init__(self, app: web.Application) -> None:
        self._server = TestServer(app)

    async def __aenter__(self) -> Self:
        await self._server.start_server()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._server.close()

    def url(self, path: str = "/hook") -> str:
        return str(self._server.make_url(path))


class FakeDestination(LocalServer):
    """A real HTTP server on 127.0.0.1 replaying `script`; it records every request and the peak concurrency."""

    def __init__(self, script: Sequence[Reply | int] = (200,)) -> None:
        if not script:
            raise ValueError("a script needs at least one reply")
        self._script = [reply if isinstance(reply, Reply) else Reply(reply) for reply in script]
        self.received: list[Received] = []
        self.arrived_at_s: list[float] = []  # time.monotonic() of each request, in order
        self.in_flight = 0
        self.max_in_flight = 0
        self._arrived = asyncio.Condition()
        self._released = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        super().__init__(app)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
        await super().__aexit__(exc_type, exc, tb)

    def release(self) -> None:
        """Let hung requests answer; from now on `hang` replies answer at once."""
        self._released.set()

    async def wait_for_requests(self, count: int, timeout_s: float = 10.0) -> None:
        """Return once `count` requests have arrived (raise TimeoutError after `timeout_s`)."""
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self._script[min(len(self.received), len(self._script) - 1)]
        async with self._arrived:
            self.received.append(Received(request.method, request.path_qs, request.headers, body))
            self.arrived_at_s.append(time.monotonic())
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


class FakeApi(LocalServer):
    """A real HTTP server on 127.0.0.1 where each path answers from its own script (the last reply repeats)."""

    def __init__(self, scripts: dict[str, list[Reply]]) -> None:
        self._scripts = scripts
        self.received: list[Received] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        super().__init__(app)

    def to(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path_qs.split("?")[0] == path]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        script = self._scripts.get(request.path, [json_reply(404, {"message": f"no route {request.path}"})])
        reply = script[min(len(self.to(request.path)), len(script) - 1)]
        self.received.append(Received(request.method, request.path_qs, request.headers, body))
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)


class FakeOAuthApi(LocalServer):
    """An OAuth2 provider: a client-credentials token endpoint and an API that takes its tokens, on 127.0.0.1.

    `/oauth/token` answers as RFC 6749 says: a form POST with `grant_type=client_credentials` and the client id and
    secret (in the form or as HTTP Basic) gets `{"access_token", "token_type": "Bearer", "expires_in"}`, a wrong
    client a 400 `invalid_client`. `token_failures` are answered first, one per request. Tokens expire `lifetime_s`
    after they are issued, on `clock` (None: no `expires_in` is sent and tokens last until revoked, as
    Salesforce's do). Any other path is the API: a token that is unknown, expired or revoked gets `unauthorized`
    (a 401), a valid one the next reply of `api_script` (the last one repeats). `{authorization}` in a reply's body
    is replaced by the Authorization header received, as APIs that quote the request in their errors do.
    """

    def __init__(
        self,
        clock: Clock,
        client_id: str = "gateway-client",
        client_secret: str = "client-secret-9Qx",
        lifetime_s: float | None = 3600,
        api_script: Sequence[Reply] = (Reply(201, '{"id": "created"}', {"Content-Type": "application/json"}),),
        token_failures: Sequence[Reply] = (),
        unauthorized: Reply | None = None,
        token_delay_s: float = 0.0,
        token_path: str = "/oauth/token",
    ) -> None:
        self._clock = clock
        self._client = (client_id, client_secret)
        self._lifetime_s = lifetime_s
        self._api_script = list(api_script)
        self._token_failures = list(token_failures)
        self._unauthorized = unauthorized or json_reply(
            401, {"error": "invalid_token"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
        self._token_delay_s = token_delay_s
        self._expires_at_ms: dict[str, float] = {}
        self.token_requests: list[Received] = []
        self.api_requests: list[Received] = []
        self.authorized: list[Received] = []
        app = web.Application()
        app.router.add_post(token_path, self._token)
        app.router.add_route("*", "/{tail:.*}", self._api)
        super().__init__(app)

    def revoke_all(self) -> None:
        """Every token issued so far stops working (a session timeout, an admin revoking them)."""
        self._expires_at_ms = dict.fromkeys(self._expires_at_ms, float("-inf"))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.token_requests.append(Received(request.method, request.path_qs, request.headers, await request.read()))
        await asyncio.sleep(self._token_delay_s)
        if len(self.token_requests) <= len(self._token_failures):
            reply = self._token_failures[len(self.token_requests) - 1]
            return web.Response(status=reply.status, text=reply.body, headers=reply.headers)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if _client_of(request, form) != self._client:
            return web.json_response({"error": "invalid_client", "error_description": "invalid client credentials"},
                                     status=400)
        token = f"at-{len(self.token_requests)}-{uuid.uuid4().hex}"
        lifetime_s = self._lifetime_s
        self._expires_at_ms[token] = float("inf") if lifetime_s is None else self._clock.now_ms() + lifetime_s * 1000
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer", **self.token_extras()}
        if lifetime_s is not None:
            answer["expires_in"] = lifetime_s
        return web.json_response(answer, headers={"Cache-Control": "no-store"})

    async def _api(self, request: web.Request) -> web.Response:
        received = Received(request.method, request.path_qs, request.headers, await request.read())
        self.api_requests.append(received)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self._clock.now_ms() >= self._expires_at_ms.get(token, float("-inf")):
            reply = self._unauthorized
        else:
            self.authorized.append(received)
            reply = self.answer(request, received)
        body = reply.body.replace("{authorization}", request.headers.get("Authorization", ""))
        return web.Response(status=reply.status, text=body, headers=reply.headers)

    def token_extras(self) -> dict[str, Any]:
        """What the provider adds to a token answer (Salesforce: `instance_url`, `issued_at`...)."""
        return {}

    def answer(self, request: web.Request, received: Received) -> Reply:
        """The API's answer to an authorized request: by default the next reply of `api_script`."""
        return self._api_script[min(len(self.authorized) - 1, len(self._api_script) - 1)]


def _client_of(request: web.Request, form: Mapping[str, Any]) -> tuple[str, str]:
    """The client id and secret of a token request: HTTP Basic (each form-encoded first), or the form."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme == "Basic":
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        return unquote_plus(user), unquote_plus(password)
    return str(form.get("client_id", "")), str(form.get("client_secret", ""))


class FakeDns(AbstractResolver):
    """A DNS server's answers, from a table: tests of name resolution never ask a real one."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self._answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self._answers:
            raise OSError(f"no such name: {host}")
        return [
            {"hostname": host, "host": address, "port": port, "family": socket.AF_INET6 if ":" in address else
             socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}
            for address in self._answers[host]
        ]  # fmt: skip

    async def close(self) -> None:
        pass
