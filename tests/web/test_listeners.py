"""A second listener: with admin.port, /admin/, /console/ and /metrics answer there only, the hooks on the other."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.errors import GatewayError
from gateway.ingest.signature import sign
from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import load_config
from gateway.web.app import create_app
from gateway.web.listeners import bind
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.delivery.test_dead_letters import EMAIL, config_text
from tests.processes import GatewayProcess, free_port
from tests.web.test_admin import ADMIN_TOKEN, ENV

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# path -> (status on the public port, status on the admin port)
EXPECTED = {
    ("GET", "/healthz"): (200, 200),
    ("GET", "/readyz"): (200, 200),
    ("POST", "/hooks/missive"): (200, 404),
    ("GET", "/metrics"): (404, 200),
    ("GET", "/admin/config"): (404, 200),
    ("GET", "/console/login"): (404, 200),
    ("GET", "/console/static/console.css"): (404, 200),
}


def with_admin_listener(admin_port: int) -> str:
    return config_text("http://127.0.0.1:9/") + f'admin: {{token: "{ADMIN_TOKEN}", port: {admin_port}}}\n'


async def statuses(public: str, admin: str) -> dict[tuple[str, str], tuple[int, int]]:
    body = fixture_bytes(EMAIL)
    seen = {}
    async with aiohttp.ClientSession() as session:
        for method, path in EXPECTED:
            answers = []
            for base in (public, admin):
                data = body if method == "POST" else None
                headers = {**AUTH, "X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)}
                async with session.request(method, base + path, data=data, headers=headers,
                                           allow_redirects=False) as response:  # fmt: skip
                    answers.append(response.status)
            seen[(method, path)] = (answers[0], answers[1])
    return seen


@pytest.fixture
async def two_listeners(write_config: Callable[[str, str], Path]) -> AsyncIterator[tuple[str, str]]:
    """The application served on a public and an admin port in this process, as `gateway serve` binds them."""
    admin_port = free_port()
    loaded = load_config(write_config(with_admin_listener(admin_port), "config.yaml"), environ=ENV)
    runner = web.AppRunner(create_app(ConfigHolder(loaded), run_worker=False))
    await runner.setup()
    public_port = free_port()
    for port in (public_port, admin_port):
        await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{public_port}", f"http://127.0.0.1:{admin_port}"
    await runner.cleanup()


async def test_each_path_answers_on_its_own_side(two_listeners: tuple[str, str]) -> None:
    assert await statuses(*two_listeners) == EXPECTED


async def test_gateway_serve_binds_the_admin_listener(tmp_path: Path, write_config: Callable[[str, str], Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("CRM_TOKEN", ENV["CRM_TOKEN"])
    admin_port = free_port()
    config = write_config(with_admin_listener(admin_port), "config.yaml")
    async with GatewayProcess(config, free_port(), tmp_path / "gateway.log") as gateway:
        await gateway.start()
        seen = await statuses(gateway.url("").rstrip("/"), f"http://127.0.0.1:{admin_port}")
        assert await gateway.stop() == 0
    assert seen == EXPECTED, gateway.tail()


def test_a_busy_port_is_one_clear_error(write_config: Callable[[str, str], Path]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        loaded = load_config(write_config(with_admin_listener(busy), "config.yaml"), environ=ENV)
        with pytest.raises(GatewayError, match=rf"^cannot listen on 127\.0\.0\.1:{busy}: "):
            bind(loaded.config, "127.0.0.1", free_port())


def test_the_admin_port_cannot_be_the_public_one(write_config: Callable[[str, str], Path]) -> None:
    port = free_port()
    loaded = load_config(write_config(with_admin_listener(port), "config.yaml"), environ=ENV)
    with pytest.raises(GatewayError, match=rf"admin.port {port} is the public port too"):
        bind(loaded.config, "127.0.0.1", port)


EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def serve_example(tmp_path: Path, host: str, **env: str) -> subprocess.Popen[str]:
    environ = {key: value for key, value in os.environ.items() if key != "MISSIVE_SECRET"}
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "-c", str(EXAMPLE), "--host", host, "--port", str(free_port()),
         "--log-format", "text"],
        env={**environ, "GATEWAY_DB": str(tmp_path / "gateway.db"), **env}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def test_the_example_placeholder_secret_is_refused_beyond_loopback(tmp_path: Path) -> None:
    """What the image does when MISSIVE_SECRET is not given: one line saying what to set, before anything opens."""
    refused = serve_example(tmp_path, "0.0.0.0")
    output, _ = refused.communicate(timeout=60)
    assert refused.returncode == 1
    assert output.splitlines() == [
        "error: source 'missive' still has a placeholder secret ('change-me...') and the gateway would listen on "
        "0.0.0.0: set MISSIVE_SECRET to the secret of your Missive rule (or listen on 127.0.0.1 to try it)"
    ]
    assert not (tmp_path / "gateway.db").exists()


@pytest.mark.parametrize(
    ("host", "env"),
    [
        pytest.param("127.0.0.1", {}, id="loopback-with-the-placeholder"),
        pytest.param("0.0.0.0", {"MISSIVE_SECRET": "the-rule-secret-8f2c"}, id="any-address-with-a-secret"),
    ],
)
def test_the_example_serves_on_loopback_or_with_a_secret(tmp_path: Path, host: str, env: dict[str, str]) -> None:
    process = serve_example(tmp_path, host, **env)
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the gateway logs where it listens once it answers
            if "listening on http://" in line:
                break
        else:
            raise AssertionError("the gateway stopped before listening")
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert process.returncode == 0
