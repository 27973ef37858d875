"""What each destination type adds to a plain HTTP request before rendering.

Outcome rules per type (Slack's `ok:false`, Discord's `retry_after`...) live in
`gateway.delivery.classify`; this module only supplies defaults for URL, method and headers.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.schema import DestinationConfig

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
    headers = {"Content-Type": "application/json"}
    if destination.token is not None:
        headers["Authorization"] = f"Bearer {destination.token.get_secret_value()}"
    headers.update(destination.headers)
    return RequestDefaults(url=url, method=destination.method.upper(), headers=headers)
