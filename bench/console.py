"""The console's event list over many stored events: what a page costs the server, on SQLite.

Fills a store as `bench/lookup.py` does (`--events`, default 100,000, over 7 days), serves the
gateway's application on it in this process, logs in to the console and asks for pages of
`/console/events` `--repeat` times each over loopback HTTP, with `GET /healthz` (the gateway's
cheapest answer) measured the same way as the floor: the difference is the page's own server
time (the lookup, masking, rendering). Also times the lookup alone (`Store.find_events`).

    .venv/bin/python bench/console.py [--events 100000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from lookup import SPAN_MS, T0_MS, fill

from gateway.clock import Clock
from gateway.model import EventCursor, EventQuery
from gateway.ops.config_holder import ConfigHolder
from gateway.routing.compiled import load_config
from gateway.store.sqlite import SqliteStore
from gateway.web.app import create_app

TOKEN = "bench-console-token-0123456789"
CONFIG = f"""\
storage: {{path: lookup.db}}
admin: {{token: "{TOKEN}"}}
sources:
  missive: {{secrets: ["bench-secret"]}}
destinations:
  crm: {{url: "http://127.0.0.1:9/notes"}}
routes:
  - name: notes
    send: [{{to: crm}}]
"""


class AfterTheData(Clock):
    """The time just after the last stored event, so that pages of "the last hour" find some."""

    def now_ms(self) -> int:
        return T0_MS + SPAN_MS + 60_000

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def pages(count: int) -> dict[str, str]:
    middle = EventCursor(T0_MS + (count // 2) * SPAN_MS // count, "evt_z")
    return {
        "GET /healthz (the floor)": "/healthz",
        "events: newest 50": "/console/events",
        "events: page 1,000 by cursor": f"/console/events?cursor={middle}",
        "events: q = a conversation id": "/console/events?q=conv-01234",
        "events: q = a common word": "/console/events?q=refund",
        "events: q = text of one event": f"/console/events?q=%23{count // 2}",
        "events: dead deliveries": "/console/events?status=dead",
        "events: rule type, last day": "/console/events?type=label_change&since=1d",
        "events: live rows, nothing new": f"/console/events/rows?after={T0_MS + SPAN_MS}:evt_z",
        "overview (the last day: ~14,000 events)": "/console/",
    }


async def timed(session: aiohttp.ClientSession, url: str, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        async with session.get(url, allow_redirects=False) as answer:
            await answer.read()
            assert answer.status == 200, (url, answer.status)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


async def log_in(session: aiohttp.ClientSession, base: str) -> None:
    async with session.get(f"{base}/console/login") as answer:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await answer.text())
    assert csrf, "no login form"
    async with session.post(f"{base}/console/login", data={"csrf": csrf.group(1), "token": TOKEN},
                            allow_redirects=False) as answer:  # fmt: skip
        assert answer.status == 303, answer.status


async def run(count: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        config_file = Path(directory) / "config.yaml"
        config_file.write_text(CONFIG)
        store = SqliteStore(Path(directory) / "lookup.db")
        await store.open()
        seconds = await fill(store, count)
        print(f"{count:,} events stored in {seconds:.0f} s (SQLite)")
        lookup_ms = []
        for _ in range(repeat):
            started = time.perf_counter()
            await store.find_events(EventQuery(limit=50))
            lookup_ms.append((time.perf_counter() - started) * 1000)
        await store.close()

        app = create_app(ConfigHolder(load_config(config_file)), run_worker=False, clock=AfterTheData())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
                await log_in(session, base)
                print(f"{'request':<36}{'median ms':>10}{'p95 ms':>10}{'- floor':>10}")
                floor = None
                for name, path in pages(count).items():
                    median, p95 = await timed(session, base + path, repeat)
                    floor = median if floor is None else floor
                    print(f"{name:<36}{median:>10.2f}{p95:>10.2f}{median - floor:>10.2f}")
        finally:
            await runner.cleanup()
        print(f"{'lookup alone (Store.find_events, newest 50)':<36}{statistics.median(lookup_ms):>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(run(args.events, args.repeat))


if __name__ == "__main__":
    main()
