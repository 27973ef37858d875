"""Looking events up in the SQLite store: one query for every filter of `EventQuery`, newest first, by pages.

Lookups read indexes only: `events_newest` covers every event column a filter needs, `events_conversation`
and `events_sender` serve those equalities, and `deliveries_event` covers the delivery filters. A filter
that matches few events among many and has no index of its own (text, `delivered` deliveries) walks
`events_newest` until the page is full: tens of milliseconds per 100,000 events walked.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from gateway.model import DeliveryBrief, DeliveryStatus, EventCursor, EventFacts, EventPage, EventQuery, EventSummary

# Pending (the queue), held (chained) and dead deliveries are few beside delivered ones: a lookup by those
# statuses starts from them.
_FEW = (DeliveryStatus.PENDING, DeliveryStatus.HELD, DeliveryStatus.DEAD)
_EVENT_COLUMNS = "id, source, received_at_ms, conversation_id, subject, sender, rule_type"
_BRIEF_COLUMNS = "event_id, id, route, destination, status, attempts, max_attempts, last_error"


def find_events(conn: sqlite3.Connection, query: EventQuery) -> EventPage:
    clauses, params = _clauses(query)
    condition = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events {condition} ORDER BY received_at_ms DESC, id DESC LIMIT ?",
        (*params, query.limit + 1),
    ).fetchall()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    briefs = _briefs(conn, [row[0] for row in rows])
    events = [
        EventSummary(event_id, source, at_ms, EventFacts(conversation_id, subject, sender, rule_type),
                     tuple(briefs.get(event_id, ())))
        for event_id, source, at_ms, conversation_id, subject, sender, rule_type in rows
    ]  # fmt: skip
    last = events[-1] if more else None
    return EventPage(events, EventCursor(last.received_at_ms, last.id) if last else None)


def _clauses(query: EventQuery) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []

    def add(clause: str, *values: Any) -> None:
        clauses.append(clause)
        params.extend(values)

    for column, value in (
        ("conversation_id", query.conversation_id),
        ("sender", query.sender.lower() if query.sender else None),
        ("rule_type", query.rule_type),
        ("source", query.source),
    ):
        if value is not None:
            add(f"{column} = ?", value)
    if query.subject is not None:
        add("subject LIKE ? ESCAPE '\\'", _containing(query.subject))
    if query.text is not None:
        pattern = _containing(query.text)
        either = " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for column in ("conversation_id", "subject", "sender"))
        add(f"({either})", pattern, pattern, pattern)
    if query.since_ms is not None:
        add("received_at_ms >= ?", query.since_ms)
    if query.until_ms is not None:
        add("received_at_ms < ?", query.until_ms)
    if query.cursor is not None:  # the first clause alone bounds the index range
        at_ms = query.cursor.received_at_ms
        add("received_at_ms <= ? AND (received_at_ms < ? OR id < ?)", at_ms, at_ms, query.cursor.event_id)
    wanted = [(column, value) for column, value in (
        ("status", query.status.value if query.status else None),
        ("route", query.route),
        ("destination", query.destination),
    ) if value is not None]  # fmt: skip
    if wanted:
        match = " AND ".join(f"deliveries.{column} = ?" for column, _ in wanted)
        values = [value for _, value in wanted]
        if query.status in _FEW:  # from the few, by deliveries_queue; else event by event, newest first
            add(f"id IN (SELECT event_id FROM deliveries WHERE {match})", *values)
        else:
            add(f"EXISTS (SELECT 1 FROM deliveries WHERE deliveries.event_id = events.id AND {match})", *values)
    return clauses, params


def _containing(text: str) -> str:
    """A LIKE pattern for "contains `text`" (any case in ASCII), with LIKE's own wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _briefs(conn: sqlite3.Connection, event_ids: list[str]) -> dict[str, list[DeliveryBrief]]:
    if not event_ids:
        return {}
    rows = conn.execute(
        f"SELECT {_BRIEF_COLUMNS} FROM deliveries WHERE event_id IN ({', '.join('?' * len(event_ids))}) "
        "ORDER BY created_at_ms, id",
        event_ids,
    ).fetchall()
    found: dict[str, list[DeliveryBrief]] = {}
    for event_id, delivery_id, route, destination, status, attempts, max_attempts, last_error in rows:
        brief = DeliveryBrief(delivery_id, route, destination, DeliveryStatus(status), attempts, max_attempts,
                              last_error)  # fmt: skip
        found.setdefault(event_id, []).append(brief)
    return found
