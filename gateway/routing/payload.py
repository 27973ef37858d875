"""The document that routes and templates see for one payload."""

from __future__ import annotations

from typing import Any


def payload_view(payload: Any) -> Any:
    """The payload with `message` always naming the event's message.

    Missive puts the message under `message` on message rules and under `latest_message`
    on the others; both keep working, and `message` is filled in from `latest_message`
    when absent, so one route or template serves both kinds of rule.
    """
    if isinstance(payload, dict) and "message" not in payload and "latest_message" in payload:
        return {**payload, "message": payload["latest_message"]}
    return payload
