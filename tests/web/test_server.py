"""The gateway's HTTP server under hostile or clumsy clients: raw bytes over a real socket to the real server."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.ingest.signature import sign
from gateway.model import DeliveryFilter
from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import load_config
from gateway.web.app import create_app
from gateway.web.keys import STORE
from gateway.web.server import serving
from tests.conftest import FIXTURE_SECRET, fixture_bytes

CONFIG = f"""\
server: {{max_body: 4KiB, read_timeout: 300ms}}
storage: {{path: gateway.db}}
admin: {{token: "admin-token-for-tests"}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  crm: {{url: "http://127.0.0.1:9/crm"}}
routes:
  - name: everything
    send: [{{to: crm}}]
"""
EOF_WAIT_S = 10.0  # far beyond read_timeout: a connection still open by then was never going to be closed


@dataclass
class Served:
    app: web.Application
    port: int

    async def exchange(self, raw: bytes, then_close: bool = False) -> bytes:
        """Send `raw` and return everything the server answers until it closes the connection."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(raw)
            await writer.drain()
            if then_close:
                return b""
            async with asyncio.timeout(EOF_WAIT_S):
                return await reader.read()
        finally:
            writer.close()

    async def stored(self) -> int:
        return len(await self.app[STORE].list_deliveries(DeliveryFilter()))


@pytest.fixture
async def served(write_config: Callable[[str], Path]) -> AsyncIterator[Served]:
    loaded = load_config(write_config(CONFIG), environ={})
    app = create_app(ConfigHolder(loaded), run_worker=False)
    sock = socket.create_server(("127.0.0.1", 0))
    async with serving(app, [sock], loaded.config.server.read_timeout, shutdown_grace_s=1.0):
        yield Served(app, sock.getsockname()[1])


def request(method: str, path: str, headers: dict[str, bytes | str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [name.encode() + b": " + (value.encode() if isinstance(value, str) else value)
              for name, value in headers.items()]  # fmt: skip
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def answer(raw: bytes) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of the one answer in `raw`, checking the error shape every answer shares."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/json" in head.lower(), raw
    document = json.loads(body)
    if status >= 400:
        assert set(document) == {"error", "status"} and document["status"] == status, document
    return status, document


def signed_post(body: bytes, **headers: bytes | str) -> bytes:
    signature = sign(FIXTURE_SECRET.encode(), body)
    return request("POST", "/hooks/missive", {
        "X-Hook-Signature": signature, "Content-Length": str(len(body)), "Connection": "close", **headers
    }, body)  # fmt: skip


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(request("POST", "/hooks/missive", {"Content-Length": "abc"}), id="content-length-not-a-number"),
        pytest.param(b"POST /hooks/missive HTTP/1.1\r\nHost: x\r\nX-Caf\xe9: 1\r\n\r\n", id="header-name-not-ascii"),
        pytest.param(b"GARBAGE / HTTP/1.1\r\n\r\n", id="no-such-method"),
        pytest.param(b"POST /hooks/missive HTTP/1.1\r\nHost: x\r\nBroken header line\r\n\r\n", id="no-colon"),
    ],
)
async def test_requests_aiohttp_cannot_parse_get_the_json_error_shape(served: Served, raw: bytes) -> None:
    status, _ = answer(await served.exchange(raw))
    assert status == 400


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        pytest.param("/hooks/missive", {"X-Hook-Signature": b"sha256=\xe9\xe9\xff"}, 401, id="signature"),
        pytest.param("/hooks/missive", {"X-Hook-Signature": "sha256=" + "0" * 64, "X-Note": b"caf\xe9"}, 401,
                     id="another-header"),
        pytest.param("/admin/deliveries", {"Authorization": b"Bearer \xe9\xff"}, 401, id="admin-token"),
    ],
)
async def test_header_bytes_that_are_not_ascii_are_refused_not_a_crash(
    served: Served, path: str, headers: dict[str, bytes | str], status: int
) -> None:
    body = fixture_bytes("new-comment.json")
    raw = request("POST" if path.startswith("/hooks") else "GET", path, {
        **headers, "Content-Length": str(len(body)), "Connection": "close"
    }, body)  # fmt: skip
    assert answer(await served.exchange(raw))[0] == status
    assert await served.stored() == 0


async def test_headers_that_never_end_are_cut_off(served: Served) -> None:
    raw = b"POST /hooks/missive HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    assert await served.exchange(raw) == b""  # closed without an answer, well within EOF_WAIT_S


async def test_a_body_that_never_ends_gets_408_and_the_connection_closes(served: Served) -> None:
    raw = request("POST", "/hooks/missive", {"Content-Length": "1000"}, b'{"rule": ')
    status, document = answer(await served.exchange(raw))
    assert status == 408 and "server.read_timeout" in document["error"]
    metrics = await served.exchange(request("GET", "/metrics", {"Connection": "close"}))
    assert b'gateway_events_received_total{outcome="timeout",source="missive"} 1.0' in metrics


async def test_a_client_that_goes_away_is_counted_without_a_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await served.exchange(request("POST", "/hooks/missive", {"Content-Length": "1000"}, b"{"), then_close=True)
        async with asyncio.timeout(EOF_WAIT_S):
            while b'outcome="client_gone",source="missive"} 1.0' not in await served.exchange(  # noqa: ASYNC110
                request("GET", "/metrics", {"Connection": "close"})
            ):
                await asyncio.sleep(0.02)
    gone = [record for record in caplog.records if "closed the connection" in record.getMessage()]
    assert [record.levelno for record in gone] == [logging.DEBUG]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]


async def test_get_on_an_unknown_path_is_404_and_on_a_source_405(served: Served) -> None:
    assert answer(await served.exchange(request("GET", "/nothing/here", {"Connection": "close"})))[0] == 404
    raw = await served.exchange(request("GET", "/hooks/missive", {"Connection": "close"}))
    assert answer(raw)[0] == 405 and b"Allow: POST" in raw


async def test_expect_100_continue_over_max_body_is_413_without_continue(served: Served) -> None:
    raw = await served.exchange(request("POST", "/hooks/missive", {"Content-Length": "5000", "Expect": "100-continue"}))
    assert raw.startswith(b"HTTP/1.1 413 ")  # no "100 Continue" first: the client never sends the body
    assert answer(raw)[0] == 413


async def test_expect_100_continue_within_max_body_continues(served: Served) -> None:
    body = fixture_bytes("new-comment.json")
    raw = await served.exchange(signed_post(body, Expect="100-continue"))
    assert raw.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")
    assert answer(raw.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))[0] == 200


async def test_a_compressed_body_is_refused(served: Served) -> None:
    """The signature covers the bytes received: a body aiohttp would decompress first is not taken."""
    body = fixture_bytes("new-comment.json")
    compressed = gzip.compress(body)
    raw = request("POST", "/hooks/missive", {
        "X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body), "Content-Encoding": "gzip",
        "Content-Length": str(len(compressed)), "Connection": "close",
    }, compressed)  # fmt: skip
    status, document = answer(await served.exchange(raw))
    assert status == 415 and "uncompressed" in document["error"]
    assert await served.stored() == 0


async def test_json_nested_too_deep_is_400_at_the_door(served: Served) -> None:
    body = b'{"rule": {"type": "x"}, "deep": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    status, document = answer(await served.exchange(signed_post(body)))
    assert status == 400 and "deeper than 64" in document["error"]
    assert await served.stored() == 0
