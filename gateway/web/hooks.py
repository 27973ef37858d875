"""HTTP handlers: webhook ingest and health checks."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.errors import PayloadError, SignatureError, StoreUnavailable
from gateway.ingest.accept import accept
from gateway.ingest.signature import SIGNATURE_HEADER
from gateway.ops.metrics import METRICS, exposition, rejection_outcome
from gateway.web.errors import error_response
from gateway.web.keys import CLOCK, CONFIG, STORE, WORKER

log = logging.getLogger("gateway.ingest")


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed `max_bytes`."""
    too_large = PayloadError(f"body is larger than the {max_bytes} bytes allowed (server.max_body)", status=413)
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def ingest(request: web.Request) -> web.StreamResponse:
    active = request.app[CONFIG].active
    source = active.source_by_path.get(request.path)
    if source is None:
        return error_response(404, f"no source listens on {request.path}")
    try:
        body = await read_body(request, active.loaded.config.server.max_body)
        accepted = await accept(
            active.loaded, request.app[STORE], source, body, request.headers.get(SIGNATURE_HEADER),
            request.app[CLOCK].now_ms(),
        )
    except (SignatureError, PayloadError, StoreUnavailable) as exc:
        request.app[METRICS].rejected(source, exc)
        return _rejection(request, source, exc)
    request.app[METRICS].ingested(source, accepted)
    result = accepted.result
    if result is None:
        return web.json_response({"ok": True, "validation": True, "deliveries": 0})
    if result.duplicate:
        return web.json_response({"event_id": result.event_id, "duplicate": True, "deliveries": 0})
    if result.deliveries:
        request.app[WORKER].wake()
    return web.json_response({"event_id": result.event_id, "deliveries": result.deliveries})


def _rejection(
    request: web.Request, source: str, exc: SignatureError | PayloadError | StoreUnavailable
) -> web.Response:
    fields = {"source": source, "outcome": rejection_outcome(exc)}
    if isinstance(exc, StoreUnavailable):
        log.error("could not store an event from %s: %s", source, exc, extra=fields)
        return error_response(503, "the gateway cannot store events right now; retry later", {"Retry-After": "5"})
    log.warning("rejected a request to %s: %s", request.path, exc, extra=fields)
    return error_response(401 if isinstance(exc, SignatureError) else exc.status, str(exc))


async def metrics(request: web.Request) -> web.Response:
    """Prometheus' scrape: the queue gauges are read from the store now, off the event loop."""
    registry = request.app[METRICS]
    await registry.refresh_queue(request.app[STORE], request.app[CLOCK].now_ms())
    return exposition(registry)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STORE].ping()
    except StoreUnavailable as exc:
        return error_response(503, f"store not writable: {exc}")
    return web.json_response({"status": "ready"})
