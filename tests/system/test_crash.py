"""kill -9 of a real `gateway serve` while events arrive and deliveries are in flight: nothing acknowledged is lost.

Events are POSTed the way Missive does it: each one until it gets a 200, so posts that fail
while the gateway is down are sent again after the restart (and deduplicated when the dead
process had stored them already). The destination is slow (50-200 ms per answer), so the
kill lands with requests in flight. After the restart, every event that got a 200 must
arrive at the destination; duplicates are allowed (at-least-once) and reported.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.ingest.signature import sign
from gateway.model import DeliveryStatus
from gateway.store.sqlite import SqliteStore
from tests.conftest import FIXTURE_SECRET, fixture_bytes
from tests.processes import GatewayProcess, free_port
from tests.sink import Sink

EVENTS = 300
POSTERS = 8
POST_PAUSE_S = 0.03  # per poster: about 250 events/s in all, so the kill lands mid-stream
CONCURRENCY = 16
SETTLE_TIMEOUT_S = 30.0

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


def config_text(sink_url: str) -> str:
    # A 1 s timeout plus a 1 s lease margin: deliveries claimed by the killed process come due 2 s after their claim.
    return f"""\
storage: {{path: gateway.db, lease_margin: 1s}}
server: {{shutdown_grace: 5s}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  sink:
    url: "{sink_url}"
    timeout: 1s
    concurrency: {CONCURRENCY}
    retry: {{attempts: 50, backoff: 100ms, max_backoff: 500ms}}
routes:
  - name: every-event
    send:
      - to: sink
        body: {{seq: "{{{{ crash_test.seq }}}}"}}
"""


def event_bodies(count: int) -> list[bytes]:
    """`count` distinct Missive payloads: the fixture plus a sequence number the route copies into the delivery."""
    payload = json.loads(fixture_bytes("incoming-email-with-labels.json"))
    return [json.dumps({**payload, "crash_test": {"seq": seq}}).encode() for seq in range(count)]


class Poster:
    """Posts each event until it gets a 200, the way Missive retries; remembers the event id each 200 named."""

    def __init__(self, url: str, bodies: list[bytes]) -> None:
        self._url = url
        self._bodies = bodies
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        for seq in range(len(bodies)):
            self._queue.put_nowait(seq)
        self.accepted: dict[int, str] = {}
        self.failed_posts = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        while not self._queue.empty():
            seq = self._queue.get_nowait()
            self.accepted[seq] = await self._post_until_accepted(session, self._bodies[seq])
            await asyncio.sleep(POST_PAUSE_S)

    async def _post_until_accepted(self, session: aiohttp.ClientSession, body: bytes) -> str:
        headers = {"Content-Type": "application/json", "X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)}
        while True:
            try:
                async with session.post(self._url, data=body, headers=headers) as answer:
                    if answer.status == 200:
                        event_id: str = (await answer.json())["event_id"]
                        return event_id
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.failed_posts += 1
            await asyncio.sleep(0.05)


def delivered_seqs(sink: Sink) -> Counter[int]:
    return Counter(json.loads(arrival.body)["seq"] for arrival in sink.arrivals)


async def wait_for_empty_queue(session: aiohttp.ClientSession, gateway: GatewayProcess, timeout_s: float) -> None:
    """Until the gateway's /metrics shows no delivery pending."""
    async with asyncio.timeout(timeout_s):
        while True:
            async with session.get(gateway.url("/metrics")) as answer:
                lines = (await answer.text()).splitlines()
            if "gateway_queue_pending 0.0" in lines:
                return
            await asyncio.sleep(0.1)


async def wait_until(condition: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


@pytest.mark.timeout(90)
async def test_kill_9_mid_stream_loses_no_acknowledged_event(
    aiohttp_server: ServerFactory,
    write_config: Callable[[str], Path],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    sink = Sink(min_delay_s=0.05, max_delay_s=0.2, seed=7)
    sink_server = await aiohttp_server(sink.app())
    config = write_config(config_text(str(sink_server.make_url("/hook"))))
    gateway = GatewayProcess(config, free_port(), tmp_path / "gateway.log")
    poster = Poster(gateway.url("/hooks/missive"), event_bodies(EVENTS))
    async with gateway:
        await gateway.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            posting = asyncio.gather(*(poster.run(session) for _ in range(POSTERS)))
            await wait_until(lambda: len(poster.accepted) >= EVENTS // 2 and len(sink.arrivals) >= 10, 20)
            await gateway.kill()
            accepted_at_kill, arrived_at_kill = len(poster.accepted), len(sink.arrivals)
            await gateway.start()
            async with asyncio.timeout(SETTLE_TIMEOUT_S):
                await posting
            try:  # the deliveries the dead process had claimed are sent again once their lease runs out
                await wait_for_empty_queue(session, gateway, SETTLE_TIMEOUT_S)
            except TimeoutError:
                pass  # what is missing is reported as losses below
        exit_code = await gateway.stop()

    delivered = delivered_seqs(sink)
    lost = sorted(set(poster.accepted) - set(delivered))
    duplicates = sum(delivered.values()) - len(delivered)
    record_property("duplicates", duplicates)
    record_property("failed_posts", poster.failed_posts)
    print(
        f"\ncrash test: {len(poster.accepted)} events acknowledged ({accepted_at_kill} before the kill, "
        f"{arrived_at_kill} deliveries arrived by then), {len(lost)} lost, {duplicates} delivered twice, "
        f"{poster.failed_posts} posts failed and were sent again"
    )
    assert EVENTS // 2 <= accepted_at_kill < EVENTS and arrived_at_kill < accepted_at_kill  # the kill was mid-way
    assert lost == [], f"acknowledged but never delivered: {lost}\n{gateway.tail()}"
    # Only attempts the dead process had in flight can be sent twice: at most one per slot of its concurrency.
    assert duplicates <= CONCURRENCY
    named = [(json.loads(arrival.body)["seq"], arrival.event_id) for arrival in sink.arrivals]
    assert [(seq, event_id) for seq, event_id in named if poster.accepted.get(seq) != event_id] == []
    assert exit_code == 0, gateway.tail()
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        stats = await store.stats()
    finally:
        await store.close()
    assert (stats.pending, stats.dead) == (0, 0), f"{stats}, expected every delivery {DeliveryStatus.DELIVERED}"
