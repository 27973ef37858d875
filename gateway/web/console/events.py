"""The console's event list: the lookup `gateway events` and `GET /admin/events` run, as a page that stays live.

`/console/events/rows?after=CURSOR` answers the rows of events newer than the one the page shows
first, for the vendored script to add while the page is open.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from gateway.delivery import event_lookup
from gateway.delivery.filters import FilterError
from gateway.model import DeliveryStatus, EventCursor, EventPage, EventQuery
from gateway.store.base import Store
from gateway.web.console.guard import Visit
from gateway.web.console.render import html
from gateway.web.keys import STORE

FORM_FIELDS = (
    "q", "conversation", "from", "type", "source", "route", "destination", "status", "since", "until", "limit",
)  # fmt: skip
# Suggested in the form; Missive's rule types are an open set, so any other can be typed.
RULE_TYPES = (
    "incoming_email", "outgoing_email", "new_comment", "label_change", "conversation_assignee_change", "team_change",
    "incoming_sms_message",
)  # fmt: skip


def _asked(request: web.Request) -> dict[str, str]:
    """The filters of the form, as the lookup takes them (empty ones dropped)."""
    return {name: request.query[name] for name in FORM_FIELDS if request.query.get(name)}


async def events_page(request: web.Request, visit: Visit) -> web.StreamResponse:
    asked = _asked(request)
    cursor = request.query.get("cursor")
    query = event_lookup.parse_event_query({**asked, **({"cursor": cursor} if cursor else {})}, visit.now_ms)
    page, exact = await _whole_id_first(request.app[STORE], query)
    if exact is not None:  # the pages after this one go on by that index
        asked = {**{name: value for name, value in asked.items() if name != "q"}, exact: query.text or ""}
    document = event_lookup.events_document(page, query, visit.masker)
    config = visit.loaded.config
    return visit.page(
        "events.html", nav="events", events=document["events"], next_cursor=document["next_cursor"],
        first_page=cursor is None, asked=asked, exact=exact, rule_types=RULE_TYPES,
        statuses=[s.value for s in DeliveryStatus], sources=sorted(config.sources),
        routes=[route.name for route in config.routes], destinations=sorted(config.destinations),
    )


async def _whole_id_first(store: Store, query: EventQuery) -> tuple[EventPage, str | None]:
    """The page for `query`; a text that is a whole conversation id or sender address is looked up by that
    index first, since a text search reads event after event. Also says which filter found it, if one did."""
    text = query.text
    if text is not None and query.cursor is None and not any(char.isspace() for char in text):
        narrower = [("conversation", replace(query, text=None, conversation_id=text))]
        if "@" in text:
            narrower.append(("from", replace(query, text=None, sender=text)))
        for name, exact in narrower:
            page = await store.find_events(exact)
            if page.events:
                return page, name
    return await store.find_events(query), None


async def newer_rows(request: web.Request, visit: Visit) -> web.StreamResponse:
    """The rows of events newer than `after` that match the filters, newest first (at most a page)."""
    try:
        after = EventCursor.parse(request.query.get("after", ""))
    except ValueError as exc:
        raise FilterError(f"after: {exc}") from None
    asked = _asked(request)
    query = event_lookup.parse_event_query(asked, visit.now_ms)
    since_ms = after.received_at_ms if query.since_ms is None else max(query.since_ms, after.received_at_ms)
    page = await request.app[STORE].find_events(replace(query, since_ms=since_ms))
    newer = [event for event in page.events if EventCursor(event.received_at_ms, event.id) > after]
    document = event_lookup.events_document(EventPage(newer, None), query, visit.masker)
    return html("_event_rows.html", events=document["events"], now_ms=visit.now_ms)
