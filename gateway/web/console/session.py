"""Console sessions: a signed cookie that says who is logged in, until when, and the session's CSRF token.

Nothing is kept on the server but the ids of sessions logged out early. The signing key is derived
from `admin.token`, so changing the token ends every session, on every replica, and a cookie reveals
nothing about the token. A visitor who has not logged in gets an anonymous session too: its CSRF
token protects the login form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, replace

from aiohttp import web

COOKIE = "gateway_console"
COOKIE_PATH = "/console"
_KEY_LABEL = b"gateway console session v1"
# A session seen again within this long is not re-issued: its idle clock then runs at most this much early.
_REFRESH_AFTER_MS = 60_000
_MAX_REVOKED = 10_000


@dataclass(frozen=True)
class Session:
    sid: str
    csrf: str
    logged_in: bool
    seen_ms: int

    @classmethod
    def new(cls, logged_in: bool, now_ms: int) -> Session:
        return cls(secrets.token_hex(16), secrets.token_urlsafe(24), logged_in, now_ms)


def signing_key(admin_token: str) -> bytes:
    return hmac.new(admin_token.encode(), _KEY_LABEL, hashlib.sha256).digest()


def encode(session: Session, key: bytes) -> str:
    document = {"sid": session.sid, "csrf": session.csrf, "in": session.logged_in, "seen": session.seen_ms}
    payload = _b64(json.dumps(document, separators=(",", ":")).encode())
    return f"{payload}.{_b64(_mac(key, payload))}"


def decode(value: str, key: bytes) -> Session | None:
    """The session in a cookie value, or None when it is malformed or not signed with `key`."""
    payload, _, signature = value.partition(".")
    try:
        if not hmac.compare_digest(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)),
                                   _mac(key, payload)):  # fmt: skip
            return None
        document = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return Session(str(document["sid"]), str(document["csrf"]), document["in"] is True, int(document["seen"]))
    except (ValueError, KeyError, TypeError):
        return None


def _mac(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Sessions:
    """Reads, checks and writes the console's cookie for one application."""

    def __init__(self) -> None:
        self._revoked: dict[str, int] = {}  # sid -> when its cookie would have expired anyway

    def current(self, request: web.Request, key: bytes, idle_ms: int, now_ms: int) -> Session | None:
        """The request's session if its cookie is signed, not idle too long and not logged out."""
        value = request.cookies.get(COOKIE)
        session = decode(value, key) if value else None
        if session is None or now_ms - session.seen_ms > idle_ms or session.sid in self._revoked:
            return None
        return session

    def revoke(self, session: Session, idle_ms: int) -> None:
        """End a session before its idle time runs out (logout)."""
        if len(self._revoked) >= _MAX_REVOKED:
            oldest = min(self._revoked, key=self._revoked.__getitem__)
            del self._revoked[oldest]
        self._revoked[session.sid] = session.seen_ms + idle_ms

    def forget_expired(self, now_ms: int) -> None:
        for sid in [sid for sid, until in self._revoked.items() if until < now_ms]:
            del self._revoked[sid]


def touched(session: Session, now_ms: int) -> Session | None:
    """The session with its idle clock restarted, or None when it was seen too recently to bother."""
    return replace(session, seen_ms=now_ms) if now_ms - session.seen_ms >= _REFRESH_AFTER_MS else None


def set_cookie(response: web.StreamResponse, session: Session, key: bytes, idle_s: float, secure: bool) -> None:
    response.set_cookie(
        COOKIE, encode(session, key), path=COOKIE_PATH, max_age=int(idle_s), httponly=True, samesite="Strict",
        secure=secure,
    )


def csrf_matches(session: Session, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), session.csrf.encode())
