"""A gateway with the console on a real server, and a browser-like client that logs in and fills forms."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, FormData, web
from aiohttp.test_utils import TestClient

from gateway.clock import Clock
from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import load_config
from gateway.web.app import create_app
from tests.web.test_admin import ADMIN, ADMIN_TOKEN, ENV

Client = TestClient[web.Request, web.Application]
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Console:
    """A test client used as a browser would: it keeps cookies and sends each form with the page's CSRF token."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.app = client.app

    async def login(self, token: str = ADMIN_TOKEN, next_path: str | None = None) -> ClientResponse:
        form = await self.page("/console/login")
        fields = {"csrf": csrf_of(form), "token": token, **({"next": next_path} if next_path else {})}
        return await self.client.post("/console/login", data=fields, allow_redirects=False)

    async def page(self, path: str, status: int = 200) -> str:
        response = await self.client.get(path, allow_redirects=False)
        text = await response.text()
        assert response.status == status, text
        return text

    async def csrf(self) -> str:
        return csrf_of(await self.page("/console/config"))

    async def post(
        self, path: str, fields: Mapping[str, str] | Sequence[tuple[str, str]] = (), with_csrf: bool = True
    ) -> ClientResponse:
        pairs = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
        if with_csrf:
            pairs.append(("csrf", await self.csrf()))
        return await self.client.post(path, data=pairs, allow_redirects=False)

    async def upload(self, path: str, name: str, content: bytes, **fields: str) -> ClientResponse:
        form = FormData()
        form.add_field("csrf", await self.csrf())
        for key, value in fields.items():
            form.add_field(key, value)
        form.add_field(name, content, filename="payload.json", content_type="application/json")
        return await self.client.post(path, data=form, allow_redirects=False)


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "the page has no CSRF field"
    return found.group(1)


@pytest.fixture
def console(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]], write_config: Callable[[str, str], Path]
) -> Callable[..., Awaitable[Console]]:
    """Start a gateway on `text` (plus the admin token unless `admin` says otherwise); no worker unless asked."""

    async def start(text: str, admin: str = ADMIN, run_worker: bool = False, clock: Clock | None = None,
                    environ: Mapping[str, str] = ENV, **kwargs: Any) -> Console:  # fmt: skip
        loaded = load_config(write_config(text + admin, "config.yaml"), environ=environ)
        app = create_app(ConfigHolder(loaded), run_worker=run_worker, clock=clock, **kwargs)
        return Console(await aiohttp_client(app))

    return start
