"""Sending one request to real local servers: answers, failures and outbound signing."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr

from gateway.config.schema import SignConfig
from gateway.delivery.send import EXCERPT_BYTES, Response, TransportFailure, make_session, send, signature
from gateway.model import RenderedRequest
from tests.fakes import DROP, HANG, FakeDestination, Reply, refused_url

SECRET_PATH = "/services/T000/B000/XXXXsecretXXXX"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with make_session() as client:
        yield client


def post(url: str, body: bytes = b'{"text": "hi"}', headers: dict[str, str] | None = None) -> RenderedRequest:
    return RenderedRequest("POST", url, headers or {"Content-Type": "application/json"}, body)


async def test_sends_the_rendered_request_as_is(session: aiohttp.ClientSession) -> None:
    async with FakeDestination([Reply(201, "created", {"X-Request-Id": "abc"})]) as fake:
        request = RenderedRequest(
            "PUT", fake.url("/crm?x=1"), {"Content-Type": "text/plain", "X-Gateway-Event-Id": "ev1"}, b"hello"
        )
        result = await send(session, request, timeout_s=5, sign=None)

    assert isinstance(result, Response)
    assert (result.status, result.body, result.headers["x-request-id"]) == (201, "created", "abc")
    assert result.elapsed_ms >= 0
    [received] = fake.received
    assert (received.method, received.path_qs, received.body) == ("PUT", "/crm?x=1", b"hello")
    assert received.headers["X-Gateway-Event-Id"] == "ev1"
    assert received.headers["Content-Type"] == "text/plain"
    assert "X-Gateway-Signature" not in received.headers


async def test_signs_the_body_when_asked(session: aiohttp.ClientSession) -> None:
    sign = SignConfig(secret=SecretStr("s3cret"), header="X-Signature")
    async with FakeDestination([200]) as fake:
        await send(session, post(fake.url(), body=b'{"a": 1}'), timeout_s=5, sign=sign)

    expected = "sha256=" + hmac.new(b"s3cret", b'{"a": 1}', hashlib.sha256).hexdigest()
    assert fake.received[0].headers["X-Signature"] == expected == signature("s3cret", b'{"a": 1}')


async def test_keeps_only_the_start_of_a_long_body(session: aiohttp.ClientSession) -> None:
    async with FakeDestination([Reply(500, "é" * 5000)]) as fake:
        result = await send(session, post(fake.url()), timeout_s=5, sign=None)

    assert isinstance(result, Response)
    assert result.status == 500
    assert len(result.body.encode()) == EXCERPT_BYTES
    assert set(result.body) == {"é"}


async def test_does_not_follow_redirects(session: aiohttp.ClientSession) -> None:
    async with FakeDestination([Reply(302, headers={"Location": "/elsewhere"})]) as fake:
        result = await send(session, post(fake.url()), timeout_s=5, sign=None)

    assert isinstance(result, Response) and result.status == 302
    assert len(fake.received) == 1


async def test_keeps_no_cookies_between_requests(session: aiohttp.ClientSession) -> None:
    async with FakeDestination([Reply(200, headers={"Set-Cookie": "session=abc; Path=/"}), 200]) as fake:
        await send(session, post(fake.url()), timeout_s=5, sign=None)
        await send(session, post(fake.url()), timeout_s=5, sign=None)

    assert "Cookie" not in fake.received[1].headers


async def test_a_hanging_server_times_out(session: aiohttp.ClientSession) -> None:
    async with FakeDestination([HANG]) as fake:
        result = await send(session, post(fake.url()), timeout_s=0.2, sign=None)

    assert isinstance(result, TransportFailure)
    assert (result.kind, result.message) == ("timeout", "no answer within 0.2 s")


async def test_a_dropped_connection_is_a_connection_failure(session: aiohttp.ClientSession) -> None:
    async with FakeDestination([DROP]) as fake:
        result = await send(session, post(fake.url()), timeout_s=5, sign=None)

    assert isinstance(result, TransportFailure)
    assert result.kind == "connection"
    assert "closed the connection" in result.message


async def test_a_refused_connection_never_reveals_the_url(session: aiohttp.ClientSession) -> None:
    url = refused_url(SECRET_PATH + "?sig=querysecret")
    result = await send(session, post(url), timeout_s=5, sign=None)

    assert isinstance(result, TransportFailure)
    assert result.kind == "connection"
    assert result.message.startswith("cannot connect to 127.0.0.1:")
    assert "secret" not in result.message


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://example.com" + SECRET_PATH, id="not-http"),
        pytest.param("http://" + SECRET_PATH, id="no-host"),
    ],
)
async def test_an_unusable_url_is_invalid(session: aiohttp.ClientSession, url: str) -> None:
    result = await send(session, post(url), timeout_s=5, sign=None)

    assert isinstance(result, TransportFailure)
    assert result.kind == "invalid"
    assert "secret" not in result.message


async def test_a_header_with_a_newline_is_invalid(session: aiohttp.ClientSession) -> None:
    async with FakeDestination([200]) as fake:
        request = post(fake.url(), headers={"X-Note": "line\r\nInjected: secret"})
        result = await send(session, request, timeout_s=5, sign=None)

    assert isinstance(result, TransportFailure)
    assert result.kind == "invalid"
    assert "secret" not in result.message
    assert fake.received == []
