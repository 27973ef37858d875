"""One JSON shape for every error the gateway answers: `{"error": "...", "status": N}`."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("gateway.http")

_BODY_HEADERS = {"content-type", "content-length"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's HTTP exceptions and unexpected errors into the JSON error shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
        kept = {name: value for name, value in exc.headers.items() if name.lower() not in _BODY_HEADERS}
        return error_response(exc.status, message.removeprefix(f"{exc.status}: "), kept or None)
    except Exception:
        log.exception("unexpected error while answering %s %s", request.method, request.path)
        return error_response(500, "internal error; see the gateway's log")
