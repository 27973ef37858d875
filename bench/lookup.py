"""Event lookups among many stored events: `Store.find_events`, as `gateway events`, the admin API and the console
run it, on SQLite and on Redis.

Fills a store with `--events` events (default 100,000) spread over 7 days: 20,000 conversations, 5,000 senders,
four rule types, subjects of four words and a number; each event has one delivery, one in a thousand of them
dead. Then runs each lookup `--repeat` times (newest 50 events, each with its deliveries) and prints the median
and the worst time in milliseconds. Redis runs as the README asks (appendfsync always), on core 1.

    .venv/bin/python bench/lookup.py [--events 100000] [--repeat 20] [--backend sqlite,redis]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis_bench import redis_server

from gateway.model import DeliveryStatus, EventCursor, EventQuery, NewDelivery, NewEvent, RenderedRequest, event_facts
from gateway.store.base import Store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore

T0_MS = 1_780_000_000_000
SPAN_MS = 7 * 86_400_000
WORDS = "invoice order damaged refund quote warranty bulk pricing callback urgent shipping login".split()
TYPES = ["incoming_email", "label_change", "new_comment", "outgoing_email"]
REQUEST = RenderedRequest("POST", "https://crm.example/notes", {"Content-Type": "application/json"}, b"{}" * 200)
BATCH = 500


def make_event(n: int, count: int, rng: random.Random) -> tuple[NewEvent, list[NewDelivery]]:
    payload = {
        "rule": {"type": TYPES[n % len(TYPES)]},
        "conversation": {"id": f"conv-{rng.randrange(20_000):05d}", "subject": " ".join(rng.choices(WORDS, k=4))
                         + f" #{n}"},
        "message": {"from_field": {"address": f"customer{rng.randrange(5_000)}@example.org"}},
    }  # fmt: skip
    at_ms = T0_MS + n * SPAN_MS // count
    body = repr(payload).encode() * 8  # about a Missive payload's size
    event = NewEvent(f"evt_{at_ms:012x}{n:012x}", "missive", at_ms, body, f"key-{n}", event_facts(payload))
    dead = n % 1000 == 999
    delivery = NewDelivery(f"dlv_{at_ms:012x}{n:012x}", "notes", "crm", 8, None if dead else REQUEST,
                           "'message' is undefined" if dead else None)  # fmt: skip
    return event, [delivery]


async def fill(store: Store, count: int) -> float:
    rng = random.Random(11)
    started = time.perf_counter()
    for first in range(0, count, BATCH):
        made = [make_event(n, count, rng) for n in range(first, min(count, first + BATCH))]
        await asyncio.gather(*(store.ingest(event, deliveries, 0) for event, deliveries in made))
    return time.perf_counter() - started


def lookups(count: int) -> dict[str, EventQuery]:
    middle = count // 2
    return {
        "one conversation (~5 events)": EventQuery(conversation_id="conv-01234"),
        "one sender (~20 events)": EventQuery(sender="Customer42@example.org"),
        "newest 50": EventQuery(limit=50),
        "newest 50 of one rule type": EventQuery(rule_type="label_change", limit=50),
        "page 1,000 by cursor": EventQuery(cursor=EventCursor(T0_MS + middle * SPAN_MS // count, "evt_z"), limit=50),
        "last day, text 'refund' (common)": EventQuery(text="refund", since_ms=T0_MS + SPAN_MS - 86_400_000),
        f"text '#{middle}' (one event)": EventQuery(text=f"#{middle}"),
        "subject 'zzz' (no event)": EventQuery(subject="zzz"),
        "dead deliveries (1 in 1,000)": EventQuery(status=DeliveryStatus.DEAD, limit=50),
        "route and destination (all)": EventQuery(route="notes", destination="crm", limit=50),
    }


async def measure(store: Store, query: EventQuery, repeat: int) -> tuple[float, float, int]:
    times = []
    found = 0
    for _ in range(repeat):
        started = time.perf_counter()
        page = await store.find_events(query)
        times.append((time.perf_counter() - started) * 1000)
        found = len(page.events)
    return statistics.median(times), max(times), found


@asynccontextmanager
async def opened(backend: str, directory: Path) -> AsyncIterator[Store]:
    if backend == "sqlite":
        store: Store = SqliteStore(directory / "lookup.db")
        await store.open()
        try:
            yield store
        finally:
            await store.close()
        return
    with redis_server() as url:
        store = RedisStore(url)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


async def run(backend: str, count: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with opened(backend, Path(directory)) as store:
            seconds = await fill(store, count)
            print(f"\n{backend}: {count:,} events stored in {seconds:.0f} s")
            print(f"{'lookup':<40}{'median ms':>10}{'worst ms':>10}{'found':>8}")
            for name, query in lookups(count).items():
                median, worst, found = await measure(store, query, repeat)
                print(f"{name:<40}{median:>10.2f}{worst:>10.2f}{found:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backend", default="sqlite,redis")
    args = parser.parse_args()
    for backend in args.backend.split(","):
        asyncio.run(run(backend, args.events, args.repeat))


if __name__ == "__main__":
    main()
