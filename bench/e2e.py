"""End to end: signed events in, deliveries out to a local sink; deliveries per second and
ingest-to-delivery latency.

The gateway (SQLite, logging at `--log-level`) runs pinned to core 0; this load generator
and the sink (tests/sink.py: answers 200 at once, records when each request arrived) share
core 1, when taskset exists. Each event is a distinct signed ~3 KB Missive payload; one
route sends it to `--fanout` destinations (all on the sink), each allowed `--concurrency`
requests in flight. Every row starts from an empty store.

- burst: `--events` posted over 32 connections as fast as the gateway answers, while its
  worker delivers. Deliveries/s: deliveries over the time from the first post to the last
  arrival at the sink.
- drain: the same events stored by `serve --no-worker` first (ingest/s is then ingest alone),
  then delivered by `gateway worker` alone. Deliveries/s: from the first arrival to the last.
- paced N/s: the events posted at a steady rate below capacity: the latency an operator
  sees in normal running.

Latency is from the moment the 200 came back to the client to the moment the sink read the
delivery (both wall clocks of this machine); a delivery can beat its 200 back to the client,
so the fastest ones read slightly below zero.

    .venv/bin/python bench/e2e.py [--events 5000] [--rates 300,600] [--fanout 1] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from common import FIXTURES, PYTHON, ROOT, cpu_s, free_port, pinned, running

from gateway.ingest.signature import sign

SECRET = "bench-secret"
CONNECTIONS = 32
SETTLE_TIMEOUT_S = 120.0

Event = tuple[bytes, dict[str, str]]


@dataclass(frozen=True)
class Options:
    events: int
    fanout: int
    concurrency: int
    log_level: str


@dataclass(frozen=True)
class Row:
    name: str
    events: int
    deliveries: int
    ingest_per_s: float
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    failed_posts: int
    cpu_us_per_delivery: float


@dataclass
class Load:
    """What the load generator saw: when each accepted event's 200 came back, and the posts that failed."""

    started_s: float
    acknowledged_s: dict[str, float]
    failed_posts: int = 0


def config_text(sink_port: int, fanout: int, concurrency: int) -> str:
    destinations = "\n".join(
        f'  d{n}: {{url: "http://127.0.0.1:{sink_port}/d{n}", concurrency: {concurrency}}}' for n in range(fanout)
    )
    sends = "\n".join(
        f'      - {{to: d{n}, body: {{seq: "{{{{ bench.seq }}}}", subject: "{{{{ message.subject }}}}"}}}}'
        for n in range(fanout)
    )
    return f"""\
storage: {{path: gateway.db}}
sources:
  missive: {{secrets: ["{SECRET}"]}}
destinations:
{destinations}
routes:
  - name: all
    send:
{sends}
"""


def signed_events(count: int) -> Iterator[Event]:
    payload = json.loads((FIXTURES / "incoming-email-with-labels.json").read_bytes())
    for seq in range(count):
        body = json.dumps({**payload, "bench": {"seq": seq}}).encode()
        yield body, {"Content-Type": "application/json", "X-Hook-Signature": sign(SECRET.encode(), body)}


async def post(session: aiohttp.ClientSession, url: str, event: Event, load: Load) -> None:
    body, headers = event
    async with session.post(url, data=body, headers=headers) as answer:
        document = await answer.json() if answer.status == 200 else None
    if document is None:
        load.failed_posts += 1
    else:
        load.acknowledged_s[document["event_id"]] = time.time()


async def burst(url: str, events: list[Event]) -> Load:
    load = Load(time.time(), {})
    queue = iter(events)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as session:

        async def connection() -> None:
            for event in queue:
                await post(session, url, event, load)

        await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    return load


async def paced(url: str, events: list[Event], rate_per_s: float) -> Load:
    load = Load(time.time(), {})
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        tasks = []
        for n, event in enumerate(events):
            await asyncio.sleep(max(0.0, started + n / rate_per_s - loop.time()))
            tasks.append(asyncio.create_task(post(session, url, event, load)))
        await asyncio.gather(*tasks)
    return load


async def arrivals(sink_url: str, expected: int) -> list[dict[str, object]]:
    """Every arrival, once the sink has `expected` of them (or SETTLE_TIMEOUT_S has passed)."""
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            async with session.get(f"{sink_url}/count") as answer:
                if await answer.json() >= expected:
                    break
            await asyncio.sleep(0.2)
        async with session.get(f"{sink_url}/arrivals") as answer:
            found: list[dict[str, object]] = await answer.json()
            return found


def percentile(values: list[float], fraction: float) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[round(fraction * 100) - 1]


def measure(
    name: str, load: Load, seen: list[dict[str, object]], events: int, drain: bool, gateway_cpu_s: float
) -> Row:
    at_s = sorted(float(str(arrival["at_s"])) for arrival in seen)
    latencies_ms = [
        (float(str(arrival["at_s"])) - load.acknowledged_s[str(arrival["event_id"])]) * 1000
        for arrival in seen
        if str(arrival["event_id"]) in load.acknowledged_s
    ]
    last_ack_s = max(load.acknowledged_s.values(), default=load.started_s)
    if drain:  # delivered after ingest ended: the rate over the arrivals, and no latency worth the name
        deliveries_per_s = (len(at_s) - 1) / (at_s[-1] - at_s[0]) if len(at_s) > 1 else float("nan")
        latencies_ms = []
    else:
        deliveries_per_s = len(at_s) / (at_s[-1] - load.started_s) if at_s else float("nan")
    return Row(
        name=name,
        events=events,
        deliveries=len(seen),
        ingest_per_s=len(load.acknowledged_s) / max(last_ack_s - load.started_s, 1e-9),
        deliveries_per_s=deliveries_per_s,
        p50_ms=percentile(latencies_ms, 0.5),
        p99_ms=percentile(latencies_ms, 0.99),
        failed_posts=load.failed_posts,
        cpu_us_per_delivery=gateway_cpu_s / len(seen) * 1e6 if seen else float("nan"),
    )


def run_row(name: str, options: Options, rate_per_s: float | None = None, drain: bool = False) -> Row:
    """One row from an empty store: post the events (as fast as possible, or at `rate_per_s`), collect
    the deliveries. `drain`: the worker is off while posting and runs alone afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        sink_port, gateway_port = free_port(), free_port()
        config.write_text(config_text(sink_port, options.fanout, options.concurrency))
        sink_url = f"http://127.0.0.1:{sink_port}"
        healthz = f"http://127.0.0.1:{gateway_port}/healthz"

        def gateway(command: str, *extra: str) -> list[str]:
            return pinned(0, [PYTHON, "-m", "gateway", command, "-c", str(config), "--port", str(gateway_port),
                              "--log-level", options.log_level, *extra])

        events = list(signed_events(options.events))
        url = f"http://127.0.0.1:{gateway_port}/hooks/missive"
        sink = pinned(1, [PYTHON, str(ROOT / "tests" / "sink.py"), "--port", str(sink_port)])
        with (
            running(sink, f"{sink_url}/count"),
            asyncio.Runner(loop_factory=_loop_factory()) as runner,
        ):
            with running(gateway("serve", *(["--no-worker"] if drain else [])), healthz) as serve:
                cpu_before_s = cpu_s(serve.pid)
                load = runner.run(burst(url, events) if rate_per_s is None else paced(url, events, rate_per_s))
                expected = len(load.acknowledged_s) * options.fanout
                seen = None if drain else runner.run(arrivals(sink_url, expected))
                gateway_cpu_s = cpu_s(serve.pid) - cpu_before_s
            if seen is None:
                with running(gateway("worker"), healthz) as worker:
                    cpu_before_s = cpu_s(worker.pid)
                    seen = runner.run(arrivals(sink_url, expected))
                    gateway_cpu_s += cpu_s(worker.pid) - cpu_before_s
    return measure(name, load, seen, options.events, drain, gateway_cpu_s)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's, when installed: the load generator should cost as little of core 1 as it can."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000, help="events per row")
    parser.add_argument("--rates", default="300,600", help="paced rows, events/s, comma-separated ('' for none)")
    parser.add_argument("--fanout", type=int, default=1, help="deliveries per event (one destination each)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight per destination")
    parser.add_argument("--log-level", default="info", help="the gateway's (info logs a line per event and attempt)")
    args = parser.parse_args()
    options = Options(args.events, args.fanout, args.concurrency, args.log_level)
    if shutil.which("taskset"):  # as the sink and the gateway are (see common.pinned)
        os.sched_setaffinity(0, {1})
    rows = [run_row("burst", options), run_row("drain", options, drain=True)]
    rows += [run_row(f"paced {rate}/s", options, float(rate)) for rate in filter(None, args.rates.split(","))]
    print(f"{options.events} events a row, fanout {options.fanout}, concurrency {options.concurrency} per destination, "
          f"log level {options.log_level}; load ({CONNECTIONS} connections in burst) and sink on core 1, gateway on 0")
    print(f"{'row':<14}{'events':>8}{'deliv.':>8}{'ingest/s':>10}{'deliv./s':>10}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'failed':>8}{'CPU µs/deliv.':>15}")
    for row in rows:
        print(f"{row.name:<14}{row.events:>8}{row.deliveries:>8}{row.ingest_per_s:>10.0f}{row.deliveries_per_s:>10.0f}"
              f"{row.p50_ms:>10.1f}{row.p99_ms:>10.1f}{row.failed_posts:>8}{row.cpu_us_per_delivery:>15.0f}")
    print("CPU µs/deliv.: the gateway's CPU time (all threads; ingest and delivery) per delivery")


if __name__ == "__main__":
    main()
