"""Hiding secrets in what the gateway shows: logs, the dry run, the admin API, error messages."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

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


def _shown_prefix(secret: str) -> int:
    """How much of `secret` may be shown: for a URL its scheme and host (and a webhook's fixed path,
    `https://hooks.slack.com/services/`), so a masked URL still says where it points; nothing otherwise."""
    try:
        parts = urlsplit(secret)
    except ValueError:
        return 0
    origin = f"{parts.scheme}://{parts.netloc}/"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return 0
    if not secret.startswith(origin):
        return 0
    by_place = Masker().url(secret)  # where the place-based patterns put the mask, if they know this URL
    cut = by_place.find(MASK)
    if cut > len(origin) and secret.startswith(by_place[:cut]) and "?" not in by_place[:cut]:
        return cut
    return len(origin)


class Masker:
    """Replaces known secret values, and credentials recognisable by their place, with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.known = frozenset(secrets)
        found = {spell for secret in self.known if len(secret) >= _MIN_SECRET_CHARS for spell in _spellings(secret)}
        self._secrets = tuple(sorted(found, key=len, reverse=True))
        # A secret that is a URL keeps its scheme and host in sight: `https://hooks.slack.com/services/***`.
        self._shown = {secret: _shown_prefix(secret) for secret in self.known if len(secret) >= _MIN_SECRET_CHARS}
        # One scan answers "is any secret here?", the common "no" included; only a "yes" pays for the spans.
        self._any = re.compile("|".join(map(re.escape, self._secrets))) if self._secrets else None

    def text(self, value: str) -> str:
        """`value` with every known secret replaced; overlapping secrets are hidden as one."""
        if self._any is None or self._any.search(value) is None:
            return value
        spans: list[tuple[int, int, int]] = []  # start, end, and how many characters may stay in sight
        for secret in self._secrets:
            start = value.find(secret)
            while start != -1:
                spans.append((start, start + len(secret), self._shown.get(secret, 0)))
                start = value.find(secret, start + 1)
        hidden: list[list[int]] = []
        for start, end, shown in sorted(spans):
            if hidden and start <= hidden[-1][1]:  # overlaps or touches the previous one: hidden as one
                last = hidden[-1]
                last[1] = max(last[1], end)
                last[2] = min(last[2], start - last[0])  # nothing of the second secret stays in sight
            else:
                hidden.append([start, end, shown])
        pieces: list[str] = []
        done = 0
        for start, end, shown in hidden:
            pieces.append(value[done : start + shown] + MASK)
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
        return dataclasses.replace(
            request,
            url=self.url(request.url),
            headers=self.headers(request.headers),
            body=request.body if masked == body else masked.encode("utf-8"),
        )
