"""What each destination type adds to a plain HTTP request, before rendering and when it is sent.

Outcome rules per type (Slack's `ok:false`, Discord's `retry_after`...) live in
`gateway.delivery.classify`; this module supplies defaults for URL, method and headers, and
the `Authorization` value of a destination's fixed credentials (added at send time, never stored).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import quote

from gateway.config.schema import AuthConfig, DestinationConfig

MISSIVE_POSTS_URL = "https://public.missiveapp.com/v1/posts"


@dataclass(frozen=True)
class RequestDefaults:
    """URL template, method and header templates a destination starts from."""

    url: str
    method: str
    headers: dict[str, str]


def request_defaults(destination: DestinationConfig) -> RequestDefaults:
    """The destination's URL, method and headers with its preset's defaults filled in."""
    url = destination.url or (MISSIVE_POSTS_URL if destination.type == "missive" else "")
    if destination.type == "discord" and "wait=" not in url:
        # Without wait=true Discord answers 204 before validating the message, so a dropped message reports nothing.
        url += ("&" if "?" in url else "?") + "wait=true"
    headers = {"Content-Type": "application/json", **destination.headers}
    return RequestDefaults(url=url, method=destination.method.upper(), headers=headers)


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
