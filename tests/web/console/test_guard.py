"""Who gets in: the console is off without a token, pages need a session, forms need the page's CSRF token."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie

import pytest
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.clock import FakeClock
from gateway.web.console.session import COOKIE
from gateway.web.token_guesses import LIMIT, WINDOW_MS
from tests.delivery.test_dead_letters import config_text
from tests.web.console.conftest import Console, csrf_of
from tests.web.test_admin import ADMIN_TOKEN, error_of

Start = Callable[..., Awaitable[Console]]
CONFIG = config_text("http://127.0.0.1:9/")
PAGES = ["/console/", "/console/dead-letters", "/console/config", "/console/playground", "/console/events/evt_x"]
FORMS = ["/console/logout", "/console/dead-letters/replay", "/console/deliveries/dlv_x/replay", "/console/playground"]
CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"


def set_cookie_of(response_headers: CIMultiDictProxy[str]) -> SimpleCookie:
    cookie: SimpleCookie = SimpleCookie()
    for header in response_headers.getall("Set-Cookie"):
        cookie.load(header)
    return cookie


@pytest.mark.parametrize("path", ["/console/", "/console/login", "/console/static/console.css", "/console/config"])
async def test_the_console_is_off_without_an_admin_token(console: Start, path: str) -> None:
    gateway = await console(CONFIG, admin="")
    message = await error_of(await gateway.client.get(path, allow_redirects=False), 404)
    assert message == "the console is off; set admin.token to turn it on"


@pytest.mark.parametrize("path", PAGES)
async def test_pages_redirect_to_the_login_form_without_a_session(console: Start, path: str) -> None:
    gateway = await console(CONFIG)
    response = await gateway.client.get(path, allow_redirects=False)
    location = URL(response.headers["Location"])
    assert (response.status, location.path, location.query["next"]) == (303, "/console/login", path)


async def test_logging_in_sets_a_strict_http_only_cookie_and_goes_where_it_was_asked(console: Start) -> None:
    gateway = await console(CONFIG)
    response = await gateway.login(next_path="/console/config")
    assert (response.status, response.headers["Location"]) == (303, "/console/config")
    cookie = set_cookie_of(response.headers)[COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/console"
    assert not cookie["secure"]  # plain HTTP and secure_cookie unset
    assert int(cookie["max-age"]) == 1800
    assert "Config in force" in await gateway.page("/console/config")


async def test_secure_cookie_marks_the_cookie_secure(console: Start) -> None:
    gateway = await console(CONFIG, admin=f'admin: {{token: "{ADMIN_TOKEN}", secure_cookie: true}}\n')
    response = await gateway.client.get("/console/login")
    assert set_cookie_of(response.headers)[COOKIE]["secure"]


@pytest.mark.parametrize("token", ["wrong", "", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1]])
async def test_a_wrong_token_is_refused(console: Start, token: str) -> None:
    gateway = await console(CONFIG)
    response = await gateway.login(token)
    assert response.status == 401
    assert "Wrong token." in await response.text()
    assert (await gateway.client.get("/console/config", allow_redirects=False)).status == 303


async def test_too_many_wrong_tokens_make_the_login_wait_then_it_works_again(console: Start) -> None:
    clock = FakeClock()
    gateway = await console(CONFIG, clock=clock)
    for _ in range(LIMIT):
        assert (await gateway.login("wrong")).status == 401

    refused = await gateway.login()
    seconds = WINDOW_MS // 1000
    assert (refused.status, refused.headers["Retry-After"]) == (429, str(seconds))
    assert f"Too many wrong admin tokens from this address: try again in {seconds} s." in await refused.text()
    assert (await gateway.client.get("/console/config", allow_redirects=False)).status == 303  # not logged in
    clock.advance(seconds)
    assert (await gateway.login()).status == 303
    assert "Config in force" in await gateway.page("/console/config")


async def test_the_token_is_compared_in_constant_time(console: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    gateway = await console(CONFIG)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    await gateway.login("guess")
    assert (b"guess", ADMIN_TOKEN.encode()) in compared


async def test_the_login_form_needs_its_csrf_token(console: Start) -> None:
    gateway = await console(CONFIG)
    await gateway.page("/console/login")
    response = await gateway.client.post("/console/login", data={"token": ADMIN_TOKEN}, allow_redirects=False)
    assert response.status == 403
    assert (await gateway.client.get("/console/config", allow_redirects=False)).status == 303


@pytest.mark.parametrize("path", FORMS)
@pytest.mark.parametrize("csrf", [None, "forged"], ids=["missing", "wrong"])
async def test_a_post_without_the_pages_csrf_token_is_403(console: Start, path: str, csrf: str | None) -> None:
    gateway = await console(CONFIG)
    await gateway.login()
    fields = {"csrf": csrf} if csrf else {}
    response = await gateway.post(path, {**fields, "scope": "filter", "payload": "{}"}, with_csrf=False)
    assert response.status == 403
    assert "CSRF token is missing or out of date" in await response.text()
    assert "Config in force" in await gateway.page("/console/config")  # still logged in: nothing was done


@pytest.mark.parametrize("path", FORMS)
async def test_a_post_without_a_session_is_403(console: Start, path: str) -> None:
    gateway = await console(CONFIG)
    response = await gateway.client.post(path, data={"csrf": "x"}, allow_redirects=False)
    assert response.status == 403


async def test_a_session_ends_after_its_idle_time_and_activity_keeps_it(console: Start) -> None:
    clock = FakeClock()
    gateway = await console(CONFIG, admin=f'admin: {{token: "{ADMIN_TOKEN}", session_idle: 10m}}\n', clock=clock)
    await gateway.login()
    for _ in range(3):  # 27 minutes of use, never 10 idle
        clock.advance(9 * 60)
        await gateway.page("/console/config")
    clock.advance(10 * 60 + 1)
    response = await gateway.client.get("/console/config", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/console/login")


async def test_live_updates_do_not_keep_an_abandoned_session_open(console: Start) -> None:
    clock = FakeClock()
    gateway = await console(CONFIG, admin=f'admin: {{token: "{ADMIN_TOKEN}", session_idle: 10m}}\n', clock=clock)
    await gateway.login()
    polls = []
    for _ in range(3):  # the events page polls while it stays open
        clock.advance(4 * 60)
        polls.append((await gateway.client.get("/console/events/rows?after=0:evt_", allow_redirects=False)).status)
    assert polls == [200, 200, 303]  # 12 minutes after the last page the user asked for, the session is over
    response = await gateway.client.get("/console/config", allow_redirects=False)
    assert response.status == 303 and response.headers["Location"].startswith("/console/login")


async def test_logging_out_ends_the_session_even_for_a_copied_cookie(console: Start) -> None:
    gateway = await console(CONFIG)
    await gateway.login()
    copied = gateway.client.session.cookie_jar.filter_cookies(gateway.client.make_url("/console/"))[COOKIE].value
    response = await gateway.post("/console/logout")
    assert (response.status, response.headers["Location"]) == (303, "/console/login")
    assert (await gateway.client.get("/console/config", allow_redirects=False)).status == 303
    replayed = await gateway.client.get("/console/config", cookies={COOKIE: copied}, allow_redirects=False)
    assert replayed.status == 303


@pytest.mark.parametrize("change", ["tampered", "other-token"])
async def test_a_cookie_not_signed_for_this_token_is_no_session(console: Start, change: str) -> None:
    gateway = await console(CONFIG)
    await gateway.login()
    jar = gateway.client.session.cookie_jar
    value = jar.filter_cookies(gateway.client.make_url("/console/"))[COOKIE].value
    if change == "tampered":
        payload, _, signature = value.partition(".")
        forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + signature
        response = await gateway.client.get("/console/config", cookies={COOKIE: forged}, allow_redirects=False)
    else:
        other = await console(CONFIG, admin='admin: {token: "another-admin-token"}\n')
        response = await other.client.get("/console/config", cookies={COOKIE: value}, allow_redirects=False)
    assert response.status == 303


@pytest.mark.parametrize("next_path", ["//evil.example/", "https://evil.example/", "/admin/config", "/console/\\x"])
async def test_login_never_sends_elsewhere(console: Start, next_path: str) -> None:
    gateway = await console(CONFIG)
    response = await gateway.login(next_path=next_path)
    assert response.headers["Location"] == "/console/"


@pytest.mark.parametrize("path", ["/console/login", "/console/config", "/console/static/console.js", "/console/nope"])
async def test_every_console_answer_carries_the_security_headers(console: Start, path: str) -> None:
    gateway = await console(CONFIG)
    await gateway.login()
    response = await gateway.client.get(path, allow_redirects=False)
    assert response.headers["Content-Security-Policy"] == CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


async def test_pages_hold_no_inline_script_or_style(console: Start) -> None:
    """The CSP would block them: everything comes from the vendored files."""
    gateway = await console(CONFIG)
    pages = [await gateway.page("/console/login")]
    await gateway.login()
    pages += [await gateway.page(path) for path in ["/console/config", "/console/playground", "/console/dead-letters"]]
    for page in pages:
        assert "<style" not in page and " style=" not in page and "javascript:" not in page
        assert page.count("<script") == page.count('<script src="/console/static/console.js" defer></script>')
        assert csrf_of(page)
