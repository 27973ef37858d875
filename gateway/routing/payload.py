"""One payload: telling Missive's validation requests apart, parsing the JSON, and the view routes see."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import PayloadError


def payload_view(payload: Any) -> Any:
    """The payload with `message` always naming the event's message.

    Missive puts the message under `message` on message rules and under `latest_message`
    on the others; both keep working, and `message` is filled in from `latest_message`
    when absent, so one route or template serves both kinds of rule.
    """
    if isinstance(payload, dict) and "message" not in payload and "latest_message" in payload:
        return {**payload, "message": payload["latest_message"]}
    return payload


def parse_payload(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc.msg} at byte {exc.pos}") from None


def is_validation_request(body: bytes) -> bool:
    """Missive's rule-save check: an empty body or `{}`; answered 200, nothing routed."""
    return not body.strip() or body.strip() == b"{}"
