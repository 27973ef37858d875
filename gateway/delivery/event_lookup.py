"""Looking events up: by conversation, sender, subject, rule type, route, destination, delivery status, time.

`gateway events`, `GET /admin/events` and the console run this code over one store query
(`Store.find_events`), so they filter, page and mask alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.delivery import filters
from gateway.mask import Masker
from gateway.model import EventCursor, EventPage, EventQuery, EventSummary

# Query parameter -> what it filters; the CLI's options carry the same names.
EVENT_FILTERS = (
    "q", "conversation", "from", "subject", "type", "source", "route", "destination", "status", "since", "until",
    "cursor", "limit",
)  # fmt: skip
LIST_LIMIT = 50
MAX_LIMIT = 1000


def parse_event_query(fields: Mapping[str, object], now_ms: int) -> EventQuery:
    """An EventQuery from raw values (query parameters, CLI options); None or empty means "any"."""
    text = {name: value for name, value in filters.texts(fields, EVENT_FILTERS).items() if value != ""}
    try:
        cursor = EventCursor.parse(text["cursor"]) if "cursor" in text else None
    except ValueError as exc:
        raise filters.FilterError(f"cursor: {exc}") from None
    return EventQuery(
        text=text.get("q"),
        conversation_id=text.get("conversation"),
        sender=text.get("from"),
        subject=text.get("subject"),
        rule_type=text.get("type"),
        source=text.get("source"),
        route=text.get("route"),
        destination=text.get("destination"),
        status=filters.status(text["status"]) if "status" in text else None,
        since_ms=filters.moment_ms("since", text["since"], now_ms) if "since" in text else None,
        until_ms=filters.moment_ms("until", text["until"], now_ms) if "until" in text else None,
        cursor=cursor,
        limit=filters.limit(text["limit"], MAX_LIMIT) if "limit" in text else LIST_LIMIT,
    )


def events_document(page: EventPage, query: EventQuery, masker: Masker) -> dict[str, Any]:
    """A page as JSON: `events`, `count`, `limit` and `next_cursor` (null on the last page)."""
    return {
        "events": [event_summary_document(event, masker) for event in page.events],
        "count": len(page.events),
        "limit": query.limit,
        "next_cursor": str(page.next_cursor) if page.next_cursor else None,
    }


def event_summary_document(event: EventSummary, masker: Masker) -> dict[str, Any]:
    facts = event.facts
    return {
        "id": event.id,
        "source": event.source,
        "received_at_ms": event.received_at_ms,
        "rule_type": facts.rule_type,
        "conversation_id": facts.conversation_id,
        "subject": masker.text(facts.subject) if facts.subject is not None else None,
        "from": facts.sender,
        "deliveries": [
            {
                "id": brief.id, "route": brief.route, "destination": brief.destination, "status": brief.status.value,
                "attempts": brief.attempts, "max_attempts": brief.max_attempts,
                "last_error": masker.url(brief.last_error) if brief.last_error is not None else None,
            }
            for brief in event.deliveries
        ],
    }  # fmt: skip
