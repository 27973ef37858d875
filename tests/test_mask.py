"""Masking: known secret values, credentials in URLs, credential headers, JSON-like data, requests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.mask import Masker
from gateway.model import RenderedRequest

TOKEN = "s3cr3t-t0ken"
masker = Masker([TOKEN, "a/b+c d", 'p"q\\r', "abc", "abcdef", "defghi", "abcdefgh-longer"])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(f"token {TOKEN} here", "token *** here", id="one"),
        pytest.param(f"{TOKEN},{TOKEN}", "***,***", id="every-occurrence"),
        pytest.param("x abcdefgh-longer y", "x *** y", id="longest-first"),
        pytest.param("x abcdefghi y", "x *** y", id="overlapping-secrets-hidden-as-one"),
        pytest.param("abc is too short to be a secret", "abc is too short to be a secret", id="short-values-ignored"),
        pytest.param("?v=a%2Fb%2Bc%20d&w=a%2Fb%2Bc+d", "?v=***&w=***", id="percent-encoded"),
        pytest.param(json.dumps({"k": 'p"q\\r'}), '{"k": "***"}', id="json-escaped"),
        pytest.param("nothing to hide", "nothing to hide", id="untouched"),
        pytest.param("", "", id="empty"),
    ],
)
def test_text(value: str, expected: str) -> None:
    assert masker.text(value) == expected


def test_no_secrets_leaves_text_alone() -> None:
    assert Masker().text(f"token {TOKEN}") == f"token {TOKEN}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("https://user:hunter22@example.com/x", "https://user:***@example.com/x", id="userinfo-password"),
        pytest.param("redis://:pw1234@redis:6379/0", "redis://:***@redis:6379/0", id="redis-password"),
        pytest.param("https://user@example.com:8443/a@b", "https://user@example.com:8443/a@b", id="no-password"),
        pytest.param("https://api.pipedrive.com/v1/persons?api_token=abc123&limit=5",
                     "https://api.pipedrive.com/v1/persons?api_token=***&limit=5", id="api-token"),
        pytest.param("https://default1a.2b.environment.api.powerplatform.com:443/powerautomate/automations/direct"
                     "/workflows/1/triggers/manual/paths/invoke?api-version=1&sp=%2Ftriggers&sv=1.0&sig=AbC123",
                     "https://default1a.2b.environment.api.powerplatform.com:443/powerautomate/automations/direct"
                     "/workflows/1/triggers/manual/paths/invoke?api-version=1&sp=%2Ftriggers&sv=1.0&sig=***",
                     id="teams-workflow-sig"),
        pytest.param("https://chat.googleapis.com/v1/spaces/AAAA/messages?key=AIzaSyDd&token=Zx9-tok",
                     "https://chat.googleapis.com/v1/spaces/AAAA/messages?key=***&token=***", id="google-chat"),
        pytest.param("https://mm.example.com/hooks/xjq4e8yk1b8h9qz3o5m7w2r6pa",
                     "https://mm.example.com/hooks/***", id="mattermost-webhook"),
        pytest.param("https://x.example.com/hooks/missive", "https://x.example.com/hooks/missive",
                     id="our-own-hook-path-untouched"),
        pytest.param("https://x.example/?key=1&client_secret=2&password=3&auth=4&code=5&signature=6&Access_Token=7&p=8",
                     "https://x.example/?key=***&client_secret=***&password=***&auth=***&code=***&signature=***"
                     "&Access_Token=***&p=8", id="secret-parameters"),
        pytest.param("https://x.example/cb#access_token=abc&state=1", "https://x.example/cb#access_token=***&state=1",
                     id="fragment"),
        pytest.param("https://hooks.slack.com/services/T0000/B0000/XXXXXXXX",
                     "https://hooks.slack.com/services/***", id="slack-webhook"),
        pytest.param("https://discord.com/api/webhooks/123456/tok-en_x?wait=true",
                     "https://discord.com/api/webhooks/123456/***?wait=true", id="discord-webhook"),
        pytest.param("https://discordapp.com/api/v10/webhooks/99/abc/messages/1",
                     "https://discordapp.com/api/v10/webhooks/99/***/messages/1", id="discord-versioned"),
        pytest.param(f"https://example.com/hook/{TOKEN}/x", "https://example.com/hook/***/x", id="known-secret"),
        pytest.param("https://example.com/a?b=1&page=2", "https://example.com/a?b=1&page=2", id="untouched"),
        pytest.param("POST https://hooks.slack.com/services/T1/B1/ZZ failed: 404 no_service",
                     "POST https://hooks.slack.com/services/*** failed: 404 no_service", id="inside-a-message"),
    ],
)
def test_url(url: str, expected: str) -> None:
    assert masker.url(url) == expected


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        pytest.param("Authorization", "Bearer xoxb-1-2-3", "Bearer ***", id="bearer"),
        pytest.param("authorization", "Basic dXNlcjpwYXNz", "Basic ***", id="basic-lowercase-name"),
        pytest.param("Authorization", "xoxb-1-2-3", "***", id="no-scheme"),
        pytest.param("Proxy-Authorization", "Bearer abc", "Bearer ***", id="proxy"),
        pytest.param("Cookie", "session=abc; theme=dark", "***", id="cookie"),
        pytest.param("Set-Cookie", "session=abc; Path=/", "***", id="set-cookie"),
        pytest.param("X-Api-Key", "k-123", "***", id="api-key"),
        pytest.param("X-Auth-Token", "t-123", "***", id="auth-token"),
        pytest.param("X-Client-Secret", "s-123", "***", id="secret"),
        pytest.param("X-Gateway-Signature", "sha256=abcdef", "***", id="signature"),
        pytest.param("X-Password", "hunter2", "***", id="password"),
        pytest.param("Idempotency-Key", "evt_1:vip:0", "evt_1:vip:0", id="idempotency-key-is-ours"),
        pytest.param("Content-Type", "application/json", "application/json", id="ordinary"),
        pytest.param("X-Note", f"note {TOKEN}", "note ***", id="ordinary-with-a-known-secret"),
    ],
)
def test_headers(name: str, value: str, expected: str) -> None:
    assert masker.headers({name: value}) == {name: expected}


def test_headers_keep_every_name_in_order() -> None:
    headers = {"Content-Type": "text/plain", "Authorization": "Bearer x", "X-Gateway-Event-Id": "evt_1"}
    assert list(masker.headers(headers)) == list(headers)


def test_value_is_a_masked_deep_copy() -> None:
    data: dict[str, Any] = {
        "url": f"https://x.example/{TOKEN}",
        "items": [TOKEN, 1, 2.5, True, None, {"nested": f"a {TOKEN} b"}],
        "pair": ("plain", TOKEN),
        TOKEN: "keys are kept",
    }
    original = json.loads(json.dumps(data))
    masked = masker.value(data)
    assert masked == {
        "url": "https://x.example/***",
        "items": ["***", 1, 2.5, True, None, {"nested": "a *** b"}],
        "pair": ["plain", "***"],
        TOKEN: "keys are kept",
    }
    assert json.loads(json.dumps(data)) == original
    assert masked["items"] is not data["items"]


def test_request_is_masked_for_display() -> None:
    request = RenderedRequest(
        method="POST",
        url="https://hooks.slack.com/services/T1/B1/ZZ",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        body=json.dumps({"text": f"token is {TOKEN}"}).encode(),
    )
    assert masker.request(request) == RenderedRequest(
        method="POST",
        url="https://hooks.slack.com/services/***",
        headers={"Authorization": "Bearer ***", "Content-Type": "application/json"},
        body=b'{"text": "token is ***"}',
    )


def test_request_without_secrets_keeps_its_exact_body() -> None:
    request = RenderedRequest("POST", "https://x.example/", {}, b"\xff not utf-8")
    assert masker.request(request).body == b"\xff not utf-8"


SLACK_URL = "https://hooks.slack.com/services/T0ABC/B0DEF/xoxSecretPath42"


@pytest.mark.parametrize(
    ("secrets", "value", "expected"),
    [
        pytest.param([SLACK_URL], f"POST {SLACK_URL} failed", "POST https://hooks.slack.com/services/*** failed",
                     id="slack-webhook-keeps-its-fixed-path"),
        pytest.param(["https://discord.com/api/webhooks/123/tok-abcdef"], "https://discord.com/api/webhooks/123/tok-abcdef",
                     "https://discord.com/api/webhooks/123/***", id="discord-webhook"),
        pytest.param(["https://crm.example.com/api/k3y-in-path"], "https://crm.example.com/api/k3y-in-path/notes",
                     "https://crm.example.com/***/notes", id="any-url-keeps-scheme-and-host"),
        pytest.param(["https://flow.example.com:8443/wf?api=1&sig=abc"], "to https://flow.example.com:8443/wf?api=1&sig=abc",
                     "to https://flow.example.com:8443/***", id="port-kept-query-hidden"),
        pytest.param(["https://user:pw12@h.example/x"], "https://user:pw12@h.example/x", "***", id="userinfo-hidden"),
        pytest.param([SLACK_URL, "hooks.slack.com"], SLACK_URL, "https://***", id="a-secret-inside-the-shown-part"),
        pytest.param([SLACK_URL], SLACK_URL.replace("/", "%2F").replace(":", "%3A"), "***",
                     id="encoded-spelling-whole"),
    ],
)
def test_a_secret_url_keeps_scheme_and_host_in_sight(secrets: list[str], value: str, expected: str) -> None:
    assert Masker(secrets).url(value) == expected
    assert Masker(secrets).text(value) == expected
