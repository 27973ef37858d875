"""What each destination type adds to a plain HTTP request, before rendering and when it is sent.

Defaults for settings, URL, method and headers, and the `Authorization` value of a
destination's fixed credentials (added at send time, never stored). Outcome rules per type
(Slack's `ok:false`, Discord's `retry_after`...) live in `gateway.delivery.classify`; what a
type checks and adds to a body (Teams' envelope, PagerDuty's keys) in `gateway.routing.preset_bodies`.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:  # the schema reads PRESET_SETTINGS from here
    from gateway.config.schema import AuthConfig, DestinationConfig

MISSIVE_POSTS_URL = "https://public.missiveapp.com/v1/posts"
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
TEAMS_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
DISCORD_API_VERSION = "v10"

# Settings a preset fills in when the destination leaves them out: the service's URL and its published limits.
PRESET_SETTINGS: dict[str, dict[str, Any]] = {
    "missive": {"url": MISSIVE_POSTS_URL, "concurrency": 5, "rate_limit": ["300/m", "900/15m"]},
    "pagerduty": {"url": PAGERDUTY_EVENTS_URL, "rate_limit": ["120/m"]},  # per integration key, 60 s looking back
    "google_chat": {"rate_limit": ["1/s"]},  # a space's webhook takes one message a second
}

# Discord's webhook URLs carry no API version; unversioned calls get an old one, whose 429 `retry_after` is in
# milliseconds. Any version written is pinned too, so the gateway reads one format.
_DISCORD_WEBHOOK_PATH = re.compile(r"/api(?:/v\d+)?/webhooks/")


@dataclass(frozen=True)
class RequestDefaults:
    """URL template, method and header templates a destination starts from."""

    url: str
    method: str
    headers: dict[str, str]


def with_preset_settings(destination: Any) -> Any:
    """A destination's raw settings with its preset's defaults added where it gives none."""
    if not isinstance(destination, dict):
        return destination
    defaults = PRESET_SETTINGS.get(str(destination.get("type")), {})
    return {**defaults, **destination}


def request_defaults(destination: DestinationConfig) -> RequestDefaults:
    """The destination's URL, method and headers with its preset's defaults filled in."""
    url = destination.url or ""
    if destination.type == "discord":
        url = discord_url(url)
    headers = {"Content-Type": "application/json", **destination.headers}
    return RequestDefaults(url=url, method=destination.method.upper(), headers=headers)


def discord_url(url: str) -> str:
    """A Discord webhook URL pinned to API v10, with `wait=true` unless it says otherwise."""
    url = _DISCORD_WEBHOOK_PATH.sub(f"/api/{DISCORD_API_VERSION}/webhooks/", url, count=1)
    if "wait=" not in url:
        # Without wait=true Discord answers 204 before validating the message, so a dropped message reports nothing.
        url += ("&" if "?" in url else "?") + "wait=true"
    return url


def basic_authorization(user: str, password: str, form_encoded: bool = False) -> str:
    """`Basic <base64 of user:password>`; `form_encoded` first escapes both, as OAuth2 clients must (RFC 6749 2.3.1)."""
    if form_encoded:
        user, password = quote(user, safe=""), quote(password, safe="")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def fixed_authorization(auth: AuthConfig) -> str | None:
    """The `Authorization` value of bearer and basic auth; None for OAuth2, whose token is fetched when needed."""
    if auth.type == "bearer" and auth.token is not None:
        return f"Bearer {auth.token.get_secret_value()}"
    if auth.type == "basic" and auth.username is not None and auth.password is not None:
        return basic_authorization(auth.username, auth.password.get_secret_value())
    return None


def shown_authorization(auth: AuthConfig) -> str:
    """What the dry run shows for the header `auth` adds at send time."""
    return "Basic ***" if auth.type == "basic" else "Bearer ***"
