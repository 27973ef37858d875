"""Event lookups (`gateway.delivery.event_lookup`) as a text table, for `gateway events`."""

from __future__ import annotations

from typing import Any

from gateway.cli.deliveries_text import short, table, timestamp

_SUBJECT_CHARS = 40


def format_events(listed: dict[str, Any]) -> str:
    rows = [
        [
            event["id"], timestamp(event["received_at_ms"]), event["rule_type"] or "-",
            event["conversation_id"] or "-", event["from"] or "-", short(event["subject"] or "-", _SUBJECT_CHARS),
            ", ".join(f"{item['route']}→{item['destination']} {item['status']}" for item in event["deliveries"])
            or "none",
        ]
        for event in listed["events"]
    ]  # fmt: skip
    lines = table(["ID", "RECEIVED", "TYPE", "CONVERSATION", "FROM", "SUBJECT", "DELIVERIES"], rows)
    count = f"{len(rows)} {'event' if len(rows) == 1 else 'events'}"
    if listed["next_cursor"]:
        count += f"; more match: add --cursor {listed['next_cursor']}"
    return "\n".join([*lines, count])
