"""Hiding secrets in what the gateway shows: logs, the dry run, the admin API, error messages."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from gateway.model import RenderedRequest

MASK = "***"
_MIN_SECRET_CHARS = 4  # shorter values would blank out ordinary words

_USERINFO_PASSWORD = re.compile(r"(://[^/?#@\s:]*:)[^/?#\s]*@")
_SECRET_PARAM = re.compile(r"([?&;#][^=&#\s]*?(?:token|key|secret|sig|pass|auth|code)[^=&#\s]*=)[^&#\s]*", re.I)
_SLACK_WEBHOOK = re.compile(r"(hooks\.slack(?:-gov)?\.com/(?:services|workflows|triggers)/)[^\s?#\"'<>]+", re.I)
_DISCORD_WEBHOOK = re.compile(r"(/api(?:/v\d+)?/webhooks/\d+/)[^/?#\s\"'<>]+")
_MATTERMOST_WEBHOOK = re.compile(r"(/hooks/)[a-z0-9]{26}(?![A-Za-z0-9])")  # Mattermost's ids: 26 characters
_SECRET_HEADER_WORDS = ("auth", "cookie", "token", "secret", "key", "sig", "pass")
_PUBLIC_HEADERS = frozenset({"idempotency-key"})  # the gateway's own `<event id>:<route>:<n>`
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9-]*) +\S")


def map_strings(obj: Any, change: Callable[[str], str]) -> Any:
    """A copy of JSON-like data with `change` applied to every string value (keys are kept)."""
    if isinstance(obj, str):
        return change(obj)
    if isinstance(obj, Mapping):
        return {key: map_strings(item, change) for key, item in obj.items()}
    if isinstance(obj, list | tuple):
        return [map_strings(item, change) for item in obj]
    return obj


def _spellings(secret: str) -> set[str]:
    """`secret` as written, and as it appears inside a URL or a JSON string."""
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret, ensure_ascii=False)[1:-1]}


class Masker:
    """Replaces known secret values, and credentials recognisable by their place, with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.known = frozenset(secrets)
        found = {spell for secret in self.known if len(secret) >= _MIN_SECRET_CHARS for spell in _spellings(secret)}
        self._secrets = tuple(sorted(found, key=len, reverse=True))
        # One scan answers "is any secret here?", the common "no" included; only a "yes" pays for the spans.
        self._any = re.compile("|".join(map(re.escape, self._secrets))) if self._secrets else None

    def text(self, value: str) -> str:
        """`value` with every known secret replaced; overlapping secrets are hidden as one."""
        if self._any is None or self._any.search(value) is None:
            return value
        spans: list[tuple[int, int]] = []
        for secret in self._secrets:
            start = value.find(secret)
            while start != -1:
                spans.append((start, start + len(secret)))
                start = value.find(secret, start + 1)
        if not spans:
            return value
        pieces: list[str] = []
        done = 0
        for start, end in sorted(spans):
            if end <= done:
                continue
            if start > done or not pieces:
                pieces.append(value[done:start] + MASK)
            done = end
        pieces.append(value[done:])
        return "".join(pieces)

    def url(self, url: str) -> str:
        """`url` without its credentials: password, secret query parameters, Slack, Discord and Mattermost webhook
        tokens.

        Works on any text holding URLs too (an error message).
        """
        masked = self.text(url)
        # Cheap tests first: most text (log lines) holds none of these shapes.
        if "@" in masked:
            masked = _USERINFO_PASSWORD.sub(rf"\1{MASK}@", masked)
        if "=" in masked and ("?" in masked or "&" in masked or ";" in masked or "#" in masked):
            masked = _SECRET_PARAM.sub(rf"\1{MASK}", masked)
        if "hooks.slack" in masked.lower():
            masked = _SLACK_WEBHOOK.sub(rf"\1{MASK}", masked)
        if "/webhooks/" in masked:
            masked = _DISCORD_WEBHOOK.sub(rf"\1{MASK}", masked)
        if "/hooks/" in masked:
            masked = _MATTERMOST_WEBHOOK.sub(rf"\1{MASK}", masked)
        return masked

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """Credential headers as `***` (keeping an auth scheme: `Bearer ***`); others through `text`."""
        return {name: self._header(name, value) for name, value in headers.items()}

    def _header(self, name: str, value: str) -> str:
        lowered = name.lower()
        if lowered in _PUBLIC_HEADERS or not any(word in lowered for word in _SECRET_HEADER_WORDS):
            return self.text(value)
        scheme = _SCHEME.match(value)
        return f"{scheme.group(1)} {MASK}" if scheme else MASK

    def value(self, obj: Any) -> Any:
        """A copy of JSON-like data with `text` applied to every string value (keys are kept)."""
        return map_strings(obj, self.text)

    def request(self, request: RenderedRequest) -> RenderedRequest:
        """A request fit to show: URL, headers and body masked (a body that changes is re-encoded as UTF-8)."""
        body = request.body.decode("utf-8", "replace")
        masked = self.text(body)
        return RenderedRequest(
            method=request.method,
            url=self.url(request.url),
            headers=self.headers(request.headers),
            body=request.body if masked == body else masked.encode("utf-8"),
        )
