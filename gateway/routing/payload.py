"""One payload: telling Missive's validation requests apart, parsing the JSON, and the view routes see."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import PayloadError

MAX_DEPTH = 64  # Missive's payloads nest 5 levels; anything deeper only costs recursion further on


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
    """The JSON document in `body`; PayloadError when it is not JSON or nests deeper than MAX_DEPTH."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc.msg} at byte {exc.pos}") from None
    # A document cannot nest deeper than it has brackets: counting them spares the walk for most payloads.
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH and _deeper_than(payload, MAX_DEPTH):
        raise PayloadError(f"body nests JSON deeper than {MAX_DEPTH} levels")
    return payload


def _deeper_than(document: Any, limit: int) -> bool:
    pending = [(document, 1)] if isinstance(document, dict | list) else []
    while pending:
        node, depth = pending.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                pending.append((child, depth + 1))
    return False


def is_validation_request(body: bytes) -> bool:
    """Missive's rule-save check: an empty body or `{}`; answered 200, nothing routed."""
    return not body.strip() or body.strip() == b"{}"
