"""Who may see the console: login and logout, the session check on every page, the CSRF check on every form.

The console answers 404 while `admin.token` is unset (a reload turns it on or off). Without a
session a page redirects to the login form; a POST without the session's CSRF token gets 403.
Every answer under /console carries a Content-Security-Policy that allows nothing from elsewhere.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from gateway.delivery.dead_letters import FilterError, NotFound
from gateway.errors import StoreUnavailable
from gateway.mask import Masker
from gateway.routing.compiled import LoadedConfig
from gateway.web.console.render import html
from gateway.web.console.session import (
    COOKIE,
    COOKIE_PATH,
    Session,
    Sessions,
    csrf_matches,
    set_cookie,
    signing_key,
    touched,
)
from gateway.web.errors import Handler, error_response
from gateway.web.keys import CLOCK, CONFIG, TOKEN_GUESSES
from gateway.web.token_guesses import client_of, waiting

SESSIONS = web.AppKey("console_sessions", Sessions)
HOME = "/console/"
LOGIN = "/console/login"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
Form = MultiDictProxy[Any]


@dataclass(frozen=True)
class Visit:
    """One request of a logged-in user: the session, the time, the config in force and the form posted."""

    session: Session
    now_ms: int
    loaded: LoadedConfig
    form: Form | None
    masker: Masker  # every secret this process has held: stored deliveries may carry an earlier config's

    def page(self, template: str, status: int = 200, **context: Any) -> web.Response:
        """A page in the console's layout (navigation, logout form, CSRF token for its forms)."""
        return html(template, status, csrf=self.session.csrf, now_ms=self.now_ms, logged_in=True, **context)


ConsoleHandler = Callable[[web.Request, Visit], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class _Keys:
    """What the session check needs from the config in force."""

    token: str
    key: bytes
    idle_ms: int
    idle_s: float
    secure: bool


def _keys(request: web.Request) -> _Keys | None:
    admin = request.app[CONFIG].active.loaded.config.admin
    if admin.token is None:
        return None
    token = admin.token.get_secret_value()
    secure = request.secure or admin.secure_cookie
    return _Keys(token, signing_key(token), round(admin.session_idle * 1000), admin.session_idle, secure)


def _arrival(request: web.Request) -> tuple[_Keys, int, Session | None] | None:
    """The session keys, the time and the request's session (None if it has none); None while the console is off."""
    keys = _keys(request)
    if keys is None:
        return None
    now_ms = request.app[CLOCK].now_ms()
    return keys, now_ms, request.app[SESSIONS].current(request, keys.key, keys.idle_ms, now_ms)


def console_off() -> web.Response:
    return error_response(404, "the console is off; set admin.token to turn it on")


def console_page(handler: ConsoleHandler, activity: bool = True) -> Handler:
    """`handler` behind the session check, and for a POST the CSRF check.

    A request restarts the session's idle clock unless `activity` is false: what a page asks for
    by itself (live updates) must not keep an abandoned session open.
    """

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        arrival = _arrival(request)
        if arrival is None:
            return console_off()
        keys, now_ms, session = arrival
        if session is None or not session.logged_in:
            if request.method in ("GET", "HEAD"):
                raise web.HTTPSeeOther(f"{LOGIN}?next={quote(request.path_qs, safe='')}")
            return refusal(403, "Your session has ended. Log in again, then send the form again.")
        form: Form | None = None
        if request.method == "POST":
            form = await request.post()
            if not csrf_matches(session, form.get("csrf")):
                return refusal(403, "This form's CSRF token is missing or out of date. Reload the page and try again.")
        active = request.app[CONFIG].active
        visit = Visit(session, now_ms, active.loaded, form, active.masker)
        try:
            response = await handler(request, visit)
        except (FilterError, NotFound, StoreUnavailable) as exc:
            status = 400 if isinstance(exc, FilterError) else 404 if isinstance(exc, NotFound) else 503
            response = visit.page("error.html", status, message=visit.masker.url(str(exc)))
        fresh = touched(session, now_ms) if activity else None
        if fresh is not None:
            set_cookie(response, fresh, keys.key, keys.idle_s, keys.secure)
        return response

    return guarded


def refusal(status: int, message: str) -> web.Response:
    return html("refused.html", status, message=message, logged_in=False)


async def login_form(request: web.Request) -> web.StreamResponse:
    arrival = _arrival(request)
    if arrival is None:
        return console_off()
    keys, now_ms, session = arrival
    next_path = _next_path(request.query.get("next"))
    if session is not None and session.logged_in:
        raise web.HTTPSeeOther(next_path)
    return _login_page(keys, session or Session.new(False, now_ms), next_path, 200, None)


async def log_in(request: web.Request) -> web.StreamResponse:
    arrival = _arrival(request)
    if arrival is None:
        return console_off()
    keys, now_ms, session = arrival
    form = await request.post()
    next_path = _next_path(form.get("next"))
    if session is None or not csrf_matches(session, form.get("csrf")):
        message = "The login form had expired. Enter the token again."
        return _login_page(keys, Session.new(False, now_ms), next_path, 403, message)
    given = form.get("token")
    right, wait_ms = request.app[TOKEN_GUESSES].attempt(client_of(request.remote), now_ms, lambda: (
        isinstance(given, str) and hmac.compare_digest(given.encode(), keys.token.encode())))
    if wait_ms > 0:
        message, headers = waiting(wait_ms)
        page = _login_page(keys, session, next_path, 429, f"{message.capitalize()}.")
        page.headers.update(headers)
        return page
    if not right:
        return _login_page(keys, session, next_path, 401, "Wrong token.")
    response = web.HTTPSeeOther(next_path)
    set_cookie(response, Session.new(True, now_ms), keys.key, keys.idle_s, keys.secure)  # a new id: no fixation
    raise response


async def log_out(request: web.Request, visit: Visit) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    admin = visit.loaded.config.admin
    sessions.revoke(visit.session, round(admin.session_idle * 1000))
    sessions.forget_expired(visit.now_ms)
    response = web.HTTPSeeOther(LOGIN)
    response.del_cookie(COOKIE, path=COOKIE_PATH)
    raise response


def _login_page(keys: _Keys, session: Session, next_path: str, status: int, message: str | None) -> web.Response:
    response = html("login.html", status, csrf=session.csrf, next_path=next_path, message=message, logged_in=False)
    set_cookie(response, session, keys.key, keys.idle_s, keys.secure)
    return response


def _next_path(value: object) -> str:
    """Where to go after logging in: a console path, never another site."""
    if isinstance(value, str) and value.startswith(HOME) and "//" not in value and "\\" not in value:
        return value
    return HOME


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the console's answers, errors and redirects included, carry the security headers."""
    if request.path == "/console" or request.path.startswith("/console/"):
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
