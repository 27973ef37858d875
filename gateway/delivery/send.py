"""Sending one rendered request: the only module that touches aiohttp's client.

Everything aiohttp can raise is translated here into a `TransportFailure`; above this
module, code sees a `Response` or a `TransportFailure`, never an aiohttp exception.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from gateway import __version__
from gateway.config.schema import SignConfig
from gateway.delivery.addresses import BlockedAddress, blocked, refusal
from gateway.model import RenderedRequest

EXCERPT_BYTES = 2048
# Reading a small answer to its end lets the connection be reused; a larger one is cut and its connection closed.
# What is read is kept, for request chains and token endpoints.
DRAIN_LIMIT_BYTES = 64 * 1024
MAX_CONNECTIONS = 256

FailureKind = Literal["timeout", "connection", "invalid", "blocked"]


@dataclass(frozen=True)
class Response:
    """An answer: status, headers (names lower-cased), the start of the body as text (`EXCERPT_BYTES`).

    `content` is the body as read, up to `DRAIN_LIMIT_BYTES`; `truncated` when the answer was longer.
    """

    status: int
    headers: dict[str, str]
    body: str
    elapsed_ms: float
    content: bytes = b""
    truncated: bool = False


@dataclass(frozen=True)
class TransportFailure:
    """No answer: `timeout`, `connection` (refused, reset, cut off), `invalid` (the request cannot be sent) or
    `blocked` (its host came from a template and is not public: see `gateway.delivery.addresses`)."""

    kind: FailureKind
    message: str
    elapsed_ms: float


class PublicOnlyResolver(AbstractResolver):
    """Resolves names like `inner` does, keeping public addresses only: the connector connects to what this
    returns, so the address checked is the address used."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [result for result in found if refusal(result["host"]) is None]
        if found and not public:
            first = found[0]["host"]
            raise blocked(host, first, refusal(first) or "not public")
        return public

    async def close(self) -> None:
        await self._inner.close()


def make_session(
    max_connections: int = MAX_CONNECTIONS, public_only: bool = False, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """A client session for the worker; per-destination concurrency is enforced by `delivery.limits`.

    `public_only`: it connects to public addresses only, for requests whose host came from a template (its own
    connections: a pooled connection to a private host is never reused for one). `resolver` replaces DNS.
    """
    if public_only:
        resolver = PublicOnlyResolver(resolver)
    connector = aiohttp.TCPConnector(
        limit=max_connections, limit_per_host=0, ttl_dns_cache=300, resolver=resolver
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # no cookies carried from one destination's answer to the next request
        headers={"User-Agent": f"missive-gateway/{__version__}"},
        trust_env=False,
    )


def signature(secret: str, body: bytes) -> str:
    """The outbound signature header value: `sha256=<hex HMAC-SHA256 of the body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def send(
    session: aiohttp.ClientSession,
    request: RenderedRequest,
    timeout_s: float,
    sign: SignConfig | None = None,
    authorization: str | None = None,
    public_only: bool = False,
) -> Response | TransportFailure:
    """Send `request` once and report what happened; never raises for network trouble.

    `authorization` replaces any stored Authorization header: credentials are added here, never stored.
    `public_only`: `session` is a public-only one (`make_session(public_only=True)`), and an IP address written
    in the URL must be public too.
    """
    if public_only:
        literal = _ip_literal_refusal(request.url)  # aiohttp connects to an IP address without asking the resolver
        if literal is not None:
            return TransportFailure(kind="blocked", message=literal, elapsed_ms=0.0)
    headers = dict(request.headers)
    if authorization is not None:
        headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
        headers["Authorization"] = authorization
    if sign is not None:
        headers[sign.header] = signature(sign.secret.get_secret_value(), request.body)
    started = time.perf_counter()
    try:
        async with session.request(
            request.method,
            request.url,
            headers=headers,
            data=request.body,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as answer:
            content, truncated = await _read_body(answer)
            return Response(
                status=answer.status,
                headers={name.lower(): value for name, value in answer.headers.items()},
                body=content[:EXCERPT_BYTES].decode("utf-8", errors="replace"),
                elapsed_ms=_elapsed_ms(started),
                content=content,
                truncated=truncated,
            )
    except (aiohttp.ClientError, OSError, ValueError) as exc:  # TimeoutError is an OSError
        kind, message = _describe(exc, timeout_s)
        return TransportFailure(kind=kind, message=message, elapsed_ms=_elapsed_ms(started))


async def _read_body(answer: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    """The first `DRAIN_LIMIT_BYTES` of the answer, and whether there was more."""
    content = bytearray()
    async for chunk in answer.content.iter_any():
        content += chunk
        if len(content) > DRAIN_LIMIT_BYTES:
            return bytes(content[:DRAIN_LIMIT_BYTES]), True
    return bytes(content), False


def _ip_literal_refusal(url: str) -> str | None:
    try:
        host = URL(url).host or ""
        ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: the resolver checks what it resolves to
    why = refusal(host)
    return None if why is None else str(blocked(host, host, why))


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _describe(exc: aiohttp.ClientError | OSError | ValueError, timeout_s: float) -> tuple[FailureKind, str]:
    """A failure kind and a message that never includes the URL (it may carry credentials)."""
    if isinstance(exc, TimeoutError):
        return "timeout", f"no answer within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, BlockedAddress):
        return "blocked", str(exc.os_error)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection", f"cannot connect to {exc.host}:{exc.port}: {exc.strerror or type(exc).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection", "the server closed the connection without answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "connection", "the answer was cut off"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "connection", f"malformed answer: {exc.message}"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return "invalid", "the URL is not a valid http(s) URL"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return "connection", f"connection failed: {type(exc).__name__}"
    return "invalid", f"the request cannot be sent: {type(exc).__name__}"
