"""The console's read-only pages: an event with its trace and deliveries, the config in force.

Each page asks the services the CLI and the admin API use and shows their masked documents.
"""

from __future__ import annotations

import asyncio
from typing import Any

import yaml
from aiohttp import web

from gateway.delivery import dead_letters as deliveries
from gateway.delivery import quota_waits
from gateway.errors import GatewayError
from gateway.model import StoredEvent
from gateway.routing.compiled import LoadedConfig
from gateway.routing.dry_run import dry_run
from gateway.routing.plan import stored_changes
from gateway.web.admin import config_document
from gateway.web.console.guard import Visit
from gateway.web.keys import CONFIG, STORE


async def event_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    store = request.app[STORE]
    masker = visit.masker
    event, found = await deliveries.event_detail(store, request.match_info["id"])
    attempts = await asyncio.gather(*(store.list_attempts(delivery.id) for delivery in found))
    pauses = await quota_waits.quota_pauses(store, visit.now_ms)
    shown = [deliveries.detail_document(delivery, log, masker, pauses)
             for delivery, log in zip(found, attempts, strict=True)]  # fmt: skip
    return visit.page(
        "event.html", nav="events", event=deliveries.event_document(event, [], masker), deliveries=shown,
        trace=trace(visit.loaded, event),
    )


def trace(loaded: LoadedConfig, event: StoredEvent) -> dict[str, Any]:
    """The dry run of a stored event under the config in force (on the `changes` its routes saw), or why there is
    none."""
    meta = {"id": event.id, "source": event.source, "received_at": event.received_at_ms / 1000}
    try:
        return dry_run(loaded, event.body, event.source, meta, changes=stored_changes(event))
    except GatewayError as exc:
        return {"error": loaded.masker.url(str(exc))}


async def config_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    holder = request.app[CONFIG]
    document = config_document(visit.loaded)
    text = yaml.safe_dump(_without_nulls(document["config"]), sort_keys=False, allow_unicode=True, width=100)
    return visit.page(
        "config.html", nav="config", file=document["file"], text=text, loaded_at_ms=holder.active.loaded_at_ms,
        rejected=holder.last_rejected,
    )


def _without_nulls(value: Any) -> Any:
    """The document without the settings left unset, so what was configured stands out."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value
