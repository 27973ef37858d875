"""Destination credentials, added to each request when it is sent and never stored with it.

`bearer` and `basic` (and `token:`) send a fixed `Authorization` value. `oauth2_client_credentials`
fetches an access token from `token_url` when one is first needed, keeps it until `expires_in`
minus a margin (without `expires_in`, until the destination answers 401), fetches it once however
many deliveries ask at the same moment, and fetches a new one when the destination answers 401
to the token it holds. Tokens the gateway was issued are secrets it learns at run time: `mask`
hides them in whatever the worker records.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import ClientSession

from gateway.config.presets import basic_authorization, fixed_authorization
from gateway.config.schema import AuthConfig, DestinationConfig
from gateway.delivery.classify import Outcome, by_status
from gateway.delivery.send import Response, send
from gateway.mask import Masker
from gateway.model import RenderedRequest

# A token is renewed this long before it expires (at most half its lifetime), so none expires in flight.
EXPIRY_MARGIN_S = 60.0
# Tokens remembered for masking, per destination (the current one and a few before it) and from replaced configs.
_REMEMBERED_TOKENS = 8
_REMEMBERED_RETIRED = 64


@dataclass(frozen=True)
class TokenFailure:
    """The token endpoint gave no token: what that means for the attempt (retry or dead), and how long it took."""

    outcome: Outcome
    elapsed_ms: float


class Credentials(ABC):
    """What one destination adds as `Authorization` when a request is sent."""

    @abstractmethod
    async def authorization(self, session: ClientSession, timeout_s: float, now_ms: int) -> str | TokenFailure:
        """The header value to send now, or why there is none."""

    def renewable(self, used: str) -> bool:
        """The destination answered 401 to `used`: forget it, and say whether asking again may give another."""
        return False

    def issued(self) -> tuple[str, ...]:
        """Tokens learnt at run time, to be masked."""
        return ()


class FixedCredentials(Credentials):
    def __init__(self, value: str) -> None:
        self._value = value

    async def authorization(self, session: ClientSession, timeout_s: float, now_ms: int) -> str | TokenFailure:
        return self._value


class ClientCredentials(Credentials):
    """An OAuth2 client-credentials grant, its token cached and fetched by one request at a time."""

    def __init__(self, auth: AuthConfig) -> None:
        self._auth = auth
        self._token: str | None = None
        self._expires_at_ms: int | None = None
        self._fetching: asyncio.Future[str | TokenFailure] | None = None
        self._issued: list[str] = []

    async def authorization(self, session: ClientSession, timeout_s: float, now_ms: int) -> str | TokenFailure:
        if self._token is not None and (self._expires_at_ms is None or now_ms < self._expires_at_ms):
            return f"Bearer {self._token}"
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch(session, timeout_s, now_ms))
        fetching = self._fetching
        try:
            return await asyncio.shield(fetching)  # a delivery cancelled while waiting leaves the fetch to the others
        finally:
            if self._fetching is fetching and fetching.done():
                self._fetching = None

    def renewable(self, used: str) -> bool:
        if self._token is not None and used == f"Bearer {self._token}":
            self._token = None  # the next caller fetches a new one; those holding the same old one share it
        return True

    def issued(self) -> tuple[str, ...]:
        return tuple(self._issued)

    async def _fetch(self, session: ClientSession, timeout_s: float, now_ms: int) -> str | TokenFailure:
        answer = await send(session, self._token_request(), timeout_s)
        if not isinstance(answer, Response):
            reason = f"token: {answer.kind}: {answer.message}"
            outcome = Outcome("dead", reason) if answer.kind == "invalid" else Outcome("retry", reason)
            return TokenFailure(outcome, answer.elapsed_ms)
        token, lifetime_s = _read_token(answer)
        if token is None:
            outcome = by_status(answer, now_ms)
            if outcome.kind == "delivered":  # a 2xx without a token: not an OAuth2 token endpoint
                outcome = Outcome("dead", "the token endpoint answered without an access_token; check token_url")
            return TokenFailure(Outcome(outcome.kind, f"token: {outcome.reason}", outcome.retry_after_s),
                                answer.elapsed_ms)
        self._token = token
        self._issued = [*self._issued[-(_REMEMBERED_TOKENS - 1):], token]
        if lifetime_s is None:
            self._expires_at_ms = None
        else:
            self._expires_at_ms = now_ms + round((lifetime_s - min(EXPIRY_MARGIN_S, lifetime_s / 2)) * 1000)
        return f"Bearer {token}"

    def _token_request(self) -> RenderedRequest:
        auth = self._auth
        form = {"grant_type": "client_credentials"}
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        client_id, secret = auth.client_id or "", auth.client_secret.get_secret_value() if auth.client_secret else ""
        if auth.client_auth == "basic":
            headers["Authorization"] = basic_authorization(client_id, secret, form_encoded=True)
        else:
            form |= {"client_id": client_id, "client_secret": secret}
        form |= {name: value for name, value in (("scope", auth.scope), ("audience", auth.audience)) if value}
        return RenderedRequest("POST", auth.token_url or "", headers, urlencode(form).encode())


def _read_token(answer: Response) -> tuple[str | None, float | None]:
    """`access_token` and `expires_in` (seconds) from a token endpoint's 2xx answer."""
    if not 200 <= answer.status < 300:
        return None, None
    try:
        document = json.loads(answer.content)
    except ValueError:
        return None, None
    token = document.get("access_token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token:
        return None, None
    lifetime = document.get("expires_in")
    try:
        lifetime_s = float(lifetime) if lifetime is not None and not isinstance(lifetime, bool) else None
    except ValueError:
        lifetime_s = None
    return token, lifetime_s if lifetime_s is None or lifetime_s > 0 else None


def _credentials(auth: AuthConfig) -> Credentials:
    fixed = fixed_authorization(auth)
    return FixedCredentials(fixed) if fixed is not None else ClientCredentials(auth)


class CredentialsBook:
    """Every destination's credentials; a reload keeps the cached token of an OAuth2 auth it does not change."""

    def __init__(self, destinations: Mapping[str, DestinationConfig]) -> None:
        self._by_name: dict[str, tuple[AuthConfig, Credentials]] = {}
        self._retired: tuple[str, ...] = ()
        self._masker = Masker()
        self.reconfigure(destinations)

    def reconfigure(self, destinations: Mapping[str, DestinationConfig]) -> None:
        old, self._by_name = self._by_name, {}
        for name, destination in destinations.items():
            auth = destination.credentials()
            if auth is None:
                continue
            kept = old.pop(name, None)
            self._by_name[name] = kept if kept is not None and kept[0] == auth else (auth, _credentials(auth))
        retired = (*self._retired, *(token for _, credentials in old.values() for token in credentials.issued()))
        self._retired = retired[-_REMEMBERED_RETIRED:]

    def get(self, destination: str) -> Credentials | None:
        found = self._by_name.get(destination)
        return found[1] if found is not None else None

    def mask(self, text: str) -> str:
        """`text` with every token this process was issued replaced by `***`."""
        tokens = {*self._retired, *(token for _, cred in self._by_name.values() for token in cred.issued())}
        if not tokens:
            return text
        if tokens != self._masker.known:
            self._masker = Masker(tokens)
        return self._masker.text(text)
