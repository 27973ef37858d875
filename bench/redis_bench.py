"""Ingest and end to end on Redis, one and two replicas, beside SQLite, in the same run.

Setups (each from an empty store):

- sqlite:            one gateway, SQLite file, pinned to core 0
- redis x1:          one gateway on Redis, core 0
- redis x2 (core 0): two replicas on one Redis, both on core 0: what sharing costs
- redis x2 (0+1):    two replicas, one per core; core 1 also runs Redis, the sink and the load

redis-server (appendonly yes, appendfsync always, as the README asks), the sink (tests/sink.py)
and the load generators run on core 1. With two replicas the load is spread over both ports.

- ingest: `serve --no-worker`, wrk POSTing one signed ~3 KB payload (bench/ingest.py's config,
  dedupe off) for `--seconds`, `--connections` in all (two wrk processes, half each, for two
  replicas: req/s is their sum, p50/p99 the worse of the two).
- e2e burst / paced: bench/e2e.py's rows: `--events` distinct signed events posted as fast as the
  gateways answer (32 connections in all) or at `--rate` events/s, delivered by the replicas'
  workers to the sink; deliveries/s, and p50/p99 from the 200 to the arrival at the sink.

    .venv/bin/python bench/redis_bench.py [--seconds 10] [--events 3000] [--rate 300] [--log-level info]
        [--backend sqlite,redis] [--replicas 1,2] [--parts ingest,e2e] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import e2e
import ingest
from common import FIXTURES, PYTHON, ROOT, WrkResult, cpu_s, free_port, pinned, running, wrk, wrk_post_script
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.ingest.signature import sign

SQLITE_STORAGE = "storage: {path: gateway.db}\n"
LOAD_CORE = 1


@dataclass(frozen=True)
class Setup:
    name: str
    backend: str
    cores: tuple[int, ...]  # one replica per entry, pinned to that core


SETUPS = [
    Setup("sqlite", "sqlite", (0,)),
    Setup("redis x1", "redis", (0,)),
    Setup("redis x2 (core 0)", "redis", (0, 0)),
    Setup("redis x2 (0+1)", "redis", (0, 1)),
]


@dataclass(frozen=True)
class IngestRow:
    setup: str
    result: WrkResult
    cpu_us_per_request: float  # the replicas' CPU time, all added up


@dataclass(frozen=True)
class Replicas:
    """The running replicas of a setup: where to post, and the CPU time they have used so far."""

    ports: list[int]
    pids: list[int]

    def hook_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/hooks/missive" for port in self.ports]

    def cpu_s(self) -> float:
        return sum(cpu_s(pid) for pid in self.pids)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A durable redis-server (fsync'd AOF) on core 1 in a temporary directory; yields its URL."""
    if not shutil.which("redis-server"):
        sys.exit("redis-server is not installed: apt-get install redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", "",
                   "--appendonly", "yes", "--appendfsync", "always"]  # fmt: skip
        process = subprocess.Popen(pinned(LOAD_CORE, command), stdout=subprocess.DEVNULL)
        try:
            _wait_for_ping(port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=20)


def _wait_for_ping(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    with Redis(port=port) as client:
        while True:
            try:
                client.ping()
                return
            except RedisConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@contextlib.contextmanager
def storage_for(setup: Setup) -> Iterator[str]:
    """The `storage:` line of the setup's config (a fresh Redis for a Redis setup)."""
    if setup.backend == "sqlite":
        yield SQLITE_STORAGE
        return
    with redis_server() as url:
        yield f'storage: {{backend: redis, url: "{url}"}}\n'


def with_storage(config: str, storage: str) -> str:
    """`config` (written for SQLite, as the other benchmarks' are) on `storage` instead."""
    if not config.startswith(SQLITE_STORAGE):
        raise ValueError("expected a config that starts with the SQLite storage line")
    return storage + config[len(SQLITE_STORAGE):]


@contextlib.contextmanager
def replicas(setup: Setup, config: Path, *extra: str) -> Iterator[Replicas]:
    """`gateway serve` per replica, pinned as the setup says, once all answer."""
    ports = [free_port() for _ in setup.cores]
    pids = []
    with contextlib.ExitStack() as stack:
        for core, port in zip(setup.cores, ports, strict=True):
            command = [PYTHON, "-m", "gateway", "serve", "-c", str(config), "--port", str(port), *extra]
            process = stack.enter_context(running(pinned(core, command), f"http://127.0.0.1:{port}/healthz"))
            pids.append(process.pid)
        yield Replicas(ports, pids)


def shares(urls: list[str], events: list[e2e.Event]) -> list[tuple[str, list[e2e.Event]]]:
    """Event n goes to url n mod len(urls)."""
    return [(url, events[n :: len(urls)]) for n, url in enumerate(urls)]


def ingest_row(setup: Setup, seconds: int, connections: int) -> IngestRow:
    body = (FIXTURES / "incoming-email-with-labels.json").read_bytes()
    headers = {"Content-Type": "application/json", "X-Hook-Signature": sign(ingest.SECRET.encode(), body)}
    with tempfile.TemporaryDirectory() as tmp, storage_for(setup) as storage:
        config = Path(tmp) / "config.yaml"
        config.write_text(with_storage(ingest.CONFIG, storage))
        lua = wrk_post_script(Path(tmp) / "post.lua", body, headers)
        with replicas(setup, config, "--no-worker", "--log-level", "warning") as running_replicas:
            urls = running_replicas.hook_urls()
            per_url = max(1, connections // len(urls))
            with ThreadPoolExecutor(len(urls)) as pool:
                list(pool.map(lambda url: wrk(url, lua, 2, per_url, core=LOAD_CORE), urls))  # warm-up
                cpu_before_s = running_replicas.cpu_s()
                results = list(pool.map(lambda url: wrk(url, lua, seconds, per_url, core=LOAD_CORE), urls))
                cpu_used_s = running_replicas.cpu_s() - cpu_before_s
    requests_per_s = sum(result.requests_per_s for result in results)
    return IngestRow(
        setup.name,
        WrkResult(
            requests_per_s=requests_per_s,
            p50_ms=max(result.p50_ms for result in results),
            p99_ms=max(result.p99_ms for result in results),
            non_2xx=sum(result.non_2xx for result in results),
        ),
        cpu_us_per_request=cpu_used_s / (requests_per_s * seconds) * 1e6,
    )


async def spread_burst(urls: list[str], events: list[e2e.Event]) -> e2e.Load:
    """bench/e2e.py's burst, its connections shared out over `urls`."""
    load = e2e.Load(time.time(), {})
    per_url = max(1, e2e.CONNECTIONS // len(urls))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=e2e.CONNECTIONS)) as session:

        async def connection(url: str, queue: Iterator[e2e.Event]) -> None:
            for event in queue:
                await e2e.post(session, url, event, load)

        queues = [(url, iter(share)) for url, share in shares(urls, events)]
        await asyncio.gather(*(connection(url, queue) for url, queue in queues for _ in range(per_url)))
    return load


async def spread_paced(urls: list[str], events: list[e2e.Event], rate_per_s: float) -> e2e.Load:
    """bench/e2e.py's paced load, one share per URL at an equal share of the rate; the loads merged."""
    rate_each_per_s = rate_per_s / len(urls)
    loads = await asyncio.gather(*(e2e.paced(url, share, rate_each_per_s) for url, share in shares(urls, events)))
    return e2e.Load(
        started_s=min(load.started_s for load in loads),
        acknowledged_s={key: at for load in loads for key, at in load.acknowledged_s.items()},
        failed_posts=sum(load.failed_posts for load in loads),
    )


def e2e_row(setup: Setup, name: str, events: int, rate_per_s: float | None, log_level: str) -> e2e.Row:
    with tempfile.TemporaryDirectory() as tmp, storage_for(setup) as storage:
        config = Path(tmp) / "config.yaml"
        sink_port = free_port()
        config.write_text(with_storage(e2e.config_text(sink_port, fanout=1, concurrency=32), storage))
        sink_url = f"http://127.0.0.1:{sink_port}"
        sink = pinned(LOAD_CORE, [PYTHON, str(ROOT / "tests" / "sink.py"), "--port", str(sink_port)])
        bodies = list(e2e.signed_events(events))
        with (
            running(sink, f"{sink_url}/count"),
            replicas(setup, config, "--log-level", log_level) as running_replicas,
            asyncio.Runner(loop_factory=e2e._loop_factory()) as runner,
        ):
            urls = running_replicas.hook_urls()
            cpu_before_s = running_replicas.cpu_s()
            posting = spread_burst(urls, bodies) if rate_per_s is None else spread_paced(urls, bodies, rate_per_s)
            load = runner.run(posting)
            seen = runner.run(e2e.arrivals(sink_url, len(load.acknowledged_s)))
            cpu_used_s = running_replicas.cpu_s() - cpu_before_s
    return e2e.measure(f"{setup.name} {name}", load, seen, events, drain=False, gateway_cpu_s=cpu_used_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="wrk run per ingest row")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections per ingest row, in all")
    parser.add_argument("--events", type=int, default=3000, help="events per end-to-end row")
    parser.add_argument("--rate", type=float, default=300, help="events/s of the paced end-to-end rows")
    parser.add_argument("--log-level", default="info", help="the gateways' in the end-to-end rows")
    parser.add_argument("--backend", default="sqlite,redis", help="setups of these backends only (comma-separated)")
    parser.add_argument("--replicas", default="1,2", help="setups with these replica counts only (comma-separated)")
    parser.add_argument("--parts", default="ingest,e2e", help="which benchmarks to run (comma-separated)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each row; the best is shown (a busy machine)")
    args = parser.parse_args()
    backends, counts, parts = (set(value.split(",")) for value in (args.backend, args.replicas, args.parts))
    setups = [setup for setup in SETUPS if setup.backend in backends and str(len(setup.cores)) in counts]
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {LOAD_CORE})
    rounds = range(args.repeat)
    ingest_runs = [[ingest_row(setup, args.seconds, args.connections) for setup in setups if "ingest" in parts]
                   for _ in rounds]  # fmt: skip
    e2e_runs = [[row for setup in setups if "e2e" in parts for row in (
        e2e_row(setup, "burst", args.events, None, args.log_level),
        e2e_row(setup, f"paced {args.rate:g}/s", args.events, args.rate, args.log_level),
    )] for _ in rounds]  # fmt: skip
    ingest_rows = [max(runs, key=lambda row: row.result.requests_per_s) for runs in zip(*ingest_runs, strict=True)]
    e2e_rows = [max(runs, key=lambda row: row.deliveries_per_s) for runs in zip(*e2e_runs, strict=True)]
    if args.repeat > 1:
        print(f"each row: the best of {args.repeat} runs (by req/s, or deliveries/s), the setups taking turns")
    print(f"ingest: wrk {args.connections} connections in all, {args.seconds} s, worker off")
    print(f"{'setup':<20}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}{'CPU µs/req':>12}")
    for row in ingest_rows:
        result = row.result
        print(f"{row.setup:<20}{result.requests_per_s:>10.0f}{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}"
              f"{result.non_2xx:>10}{row.cpu_us_per_request:>12.0f}")
    print(f"\nend to end: {args.events} events a row, concurrency 32, log level {args.log_level}")
    print(f"{'row':<30}{'deliv.':>8}{'ingest/s':>10}{'deliv./s':>10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}"
          f"{'CPU µs/deliv.':>15}")
    for e2e_result in e2e_rows:
        print(f"{e2e_result.name:<30}{e2e_result.deliveries:>8}{e2e_result.ingest_per_s:>10.0f}"
              f"{e2e_result.deliveries_per_s:>10.0f}{e2e_result.p50_ms:>10.1f}{e2e_result.p99_ms:>10.1f}"
              f"{e2e_result.failed_posts:>8}{e2e_result.cpu_us_per_delivery:>15.0f}")
    print("CPU µs: the replicas' CPU time (all threads, added up) per request or per delivery (ingest included)")


if __name__ == "__main__":
    main()
