"""Outcome classification per destination type, as each service really answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.config.schema import DestinationType
from gateway.delivery.classify import Outcome, classify
from gateway.delivery.send import Response, TransportFailure

NOW_MS = 1_772_366_400_000  # Sun, 01 Mar 2026 12:00:00 GMT


def answer(status: int, body: str = "", **headers: str) -> Response:
    return Response(status, {name.replace("_", "-"): value for name, value in headers.items()}, body, 12.0)


def json_answer(status: int, document: Any, **headers: str) -> Response:
    return answer(status, json.dumps(document), **headers)


CASES = [
    # plain rules, for every type
    pytest.param("http", answer(200), "delivered", None, id="http-200"),
    pytest.param("http", answer(201), "delivered", None, id="http-201"),
    pytest.param("http", answer(204), "delivered", None, id="http-204"),
    pytest.param("http", answer(408), "retry", None, id="http-408"),
    pytest.param("http", answer(425), "retry", None, id="http-425"),
    pytest.param("http", answer(429), "quota", None, id="http-429-without-hint"),
    pytest.param("http", answer(429, retry_after="7"), "quota", 7.0, id="http-429-retry-after"),
    pytest.param("http", answer(503, retry_after="Sun, 01 Mar 2026 12:00:30 GMT"), "quota", 30.0, id="http-503-date"),
    pytest.param("http", answer(503), "retry", None, id="http-503-without-hint-is-a-failure"),
    pytest.param("http", answer(500), "retry", None, id="http-500"),
    pytest.param(
        "http", json_answer(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]),
        "quota", None, id="salesforce-daily-allocation-is-a-quota",
    ),
    pytest.param(
        "http", json_answer(403, [{"message": "Insufficient access", "errorCode": "INSUFFICIENT_ACCESS"}]), "dead",
        None, id="salesforce-other-403-is-dead",
    ),
    pytest.param("http", answer(502), "retry", None, id="http-502"),
    pytest.param("http", answer(400), "dead", None, id="http-400"),
    pytest.param("http", answer(401), "dead", None, id="http-401"),
    pytest.param("http", answer(404), "dead", None, id="http-404"),
    pytest.param("http", answer(409, "Contact already exists"), "dead", None, id="hubspot-409"),
    pytest.param("http", answer(413), "dead", None, id="http-413"),
    pytest.param("http", answer(301), "dead", None, id="http-301-not-followed"),
    pytest.param("http", json_answer(200, {"ok": False, "error": "x"}), "delivered", None, id="http-ignores-ok-false"),
    pytest.param("http", TransportFailure("timeout", "no answer within 10 s", 10000), "retry", None, id="timeout"),
    pytest.param("http", TransportFailure("connection", "refused", 1), "retry", None, id="connection"),
    pytest.param("http", TransportFailure("invalid", "bad URL", 0), "dead", None, id="invalid-request"),
    # Slack: webhooks answer text, chat.postMessage answers 200 ok:false
    pytest.param("slack", answer(200, "ok"), "delivered", None, id="slack-webhook-ok"),
    pytest.param("slack", json_answer(200, {"ok": True, "ts": "1.2"}), "delivered", None, id="slack-api-ok"),
    pytest.param("slack", answer(404, "channel_not_found"), "dead", None, id="slack-webhook-404"),
    pytest.param("slack", answer(410, "channel_is_archived"), "dead", None, id="slack-webhook-410"),
    pytest.param("slack", answer(403, "invalid_token"), "dead", None, id="slack-webhook-403"),
    pytest.param("slack", answer(500, "rollup_error"), "retry", None, id="slack-webhook-500"),
    pytest.param("slack", answer(429, retry_after="30"), "quota", 30.0, id="slack-429-retry-after"),
    *[
        pytest.param("slack", json_answer(200, {"ok": False, "error": error}), "dead", None, id=f"slack-api-{error}")
        for error in (
            "invalid_token",
            "channel_not_found",
            "channel_is_archived",
            "no_service",
            "not_in_channel",
            "is_archived",
            "invalid_auth",
            "token_revoked",
            "invalid_blocks",
            "fatal_error",  # Slack may have posted already: another try could post twice
        )
    ],
    *[
        pytest.param("slack", json_answer(200, {"ok": False, "error": error}), "retry", None, id=f"slack-api-{error}")
        for error in ("team_added_to_org", "org_login_required", "internal_error", "service_unavailable")
    ],
    pytest.param("slack", answer(400, "invalid_blocks"), "dead", None, id="slack-webhook-empty-text-object"),
    pytest.param("slack", json_answer(200, {"ok": False, "error": "ratelimited"}), "quota", None, id="slack-api-rl"),
    pytest.param(
        "slack", json_answer(200, {"ok": False, "error": "ratelimited"}, retry_after="3"), "quota", 3.0,
        id="slack-api-ratelimited-retry-after",
    ),
    pytest.param("slack", json_answer(200, {"ok": False}), "dead", None, id="slack-api-error-missing"),
    # Discord: the wait is in the body
    pytest.param("discord", answer(204), "delivered", None, id="discord-204"),
    pytest.param("discord", json_answer(200, {"id": "1"}), "delivered", None, id="discord-wait-true-200"),
    pytest.param(
        "discord", json_answer(429, {"retry_after": 1.25, "global": False}, retry_after="2"), "quota", 1.25,
        id="discord-429-body-hint",
    ),
    pytest.param("discord", json_answer(429, {"message": "slow"}, retry_after="2"), "quota", 2.0, id="discord-429-hdr"),
    pytest.param("discord", json_answer(400, {"message": "Empty message"}), "dead", None, id="discord-400"),
    # Teams Workflows: 202 (the flow runs later), errors as JSON {"error": {"code", "message"}}
    pytest.param("teams", answer(202), "delivered", None, id="teams-202"),
    pytest.param(
        "teams", json_answer(400, {"error": {"code": "TriggerInputSchemaMismatch", "message": "..."}}), "dead", None,
        id="teams-400",
    ),
    pytest.param(
        "teams", json_answer(401, {"error": {"code": "DirectApiAuthorizationRequired", "message": "..."}}), "dead",
        None, id="teams-401-bad-sig",
    ),
    pytest.param("teams", json_answer(404, {"error": {"code": "WorkflowNotFound"}}), "dead", None, id="teams-404"),
    pytest.param("teams", answer(413), "dead", None, id="teams-413"),
    pytest.param("teams", answer(429, retry_after="7"), "quota", 7.0, id="teams-429"),
    pytest.param("teams", answer(200, "Webhook message delivery failed with error: HTTP error 429"), "delivered",
                 None, id="teams-no-legacy-connector-parsing"),
    # Google Chat: Google API errors, 429 RESOURCE_EXHAUSTED without a hint
    pytest.param("google_chat", json_answer(200, {"name": "spaces/A/messages/B"}), "delivered", None, id="gchat-200"),
    pytest.param(
        "google_chat", json_answer(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}}), "dead", None,
        id="gchat-400",
    ),
    pytest.param(
        "google_chat", json_answer(403, {"error": {"code": 403, "status": "PERMISSION_DENIED"}}), "dead", None,
        id="gchat-403",
    ),
    pytest.param(
        "google_chat", json_answer(429, {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED"}}), "quota", None,
        id="gchat-429",
    ),
    # Mattermost: "ok" as text, errors as JSON with an id
    pytest.param("mattermost", answer(200, "ok"), "delivered", None, id="mattermost-ok"),
    pytest.param(
        "mattermost", json_answer(400, {"id": "web.incoming_webhook.text.app_error", "message": "No text specified"}),
        "dead", None, id="mattermost-400",
    ),
    pytest.param("mattermost", answer(429, "limit exceeded", retry_after="1"), "quota", 1.0, id="mattermost-429"),
    # PagerDuty Events v2
    pytest.param(
        "pagerduty", json_answer(202, {"status": "success", "message": "Event processed", "dedup_key": "k"}),
        "delivered", None, id="pagerduty-202",
    ),
    pytest.param(
        "pagerduty", json_answer(400, {"status": "invalid event", "message": "Event object is invalid"}), "dead",
        None, id="pagerduty-400",
    ),
    pytest.param("pagerduty", answer(429), "quota", None, id="pagerduty-429"),
    # Missive: plain rules, Retry-After on 429
    pytest.param("missive", json_answer(201, {"posts": {}}), "delivered", None, id="missive-201"),
    pytest.param("missive", answer(429, retry_after="60"), "quota", 60.0, id="missive-429"),
    pytest.param("missive", json_answer(404, {"error": "not found"}), "dead", None, id="missive-404"),
]


@pytest.mark.parametrize(("dest_type", "result", "kind", "retry_after_s"), CASES)
def test_classify(
    dest_type: DestinationType, result: Response | TransportFailure, kind: str, retry_after_s: float | None
) -> None:
    outcome = classify(dest_type, result, NOW_MS)

    assert (outcome.kind, outcome.retry_after_s) == (kind, retry_after_s)
    assert outcome.reason and "\n" not in outcome.reason


@pytest.mark.parametrize(
    ("dest_type", "result", "reason"),
    [
        pytest.param("slack", answer(404, "channel_not_found\n"), "HTTP 404: channel_not_found", id="slack-webhook"),
        pytest.param(
            "slack", json_answer(200, {"ok": False, "error": "not_in_channel"}), "HTTP 200: slack error not_in_channel",
            id="slack-api",
        ),
        pytest.param("http", answer(503), "HTTP 503", id="empty-body"),
        pytest.param("http", answer(400, "first line\nsecond line"), "HTTP 400: first line", id="first-line-only"),
        pytest.param("http", answer(400, "x" * 500), "HTTP 400: " + "x" * 200 + "...", id="long-line-cut"),
        pytest.param(
            "http", TransportFailure("timeout", "no answer within 10 s", 10000), "timeout: no answer within 10 s",
            id="timeout",
        ),
    ],
)
def test_reason_is_one_short_line(dest_type: DestinationType, result: Response | TransportFailure, reason: str) -> None:
    assert classify(dest_type, result, NOW_MS).reason == reason


def test_redirect_reason_says_what_to_do() -> None:
    outcome = classify("http", answer(302), NOW_MS)
    assert outcome == Outcome("dead", "HTTP 302; redirects are not followed, point the destination at the final URL")
