"""The admin API under /admin/: deliveries, replay, event lookups and the active config, behind a bearer token.

It is off (404) while the active config has no `admin.token`, so a reload turns it on or off.
The handlers only translate HTTP to `gateway.delivery.dead_letters` and `gateway.delivery.event_lookup`,
which the CLI runs too.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from gateway.delivery import dead_letters as deliveries
from gateway.delivery import event_lookup, quota_waits
from gateway.delivery.dead_letters import NotFound, ReplayOutcome, ReplayReport
from gateway.delivery.filters import FilterError
from gateway.errors import StoreUnavailable
from gateway.mask import MASK, Masker
from gateway.model import DeliveryFilter
from gateway.routing.compiled import LoadedConfig
from gateway.web.errors import Handler, error_response
from gateway.web.keys import CLOCK, CONFIG, STORE, TOKEN_GUESSES, WORKER
from gateway.web.token_guesses import client_of, waiting

log = logging.getLogger("gateway.admin")

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def add_admin_routes(app: web.Application) -> None:
    """Register /admin/; call before any catch-all route."""
    app.router.add_routes([
        web.get("/admin/deliveries", _guarded(list_deliveries)),
        web.get("/admin/deliveries/{id}", _guarded(show_delivery)),
        web.post("/admin/deliveries/{id}/replay", _guarded(replay_delivery)),
        web.post("/admin/replay", _guarded(replay_by_filter)),
        web.get("/admin/events", _guarded(list_events)),
        web.get("/admin/events/{id}", _guarded(show_event)),
        web.get("/admin/config", _guarded(show_config)),
        web.get("/admin/destinations", _guarded(list_destinations)),
        web.route("*", "/admin/{tail:.*}", _guarded(no_such_endpoint)),
    ])  # fmt: skip


def _guarded(handler: Handler) -> Handler:
    """`handler` behind the token check, with the service's errors as JSON answers."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        refusal = _refusal(request)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except FilterError as exc:
            return error_response(400, str(exc))
        except NotFound as exc:
            return error_response(404, str(exc))
        except StoreUnavailable as exc:
            return error_response(503, _masker(request).url(str(exc)), {"Retry-After": "5"})

    return guarded


def _refusal(request: web.Request) -> web.Response | None:
    """None when the request carries the admin token; else the answer: 404 while off, 429 to a client that sent
    too many wrong tokens lately (see `gateway.web.token_guesses`), 401 otherwise."""
    token = _loaded(request).config.admin.token
    if token is None:
        return error_response(404, "the admin API is off; set admin.token to turn it on")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given_bytes = given.strip().encode("utf-8", "surrogateescape")  # aiohttp decodes bytes that are not UTF-8 so
    right, wait_ms = request.app[TOKEN_GUESSES].attempt(client_of(request.remote), _now_ms(request), lambda: (
        scheme.lower() == "bearer" and hmac.compare_digest(given_bytes, token.get_secret_value().encode())))
    if wait_ms > 0:
        return error_response(429, *waiting(wait_ms))
    if right:
        return None
    return error_response(
        401, "missing or wrong admin token; send 'Authorization: Bearer <admin.token>'",
        {"WWW-Authenticate": 'Bearer realm="gateway admin"'},
    )


def _loaded(request: web.Request) -> LoadedConfig:
    return request.app[CONFIG].active.loaded


def _masker(request: web.Request) -> Masker:
    """Hides the secrets of every config this process has held: stored deliveries may carry an earlier one's."""
    return request.app[CONFIG].active.masker


def _now_ms(request: web.Request) -> int:
    return request.app[CLOCK].now_ms()


async def list_deliveries(request: web.Request) -> web.Response:
    where = deliveries.parse_filter(request.query, _now_ms(request))
    found = await deliveries.find_deliveries(request.app[STORE], where)
    pauses = await quota_waits.quota_pauses(request.app[STORE], _now_ms(request))
    return web.json_response(deliveries.list_document(found, where, _masker(request), pauses))


async def show_delivery(request: web.Request) -> web.Response:
    delivery, attempts = await deliveries.delivery_detail(request.app[STORE], request.match_info["id"])
    pauses = await quota_waits.quota_pauses(request.app[STORE], _now_ms(request))
    return web.json_response(deliveries.detail_document(delivery, attempts, _masker(request), pauses))


async def list_destinations(request: web.Request) -> web.Response:
    pauses = await quota_waits.quota_pauses(request.app[STORE], _now_ms(request))
    return web.json_response(quota_waits.destinations_document(_loaded(request), pauses, _masker(request)))


async def replay_delivery(request: web.Request) -> web.Response:
    rerender = _flag("rerender", request.query.get("rerender"))
    return await _replay(request, DeliveryFilter(ids=(request.match_info["id"],)), rerender)


async def replay_by_filter(request: web.Request) -> web.Response:
    """Filters and `rerender` from the query, or from a JSON object body (which wins)."""
    fields: dict[str, object] = {**request.query, **await _json_object(request)}
    rerender = _flag("rerender", fields.pop("rerender", None))
    return await _replay(request, deliveries.replay_filter(fields, _now_ms(request)), rerender)


async def _replay(request: web.Request, where: DeliveryFilter, rerender: bool) -> web.Response:
    loaded = _loaded(request)
    report = await replay_and_wake(request.app, loaded, where, rerender, "admin")
    return web.json_response(deliveries.replay_document(report, _masker(request)))


async def replay_and_wake(
    app: web.Application, loaded: LoadedConfig, where: DeliveryFilter, rerender: bool, who: str
) -> ReplayReport:
    """Replay through the shared service, wake the in-process worker for what was queued, and log it."""
    report = await deliveries.replay(loaded, app[STORE], where, app[CLOCK].now_ms(), rerender)
    if report.count(ReplayOutcome.QUEUED):
        app[WORKER].wake()
    log.info(
        "%s replay%s: %d queued, %d skipped, %d failed", who, " with rerender" if rerender else "",
        report.count(ReplayOutcome.QUEUED), report.count(ReplayOutcome.SKIPPED), report.count(ReplayOutcome.FAILED),
        extra={"delivery_ids": [item.delivery.id for item in report.items]},
    )
    return report


async def list_events(request: web.Request) -> web.Response:
    query = event_lookup.parse_event_query(request.query, _now_ms(request))
    page = await request.app[STORE].find_events(query)
    return web.json_response(event_lookup.events_document(page, query, _masker(request)))


async def show_event(request: web.Request) -> web.Response:
    event, found = await deliveries.event_detail(request.app[STORE], request.match_info["id"])
    pauses = await quota_waits.quota_pauses(request.app[STORE], _now_ms(request))
    return web.json_response(deliveries.event_document(event, found, _masker(request), pauses))


async def show_config(request: web.Request) -> web.Response:
    return web.json_response(config_document(_loaded(request)))


async def no_such_endpoint(request: web.Request) -> web.Response:
    return error_response(404, f"no admin endpoint {request.method} {request.path}")


def config_document(loaded: LoadedConfig) -> dict[str, Any]:
    """The active config as loaded, every secret shown as `***`."""
    return {"file": str(loaded.file), "config": _masked(loaded.config.model_dump(by_alias=True), loaded.masker)}


def _masked(value: Any, masker: Masker, key: str = "") -> Any:
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, str):
        return masker.url(value)
    if isinstance(value, Mapping):
        if key == "headers" and all(isinstance(item, str) for item in value.values()):
            return masker.headers(value)
        return {name: _masked(item, masker, str(name)) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item, masker) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return masker.text(str(value))  # YAML dates and the like


async def _json_object(request: web.Request) -> dict[str, object]:
    if not request.can_read_body:
        return {}
    try:
        document = await request.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise FilterError('the body must be a JSON object of filters, e.g. {"status": "dead", "route": "vip"}')
    return document


def _flag(name: str, value: object) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise FilterError(f"{name} must be true or false, not {value!r}")
