"""A destination that answers 200 (after an optional random delay) and records what arrived and when.

In a test: `aiohttp_server(Sink(...).app())`. As a process (for benchmarks):

    python tests/sink.py --port 9100 [--min-delay 0.05 --max-delay 0.2]

`GET /arrivals` answers the arrivals so far as JSON: `[{"event_id", "at_s", "body"}, ...]`; `GET /count`
just how many.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import asdict, dataclass

from aiohttp import web

EVENT_ID_HEADER = "X-Gateway-Event-Id"


@dataclass(frozen=True)
class Arrival:
    """One request as it arrived: the event id header, the wall-clock time its body was read, the body."""

    event_id: str
    at_s: float
    body: str


class Sink:
    """Records every POST once its body is read, then answers 200 after `min_delay_s`..`max_delay_s`."""

    def __init__(self, min_delay_s: float = 0.0, max_delay_s: float = 0.0, seed: int = 0) -> None:
        self.arrivals: list[Arrival] = []
        self._min_delay_s = min_delay_s
        self._max_delay_s = max_delay_s
        self._rng = random.Random(seed)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/arrivals", self._list)
        app.router.add_get("/count", self._count)
        app.router.add_post("/{tail:.*}", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.arrivals.append(Arrival(request.headers.get(EVENT_ID_HEADER, ""), time.time(), body))
        if self._max_delay_s > 0:
            await asyncio.sleep(self._rng.uniform(self._min_delay_s, self._max_delay_s))
        return web.Response(text="ok")

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(arrival) for arrival in self.arrivals])

    async def _count(self, request: web.Request) -> web.Response:
        return web.json_response(len(self.arrivals))


def main() -> None:
    parser = argparse.ArgumentParser(description="A recording HTTP sink that answers 200.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--min-delay", type=float, default=0.0, help="shortest wait before answering, in seconds")
    parser.add_argument("--max-delay", type=float, default=0.0, help="longest wait before answering, in seconds")
    args = parser.parse_args()
    sink = Sink(args.min_delay, args.max_delay)
    web.run_app(sink.app(), host="127.0.0.1", port=args.port, print=None, access_log=None, loop=_loop())


def _loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when installed, so a benchmark's sink costs as little CPU as it can."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


if __name__ == "__main__":
    main()
