"""Service APIs: Missive's REST API (posts) and PagerDuty's Events API v2."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any

from aiohttp import web

from tests.services.base import NowMs, ServiceFake, json_response, parse_json

MISSIVE_LIMITS = ((300, 60.0), (900, 15 * 60.0))


class MissiveApi(ServiceFake):
    """`POST /v1/posts`: a bearer token, 5 requests at once, 300 a minute and 900 per 15 minutes; a 429 carries
    Retry-After and X-RateLimit-*. `answer_delay_s` keeps requests in flight, to meet the concurrency cap."""

    MAX_CONCURRENT = 5

    def __init__(self, token: str = "missive_pat-fake-0123456789", now_ms: NowMs | None = None,
                 answer_delay_s: float = 0.0) -> None:  # fmt: skip
        super().__init__(MISSIVE_LIMITS, now_ms)
        self.token = token
        self.answer_delay_s = answer_delay_s
        self.posts: list[dict[str, Any]] = []
        self.too_many_at_once = 0

    def posts_url(self) -> str:
        return self.url("/v1/posts")

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        if request.path != "/v1/posts":
            return json_response(404, {"error": "Not found"})
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return json_response(401, {"error": "Invalid or missing API token"})
        if self.in_flight > self.MAX_CONCURRENT:
            self.too_many_at_once += 1
            return json_response(429, {"error": "Too many concurrent requests"}, {"Retry-After": "1"})
        document = parse_json(body)
        posts = document.get("posts") if isinstance(document, dict) else None
        if not isinstance(posts, dict) or not (posts.get("conversation") or posts.get("references")):
            return json_response(400, {"error": "posts: conversation or references is required"})
        if not (posts.get("text") or posts.get("markdown") or posts.get("attachments")):
            return json_response(400, {"error": "posts: text, markdown or attachments is required"})
        return None

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        seconds = str(math.ceil(wait_s))
        headers = {"Retry-After": seconds, "X-RateLimit-Limit": "300", "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset": seconds}  # fmt: skip
        return json_response(429, {"error": "Rate limit exceeded"}, headers)

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        if self.answer_delay_s:
            await asyncio.sleep(self.answer_delay_s)
        posts = parse_json(body)["posts"]
        self.posts.append(posts)
        post = {"id": str(uuid.uuid4()), "conversation": posts.get("conversation"), "markdown": posts.get("markdown")}
        return json_response(200, {"posts": post})


class PagerDutyEvents(ServiceFake):
    """`POST /v2/enqueue`: validates an Events v2 event, answers 202 with the dedup key, keeps one alert per
    dedup key, and throttles at 120 events a minute per routing key."""

    SEVERITIES = ("critical", "error", "warning", "info")

    def __init__(self, routing_key: str = "R0UT1NGKEY0123456789abcdefghijkl", now_ms: NowMs | None = None) -> None:
        super().__init__([(120, 60.0)], now_ms)
        self.routing_key = routing_key
        self.alerts: dict[str, list[dict[str, Any]]] = {}

    def events_url(self) -> str:
        return self.url("/v2/enqueue")

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        if request.path != "/v2/enqueue":
            return json_response(404, {"status": "Not found", "message": "Not found"})
        errors = self._errors(parse_json(body))
        if errors:
            return json_response(400, {"status": "invalid event", "message": "Event object is invalid",
                                       "errors": errors})  # fmt: skip
        return None

    def _errors(self, event: Any) -> list[str]:
        if not isinstance(event, dict):
            return ["Event object must be a JSON object"]
        errors = []
        key = event.get("routing_key")
        if not isinstance(key, str) or len(key) != 32:
            errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
        action = event.get("event_action")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
        if action == "trigger":
            payload = event.get("payload")
            payload = payload if isinstance(payload, dict) else {}
            errors += [f"'payload.{name}' is missing or blank" for name in ("summary", "source")
                       if not payload.get(name)]  # fmt: skip
            if payload.get("severity") not in self.SEVERITIES:
                errors.append("'payload.severity' is invalid (must be one of: critical, error, warning, info)")
        elif action in ("acknowledge", "resolve") and not event.get("dedup_key"):
            errors.append("'dedup_key' is required for acknowledge and resolve events")
        if event.get("routing_key") not in (None, self.routing_key) and not errors:
            errors.append("Invalid routing key")
        return errors

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        return json_response(429, {"status": "throttle event", "message": "Requests for this service are arriving "
                                   "too quickly. Please retry later."})  # fmt: skip

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        event = parse_json(body)
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        self.alerts.setdefault(dedup_key, []).append(event)
        return json_response(202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key})
