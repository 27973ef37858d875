"""What an answer means for a delivery: delivered, retry later, wait for a quota, or dead.

Plain rules: 2xx is delivered; 408, 425, 5xx, timeouts and connection errors are retried;
a 429, a 503 with Retry-After and Salesforce's `403 REQUEST_LIMIT_EXCEEDED` say a quota is
spent: wait, then it works (that costs no attempt); anything else is dead. Presets know
better where a service says more: Slack's Web API reports errors (and its rate limit) in a
200, Discord puts its wait in the body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gateway.config.schema import DestinationType
from gateway.delivery.backoff import parse_retry_after
from gateway.delivery.send import Response, TransportFailure

OutcomeKind = Literal["delivered", "retry", "quota", "dead"]

RETRY_STATUSES = frozenset({408, 425})
# A 403 that means "your quota is spent", not "you may not": Salesforce's 24-hour API allocation,
# `[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]`.
_QUOTA_403 = re.compile(r'"errorCode"\s*:\s*"REQUEST_LIMIT_EXCEEDED"')
# Slack Web API errors worth another try: limits, Slack's own trouble, and a workspace moving into an
# Enterprise org (`team_added_to_org`, `org_login_required`: it works again once the move is done).
# `fatal_error` is not among them: Slack may have posted the message already. Every other `ok: false`
# error (invalid_token, channel_not_found, not_in_channel, is_archived, invalid_blocks...) needs a person.
SLACK_TRANSIENT_ERRORS = frozenset(
    {"internal_error", "service_unavailable", "request_timeout", "team_added_to_org", "org_login_required"}
)
SLACK_QUOTA_ERRORS = frozenset({"ratelimited", "rate_limited"})
REASON_BODY_CHARS = 200


@dataclass(frozen=True)
class Outcome:
    """The verdict on one attempt; `retry_after_s` is the service's own hint of when to try again, when it gave
    one. `quota`: the service took nothing and said to wait (a spent quota)."""

    kind: OutcomeKind
    reason: str
    retry_after_s: float | None = None


def classify(dest_type: DestinationType, result: Response | TransportFailure, now_ms: int) -> Outcome:
    """The outcome of one attempt at a destination of type `dest_type`; `now_ms` dates Retry-After."""
    if isinstance(result, TransportFailure):
        permanent = result.kind in ("invalid", "blocked")
        return Outcome("dead" if permanent else "retry", f"{result.kind}: {result.message}")
    preset = _PRESETS.get(dest_type)
    return (preset(result, now_ms) if preset else None) or by_status(result, now_ms)


def by_status(response: Response, now_ms: int) -> Outcome:
    """The plain HTTP rules, shared by every destination type."""
    status = response.status
    reason = _reason(response)
    if 200 <= status < 300:
        return Outcome("delivered", reason)
    hint_s = _retry_after_header(response, now_ms)
    if status == 429 or (status == 503 and hint_s is not None) or (status == 403 and _QUOTA_403.search(response.body)):
        return Outcome("quota", reason, hint_s)
    if status in RETRY_STATUSES or 500 <= status < 600:
        return Outcome("retry", reason, hint_s)
    if 300 <= status < 400:
        return Outcome("dead", f"{reason}; redirects are not followed, point the destination at the final URL")
    return Outcome("dead", reason)


def _slack(response: Response, now_ms: int) -> Outcome | None:
    """chat.postMessage answers 200 `{"ok": false, "error": ...}` on failure; webhooks answer `ok` as text."""
    document = _json_object(response.body) if 200 <= response.status < 300 else None
    if document is None or document.get("ok") is not False:
        return None
    error = str(document.get("error", "unknown_error"))
    reason = f"HTTP {response.status}: slack error {error}"
    if error in SLACK_QUOTA_ERRORS:
        return Outcome("quota", reason, _retry_after_header(response, now_ms))
    if error in SLACK_TRANSIENT_ERRORS:
        return Outcome("retry", reason, _retry_after_header(response, now_ms))
    return Outcome("dead", reason)


def _discord(response: Response, now_ms: int) -> Outcome | None:
    """A 429 carries `{"retry_after": <seconds, float>}` in its body, more precise than the header."""
    if response.status != 429:
        return None
    document = _json_object(response.body) or {}
    hint = document.get("retry_after")
    if isinstance(hint, int | float) and not isinstance(hint, bool) and hint >= 0:
        return Outcome("quota", _reason(response), float(hint))
    return None


_PRESETS: dict[str, Callable[[Response, int], Outcome | None]] = {
    "slack": _slack,
    "discord": _discord,
}


def _retry_after_header(response: Response, now_ms: int) -> float | None:
    value = response.headers.get("retry-after")
    return parse_retry_after(value, now_ms) if value is not None else None


def _json_object(body: str) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _reason(response: Response) -> str:
    text = _first_line(response.body)
    return f"HTTP {response.status}: {text}" if text else f"HTTP {response.status}"


def _first_line(body: str) -> str:
    line = body.strip().split("\n", 1)[0].strip()
    return line[:REASON_BODY_CHARS] + ("..." if len(line) > REASON_BODY_CHARS else "")
