"""Two real `gateway serve` replicas on one real redis-server.

- They share each destination's concurrency cap (RedisLimits), and a config reload changes the shared cap.
- One is `kill -9`ed while events are posted to both: every event that got a 200 is delivered, and a
  delivery is only ever sent twice when the killed replica had it in flight and its lease ran out
  (such duplicates are counted and reported).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.ingest.signature import sign
from gateway.store.redis import RedisStore
from tests.conftest import FIXTURE_SECRET
from tests.fakes import FakeDestination, Reply
from tests.processes import GatewayProcess, free_port
from tests.redis_server import RedisServer, running_server
from tests.sink import Sink
from tests.system.test_crash import delivered_seqs, event_bodies, wait_for_empty_queue, wait_until

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

TIMEOUT_S = 2.0
LEASE_MARGIN_S = 1.0  # a killed replica's deliveries come due again 3 s after their claim
EVENTS = 300
POSTERS = 8
POST_PAUSE_S = 0.03
CONCURRENCY = 8
SETTLE_TIMEOUT_S = 40.0


def config_text(redis_url: str, destination_url: str, concurrency: int) -> str:
    return f"""\
storage: {{backend: redis, url: "{redis_url}", lease_margin: {LEASE_MARGIN_S:g}s}}
server: {{shutdown_grace: 5s}}
sources:
  missive: {{secrets: ["{FIXTURE_SECRET}"]}}
destinations:
  sink:
    url: "{destination_url}"
    timeout: {TIMEOUT_S:g}s
    concurrency: {concurrency}
    retry: {{attempts: 50, backoff: 100ms, max_backoff: 500ms}}
routes:
  - name: every-event
    send:
      - to: sink
        body: {{seq: "{{{{ crash_test.seq }}}}"}}
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from running_server(tmp_path / "redis")


def replicas(config: Path, tmp_path: Path) -> list[GatewayProcess]:
    return [GatewayProcess(config, free_port(), tmp_path / f"replica-{n}.log") for n in (1, 2)]


class FailoverPoster:
    """Posts each event until one replica answers 200, trying them in turn (as a load balancer in front would);
    starting replicas alternate from one event to the next, so both get about half the load."""

    def __init__(self, gateways: Sequence[GatewayProcess], bodies: list[bytes]) -> None:
        self._urls = [gateway.url("/hooks/missive") for gateway in gateways]
        self._bodies = bodies
        self._queue: asyncio.Queue[int] = asyncio.Queue()
        for seq in range(len(bodies)):
            self._queue.put_nowait(seq)
        self.accepted: dict[int, str] = {}
        self.accepted_by: list[int] = [0] * len(gateways)
        self.failed_posts = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        while not self._queue.empty():
            seq = self._queue.get_nowait()
            self.accepted[seq] = await self._post_until_accepted(session, seq)
            await asyncio.sleep(POST_PAUSE_S)

    async def _post_until_accepted(self, session: aiohttp.ClientSession, seq: int) -> str:
        body = self._bodies[seq]
        headers = {"Content-Type": "application/json", "X-Hook-Signature": sign(FIXTURE_SECRET.encode(), body)}
        replica = seq % len(self._urls)
        while True:
            try:
                async with session.post(self._urls[replica], data=body, headers=headers) as answer:
                    if answer.status == 200:
                        self.accepted_by[replica] += 1
                        event_id: str = (await answer.json())["event_id"]
                        return event_id
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.failed_posts += 1
            replica = (replica + 1) % len(self._urls)
            await asyncio.sleep(0.05)


async def post_all(gateways: Sequence[GatewayProcess], bodies: list[bytes]) -> FailoverPoster:
    poster = FailoverPoster(gateways, bodies)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await asyncio.gather(*(poster.run(session) for _ in range(POSTERS)))
    return poster


async def wait_for_log(gateway: GatewayProcess, text: str, timeout_s: float) -> None:
    await wait_until(lambda: text in gateway.log_path.read_text(errors="replace"), timeout_s)


@pytest.mark.timeout(90)
async def test_replicas_share_a_destinations_concurrency_and_a_reload_changes_it(
    redis_server: RedisServer, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    async with FakeDestination([Reply(200, "ok", delay_s=0.2)]) as fake:
        config = write_config(config_text(redis_server.url, fake.url(), concurrency=2))
        gateways = replicas(config, tmp_path)
        async with gateways[0], gateways[1]:
            await asyncio.gather(*(gateway.start() for gateway in gateways))
            await post_all(gateways, event_bodies(20))
            await fake.wait_for_requests(20, timeout_s=SETTLE_TIMEOUT_S)
            peak_before_reload, fake.max_in_flight = fake.max_in_flight, 0

            config.write_text(config_text(redis_server.url, fake.url(), concurrency=4))
            for gateway in gateways:
                await wait_for_log(gateway, "config reloaded (file changed)", timeout_s=10)
            await post_all(gateways, event_bodies(60)[20:])
            await fake.wait_for_requests(60, timeout_s=SETTLE_TIMEOUT_S)
            stopped = [await gateway.stop() for gateway in gateways]

    # Each replica alone would allow 2, then 4: together they would reach twice that.
    assert (peak_before_reload, fake.max_in_flight) == (2, 4)
    assert sorted(json.loads(request.body)["seq"] for request in fake.received) == list(range(60))
    assert stopped == [0, 0], gateways[0].tail() + gateways[1].tail()


@pytest.mark.timeout(120)
async def test_kill_9_of_one_replica_loses_no_event_and_only_its_leased_deliveries_repeat(
    aiohttp_server: ServerFactory,
    redis_server: RedisServer,
    write_config: Callable[[str], Path],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    sink = Sink(min_delay_s=0.05, max_delay_s=0.2, seed=11)
    sink_server = await aiohttp_server(sink.app())
    config = write_config(config_text(redis_server.url, str(sink_server.make_url("/hook")), CONCURRENCY))
    killed, survivor = gateways = replicas(config, tmp_path)
    poster = FailoverPoster(gateways, event_bodies(EVENTS))
    async with killed, survivor, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        await asyncio.gather(*(gateway.start() for gateway in gateways))
        posting = asyncio.gather(*(poster.run(session) for _ in range(POSTERS)))
        await wait_until(lambda: len(poster.accepted) >= EVENTS // 2 and len(sink.arrivals) >= 20, 20)
        await killed.kill()
        killed_at_s = sink.arrivals[-1].at_s  # every arrival after this one came after the kill
        accepted_at_kill, arrived_at_kill = len(poster.accepted), len(sink.arrivals)
        async with asyncio.timeout(SETTLE_TIMEOUT_S):
            await posting
        try:  # what the killed replica had claimed comes due again once its lease runs out
            await wait_for_empty_queue(session, survivor, SETTLE_TIMEOUT_S)
        except TimeoutError:
            pass  # what is missing is reported as losses below
        exit_code = await survivor.stop()

    delivered = delivered_seqs(sink)
    lost = sorted(set(poster.accepted) - set(delivered))
    repeated = {seq: sorted(a.at_s for a in sink.arrivals if json.loads(a.body)["seq"] == seq)
                for seq, count in delivered.items() if count > 1}  # fmt: skip
    duplicates = sum(delivered.values()) - len(delivered)
    record_property("duplicates", duplicates)
    print(
        f"\nreplica kill: {len(poster.accepted)} events acknowledged ({poster.accepted_by} by replica; "
        f"{accepted_at_kill} before the kill, {arrived_at_kill} deliveries arrived by then), {len(lost)} lost, "
        f"{duplicates} delivered twice, {poster.failed_posts} posts failed and went to the other replica"
    )
    assert EVENTS // 2 <= accepted_at_kill < EVENTS and arrived_at_kill < accepted_at_kill  # the kill was mid-way
    assert min(poster.accepted_by) > 0
    assert " delivered: route=every-event" in killed.log_path.read_text()  # both replicas were delivering
    assert lost == [], f"acknowledged but never delivered: {lost}\n{survivor.tail()}"
    # A repeat is the killed replica's attempt in flight, sent again by the survivor once its lease ran out:
    # the first send before the kill, the next at least the lease margin later (the lease is timeout + margin).
    early_repeats = {seq: times for seq, times in repeated.items()
                     if times[0] > killed_at_s or times[1] - times[0] < LEASE_MARGIN_S}  # fmt: skip
    assert early_repeats == {}
    assert duplicates <= CONCURRENCY  # at most one per slot the killed replica could hold
    named = [(json.loads(arrival.body)["seq"], arrival.event_id) for arrival in sink.arrivals]
    assert [(seq, event_id) for seq, event_id in named if poster.accepted.get(seq) != event_id] == []
    assert exit_code == 0, survivor.tail()
    store = RedisStore(redis_server.url)
    await store.open()
    try:
        stats = await store.stats()
    finally:
        await store.close()
    assert (stats.pending, stats.dead) == (0, 0)
