"""HTTP handlers: webhook ingest and health checks."""

from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web

from gateway.errors import ClientGone, PayloadError, SignatureError, StoreUnavailable
from gateway.ingest.accept import accept
from gateway.ingest.signature import SIGNATURE_HEADER
from gateway.ops.metrics import METRICS, exposition, rejection_outcome
from gateway.web.errors import error_response
from gateway.web.keys import CLOCK, CONFIG, STORE, WORKER

log = logging.getLogger("gateway.ingest")

_TOO_LARGE = "body is larger than the {} bytes allowed (server.max_body)"


async def read_body(request: web.Request, max_bytes: int, timeout_s: float) -> bytes:
    """The request body as received, refusing it (413) as soon as it is known to exceed `max_bytes`, cutting it off
    (408) when it has not arrived within `timeout_s`, and refusing (415) a compressed one: signatures cover the
    bytes sent."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise PayloadError(
            f"Content-Encoding {encoding!r} is not accepted: send the body uncompressed (its signature covers the "
            "bytes as sent)", status=415,
        )
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadError(_TOO_LARGE.format(max_bytes), status=413)
    content = request.content
    if content.is_eof():  # the whole body came with the head, as a webhook's usually does: no waiting, no timer
        body = content.read_nowait()
        if len(body) > max_bytes:
            raise PayloadError(_TOO_LARGE.format(max_bytes), status=413)
        return body
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in content.iter_any():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadError(_TOO_LARGE.format(max_bytes), status=413)
                chunks.append(chunk)
    except TimeoutError:
        late = f"the body did not arrive within {timeout_s:g} s (server.read_timeout)"
        raise PayloadError(late, status=408) from None
    except ConnectionError as exc:  # aiohttp sets "Connection lost" on the body when the client goes
        raise ClientGone(f"the client closed the connection after {size} bytes of its body ({exc})") from None
    return b"".join(chunks)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """Answer `Expect: 100-continue`: a body over `max_body` is refused before the client sends it."""
    max_body = request.app[CONFIG].active.loaded.config.server.max_body
    if request.content_length is not None and request.content_length > max_body:
        return error_response(413, _TOO_LARGE.format(max_body))
    if request.version != (1, 1) or request.headers.get("Expect", "").lower() != "100-continue":
        return error_response(417, f"Expect: {request.headers.get('Expect', '')} is not supported")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # what follows is the answer itself, as aiohttp's own handler does
    return None


async def ingest(request: web.Request) -> web.StreamResponse:
    active = request.app[CONFIG].active
    source = active.source_by_path.get(request.path)
    if source is None:
        return error_response(404, f"no source listens on {request.path}")
    if request.method != "POST":
        return error_response(405, f"{request.path} takes POST only", {"Allow": "POST"})
    server = active.loaded.config.server
    try:
        _worker_can_deliver(request)
        body = await read_body(request, server.max_body, server.read_timeout)
        accepted = await accept(
            active.loaded, request.app[STORE], source, body, request.headers.get(SIGNATURE_HEADER),
            request.app[CLOCK].now_ms(),
        )
    except ClientGone as exc:
        request.app[METRICS].rejected(source, exc)
        log.debug("%s: %s", request.path, exc, extra={"source": source, "outcome": "client_gone"})
        return error_response(400, str(exc))  # nobody reads it; aiohttp drops it quietly
    except (SignatureError, PayloadError, StoreUnavailable) as exc:
        request.app[METRICS].rejected(source, exc)
        return _rejection(request, source, exc)
    request.app[METRICS].ingested(source, accepted)
    result = accepted.result
    if result is None:
        return _json({"ok": True, "validation": True, "deliveries": 0})
    if result.duplicate:
        return _json({"event_id": result.event_id, "duplicate": True, "deliveries": 0})
    if result.deliveries:
        request.app[WORKER].wake()
    return _json({"event_id": result.event_id, "deliveries": result.deliveries})


def _json(document: dict[str, object]) -> web.Response:
    return web.Response(body=orjson.dumps(document), content_type="application/json")


def _rejection(
    request: web.Request, source: str, exc: SignatureError | PayloadError | StoreUnavailable
) -> web.Response:
    fields = {"source": source, "outcome": rejection_outcome(exc)}
    if isinstance(exc, StoreUnavailable):
        log.error("could not store an event from %s: %s", source, exc, extra=fields)
        return error_response(503, "the gateway cannot store events right now; retry later", {"Retry-After": "5"})
    log.warning("rejected a request to %s: %s", request.path, exc, extra=fields)
    response = error_response(401 if isinstance(exc, SignatureError) else exc.status, str(exc))
    if isinstance(exc, PayloadError) and exc.status == 408:
        response.force_close()  # the rest of the body may still come: it is not read
    return response


async def metrics(request: web.Request) -> web.Response:
    """Prometheus' scrape: the queue gauges are read from the store now, off the event loop."""
    registry = request.app[METRICS]
    await registry.refresh_queue(request.app[STORE], request.app[CLOCK].now_ms())
    return exposition(registry)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _worker_can_deliver(request: web.Request) -> None:
    """Raise StoreUnavailable while this process's worker cannot read the queue: an event taken now would get a
    200 and never be delivered."""
    problem = request.app[WORKER].store_problem
    if problem is not None:
        raise StoreUnavailable(f"the worker cannot read the store: {problem}")


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store takes a write and answers a read, and the worker (if any) can use it."""
    try:
        _worker_can_deliver(request)
        await request.app[STORE].ping()
    except StoreUnavailable as exc:
        return error_response(503, f"not ready: {exc}")
    return web.json_response({"status": "ready"})
