"""The overview's figures (`Store.activity`), the same from every backend."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from gateway.model import Activity, AttemptResult, DestinationActivity, HourCounts, NewDelivery, NewEvent, Release
from gateway.store import sqlite_activity
from gateway.store.base import Store
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests.store.test_contract import (
    DEAD,
    DELIVERED,
    LEASE_MS,
    PENDING,
    T0,
    attempt_of,
    new_delivery,
    rendered,
)

HOUR_MS = 3_600_000
NOW = T0 + 3 * HOUR_MS - 1000
NO_ERROR: tuple[None, None] = (None, None)


async def ingest(store: Store, event_id: str, at_ms: int, source: str, *deliveries: NewDelivery) -> None:
    event = NewEvent(event_id, source, at_ms, b"{}", f"key-{event_id}")
    await store.ingest(event, list(deliveries), dedupe_window_ms=0)


async def a_busy_day(store: Store) -> None:
    """Three hours from T0: slack delivers one and has a dead letter; crm has one retrying and one in flight."""
    await ingest(store, "e0", T0 - 5 * HOUR_MS, "missive", new_delivery("d0", "slack"))  # before the window
    await ingest(store, "e1", T0 + 1, "missive", new_delivery("d1", "slack"), new_delivery("d2", "crm"))
    await ingest(store, "e2", T0 + HOUR_MS + 5, "other", new_delivery("d3", "crm"))
    await ingest(store, "e3", T0 + 2 * HOUR_MS + 7, "missive", new_delivery("d4", "slack", ok=False))
    for delivery in await store.claim({"slack": 10}, NOW, LEASE_MS):
        assert await store.finish(delivery, AttemptResult(attempt_of(delivery, NOW, 200, None), DELIVERED))
    (retried,) = await store.claim({"crm": 1}, NOW, LEASE_MS)
    assert retried.id == "d2"
    result = AttemptResult(attempt_of(retried, NOW, 503, "HTTP 503: busy"), PENDING, NOW + 5_000)
    assert await store.finish(retried, result)
    (held,) = await store.claim({"crm": 1}, NOW, LEASE_MS)
    assert held.id == "d3"  # claimed, not finished: in flight


async def activity(store: Store) -> Activity:
    return await store.activity(T0, HOUR_MS, 3, NOW)


async def test_activity_counts_events_and_each_destinations_queue(store: Store) -> None:
    await a_busy_day(store)
    assert await activity(store) == Activity(
        since_ms=T0, bucket_ms=HOUR_MS,
        events={"missive": (1, 0, 1), "other": (0, 1, 0)},
        destinations={
            "crm": DestinationActivity(
                waiting=1, retrying=1, in_flight=1, dead=0, oldest_pending_ms=T0 + 1, last_error="HTTP 503: busy",
                last_error_at_ms=NOW + 12, buckets=(HourCounts(pending=1), HourCounts(pending=1), HourCounts()),
            ),
            "slack": DestinationActivity(
                waiting=0, retrying=0, in_flight=0, dead=1, oldest_pending_ms=None,
                last_error="'message' is undefined", last_error_at_ms=T0 + 2 * HOUR_MS + 7,
                buckets=(HourCounts(delivered=1), HourCounts(), HourCounts(dead=1)),
            ),
        },
    )  # fmt: skip


async def test_a_replayed_dead_letter_waits_then_its_error_goes_once_delivered(store: Store) -> None:
    await a_busy_day(store)
    assert await store.requeue(["d4"], NOW, {"d4": rendered("d4")}) == 1
    slack = (await activity(store)).destinations["slack"]
    assert (slack.waiting, slack.dead, slack.buckets[2]) == (1, 0, HourCounts(pending=1))
    assert slack.last_error == "'message' is undefined"  # still not delivered
    (claimed,) = await store.claim({"slack": 1}, NOW, LEASE_MS)
    assert await store.finish(claimed, AttemptResult(attempt_of(claimed, NOW, 200, None), DELIVERED))
    slack = (await activity(store)).destinations["slack"]
    assert (slack.waiting, slack.in_flight, slack.last_error, slack.buckets[2]) == (0, 0, None, HourCounts(1))


async def test_a_lease_that_ran_out_is_no_longer_in_flight(store: Store) -> None:
    await a_busy_day(store)
    later = await store.activity(T0, HOUR_MS, 3, NOW + LEASE_MS + 1)
    assert later.destinations["crm"].in_flight == 0


async def test_a_dead_letter_after_retries_moves_out_of_retrying(store: Store) -> None:
    await a_busy_day(store)
    (again,) = await store.claim({"crm": 1}, NOW + 5_000, LEASE_MS)
    assert await store.finish(again, AttemptResult(attempt_of(again, NOW + 5_000, 400, "HTTP 400: bad"), DEAD))
    crm = (await store.activity(T0, HOUR_MS, 3, NOW + 5_000)).destinations["crm"]
    assert (crm.waiting, crm.retrying, crm.dead, crm.last_error) == (1, 0, 1, "HTTP 400: bad")
    assert crm.buckets[0] == HourCounts(dead=1)


async def test_redis_indexes_what_an_earlier_gateway_stored(store: Store) -> None:
    if not isinstance(store, RedisStore):
        pytest.skip("SQLite reads its figures from the tables themselves")
    await a_busy_day(store)
    before = await activity(store)
    client = store.client
    indexes = [f"{store.prefix}{pattern}" for pattern in ("state:*", "events:source:*", "sources", "destinations")]
    await client.delete(*[key for pattern in indexes async for key in client.scan_iter(pattern)])
    await client.set(f"{store.prefix}version", 2)  # what the gateway before the overview left
    await store.close()
    await store.open()
    after = await activity(store)
    assert after.destinations["crm"].waiting == before.destinations["crm"].waiting == 1
    assert after == before


async def test_held_requests_count_once_released_and_their_dead_show(store: Store) -> None:
    """A chained request held for its step is not queued yet; released, it is waiting, or dead with its error."""
    first = NewDelivery("first", "vip", "crm", 3, rendered("first"), step="a")
    held = [NewDelivery(i, "vip", "notes", 3, None, after="first", template=b"{}") for i in ("second", "third")]
    await ingest(store, "e1", T0, "missive", first, *held)

    before = (await store.activity(T0, HOUR_MS, 3, NOW)).destinations.get("notes")
    assert before is None or (before.waiting, before.retrying, before.dead) == (0, 0, 0)
    (claimed,) = await store.claim({"crm": 1}, T0, LEASE_MS)
    released = (Release("second", rendered("second"), None), Release("third", None, "step a failed"))
    assert await store.finish(claimed, AttemptResult(attempt_of(claimed, T0, 201, None), DELIVERED, released=released))

    notes = (await store.activity(T0, HOUR_MS, 3, NOW)).destinations["notes"]
    assert (notes.waiting, notes.retrying, notes.dead, notes.last_error) == (1, 0, 1, "step a failed")


async def test_sqlite_reads_the_queue_figures_from_indexes_alone(tmp_path: Path) -> None:
    """However long a destination's queue grows, the overview reads index entries, never the deliveries' rows:
    the counts come from the claim index in its own order (no sort), the last error from one seek."""
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        await a_busy_day(store)
        assert (await activity(store)).destinations["crm"].last_error == "HTTP 503: busy"
    finally:
        await store.close()

    with closing(sqlite3.connect(tmp_path / "gateway.db")) as conn:
        queue_plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sqlite_activity._QUEUE}", (NOW,))]
        error_plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sqlite_activity._LAST_ERROR}", ("crm",))]
        failing = conn.execute("SELECT count(*) FROM deliveries INDEXED BY deliveries_failing WHERE status IN "
                               "('pending', 'dead') AND last_error IS NOT NULL").fetchone()  # fmt: skip
    assert queue_plan == ["SEARCH deliveries USING COVERING INDEX deliveries_queue (status=?)"]
    assert error_plan == ["SEARCH deliveries USING INDEX deliveries_failing (destination=?)"]
    assert failing == (2,)  # crm's retried delivery and slack's dead letter; none of the new or delivered ones
