"""Chat services' incoming webhooks: Slack (and its Web API), Discord, Teams Workflows, Google Chat, Mattermost."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from tests.services.base import NowMs, ServiceFake, json_response, parse_json

TEAMS_CARD = "application/vnd.microsoft.card.adaptive"


def _text_objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every Block Kit text object (`{"type": "mrkdwn" | "plain_text", "text": ...}`) in `node`."""
    if isinstance(node, dict):
        if node.get("type") in ("mrkdwn", "plain_text") and "text" in node:
            yield node
        for value in node.values():
            yield from _text_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _text_objects(value)


def slack_message_error(message: Any) -> str | None:
    """Slack's error code for a message body, or None when Slack takes it."""
    if not isinstance(message, dict):
        return "invalid_payload"
    if not message.get("text") and not message.get("blocks") and not message.get("attachments"):
        return "no_text"
    if any(not obj["text"] for obj in _text_objects(message.get("blocks", []))):
        return "invalid_blocks"  # a text object needs at least one character
    return None


class SlackWebhook(ServiceFake):
    """A Slack incoming webhook (`/services/T../B../<token>`): `ok` as text, errors as status + code, ~1/s."""

    def __init__(self, token: str = "XXXXsecretXXXXtoken0000", now_ms: NowMs | None = None) -> None:
        super().__init__([(1, 1.0)], now_ms)
        self.path = f"/services/T0001/B0001/{token}"
        self.posted: list[dict[str, Any]] = []

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        if request.path != self.path:
            return web.Response(status=404, text="no_service")
        error = slack_message_error(parse_json(body))
        return web.Response(status=400, text=error) if error else None

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        return web.Response(status=429, text="rate_limited", headers={"Retry-After": str(math.ceil(wait_s))})

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self.posted.append(parse_json(body))
        return web.Response(text="ok", content_type="text/html")


class SlackApi(ServiceFake):
    """Slack's `chat.postMessage`: errors as 200 `{"ok": false, "error": ...}`, HTTP 429 with Retry-After."""

    def __init__(self, token: str = "xoxb-1-fake", channels: tuple[str, ...] = ("C0001",),
                 now_ms: NowMs | None = None) -> None:  # fmt: skip
        super().__init__([(1, 1.0)], now_ms)
        self.token = token
        self.channels = channels
        self.posted: list[dict[str, Any]] = []

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        auth = request.headers.get("Authorization")
        message = parse_json(body)
        if auth is None:
            error: str | None = "not_authed"
        elif auth != f"Bearer {self.token}":
            error = "invalid_auth"
        elif not isinstance(message, dict) or message.get("channel") not in self.channels:
            error = "channel_not_found"
        else:
            error = slack_message_error(message)
        return json_response(200, {"ok": False, "error": error}) if error else None

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        return json_response(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(math.ceil(wait_s))})

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        message = parse_json(body)
        self.posted.append(message)
        return json_response(200, {"ok": True, "channel": message["channel"], "ts": f"{len(self.posted)}.000100"})


class DiscordWebhook(ServiceFake):
    """A Discord webhook: 5 requests per 2 s; a 429's `retry_after` is in seconds from API v8 on, and in
    milliseconds on the unversioned path Discord hands out (API v6)."""

    def __init__(self, webhook_id: str = "1234567890", token: str = "discord-token-abcdefghijklmnop",
                 now_ms: NowMs | None = None) -> None:  # fmt: skip
        super().__init__([(5, 2.0)], now_ms)
        self.webhook_id, self.token = webhook_id, token
        self.posted: list[dict[str, Any]] = []

    def pasted_url(self) -> str:
        """The URL Discord's settings page hands out: no API version."""
        return self.url(f"/api/webhooks/{self.webhook_id}/{self.token}")

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/webhooks/{id}/{token}", self.serve)
        router.add_post("/api/{version:v[0-9]+}/webhooks/{id}/{token}", self.serve)

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        if (request.match_info["id"], request.match_info["token"]) != (self.webhook_id, self.token):
            return json_response(401, {"message": "Invalid Webhook Token", "code": 50027})
        message = parse_json(body)
        if not isinstance(message, dict) or not (message.get("content") or message.get("embeds")):
            return json_response(400, {"message": "Cannot send an empty message", "code": 50006})
        if len(message.get("content") or "") > 2000:
            errors = {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer "
                                                                                          "in length."}]}}
            return json_response(400, {"message": "Invalid Form Body", "code": 50035, "errors": errors})
        return None

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        version = request.match_info.get("version", "v6")
        retry_after: float = wait_s if int(version[1:]) >= 8 else math.ceil(wait_s * 1000)
        headers = {"Retry-After": str(math.ceil(wait_s)), "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                   "X-RateLimit-Reset-After": f"{wait_s:.3f}", "X-RateLimit-Scope": "shared"}  # fmt: skip
        document = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        return json_response(429, document, headers)

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        message = parse_json(body)
        self.posted.append(message)
        if request.query.get("wait") != "true":
            return web.Response(status=204)
        return json_response(200, {"id": str(len(self.posted)), "type": 0, "content": message.get("content", ""),
                                   "channel_id": "42", "webhook_id": self.webhook_id})  # fmt: skip


class TeamsWorkflow(ServiceFake):
    """A Teams Workflows (Power Automate) trigger: answers 202 to any body it takes, then runs the flow, which
    posts only an Adaptive Card in the message envelope and fails on anything else, unseen by the sender."""

    MAX_BYTES = 28 * 1024

    def __init__(self, sig: str = "teams-sig-0123456789abcdef", now_ms: NowMs | None = None) -> None:
        super().__init__([(4, 1.0)], now_ms)
        self.sig = sig
        self.path = "/powerautomate/automations/direct/workflows/0f1e2d3c4b5a/triggers/manual/paths/invoke"
        self.posted_cards: list[dict[str, Any]] = []
        self.flow_failures: list[str] = []

    def workflow_url(self) -> str:
        return self.url(f"{self.path}?api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={self.sig}")

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        if request.path != self.path:
            return json_response(404, {"error": {"code": "WorkflowNotFound", "message": "The workflow was not found."}})
        if request.query.get("sig") != self.sig:
            return json_response(401, {"error": {"code": "DirectApiAuthorizationRequired",
                                                 "message": "The request must be authenticated."}})  # fmt: skip
        if len(body) > self.MAX_BYTES:
            return json_response(413, {"error": {"code": "MessageTooLarge", "message": "The message is too large."}})
        return None

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        error = {"error": {"code": "WorkflowTriggerIsThrottled", "message": "Too many requests."}}
        return json_response(429, error, {"Retry-After": str(math.ceil(wait_s))})

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        message = parse_json(body)
        attachments = message.get("attachments") if isinstance(message, dict) else None
        cards: list[Any] = [item.get("content") for item in attachments or []
                 if isinstance(item, dict) and item.get("contentType") == TEAMS_CARD]  # fmt: skip
        if not cards or not all(isinstance(card, dict) and card.get("type") == "AdaptiveCard" for card in cards):
            self.flow_failures.append("The 'attachments' property is of type 'Null' or holds no Adaptive Card.")
        else:
            self.posted_cards.extend(cards)
        return web.Response(status=202)


class GoogleChatWebhook(ServiceFake):
    """A Google Chat space webhook: `key=` and `token=` in the query, Google API errors, 429 RESOURCE_EXHAUSTED
    without a Retry-After (Google asks for exponential backoff)."""

    def __init__(self, key: str = "AIzaSy-fake-chat-key-000", token: str = "chat-token-abcdefghijkl",
                 now_ms: NowMs | None = None) -> None:  # fmt: skip
        super().__init__([(1, 1.0)], now_ms)
        self.key, self.token, self.space = key, token, "AAAAbbbbCCC"
        self.posted: list[dict[str, Any]] = []

    def webhook_url(self) -> str:
        return self.url(f"/v1/spaces/{self.space}/messages?key={self.key}&token={self.token}")

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        if request.query.get("key") != self.key:
            return _google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
        if request.query.get("token") != self.token:
            return _google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        message = parse_json(body)
        if not isinstance(message, dict):
            return _google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not message.get("text") and not message.get("cardsV2"):
            return _google_error(400, "INVALID_ARGUMENT", "Message cannot be empty. Discarding empty message.")
        return None

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        return _google_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        message = parse_json(body)
        self.posted.append(message)
        name = f"spaces/{self.space}/messages/{uuid.uuid4().hex[:11]}"
        return json_response(200, {"name": name, "text": message.get("text", ""),
                                   "space": {"name": f"spaces/{self.space}"}})  # fmt: skip


def _google_error(status: int, code: str, message: str) -> web.Response:
    return json_response(status, {"error": {"code": status, "message": message, "status": code}})


class MattermostWebhook(ServiceFake):
    """A Mattermost incoming webhook: Slack-style bodies, `ok` as text, errors as JSON with an `id`."""

    def __init__(self, hook_id: str = "mmhook0123456789abcdefghij", now_ms: NowMs | None = None) -> None:
        super().__init__([(10, 1.0)], now_ms)
        self.hook_id = hook_id
        self.posted: list[dict[str, Any]] = []

    def refuse(self, request: web.Request, body: bytes) -> web.Response | None:
        if request.path != f"/hooks/{self.hook_id}":
            return _mattermost_error("web.incoming_webhook.invalid.app_error", "Invalid webhook.")
        message = parse_json(body)
        if not isinstance(message, dict):
            return _mattermost_error("web.incoming_webhook.parse.app_error", "Unable to parse incoming data.")
        if not message.get("text") and not message.get("attachments"):
            return _mattermost_error("web.incoming_webhook.text.app_error", "No text specified.")
        return None

    def rate_limited(self, wait_s: float, request: web.Request) -> web.Response:
        seconds = str(math.ceil(wait_s))
        headers = {"X-Ratelimit-Limit": "10", "X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": seconds,
                   "Retry-After": seconds}  # fmt: skip
        return web.Response(status=429, text="limit exceeded\n", headers=headers)

    async def answer(self, request: web.Request, body: bytes) -> web.Response:
        self.posted.append(parse_json(body))
        return web.Response(text="ok", content_type="text/plain")


def _mattermost_error(error_id: str, message: str) -> web.Response:
    document = {"id": error_id, "message": message, "detailed_error": "", "request_id": uuid.uuid4().hex[:26],
                "status_code": 400}  # fmt: skip
    return json_response(400, document)
