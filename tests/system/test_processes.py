"""`gateway serve --processes N`: real processes sharing one port and one SQLite store under a supervisor."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.cli.processes import child_argv, cores_for, process_count
from gateway.errors import GatewayError
from tests.conftest import FIXTURE_SECRET
from tests.fakes import FakeDestination, Reply
from tests.processes import ROOT, GatewayProcess, free_port
from tests.sink import Sink
from tests.system.test_crash import Poster, ServerFactory, config_text, delivered_seqs, event_bodies, wait_until

EVENTS = 120


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@pytest.mark.parametrize(
    ("value", "expected"), [pytest.param("1", 1, id="one"), pytest.param("3", 3, id="three")]
)
def test_process_count(value: str, expected: int) -> None:
    assert process_count(value) == expected


def test_process_count_auto_is_one_per_usable_core() -> None:
    assert process_count("auto") == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_process_count_refuses_nonsense(value: str) -> None:
    with pytest.raises(GatewayError, match="--processes must be a positive number or 'auto'"):
        process_count(value)


def test_child_command_line_drops_processes() -> None:
    argv = child_argv(["serve", "-c", "x.yaml", "--processes", "2", "--port", "9", "--processes=3"])
    assert argv[1:] == ["-m", "gateway", "serve", "-c", "x.yaml", "--port", "9"]


async def test_processes_share_the_port_the_store_and_the_metrics(
    tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    sink = Sink()
    sink_server: TestServer = await aiohttp_server(sink.app())
    config = tmp_path / "config.yaml"
    config.write_text(config_text(str(sink_server.make_url("/sink"))), encoding="utf-8")
    async with GatewayProcess(config, free_port(), tmp_path / "gateway.log", ("--processes", "2")) as gateway:
        await gateway.start()
        workers = children(gateway.pid)
        assert len(workers) == 2, gateway.tail()
        before = {pid: cpu_ticks(pid) for pid in workers}
        poster = Poster(gateway.url("/hooks/missive"), event_bodies(EVENTS))
        # A connection per request, so the kernel spreads them over both processes' sockets.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            await asyncio.gather(*(poster.run(session) for _ in range(8)))
            await wait_until(lambda: len(set(delivered_seqs(sink))) == EVENTS, 30)
            async with session.get(gateway.url("/metrics")) as answer:
                metrics = await answer.text()
        assert sorted(delivered_seqs(sink)) == list(range(EVENTS)), "each event delivered once"
        used = {pid: cpu_ticks(pid) - before[pid] for pid in workers}
        assert all(ticks > 0 for ticks in used.values()), f"both processes worked: {used}"
        # Whichever process answered the scrape, it counts what both received.
        accepted = re.search(r'gateway_events_received_total\{outcome="accepted",source="missive"\} (\S+)', metrics)
        assert accepted is not None and float(accepted.group(1)) == EVENTS, metrics[:2000]

        os.kill(gateway.pid, signal.SIGHUP)
        await wait_until(lambda: gateway.tail(100_000).count("config reloaded (SIGHUP)") == 2, 10)
        assert await gateway.stop() == 0
        assert not any(alive(pid) for pid in workers)
    with socket.socket() as sock:  # the port is free again (SO_REUSEADDR: closed connections linger in TIME_WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", gateway.port))


USABLE_CORES = sorted(os.sched_getaffinity(0))
needs_two_cores = pytest.mark.skipif(len(USABLE_CORES) < 2, reason="pinning needs two usable cores")


def thread_cores(pid: int) -> list[set[int]]:
    """The cores each thread of `pid` may run on."""
    return [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]


@needs_two_cores
def test_cores_for_gives_each_process_a_core_of_its_own_or_pins_none() -> None:
    assert cores_for(2, pin=True) == USABLE_CORES[:2]
    assert cores_for(2, pin=False) == [None, None]
    assert cores_for(len(USABLE_CORES) + 1, pin=True) == [None] * (len(USABLE_CORES) + 1)  # two would share a core


@needs_two_cores
@pytest.mark.parametrize("pin", [True, False], ids=["pinned", "no-pin"])
async def test_each_process_and_all_its_threads_run_on_a_core_of_their_own(tmp_path: Path, pin: bool) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text("http://127.0.0.1:9/sink"), encoding="utf-8")
    extra = ("--processes", "2") if pin else ("--processes", "2", "--no-pin")
    async with GatewayProcess(config, free_port(), tmp_path / "gateway.log", extra) as gateway:
        await gateway.start()
        workers = children(gateway.pid)
        # the first process answering is enough for start(): wait for both to have made their threads (the loop,
        # the SQLite writer and reader, ...)
        await wait_until(lambda: all(len(thread_cores(pid)) >= 3 for pid in workers), timeout_s=30)
        threads = {pid: thread_cores(pid) for pid in workers}
        await gateway.stop()
    if pin:
        per_process = [{frozenset(each) for each in threads[pid]} for pid in workers]
        assert per_process == [{frozenset({USABLE_CORES[0]})}, {frozenset({USABLE_CORES[1]})}]
        assert f"on cores {USABLE_CORES[0]}, {USABLE_CORES[1]})" in gateway.tail()
    else:
        assert all(each == set(USABLE_CORES) for pid in workers for each in threads[pid])


def test_a_busy_port_fails_before_any_process_starts(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text("http://127.0.0.1:9/sink"), encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "-c", str(config), "--port", str(port), "--processes", "2"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 1
    assert f":{port}: Address already in use" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "gateway.db").exists(), "nothing opened the store"


def test_a_process_that_cannot_start_stops_them_all(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text("http://127.0.0.1:9/sink"), encoding="utf-8")
    (tmp_path / "gateway.db").write_bytes(b"this is not a SQLite file" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "-c", str(config), "--port", str(free_port()), "--processes", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "exited while starting" in result.stderr


async def test_processes_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text("http://127.0.0.1:9/sink"), encoding="utf-8")
    async with GatewayProcess(config, free_port(), tmp_path / "gateway.log", ("--processes", "2")) as gateway:
        await gateway.start()
        workers = children(gateway.pid)
        await gateway.kill()
        await wait_until(lambda: not any(alive(pid) for pid in workers), 15)
    assert "supervisor" in gateway.tail() and "is gone; stopping" in gateway.tail()


async def test_a_process_that_dies_later_is_restarted(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text("http://127.0.0.1:9/sink"), encoding="utf-8")
    async with GatewayProcess(config, free_port(), tmp_path / "gateway.log", ("--processes", "2")) as gateway:
        await gateway.start()
        first, second = children(gateway.pid)
        await asyncio.sleep(10.5)  # past the start window: a death now is a crash, not a failed start
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: len(children(gateway.pid)) == 2 and first not in children(gateway.pid), 15)
        assert second in children(gateway.pid)
        async with aiohttp.ClientSession() as session, session.get(gateway.url("/readyz")) as answer:
            assert answer.status == 200
        assert await gateway.stop() == 0
    assert re.search(rf"process 0 \(pid {first}\) exited with code -9; restarting it", gateway.tail()), gateway.tail()


def limited_config(crm_url: str, chat_url: str) -> str:
    return f"""\
storage: {{path: gateway.db}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  crm: {{url: "{crm_url}", concurrency: 1}}
  chat: {{url: "{chat_url}", rate_limit: 2/m}}
routes:
  - name: all
    send:
      - {{to: crm, body: {{seq: "{{{{ crash_test.seq }}}}"}}}}
      - {{to: chat, body: {{seq: "{{{{ crash_test.seq }}}}"}}}}
"""


async def test_processes_share_a_destinations_concurrency_and_rate(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    events = 8
    async with FakeDestination([Reply(200, delay_s=0.1)]) as crm, FakeDestination([200]) as chat:
        config.write_text(limited_config(crm.url("/notes"), chat.url("/post")), encoding="utf-8")
        async with GatewayProcess(config, free_port(), tmp_path / "gateway.log", ("--processes", "2")) as gateway:
            await gateway.start()
            poster = Poster(gateway.url("/hooks/missive"), event_bodies(events))
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                await asyncio.gather(*(poster.run(session) for _ in range(4)))
            await crm.wait_for_requests(events, timeout_s=30)
            await asyncio.sleep(0.5)  # both workers poll meanwhile; limits kept per process would send 4
            assert await gateway.stop() == 0
    assert crm.max_in_flight == 1, "one request at a time between both processes"
    assert len(chat.received) == 2, "2/m between both processes"


async def test_processes_stop_when_the_supervisor_is_killed_while_they_start(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text("http://127.0.0.1:9/sink"), encoding="utf-8")
    command = [sys.executable, "-m", "gateway", "serve", "-c", str(config), "--port", str(free_port()),
               "--processes", "2"]  # fmt: skip
    supervisor = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        await wait_until(lambda: len(children(supervisor.pid)) == 2, 15)
        workers = children(supervisor.pid)  # still importing: they have not looked at their parent yet
    finally:
        supervisor.kill()
        await supervisor.wait()
    await wait_until(lambda: not any(alive(pid) for pid in workers), 30)
