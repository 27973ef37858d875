"""Dead letters and replay: find deliveries, show them masked, re-queue them.

`gateway deliveries`, `gateway replay` and the admin API all run this code, so the CLI and
the API filter, replay and mask the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.delivery import filters
from gateway.delivery.filters import MAX_LIMIT as MAX_LIMIT  # re-exported: callers know them from here
from gateway.delivery.filters import FilterError as FilterError
from gateway.delivery.quota_waits import Pauses, pause_document
from gateway.errors import GatewayError, PayloadError, RenderError
from gateway.mask import Masker
from gateway.model import (
    Attempt,
    Delivery,
    DeliveryFilter,
    DeliveryStatus,
    RenderedRequest,
    StoredEvent,
)
from gateway.routing.chain import snapshot_index
from gateway.routing.compiled import LoadedConfig
from gateway.routing.payload import parse_payload
from gateway.routing.plan import (
    IDEMPOTENCY_HEADER,
    PlannedSend,
    PlanState,
    RouteVerdict,
    event_context,
    plan,
    render_chained,
    stored_changes,
)
from gateway.store.base import Store
from gateway.store.factory import make_store

FILTER_FIELDS = ("status", "route", "destination", "since", "event_id", "limit")
LIST_LIMIT = 100
REPLAY_LIMIT = 1000
LIST_BODY_CHARS = 200
DETAIL_BODY_CHARS = 4000
# Deliveries re-queued at once: each is its own store write (grouped into one commit by SQLite),
# and a Redis connection pool opens a connection per concurrent call.
_REPLAY_CONCURRENCY = 16



class NotFound(GatewayError):
    """No delivery or event has the id asked for."""


class ReplayOutcome(StrEnum):
    QUEUED = "queued"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class ReplayItem:
    delivery: Delivery
    outcome: ReplayOutcome
    reason: str | None = None


@dataclass(frozen=True)
class ReplayReport:
    """What a replay did to each delivery it found; `more`: the limit was reached, more may match."""

    items: tuple[ReplayItem, ...]
    more: bool

    def count(self, outcome: ReplayOutcome) -> int:
        return sum(item.outcome is outcome for item in self.items)


@contextlib.asynccontextmanager
async def opened_store(loaded: LoadedConfig) -> AsyncIterator[Store]:
    """The configured store, open for the block (the CLI's way in, next to a running `serve`)."""
    storage = loaded.config.storage
    sqlite_file = loaded.file.parent / storage.path
    if storage.backend == "sqlite" and not sqlite_file.exists():
        raise GatewayError(f"no store at {sqlite_file}; has `gateway serve` run with this config?")
    store = make_store(storage, loaded.file.parent)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def parse_filter(
    fields: Mapping[str, object], now_ms: int, default_limit: int = LIST_LIMIT, ids: tuple[str, ...] | None = None
) -> DeliveryFilter:
    """A DeliveryFilter from raw values (query parameters, a JSON body, CLI options); None means "any"."""
    text = filters.texts(fields, FILTER_FIELDS)
    return DeliveryFilter(
        status=filters.status(text["status"]) if "status" in text else None,
        route=text.get("route"),
        destination=text.get("destination"),
        event_id=text.get("event_id"),
        since_ms=filters.moment_ms("since", text["since"], now_ms) if "since" in text else None,
        ids=ids,
        limit=filters.limit(text["limit"]) if "limit" in text else default_limit,
    )


def replay_filter(fields: Mapping[str, object], now_ms: int) -> DeliveryFilter:
    """The filter of a replay by filter: it must name a status, dead (or delivered, to send again)."""
    where = parse_filter(fields, now_ms, default_limit=REPLAY_LIMIT)
    if where.status not in (DeliveryStatus.DEAD, DeliveryStatus.DELIVERED):
        raise filters.FilterError(
            "replay by filter needs status dead (or delivered, to send again); pending deliveries are queued already"
        )
    return where


async def find_deliveries(store: Store, where: DeliveryFilter) -> list[Delivery]:
    """Deliveries matching `where`; NotFound when it names ids and one of them matches nothing."""
    found = await store.list_deliveries(where)
    missing = sorted(set(where.ids or ()) - {delivery.id for delivery in found})
    if missing:
        raise NotFound(f"no delivery with id '{missing[0]}'")
    return found


async def delivery_detail(store: Store, delivery_id: str) -> tuple[Delivery, list[Attempt]]:
    delivery = await store.get_delivery(delivery_id)
    if delivery is None:
        raise NotFound(f"no delivery with id '{delivery_id}'")
    return delivery, await store.list_attempts(delivery_id)


async def event_detail(store: Store, event_id: str) -> tuple[StoredEvent, list[Delivery]]:
    event = await store.get_event(event_id)
    if event is None:
        raise NotFound(f"no event with id '{event_id}'")
    return event, await store.list_deliveries(DeliveryFilter(event_id=event_id, limit=MAX_LIMIT))


async def replay(
    loaded: LoadedConfig, store: Store, where: DeliveryFilter, now_ms: int, rerender: bool = False
) -> ReplayReport:
    """Re-queue the deliveries matching `where`, due now; with `rerender`, render them again first.

    Pending deliveries are left alone, so running the same replay twice queues nothing twice.
    """
    found = await find_deliveries(store, where)
    renderer = _Rerenderer(loaded, store) if rerender else None
    gate = asyncio.Semaphore(_REPLAY_CONCURRENCY)

    async def one(delivery: Delivery) -> ReplayItem:
        async with gate:
            return await _replay_one(store, delivery, now_ms, renderer)

    items = await asyncio.gather(*(one(delivery) for delivery in found))
    return ReplayReport(tuple(items), more=len(found) >= where.limit)


async def _replay_one(store: Store, delivery: Delivery, now_ms: int, renderer: _Rerenderer | None) -> ReplayItem:
    if delivery.status is DeliveryStatus.PENDING:
        return ReplayItem(delivery, ReplayOutcome.SKIPPED, "already pending")
    if delivery.after is not None and delivery.steps is None:  # never released: its step was never delivered
        reason = f"it runs after delivery {delivery.after}: replay that one, and this one follows once it is delivered"
        return ReplayItem(delivery, ReplayOutcome.SKIPPED, reason)
    replacement: dict[str, RenderedRequest] | None = None
    if renderer is not None:
        rendered = await renderer.request_for(delivery)
        if isinstance(rendered, ReplayItem):
            return rendered
        replacement = {delivery.id: rendered}
    elif delivery.request is None:
        reason = "it has no request (rendering failed); fix the template, then replay with rerender"
        return ReplayItem(delivery, ReplayOutcome.SKIPPED, reason)
    if await store.requeue([delivery.id], now_ms, replacement):
        return ReplayItem(delivery, ReplayOutcome.QUEUED)
    return ReplayItem(delivery, ReplayOutcome.SKIPPED, "queued by someone else meanwhile")


class _Rerenderer:
    """Routes stored events again under the current config, each event once."""

    def __init__(self, loaded: LoadedConfig, store: Store) -> None:
        self._loaded = loaded
        self._store = store
        self._routed: dict[str, asyncio.Task[_Routed | str]] = {}

    async def request_for(self, delivery: Delivery) -> RenderedRequest | ReplayItem:
        """The request the current config renders for `delivery`, or why there is none."""
        if delivery.event_id not in self._routed:
            self._routed[delivery.event_id] = asyncio.ensure_future(self._route(delivery.event_id))
        routed = await self._routed[delivery.event_id]
        if isinstance(routed, str):
            return ReplayItem(delivery, ReplayOutcome.FAILED, routed)
        skipped, route = ReplayOutcome.SKIPPED, delivery.route
        verdict = routed.verdicts.get(route)
        if verdict is None:
            return ReplayItem(delivery, skipped, f"route '{route}' is no longer in the config for its source")
        if not verdict.matched:
            return ReplayItem(delivery, skipped, f"route '{route}' no longer matches: {verdict.failed}")
        send = _same_send(verdict.sends, delivery)
        if send is None:
            return ReplayItem(delivery, skipped, f"route '{route}' no longer sends to '{delivery.destination}'")
        if send.snapshot is not None and delivery.steps is not None:  # chained: render it from the answers it had
            try:
                steps, payload = json.loads(delivery.steps), routed.payload
                return await asyncio.to_thread(render_chained, send.snapshot, route, payload, routed.event, steps)
            except RenderError as exc:
                return ReplayItem(delivery, ReplayOutcome.FAILED, f"still cannot render: {exc}")
        if send.request is None:
            return ReplayItem(delivery, ReplayOutcome.FAILED, f"still cannot render: {send.error}")
        return send.request

    async def _route(self, event_id: str) -> _Routed | str:
        event = await self._store.get_event(event_id)
        if event is None:
            return f"its event {event_id} is no longer stored"
        try:
            payload = parse_payload(event.body)
        except PayloadError as exc:
            return f"its event cannot be parsed: {exc}"
        routes = self._loaded.routes_for(event.source)  # rendered off the event loop, as ingest does
        # On the `changes` its routes saw when it came; once_per does not hold a replay back.
        changes = stored_changes(event)
        state = PlanState(changes) if changes is not None else None
        verdicts = await asyncio.to_thread(plan, routes, payload, event.body, event_context(event), explain=True,
                                           state=state)  # fmt: skip
        return _Routed({verdict.route: verdict for verdict in verdicts}, payload, event)


@dataclass(frozen=True)
class _Routed:
    """A stored event routed again: each route's verdict, and what a chained request renders with."""

    verdicts: dict[str, RouteVerdict]
    payload: Any
    event: StoredEvent


def _same_send(sends: tuple[PlannedSend, ...], delivery: Delivery) -> PlannedSend | None:
    """The send of a route that made `delivery`: same destination, and the same place in the route if several."""
    candidates = [send for send in sends if send.destination == delivery.destination]
    index = _index_in_route(delivery)
    return next((send for send in candidates if send.index == index), candidates[0] if candidates else None)


def _index_in_route(delivery: Delivery) -> int | None:
    """Where the send that made `delivery` stands in its route: from its snapshot, or its Idempotency-Key."""
    if delivery.template is not None:
        return snapshot_index(delivery.template)
    key = delivery.request.headers.get(IDEMPOTENCY_HEADER, "") if delivery.request else ""
    tail = key.rpartition(":")[2]
    return int(tail) if tail.isdigit() else None


# What is shown: JSON-ready documents, secrets masked, shared by the CLI's --json and the admin API.


def delivery_document(
    delivery: Delivery, masker: Masker, attempts: list[Attempt] | None = None, body_chars: int = LIST_BODY_CHARS,
    pauses: Pauses | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A delivery fit to show; with `pauses`, a pending one says until when its destination waits for a quota."""
    pause = (pauses or {}).get(delivery.destination) if delivery.status is DeliveryStatus.PENDING else None
    document: dict[str, Any] = {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "route": delivery.route,
        "destination": delivery.destination,
        "status": delivery.status.value,
        "attempts": delivery.attempts,
        "max_attempts": delivery.max_attempts,
        "quota_waits": delivery.quota_waits,
        "waiting_for_quota_until_ms": pause.until_ms if pause is not None else None,
        "next_attempt_at_ms": delivery.next_attempt_at_ms,
        "created_at_ms": delivery.created_at_ms,
        "updated_at_ms": delivery.updated_at_ms,
        "last_error": _masked(masker, delivery.last_error),
        "step": delivery.step,
        "after": delivery.after,
        "request": _request_document(delivery.request, masker, body_chars) if delivery.request else None,
    }
    if attempts is not None:
        document["attempt_log"] = [_attempt_document(attempt, masker) for attempt in attempts]
    return document


def list_document(
    found: list[Delivery], where: DeliveryFilter, masker: Masker, pauses: Pauses | None = None
) -> dict[str, Any]:
    documents = [delivery_document(delivery, masker, pauses=pauses) for delivery in found]
    waiting = [pause_document(pause, masker) for pause in (pauses or {}).values()]
    return {"deliveries": documents, "count": len(documents), "limit": where.limit, "waiting_for_quota": waiting}


def detail_document(
    delivery: Delivery, attempts: list[Attempt], masker: Masker, pauses: Pauses | None = None
) -> dict[str, Any]:
    return delivery_document(delivery, masker, attempts, body_chars=DETAIL_BODY_CHARS, pauses=pauses)


def _request_document(request: RenderedRequest, masker: Masker, body_chars: int) -> dict[str, Any]:
    shown = masker.request(request)
    body = shown.body.decode("utf-8", "replace")
    return {
        "method": shown.method,
        "url": shown.url,
        "headers": shown.headers,
        "body": body if len(body) <= body_chars else body[:body_chars] + "…",
        "body_bytes": len(request.body),
        "body_truncated": len(body) > body_chars,
    }


def _attempt_document(attempt: Attempt, masker: Masker) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started_at_ms": attempt.started_at_ms,
        "elapsed_ms": attempt.elapsed_ms,
        "status_code": attempt.status_code,
        "error": _masked(masker, attempt.error),
        "response_excerpt": _masked(masker, attempt.response_excerpt),
    }


def _masked(masker: Masker, text: str | None) -> str | None:
    """`text` fit to show: the config's secrets and credentials in URLs masked."""
    return masker.url(text) if text is not None else None


def event_document(
    event: StoredEvent, deliveries: list[Delivery], masker: Masker, pauses: Pauses | None = None
) -> dict[str, Any]:
    try:
        body: Any = masker.value(parse_payload(event.body))
    except PayloadError:
        body = masker.text(event.body.decode("utf-8", "replace"))
    return {
        "id": event.id,
        "source": event.source,
        "received_at_ms": event.received_at_ms,
        "body": body,
        "changes": masker.value(stored_changes(event)),
        "deliveries": [delivery_document(delivery, masker, pauses=pauses) for delivery in deliveries],
    }


def replay_document(report: ReplayReport, masker: Masker) -> dict[str, Any]:
    return {
        **{outcome.value: report.count(outcome) for outcome in ReplayOutcome},
        "more": report.more,
        "deliveries": [
            {
                "id": item.delivery.id,
                "route": item.delivery.route,
                "destination": item.delivery.destination,
                "outcome": item.outcome.value,
                "reason": _masked(masker, item.reason),
            }
            for item in report.items
        ],
    }
