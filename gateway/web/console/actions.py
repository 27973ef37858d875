"""The console's forms: dead letters and replay, and the playground (a dry run from the browser).

Replay goes through `gateway.delivery.dead_letters` like `gateway replay` and the admin API; the
playground through `gateway.routing.dry_run` like `gateway test`, on the conversations' state and
once_per windows as the store has them now. Nothing is sent or stored from the playground.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.delivery import dead_letters as deliveries
from gateway.errors import GatewayError
from gateway.model import Delivery, DeliveryFilter, DeliveryStatus
from gateway.routing.dry_run import dry_run, needed_state
from gateway.web.admin import replay_and_wake
from gateway.web.console.guard import Form, Visit
from gateway.web.keys import STORE

DEAD_LETTERS_SHOWN = 500
FILTER_FIELDS = ("destination", "route", "since")
_REASON_CHARS = 160


@dataclass(frozen=True)
class DeadLetterGroup:
    destination: str
    reason: str
    deliveries: list[dict[str, Any]]


def reason_of(delivery: Delivery) -> str:
    """What a dead letter is grouped by: the first line of its last error, shortened."""
    first = (delivery.last_error or "no error recorded").splitlines()[0]
    return first if len(first) <= _REASON_CHARS else first[: _REASON_CHARS - 1] + "…"


def _filters(fields: Any) -> dict[str, str]:
    return {name: fields[name] for name in FILTER_FIELDS if isinstance(fields.get(name), str) and fields[name]}


async def dead_letters_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    filters = _filters(request.query)
    where = deliveries.parse_filter(
        {"status": DeliveryStatus.DEAD.value, **filters, "limit": str(DEAD_LETTERS_SHOWN)}, visit.now_ms
    )
    found = await deliveries.find_deliveries(request.app[STORE], where)
    masker = visit.masker
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for delivery in found:
        grouped[(delivery.destination, masker.url(reason_of(delivery)))].append(
            deliveries.delivery_document(delivery, masker)
        )
    groups = [DeadLetterGroup(destination, reason, items) for (destination, reason), items in sorted(grouped.items())]
    return visit.page(
        "dead_letters.html", nav="dead", groups=groups, total=len(found), more=len(found) >= where.limit,
        filters=filters, destinations=sorted(visit.loaded.config.destinations),
        routes=[route.name for route in visit.loaded.config.routes],
    )


async def replay_dead_letters(request: web.Request, visit: Visit) -> web.StreamResponse:
    """Replay the dead letters ticked (`id`), or with `scope=filter` every one matching the filter fields."""
    form = _form(visit)
    if form.get("scope") == "filter":
        fields = {"status": DeliveryStatus.DEAD.value, **_filters(form)}
        where = deliveries.replay_filter(fields, visit.now_ms)
    else:
        ids = tuple(value for value in form.getall("id", []) if isinstance(value, str))
        if not ids:
            raise deliveries.FilterError("tick at least one dead letter to replay, or replay all that match")
        where = DeliveryFilter(ids=ids, limit=deliveries.MAX_LIMIT)
    return await _replay(request, visit, where, "/console/dead-letters", "dead letters")


async def replay_delivery(request: web.Request, visit: Visit) -> web.StreamResponse:
    delivery_id = request.match_info["id"]
    delivery, _ = await deliveries.delivery_detail(request.app[STORE], delivery_id)
    where = DeliveryFilter(ids=(delivery_id,), limit=deliveries.MAX_LIMIT)
    return await _replay(request, visit, where, f"/console/events/{delivery.event_id}", "the event")


async def _replay(request: web.Request, visit: Visit, where: DeliveryFilter, back: str, back_label: str
                  ) -> web.StreamResponse:  # fmt: skip
    rerender = _form(visit).get("rerender") == "1"
    report = await replay_and_wake(request.app, visit.loaded, where, rerender, "console")
    document = deliveries.replay_document(report, visit.masker)
    return visit.page(
        "replay.html", nav="dead", report=document, rerender=rerender, back=back, back_label=back_label
    )


def _form(visit: Visit) -> Form:
    if visit.form is None:
        raise deliveries.FilterError("this page takes a form")
    return visit.form


async def playground_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The form; `?event=ID` fills it with a stored event's payload."""
    payload, source = "", None
    event_id = request.query.get("event")
    if event_id:
        event, _ = await deliveries.event_detail(request.app[STORE], event_id)
        payload, source = event.body.decode("utf-8", "replace"), event.source
    return _playground(visit, payload, source, None)


async def run_playground(request: web.Request, visit: Visit) -> web.StreamResponse:
    form = _form(visit)
    upload = form.get("file")
    body = upload.file.read() if isinstance(upload, web.FileField) else b""
    if not body:
        text = form.get("payload")
        body = text.encode() if isinstance(text, str) else b""
    source = form.get("source") if isinstance(form.get("source"), str) else None
    try:
        keys = needed_state(visit.loaded, body, source or None)
        seen = await request.app[STORE].read_state(keys, visit.now_ms) if keys is not None else None
        report: dict[str, Any] = dry_run(visit.loaded, body, source or None, seen=seen)
    except GatewayError as exc:
        report = {"error": visit.masker.url(str(exc))}
    return _playground(visit, body.decode("utf-8", "replace"), source, report)


def _playground(visit: Visit, payload: str, source: str | None, report: dict[str, Any] | None) -> web.Response:
    return visit.page(
        "playground.html", nav="playground", payload=payload, source=source, report=report,
        sources=sorted(visit.loaded.config.sources),
    )
