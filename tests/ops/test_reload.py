"""Hot reload: edits to the config file under a running gateway, SIGHUP to a real process, the worker's new settings."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.clock import FakeClock
from gateway.config.schema import DestinationConfig, GatewayConfig
from gateway.delivery.send import make_session
from gateway.delivery.worker import Worker
from gateway.ingest.signature import sign
from gateway.model import DeliveryFilter, DeliveryStatus, NewDelivery, NewEvent, RenderedRequest
from gateway.ops.config_holder import ConfigHolder
from gateway.ops.reload import needs_restart
from gateway.routing.compiled import load_config
from gateway.store.sqlite import SqliteStore
from gateway.web.app import create_app
from gateway.web.keys import CONFIG, STORE
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.fakes import HANG, FakeDestination

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]
REPO = Path(__file__).resolve().parents[2]
SMS = fixture_bytes("incoming-sms.json")
VIP = fixture_bytes("incoming-email-with-labels.json")


# --- a real gateway process --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _open_for_output(path: Path) -> IO[bytes]:
    return path.open("wb")


@dataclass
class GatewayProcess:
    """`gateway serve --log-format json` in a child process; its stdout and stderr go to files."""

    process: asyncio.subprocess.Process
    port: int
    stdout_path: Path
    stderr_path: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8") + self.stderr_path.read_text(encoding="utf-8")

    def log_records(self) -> list[dict[str, Any]]:
        """Every line of stderr, each a JSON object (json.loads fails the test on any other line)."""
        lines = self.stderr_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]

    async def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], count: int = 1) -> list[dict[str, Any]]:
        """The log records matching `predicate`, once there are `count` of them (10 s at most)."""
        async with asyncio.timeout(10):
            while True:
                found = [record for record in self.log_records() if predicate(record)]
                if len(found) >= count:
                    return found
                await asyncio.sleep(0.05)

    async def post(self, path: str, body: bytes, secret: str = FIXTURE_SECRET) -> tuple[int, dict[str, Any]]:
        headers = {"X-Hook-Signature": sign(secret.encode(), body)}
        async with aiohttp.ClientSession() as session, session.post(self.url(path), data=body, headers=headers) as r:
            return r.status, await r.json()

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)


async def _until_healthy(gateway: GatewayProcess) -> None:
    async with asyncio.timeout(20), aiohttp.ClientSession() as session:
        while gateway.process.returncode is None:
            try:
                async with session.get(gateway.url("/healthz")) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway exited with {gateway.process.returncode}:\n{gateway.output()}")


async def start_gateway(config: Path, env: dict[str, str] | None = None) -> GatewayProcess:
    """Start a gateway on a free port and wait until it answers /healthz."""
    port = free_port()
    stdout_path, stderr_path = config.with_suffix(".stdout"), config.with_suffix(".stderr")
    with _open_for_output(stdout_path) as stdout, _open_for_output(stderr_path) as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "serve", "-c", str(config), "--port", str(port), "--log-format", "json",
            stdout=stdout, stderr=stderr, stdin=asyncio.subprocess.DEVNULL, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )
    gateway = GatewayProcess(process, port, stdout_path, stderr_path)
    try:
        await _until_healthy(gateway)
    except BaseException:
        await stop_gateway(gateway)
        raise
    return gateway


async def stop_gateway(gateway: GatewayProcess) -> None:
    if gateway.process.returncode is None:
        gateway.process.terminate()
    try:
        async with asyncio.timeout(20):
            await gateway.process.wait()
    except TimeoutError:
        gateway.process.kill()
        await gateway.process.wait()


# --- editing the file under a running server ---------------------------------------------------------------------

def base_config(first_url: str) -> str:
    return f"""\
storage: {{path: gateway.db}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  first: {{url: "{first_url}"}}
routes:
  - name: vip
    when: {{path: "$.conversation.shared_labels[*].name", equals: VIP}}
    send: [{{to: first}}]
"""


def with_sms_route(first_url: str, second_url: str) -> str:
    routes = """\
  - name: sms
    when: {path: $.rule.type, equals: incoming_sms_message}
    send: [{to: second, body: {text: "sms {{ message.preview }}"}}]
"""
    second = f'  second: {{url: "{second_url}", timeout: 2s}}\n'
    return (base_config(first_url) + routes).replace("destinations:\n", "destinations:\n" + second)


def replace_file(path: Path, text: str) -> None:
    """Write the file whole, as an editor that saves atomically does."""
    staged = path.with_suffix(".tmp")
    staged.write_text(text, encoding="utf-8")
    staged.replace(path)


async def reloads(client: Client, result: str) -> float:
    response = await client.get("/metrics")
    for line in (await response.text()).splitlines():
        if line.startswith(f'gateway_config_reloads_total{{result="{result}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("gateway_config_reloads_total is missing")


async def wait_for_reloads(client: Client, result: str, count: int) -> None:
    async with asyncio.timeout(10):
        while True:
            if await reloads(client, result) >= count:
                return
            await asyncio.sleep(0.1)


async def serving(aiohttp_client: MakeClient, path: Path, **options: Any) -> Client:
    """A client of the gateway app serving the config file at `path` (`options` go to `create_app`)."""
    return await aiohttp_client(create_app(ConfigHolder(load_config(path, environ={})), **options))


async def post(client: Client, body: bytes) -> dict[str, Any]:
    response = await client.post("/hooks/missive", data=body, headers={"X-Hook-Signature": sign(
        FIXTURE_SECRET.encode(), body)})
    assert response.status == 200
    document: dict[str, Any] = await response.json()
    return document


async def test_edited_config_applies_to_the_next_event_and_a_broken_one_is_rejected(
    aiohttp_client: MakeClient, write_config: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.reload")
    async with FakeDestination() as first, FakeDestination() as second:
        path = write_config(base_config(first.url()))
        client = await serving(aiohttp_client, path)
        assert (await post(client, SMS))["deliveries"] == 0  # no route for SMS yet

        replace_file(path, with_sms_route(first.url(), second.url()))
        await wait_for_reloads(client, "applied", 1)
        assert (await post(client, SMS + b"\n"))["deliveries"] == 1  # a new body: not a duplicate
        await second.wait_for_requests(1)

        broken = with_sms_route(first.url(), second.url()).replace("timeout: 2s", "timout: 2s")
        replace_file(path, broken.replace("first: {url:", "first: {concurrency: 0, url:"))
        await wait_for_reloads(client, "failed", 1)
        assert (await post(client, SMS + b"\n\n"))["deliveries"] == 1  # the previous config still serves
        await second.wait_for_requests(2)

    assert json.loads(second.received[0].body) == {"text": "sms Is the Elm St pickup counter open on Saturday?"}
    assert await reloads(client, "applied") == 1
    errors = [r.getMessage() for r in caplog.records if r.name == "gateway.reload" and r.levelno == logging.ERROR]
    assert errors[0].startswith("config reload (file changed) rejected, 2 problems")
    assert errors[1:] == [
        f"{path}: line 5: destinations.second.timout: unknown key 'timout'; did you mean 'timeout'?",
        f"{path}: line 6: destinations.first.concurrency: Input should be greater than or equal to 1",
    ]


async def test_settings_bound_at_start_are_reported_and_the_rest_applied(
    aiohttp_client: MakeClient, write_config: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.reload")
    async with FakeDestination() as first, FakeDestination() as second:
        path = write_config(base_config(first.url()))
        client = await serving(aiohttp_client, path)
        store = client.app[STORE]
        edited = with_sms_route(first.url(), second.url()).replace("{path: gateway.db}", "{path: new.db}")
        replace_file(path, "server: {port: 9999, max_body: 8KiB}\n" + edited)
        await wait_for_reloads(client, "applied", 1)
        assert (await post(client, SMS))["deliveries"] == 1
        too_large = await client.post("/hooks/missive", data=b'{"rule": "' + b"x" * 9000 + b'"}')

    assert too_large.status == 413  # server.max_body applies at once
    assert client.app[STORE] is store and not (path.parent / "new.db").exists()
    assert client.app[CONFIG].active.loaded.config.server.port == 9999
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.reload" and r.levelno == logging.WARNING]
    assert warnings == [
        "config reload: server.port changed; it needs a restart to take effect",
        "config reload: storage.path changed; it needs a restart to take effect",
    ]


async def test_needs_a_restart_compares_with_the_settings_in_force(
    aiohttp_client: MakeClient, write_config: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.reload")
    async with FakeDestination() as first:
        path = write_config(base_config(first.url()))
        client = await serving(aiohttp_client, path)
        moved = "server: {port: 9999}\n" + base_config(first.url())
        edits = [
            moved,
            moved.replace("port: 9999}", "port: 9999, max_body: 8KiB}"),  # the new port still waits for a restart
            base_config(first.url()) + "\n",  # back to the port in force: nothing waits any more
        ]
        warned = []
        for count, text in enumerate(edits, start=1):
            caplog.clear()
            replace_file(path, text)
            await wait_for_reloads(client, "applied", count)
            warned.append([r.getMessage() for r in caplog.records if r.levelno == logging.WARNING])

    port_waits = ["config reload: server.port changed; it needs a restart to take effect"]
    assert warned == [port_waits, port_waits, []]


async def test_a_setting_the_command_line_gave_does_not_ask_for_a_restart(
    aiohttp_client: MakeClient, write_config: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    """`serve --port 9000` listens on 9000 whatever server.port says, before a restart and after."""
    caplog.set_level(logging.INFO, logger="gateway.reload")
    unused = "http://127.0.0.1:9/"  # nothing is delivered
    path = write_config(base_config(unused))
    client = await serving(aiohttp_client, path, overridden=frozenset({"server.port"}))

    replace_file(path, "server: {port: 9999, shutdown_grace: 3s}\n" + base_config(unused))
    await wait_for_reloads(client, "applied", 1)

    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith("config reload: ")]
    assert said == [
        (logging.INFO, "config reload: server.port changed; the command line sets it, so it stays as it is"),
        (logging.WARNING, "config reload: server.shutdown_grace changed; it needs a restart to take effect"),
    ]


def config_with(**sections: Any) -> GatewayConfig:
    return GatewayConfig.model_validate({"sources": {"missive": {}}, **sections})


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param({}, {}, [], id="unchanged"),
        pytest.param({}, {"server": {"max_body": "2MiB"}, "routes": []}, [], id="live-settings"),
        pytest.param({"server": {"port": 8080}}, {"server": {"port": 8081}}, ["server.port"], id="port"),
        pytest.param({}, {"server": {"host": "127.0.0.1", "shutdown_grace": "1s"}},
                     ["server.host", "server.shutdown_grace"], id="host-and-grace"),
        pytest.param({}, {"storage": {"backend": "redis", "url": "redis://localhost/0"}},
                     ["storage.backend", "storage.url"], id="backend"),
        pytest.param({"storage": {"retention": "1d"}}, {"storage": {"retention": "2d"}}, ["storage.retention"],
                     id="retention"),
        pytest.param({}, {"admin": {"port": 9090, "token": "t", "session_idle": "5m"}}, ["admin.port"],
                     id="admin-listener"),
    ],
)
def test_needs_restart(old: dict[str, Any], new: dict[str, Any], expected: list[str]) -> None:
    assert needs_restart(config_with(**old), config_with(**new)) == expected


# --- SIGHUP to a real process ------------------------------------------------------------------------------------

async def test_sighup_reloads_a_real_process(tmp_path: Path) -> None:
    template = tmp_path / "note.j2"
    template.write_text("before: {{ message.preview }}", encoding="utf-8")
    async with FakeDestination() as crm:
        config = tmp_path / "config.yaml"
        config.write_text(textwrap.dedent(f"""\
            storage: {{path: gateway.db}}
            sources:
              missive: {{secrets: ["{FIXTURE_SECRET}"]}}
            destinations:
              crm: {{url: "{crm.url()}"}}
            routes:
              - name: sms
                send: [{{to: crm, template_file: note.j2}}]
            """), encoding="utf-8")
        gateway = await start_gateway(config)
        try:
            assert (await gateway.post("/hooks/missive", SMS))[0] == 200
            await crm.wait_for_requests(1)
            # Only the template changes: the config file's fingerprint does not, so only SIGHUP reloads.
            template.write_text("after: {{ message.preview }}", encoding="utf-8")
            gateway.signal(signal.SIGHUP)
            reloaded = await gateway.wait_for_log(lambda record: record["msg"].startswith("config reloaded (SIGHUP)"))
            assert (await gateway.post("/hooks/missive", SMS + b"\n"))[0] == 200
            await crm.wait_for_requests(2)
        finally:
            await stop_gateway(gateway)

    assert gateway.process.returncode == 0
    assert [request.body.decode().split(":")[0] for request in crm.received] == ["before", "after"]
    assert reloaded[0]["logger"] == "gateway.reload"


async def test_a_file_renamed_over_the_config_reloads_a_real_process(tmp_path: Path) -> None:
    """What editors that save atomically do (and what only a mounted folder, not a mounted file, passes on to a
    container): a new file, a new inode, renamed over the config. The watcher follows the path, not the inode."""
    folder = tmp_path / "config"
    folder.mkdir()
    async with FakeDestination() as first, FakeDestination() as second:
        config = folder / "config.yaml"
        config.write_text(base_config(first.url()), encoding="utf-8")
        gateway = await start_gateway(config)
        try:
            assert (await gateway.post("/hooks/missive", SMS))[1]["deliveries"] == 0  # no route for SMS yet
            inode = config.stat().st_ino
            replace_file(config, with_sms_route(first.url(), second.url()))
            assert config.stat().st_ino != inode
            await gateway.wait_for_log(lambda record: record["msg"].startswith("config reloaded (file changed)"))
            assert (await gateway.post("/hooks/missive", SMS + b"\n"))[1]["deliveries"] == 1
            await second.wait_for_requests(1)
        finally:
            await stop_gateway(gateway)
    assert gateway.process.returncode == 0


# --- the worker takes new destination settings -------------------------------------------------------------------

def destination(url: str, **fields: Any) -> DestinationConfig:
    return DestinationConfig.model_validate({"url": url, "retry": {"attempts": 1}, **fields})


async def enqueue(store: SqliteStore, destination_name: str, url: str, now_ms: int, count: int = 1) -> None:
    for _ in range(count):
        event_id = os.urandom(8).hex()
        request = RenderedRequest("POST", url, {"Content-Type": "application/json"}, b"{}")
        delivery = NewDelivery(os.urandom(8).hex(), "r", destination_name, 1, request)
        await store.ingest(NewEvent(event_id, "missive", now_ms, b"{}", event_id), [delivery], dedupe_window_ms=0)


@pytest.fixture
def store(sqlite_store: SqliteStore) -> SqliteStore:
    return sqlite_store


async def test_reconfigured_worker_counts_attempts_in_flight_against_the_new_limit(store: SqliteStore) -> None:
    async with FakeDestination([HANG]) as fake, make_session() as session:
        worker = Worker(store, {"d": destination(fake.url(), concurrency=1)}, session, poll_interval_s=0.05)
        running = asyncio.create_task(worker.run())
        try:
            await enqueue(store, "d", fake.url(), now_ms=0)
            await fake.wait_for_requests(1)
            await worker.reconfigure({"d": destination(fake.url(), concurrency=2)})
            await enqueue(store, "d", fake.url(), now_ms=0, count=2)
            await fake.wait_for_requests(2)
            await asyncio.sleep(0.3)  # the third would start here if the one in flight were forgotten
            in_flight_at_limit = fake.in_flight
            fake.release()
            await fake.wait_for_requests(3)
        finally:
            await worker.stop(grace_s=5)
            await running
    assert in_flight_at_limit == 2
    assert fake.max_in_flight == 2
    assert len(await store.list_deliveries(DeliveryFilter(status=DeliveryStatus.DELIVERED))) == 3


async def test_reconfigured_worker_uses_new_timeouts_and_new_destinations(store: SqliteStore) -> None:
    clock = FakeClock()
    async with FakeDestination([HANG]) as slow, FakeDestination([204]) as added, make_session() as session:
        worker = Worker(store, {"slow": destination(slow.url(), timeout="1h")}, session, clock=clock)
        await worker.reconfigure({"slow": destination(slow.url(), timeout="100ms"), "added": destination(added.url())})
        await enqueue(store, "slow", slow.url(), clock.now_ms())
        await enqueue(store, "added", added.url(), clock.now_ms())
        await worker.drain()
    dead = await store.list_deliveries(DeliveryFilter(status=DeliveryStatus.DEAD))
    delivered = await store.list_deliveries(DeliveryFilter(status=DeliveryStatus.DELIVERED))
    assert [d.destination for d in dead] == ["slow"]
    assert (dead[0].last_error or "").startswith("timeout: no answer within 0.1 s")
    assert [d.destination for d in delivered] == ["added"]
    assert worker.lease_ms == 40_000  # the longest timeout now is `added`'s default 10 s, plus the margin
