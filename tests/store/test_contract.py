"""The store contract, run against every backend (`tests/store/conftest.py`); SQLite-only tests at the end."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import sys
import threading
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import StoreUnavailable
from gateway.model import (
    Attempt,
    AttemptResult,
    Delivery,
    DeliveryFilter,
    DeliveryStatus,
    DestinationPause,
    EventQuery,
    NewDelivery,
    NewEvent,
    QueueStats,
    Release,
    RenderedRequest,
    StoredEvent,
)
from gateway.store.base import Store
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_schema import SCHEMA_VERSION, V1_SCHEMA
from tests.store.conftest import StoreFactory

REPO = Path(__file__).resolve().parents[2]

T0 = 1_700_000_000_000
WINDOW_MS = 600_000
LEASE_MS = 30_000
PENDING, DELIVERED, DEAD = DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.DEAD

def rendered(tag: str) -> RenderedRequest:
    headers = {"Content-Type": "application/json", "X-Tag": tag}
    return RenderedRequest("POST", f"https://dest.example/{tag}", headers, b'{"tag": "%s"}' % tag.encode())


def new_event(event_id: str, at_ms: int = T0, source: str = "missive", key: str | None = None) -> NewEvent:
    return NewEvent(event_id, source, at_ms, b'{"event": "%s"}' % event_id.encode(), key or f"key-{event_id}")


def stored(event: NewEvent) -> StoredEvent:
    return StoredEvent(event.id, event.source, event.received_at_ms, event.body)


def new_delivery(delivery_id: str, destination: str = "slack", route: str = "vip", ok: bool = True) -> NewDelivery:
    if ok:
        return NewDelivery(delivery_id, route, destination, max_attempts=3, request=rendered(delivery_id))
    return NewDelivery(delivery_id, route, destination, 3, request=None, error="'message' is undefined")


async def put(store: Store, event_id: str, at_ms: int = T0, *deliveries: NewDelivery) -> None:
    """Ingest one event (no dedupe) with the given deliveries."""
    result = await store.ingest(new_event(event_id, at_ms), list(deliveries), dedupe_window_ms=0)
    assert result.event_id == event_id and not result.duplicate


def attempt_of(delivery: Delivery, at_ms: int, status_code: int | None, error: str | None) -> Attempt:
    number = delivery.attempts + delivery.quota_waits + 1
    return Attempt(delivery.id, number, at_ms, 12.5, status_code, error, f"excerpt {status_code}")


async def settle(store: Store, destination: str, status: DeliveryStatus, now_ms: int) -> None:
    """Claim every due delivery of `destination` and finish each with `status`."""
    claimed = await store.claim({destination: 1000}, now_ms, LEASE_MS)
    code, error, retry_at_ms = {
        DELIVERED: (200, None, None),
        PENDING: (503, "HTTP 503", now_ms + 5_000),
        DEAD: (400, "HTTP 400", None),
    }[status]
    for delivery in claimed:
        result = AttemptResult(attempt_of(delivery, now_ms, code, error), status, retry_at_ms)
        assert await store.finish(delivery, result)


def ids(deliveries: list[Delivery]) -> list[str]:
    return [delivery.id for delivery in deliveries]


# --- ingest and dedupe ---


async def test_ingest_stores_the_event_and_pending_deliveries(store: Store) -> None:
    result = await store.ingest(
        new_event("e1"), [new_delivery("d1", "slack"), new_delivery("d2", "hubspot", route="crm")], WINDOW_MS
    )

    assert (result.event_id, result.deliveries, result.duplicate) == ("e1", 2, False)
    event = await store.get_event("e1")
    assert event is not None
    assert (event.id, event.source, event.received_at_ms, event.body) == ("e1", "missive", T0, b'{"event": "e1"}')
    d2 = await store.get_delivery("d2")
    assert d2 == Delivery(
        id="d2", event_id="e1", route="crm", destination="hubspot", status=PENDING, attempts=0, max_attempts=3,
        next_attempt_at_ms=T0, created_at_ms=T0, updated_at_ms=T0, request=rendered("d2"),
    )  # fmt: skip


async def test_missing_records_read_as_none_or_empty(store: Store) -> None:
    assert await store.get_event("nope") is None
    assert await store.get_delivery("nope") is None
    assert await store.list_attempts("nope") == []
    assert await store.list_deliveries(DeliveryFilter()) == []
    assert await store.claim({"slack": 10}, T0, LEASE_MS) == []


@pytest.mark.parametrize(
    ("source", "offset_ms", "window_ms", "duplicate"),
    [
        pytest.param("missive", 1, WINDOW_MS, True, id="same-source-just-after"),
        pytest.param("missive", WINDOW_MS - 1, WINDOW_MS, True, id="same-source-last-ms-of-window"),
        pytest.param("missive", WINDOW_MS, WINDOW_MS, False, id="same-source-window-over"),
        pytest.param("missive", 5 * WINDOW_MS, WINDOW_MS, False, id="same-source-long-after"),
        pytest.param("other", 1, WINDOW_MS, False, id="other-source-within-window"),
        pytest.param("missive", 0, 0, False, id="no-window"),
    ],
)
async def test_dedupe(store: Store, source: str, offset_ms: int, window_ms: int, duplicate: bool) -> None:
    await store.ingest(new_event("first", T0, key="same-body"), [new_delivery("d-first")], window_ms)

    again = new_event("again", T0 + offset_ms, source=source, key="same-body")
    result = await store.ingest(again, [new_delivery("d-again")], window_ms)

    if duplicate:
        assert (result.event_id, result.deliveries, result.duplicate) == ("first", 0, True)
        assert await store.get_event("again") is None
        assert await store.get_delivery("d-again") is None
    else:
        assert (result.event_id, result.deliveries, result.duplicate) == ("again", 1, False)
        assert await store.get_event("again") is not None
        assert await store.get_delivery("d-again") is not None


async def test_dedupe_names_the_event_stored_within_the_window(store: Store) -> None:
    await store.ingest(new_event("first", T0, key="k"), [], WINDOW_MS)
    second = await store.ingest(new_event("second", T0 + WINDOW_MS, key="k"), [], WINDOW_MS)
    third = await store.ingest(new_event("third", T0 + WINDOW_MS + 1, key="k"), [], WINDOW_MS)

    assert (second.event_id, second.duplicate) == ("second", False)
    assert (third.event_id, third.duplicate) == ("second", True)


async def test_concurrent_duplicates_store_one_event(store: Store) -> None:
    events = [new_event(f"e{n}", T0 + n, key="same-body") for n in range(20)]
    results = await asyncio.gather(*(store.ingest(e, [new_delivery(f"d{e.id}")], WINDOW_MS) for e in events))

    stored = [result for result in results if not result.duplicate]
    assert len(stored) == 1
    assert {result.event_id for result in results} == {stored[0].event_id}
    assert len(await store.list_deliveries(DeliveryFilter())) == 1


async def test_delivery_without_request_is_dead_at_birth(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("broken", ok=False), new_delivery("fine"))

    broken = await store.get_delivery("broken")
    assert broken is not None
    assert (broken.status, broken.request, broken.last_error) == (DEAD, None, "'message' is undefined")
    assert ids(await store.claim({"slack": 10}, T0 + 1, LEASE_MS)) == ["fine"]
    assert (await store.stats()).dead == 1


async def test_ingest_that_fails_stores_nothing(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("taken"))

    with pytest.raises(StoreUnavailable):
        await store.ingest(new_event("e2"), [new_delivery("fresh"), new_delivery("taken")], WINDOW_MS)

    assert await store.get_event("e2") is None
    assert await store.get_delivery("fresh") is None
    taken = await store.get_delivery("taken")
    assert taken is not None and taken.event_id == "e1"


async def test_a_failing_ingest_does_not_fail_concurrent_ones(store: Store) -> None:
    await put(store, "e0", T0, new_delivery("taken"))
    good = [store.ingest(new_event(f"e{n}"), [new_delivery(f"d{n}")], WINDOW_MS) for n in range(1, 51)]
    bad = store.ingest(new_event("bad"), [new_delivery("taken")], WINDOW_MS)

    results = await asyncio.gather(*good[:25], bad, *good[25:], return_exceptions=True)

    assert isinstance(results[25], StoreUnavailable)
    assert [r for r in results if isinstance(r, BaseException)] == [results[25]]
    assert await store.get_event("bad") is None
    assert len(await store.list_deliveries(DeliveryFilter(status=PENDING))) == 51


async def test_many_concurrent_ingests_are_all_durable(new_store: StoreFactory) -> None:
    store = new_store()
    await store.open()
    events = [new_event(f"e{n}", T0 + n) for n in range(300)]
    results = await asyncio.gather(
        *(store.ingest(e, [new_delivery(f"{e.id}-a", "slack"), new_delivery(f"{e.id}-b", "hubspot")], WINDOW_MS)
          for e in events)
    )  # fmt: skip
    await store.close()
    assert [(r.event_id, r.deliveries, r.duplicate) for r in results] == [(e.id, 2, False) for e in events]

    reopened = new_store()
    await reopened.open()
    try:
        for event in events:
            assert await reopened.get_event(event.id) == stored(event)
        assert (await reopened.stats()).by_destination == {"slack": 300, "hubspot": 300}
    finally:
        await reopened.close()



# --- claim, lease and finish ---


async def test_claim_takes_up_to_capacity_per_destination_oldest_due_first(store: Store) -> None:
    for n, at_ms in enumerate([T0 + 3, T0 + 1, T0 + 4, T0 + 2]):
        await put(store, f"e{n}", at_ms, new_delivery(f"slack-{at_ms - T0}", "slack"))
    await put(store, "e-hub", T0, new_delivery("hub", "hubspot"))
    await put(store, "e-discord", T0, new_delivery("discord", "discord"))
    await put(store, "e-teams", T0, new_delivery("teams", "teams"))

    claimed = await store.claim({"slack": 3, "hubspot": 5, "teams": 0}, T0 + 10, LEASE_MS)

    assert [d.id for d in claimed if d.destination == "slack"] == ["slack-1", "slack-2", "slack-3"]
    assert sorted(ids(claimed)) == ["hub", "slack-1", "slack-2", "slack-3"]
    assert all(d.status == PENDING and d.next_attempt_at_ms == T0 + 10 + LEASE_MS for d in claimed)
    assert all(d.request == rendered(d.id) for d in claimed)
    assert ids(await store.claim({"slack": 3}, T0 + 10, LEASE_MS)) == ["slack-4"]


async def test_claim_skips_deliveries_not_yet_due(store: Store) -> None:
    await put(store, "e1", T0 + 100, new_delivery("later"))

    assert await store.claim({"slack": 10}, T0 + 99, LEASE_MS) == []
    assert ids(await store.claim({"slack": 10}, T0 + 100, LEASE_MS)) == ["later"]


async def test_claimed_delivery_is_claimed_again_when_its_lease_expires(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("d1"))
    (first,) = await store.claim({"slack": 10}, T0, LEASE_MS)

    assert await store.claim({"slack": 10}, T0 + LEASE_MS - 1, LEASE_MS) == []
    (second,) = await store.claim({"slack": 10}, T0 + LEASE_MS, LEASE_MS)

    assert first.lease_token and second.lease_token and first.lease_token != second.lease_token
    assert second.next_attempt_at_ms == T0 + 2 * LEASE_MS
    stored_delivery = await store.get_delivery("d1")
    assert stored_delivery is not None and stored_delivery.next_attempt_at_ms == T0 + 2 * LEASE_MS


@pytest.mark.parametrize(
    ("status", "status_code", "error", "retry_at_ms"),
    [
        pytest.param(DELIVERED, 200, None, None, id="delivered"),
        pytest.param(PENDING, 503, "HTTP 503", T0 + 5_000, id="retry-later"),
        pytest.param(DEAD, 400, "HTTP 400", None, id="dead"),
    ],
)
async def test_finish_records_the_attempt_and_moves_the_delivery(
    store: Store, status: DeliveryStatus, status_code: int, error: str | None, retry_at_ms: int | None
) -> None:
    await put(store, "e1", T0, new_delivery("d1"))
    (claimed,) = await store.claim({"slack": 1}, T0, LEASE_MS)
    attempt = attempt_of(claimed, T0 + 1, status_code, error)

    assert await store.finish(claimed, AttemptResult(attempt, status, retry_at_ms))

    after = await store.get_delivery("d1")
    assert after is not None
    assert (after.status, after.attempts, after.last_error, after.lease_token) == (status, 1, error, None)
    assert await store.list_attempts("d1") == [attempt]
    if retry_at_ms is None:
        assert await store.next_due_ms() is None
    else:
        assert after.next_attempt_at_ms == retry_at_ms == await store.next_due_ms()
        assert await store.claim({"slack": 1}, retry_at_ms - 1, LEASE_MS) == []
        assert ids(await store.claim({"slack": 1}, retry_at_ms, LEASE_MS)) == ["d1"]


async def test_finish_with_a_stale_lease_records_the_attempt_but_keeps_the_state(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("d1"))
    (stale,) = await store.claim({"slack": 1}, T0, LEASE_MS)
    (current,) = await store.claim({"slack": 1}, T0 + LEASE_MS, LEASE_MS)
    late = attempt_of(stale, T0 + LEASE_MS + 5, 200, None)

    assert not await store.finish(stale, AttemptResult(late, DELIVERED))

    after = await store.get_delivery("d1")
    assert after is not None
    assert (after.status, after.attempts, after.lease_token) == (PENDING, 0, current.lease_token)
    assert await store.list_attempts("d1") == [late]
    on_time = attempt_of(current, T0 + LEASE_MS + 10, 200, None)
    assert await store.finish(current, AttemptResult(on_time, DELIVERED))
    assert await store.list_attempts("d1") == [late, on_time]


async def test_finish_twice_with_the_same_lease_changes_the_state_once(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("d1"))
    (claimed,) = await store.claim({"slack": 1}, T0, LEASE_MS)
    retry = AttemptResult(attempt_of(claimed, T0, 503, "HTTP 503"), PENDING, T0 + 1_000)

    assert await store.finish(claimed, retry)
    assert not await store.finish(claimed, AttemptResult(attempt_of(claimed, T0 + 1, 200, None), DELIVERED))

    after = await store.get_delivery("d1")
    assert after is not None and (after.status, after.attempts) == (PENDING, 1)
    assert len(await store.list_attempts("d1")) == 2


async def test_attempts_are_listed_oldest_first(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("d1"))
    for n in range(3):
        await settle(store, "slack", PENDING, T0 + n * 10_000)

    attempts = await store.list_attempts("d1")

    assert [(a.number, a.started_at_ms, a.status_code) for a in attempts] == [
        (1, T0, 503), (2, T0 + 10_000, 503), (3, T0 + 20_000, 503),
    ]  # fmt: skip


async def test_next_due_ms_is_the_earliest_pending_due_time(store: Store) -> None:
    assert await store.next_due_ms() is None
    await put(store, "e1", T0 + 5, new_delivery("d1", "slack"), new_delivery("broken", "slack", ok=False))
    await put(store, "e2", T0 + 2, new_delivery("d2", "hubspot"))
    assert await store.next_due_ms() == T0 + 2

    await store.claim({"hubspot": 1}, T0 + 10, LEASE_MS)
    assert await store.next_due_ms() == T0 + 5
    await settle(store, "slack", DELIVERED, T0 + 10)
    assert await store.next_due_ms() == T0 + 10 + LEASE_MS


# --- requeue ---


async def test_requeue_makes_dead_and_delivered_pending_again_once(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("dead", "slack"), new_delivery("done", "hubspot"))
    await put(store, "e2", T0, new_delivery("waiting", "discord"))
    await settle(store, "slack", DEAD, T0 + 1)
    await settle(store, "hubspot", DELIVERED, T0 + 1)
    waiting = await store.get_delivery("waiting")

    assert await store.requeue(["dead", "done", "waiting", "unknown"], T0 + 100) == 2
    assert await store.requeue(["dead", "done", "waiting"], T0 + 200) == 0

    for delivery_id in ("dead", "done"):
        requeued = await store.get_delivery(delivery_id)
        assert requeued is not None
        assert (requeued.status, requeued.attempts, requeued.next_attempt_at_ms) == (PENDING, 0, T0 + 100)
        assert requeued.request == rendered(delivery_id)
        assert len(await store.list_attempts(delivery_id)) == 1
    assert await store.get_delivery("waiting") == waiting
    claimed = await store.claim({"slack": 5, "hubspot": 5}, T0 + 100, LEASE_MS)
    assert sorted(ids(claimed)) == ["dead", "done"]


async def test_requeue_with_requests_replaces_them(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("broken", "slack", ok=False), new_delivery("done", "hubspot"))
    await put(store, "e2", T0, new_delivery("waiting", "discord"))
    await settle(store, "hubspot", DELIVERED, T0 + 1)

    assert await store.requeue(["broken"], T0 + 100) == 0
    replacements = {"broken": rendered("fixed"), "done": rendered("again"), "waiting": rendered("ignored")}
    assert await store.requeue(["broken", "done", "waiting"], T0 + 100, replacements) == 2

    broken, done, waiting = [await store.get_delivery(i) for i in ("broken", "done", "waiting")]
    assert broken is not None and (broken.status, broken.request) == (PENDING, rendered("fixed"))
    assert done is not None and (done.status, done.request) == (PENDING, rendered("again"))
    assert waiting is not None and waiting.request == rendered("waiting")


# --- request chains ---

HELD = DeliveryStatus.HELD
TEMPLATE = b'{"index": 1, "request": "what rendering needs"}'


def chained(delivery_id: str, after: str, step: str | None = None) -> NewDelivery:
    return NewDelivery(delivery_id, "vip", "notes", 3, request=None, step=step, after=after, template=TEMPLATE)


async def put_chain(store: Store) -> Delivery:
    """e1: `first` (step a, pending) -> `second` (step b, held) -> `third` (held); returns `first` claimed."""
    first = NewDelivery("first", "vip", "crm", 3, rendered("first"), step="a")
    await put(store, "e1", T0, first, chained("second", "first", step="b"), chained("third", "second"))
    (claimed,) = await store.claim({"crm": 1, "notes": 5}, T0, LEASE_MS)
    return claimed


async def test_chained_deliveries_wait_unclaimed_with_what_rendering_needs(store: Store) -> None:
    claimed = await put_chain(store)

    assert claimed.id == "first" and claimed.step == "a"
    second = await store.get_delivery("second")
    assert second is not None
    assert (second.status, second.request, second.step, second.after) == (HELD, None, "b", "first")
    assert (second.template, second.steps, second.last_error) == (TEMPLATE, None, None)
    assert await store.claim({"notes": 5}, T0 + 10 * LEASE_MS, LEASE_MS) == []
    assert ids(await store.list_deliveries(DeliveryFilter(status=HELD))) == ["third", "second"]
    stats = await store.stats()
    assert (stats.pending, stats.dead) == (1, 0)
    assert await store.requeue(["second"], T0 + 1, {"second": rendered("x")}) == 0


async def test_delivering_a_step_releases_its_dependents_with_the_outcome(store: Store) -> None:
    claimed = await put_chain(store)
    attempt = attempt_of(claimed, T0 + 100, 201, None)
    release = Release("second", rendered("second"), None, b'{"a": {"status": 201}}')

    assert await store.finish(claimed, AttemptResult(attempt, DELIVERED, released=(release,)))

    second, third = await store.get_delivery("second"), await store.get_delivery("third")
    assert second is not None and third is not None
    assert (second.status, second.attempts, second.request, second.steps) == (
        PENDING, 0, rendered("second"), b'{"a": {"status": 201}}')
    assert second.next_attempt_at_ms == T0 + 100 + 12  # when the attempt ended (12.5 ms, rounded)
    assert third.status is HELD
    assert ids(await store.claim({"notes": 5}, T0 + 112, LEASE_MS)) == ["second"]


async def test_a_dead_step_makes_its_dependents_dead(store: Store) -> None:
    claimed = await put_chain(store)
    released = tuple(Release(i, None, "step a failed") for i in ("second", "third"))

    dead = AttemptResult(attempt_of(claimed, T0, 400, "HTTP 400"), DEAD, released=released)
    assert await store.finish(claimed, dead)

    for delivery_id in ("second", "third"):
        after = await store.get_delivery(delivery_id)
        assert after is not None and (after.status, after.last_error, after.request) == (DEAD, "step a failed", None)
        assert after.template == TEMPLATE
    assert ids(await store.list_deliveries(DeliveryFilter(status=DEAD))) == ["third", "second", "first"]
    assert (await store.stats()).dead == 3


async def test_a_lost_lease_releases_nothing(store: Store) -> None:
    stale = await put_chain(store)
    await store.claim({"crm": 1}, T0 + LEASE_MS, LEASE_MS)
    release = Release("second", rendered("second"), None)

    late = AttemptResult(attempt_of(stale, T0, 201, None), DELIVERED, released=(release,))
    assert not await store.finish(stale, late)

    second = await store.get_delivery("second")
    assert second is not None and second.status is HELD


async def test_a_replayed_step_releases_its_dependents_again_but_not_pending_ones(store: Store) -> None:
    claimed = await put_chain(store)
    first_run = (Release("second", rendered("v1"), None, b'{"a": 1}'),)
    delivered = AttemptResult(attempt_of(claimed, T0, 201, None), DELIVERED, released=first_run)
    assert await store.finish(claimed, delivered)
    await settle(store, "notes", DELIVERED, T0 + 1_000)

    assert await store.requeue(["first"], T0 + 2_000) == 1
    (again,) = await store.claim({"crm": 1}, T0 + 2_000, LEASE_MS)
    second_run = (Release("second", rendered("v2"), None, b'{"a": 2}'),)
    assert await store.finish(again, AttemptResult(attempt_of(again, T0 + 2_000, 201, None), DELIVERED,
                                                   released=second_run))

    second = await store.get_delivery("second")
    assert second is not None
    assert (second.status, second.attempts, second.request, second.steps) == (PENDING, 0, rendered("v2"), b'{"a": 2}')
    assert len(await store.list_attempts("second")) == 1  # its earlier attempt stays in its log

    assert await store.requeue(["first"], T0 + 3_000) == 1
    (third_run,) = await store.claim({"crm": 1}, T0 + 3_000, LEASE_MS)
    unchanged = (Release("second", rendered("v3"), None),)
    assert await store.finish(third_run, AttemptResult(attempt_of(third_run, T0 + 3_000, 201, None), DELIVERED,
                                                       released=unchanged))
    still = await store.get_delivery("second")
    assert still is not None and still.request == rendered("v2")  # it was pending: left alone


# --- listing ---


@pytest.fixture
async def listed(store: Store) -> Store:
    """e1..e4, one second apart: statuses pending, delivered, dead and pending again."""
    await put(store, "e1", T0, new_delivery("e1-slack", "slack"), new_delivery("e1-hubspot", "hubspot"))
    await put(store, "e2", T0 + 1_000, new_delivery("e2-discord", "discord", route="all"))
    await put(store, "e3", T0 + 2_000, new_delivery("e3-slack", "slack", route="all", ok=False))
    await put(store, "e4", T0 + 3_000, new_delivery("e4-hubspot", "hubspot", route="all"))
    await settle(store, "discord", DELIVERED, T0 + 5_000)
    return store


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        pytest.param(DeliveryFilter(), ["e4-hubspot", "e3-slack", "e2-discord", "e1-slack", "e1-hubspot"], id="all"),
        pytest.param(DeliveryFilter(status=PENDING), ["e4-hubspot", "e1-slack", "e1-hubspot"], id="pending"),
        pytest.param(DeliveryFilter(status=DELIVERED), ["e2-discord"], id="delivered"),
        pytest.param(DeliveryFilter(status=DEAD), ["e3-slack"], id="dead"),
        pytest.param(DeliveryFilter(route="vip"), ["e1-slack", "e1-hubspot"], id="route"),
        pytest.param(DeliveryFilter(destination="slack"), ["e3-slack", "e1-slack"], id="destination"),
        pytest.param(DeliveryFilter(event_id="e1"), ["e1-slack", "e1-hubspot"], id="event"),
        pytest.param(DeliveryFilter(since_ms=T0 + 1_000), ["e4-hubspot", "e3-slack", "e2-discord"], id="since"),
        pytest.param(DeliveryFilter(ids=("e1-slack", "e3-slack", "nope")), ["e3-slack", "e1-slack"], id="ids"),
        pytest.param(DeliveryFilter(ids=()), [], id="no-ids"),
        pytest.param(DeliveryFilter(limit=2), ["e4-hubspot", "e3-slack"], id="limit"),
        pytest.param(DeliveryFilter(route="all", destination="hubspot"), ["e4-hubspot"], id="route-and-destination"),
        pytest.param(DeliveryFilter(status=PENDING, since_ms=T0 + 1), ["e4-hubspot"], id="status-and-since"),
    ],
)
async def test_list_deliveries_filters_newest_first(listed: Store, where: DeliveryFilter, expected: list[str]) -> None:
    found = await listed.list_deliveries(where)

    assert sorted(ids(found)) == sorted(expected)
    created = [delivery.created_at_ms for delivery in found]
    assert created == sorted(created, reverse=True)


# --- prune and stats ---


async def test_prune_deletes_old_delivered_work_and_keeps_dead_letters(store: Store) -> None:
    await put(store, "old-done", T0, new_delivery("old-done-1", "slack"), new_delivery("old-done-2", "slack"))
    await put(store, "old-mixed", T0, new_delivery("old-mixed-ok", "slack"), new_delivery("old-mixed-dead", "teams"))
    await put(store, "old-waiting", T0, new_delivery("old-waiting-1", "discord"))
    await put(store, "old-unrouted", T0)
    await put(store, "new-done", T0 + 10_000, new_delivery("new-done-1", "slack"))
    await settle(store, "slack", DELIVERED, T0 + 20_000)
    await settle(store, "teams", DEAD, T0 + 20_000)

    assert await store.prune(before_ms=T0 + 5_000) == 2

    gone = ["old-done", "old-unrouted"]
    kept = ["old-mixed", "old-waiting", "new-done"]
    assert [await store.get_event(e) is None for e in gone + kept] == [True] * len(gone) + [False] * len(kept)
    remaining = ids(await store.list_deliveries(DeliveryFilter()))
    assert sorted(remaining) == ["new-done-1", "old-mixed-dead", "old-waiting-1"]
    assert await store.list_attempts("old-done-1") == []
    assert len(await store.list_attempts("old-mixed-dead")) == 1
    assert await store.prune(before_ms=T0 + 5_000) == 0


async def test_stats_count_the_queue_and_dead_letters(store: Store) -> None:
    assert await store.stats() == QueueStats(pending=0, dead=0, oldest_due_ms=None, by_destination={})
    await put(store, "e1", T0 + 10, new_delivery("s1", "slack"), new_delivery("broken", "discord", ok=False))
    await put(store, "e2", T0 + 5, new_delivery("s2", "slack"), new_delivery("h1", "hubspot"))
    await put(store, "e3", T0, new_delivery("t1", "teams"))
    await settle(store, "teams", DELIVERED, T0 + 20)

    assert await store.stats() == QueueStats(
        pending=3, dead=1, oldest_due_ms=T0 + 5, by_destination={"slack": 2, "hubspot": 1}
    )


async def test_ping_answers_while_open_and_fails_once_closed(new_store: StoreFactory) -> None:
    store = new_store()
    await store.open()
    await store.ping()
    await store.close()

    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.ingest(new_event("late"), [], WINDOW_MS)


# --- quota waits and destination pauses ---


def quota_wait(delivery: Delivery, at_ms: int, until_ms: int, destination: str = "slack") -> AttemptResult:
    """What the worker records for a 429: not counted, the delivery and its whole destination wait."""
    attempt = replace(attempt_of(delivery, at_ms, 429, "waiting for quota"), response_excerpt="slow down")
    pause = DestinationPause(destination, until_ms, "HTTP 429: slow down")
    return AttemptResult(attempt, PENDING, until_ms, counted=False, pause=pause)


async def test_a_quota_answer_is_recorded_without_spending_an_attempt(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("d1"))
    (claimed,) = await store.claim({"slack": 1}, T0, LEASE_MS)

    assert await store.finish(claimed, quota_wait(claimed, T0, T0 + 60_000))

    after = await store.get_delivery("d1")
    assert after is not None
    assert (after.status, after.attempts, after.quota_waits, after.next_attempt_at_ms) == (PENDING, 0, 1, T0 + 60_000)
    (again,) = await store.claim({"slack": 1}, T0 + 60_000, LEASE_MS)
    retry = AttemptResult(attempt_of(again, T0 + 60_000, 503, "HTTP 503"), PENDING, T0 + 61_000)
    assert await store.finish(again, retry)
    after = await store.get_delivery("d1")
    assert after is not None and (after.attempts, after.quota_waits) == (1, 1)
    assert [a.number for a in await store.list_attempts("d1")] == [1, 2]

    await settle(store, "slack", DEAD, T0 + 61_000)
    assert await store.requeue(["d1"], T0 + 70_000) == 1
    requeued = await store.get_delivery("d1")
    assert requeued is not None and (requeued.attempts, requeued.quota_waits) == (0, 0)


async def test_a_paused_destination_is_not_claimed_until_its_pause_ends(new_store: StoreFactory) -> None:
    store = new_store()
    await store.open()
    await put(store, "e1", T0, new_delivery("d1", "slack"), new_delivery("d2", "slack"), new_delivery("h", "hubspot"))
    (first, _) = await store.claim({"slack": 2}, T0, LEASE_MS)
    await store.finish(first, quota_wait(first, T0, T0 + 900_000))
    await store.close()
    store = new_store()  # the pause outlives a restart, and another replica sees it
    await store.open()
    try:
        assert await store.pauses(T0) == [DestinationPause("slack", T0 + 900_000, "HTTP 429: slow down")]
        claimed = await store.claim({"slack": 5, "hubspot": 5}, T0 + LEASE_MS, LEASE_MS)
        assert ids(claimed) == ["h"]
        await store.finish(claimed[0], AttemptResult(attempt_of(claimed[0], T0 + LEASE_MS, 200, None), DELIVERED))
        assert await store.next_due_ms() == T0 + 900_000  # d2 was due long before, but slack is paused
        assert await store.claim({"slack": 5}, T0 + 899_999, LEASE_MS) == []

        assert sorted(ids(await store.claim({"slack": 5}, T0 + 900_000, LEASE_MS))) == ["d1", "d2"]
        assert await store.pauses(T0 + 900_000) == []
    finally:
        await store.close()


async def test_a_pause_only_grows_longer(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("d1"), new_delivery("d2"))
    first, second = await store.claim({"slack": 2}, T0, LEASE_MS)

    await store.finish(first, quota_wait(first, T0, T0 + 600_000))
    await store.finish(second, quota_wait(second, T0 + 5, T0 + 30_000))  # a shorter hint answered meanwhile

    assert [pause.until_ms for pause in await store.pauses(T0)] == [T0 + 600_000]
    assert await store.pauses(T0 + 600_000) == []


async def test_next_due_ms_holds_a_paused_destination_back_to_the_pause_end(store: Store) -> None:
    await put(store, "e1", T0, new_delivery("d1", "slack"), new_delivery("h1", "hubspot"))
    (paused,) = await store.claim({"slack": 1}, T0, LEASE_MS)
    await store.finish(paused, quota_wait(paused, T0, T0 + 120_000))
    (other,) = await store.claim({"hubspot": 1}, T0, LEASE_MS)
    await store.finish(other, AttemptResult(attempt_of(other, T0, 503, "HTTP 503"), PENDING, T0 + 50_000))

    assert await store.next_due_ms() == (await store.stats()).oldest_due_ms == T0 + 50_000
    await settle(store, "hubspot", DELIVERED, T0 + 50_000)
    assert await store.next_due_ms() == (await store.stats()).oldest_due_ms == T0 + 120_000


# --- SQLite only ---

KILL_SCRIPT = """
import asyncio, sys
from gateway.model import NewDelivery, NewEvent, RenderedRequest
from gateway.store.sqlite import SqliteStore

async def main(path: str, count: int) -> None:
    store = SqliteStore(path)
    await store.open()
    request = RenderedRequest("POST", "https://dest.example/", {}, b"{}")
    deliveries = [[NewDelivery(f"d{n}", "r", "slack", 3, request)] for n in range(count)]
    events = [NewEvent(f"e{n}", "missive", n, b"body", f"k{n}") for n in range(count)]
    await asyncio.gather(*(store.ingest(e, d, 0) for e, d in zip(events, deliveries)))
    print("ingested", flush=True)
    await asyncio.sleep(600)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_sqlite_ingests_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILL_SCRIPT, str(path), "200",
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), timeout=60) == b"ingested\n"
    process.kill()
    assert await process.wait() == -9

    store = SqliteStore(path)
    await store.open()
    try:
        assert [await store.get_event(f"e{n}") is not None for n in range(200)] == [True] * 200
        assert (await store.stats()).by_destination == {"slack": 200}
    finally:
        await store.close()


async def test_sqlite_close_commits_writes_queued_before_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    writes = [asyncio.ensure_future(store.ingest(new_event(f"e{n}"), [], WINDOW_MS)) for n in range(50)]
    await asyncio.sleep(0)  # let every ingest queue its write

    await store.close()

    assert all(write.done() and write.result().event_id == f"e{n}" for n, write in enumerate(writes))
    reopened = SqliteStore(tmp_path / "gateway.db")
    await reopened.open()
    try:
        assert [await reopened.get_event(f"e{n}") is not None for n in range(50)] == [True] * 50
    finally:
        await reopened.close()


def read_pragmas(path: Path) -> tuple[str, int]:
    with closing(sqlite3.connect(path)) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        (version,) = conn.execute("SELECT version FROM schema_version").fetchone()
    return mode, version


async def test_sqlite_open_creates_directories_and_a_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "gateway.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()

    assert await asyncio.to_thread(read_pragmas, path) == ("wal", SCHEMA_VERSION)


def set_schema_version(path: Path, version: int) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE schema_version SET version = ?", (version,))


async def test_sqlite_refuses_a_database_from_a_newer_gateway(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    await asyncio.to_thread(set_schema_version, path, SCHEMA_VERSION + 1)

    with pytest.raises(StoreUnavailable, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        await SqliteStore(path).open()


def make_version_1(path: Path) -> None:
    """A file as a gateway before lookups and request chains left it (schema version 1), with one delivery queued."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(V1_SCHEMA)
        conn.execute("INSERT INTO events (id, source, dedupe_key, received_at_ms, body) VALUES "
                     "('e1', 'missive', 'k1', ?, '{}')", (T0,))
        request = rendered("d1")
        row = (T0, T0, T0, request.method, request.url, json.dumps(request.headers), request.body)
        conn.execute("INSERT INTO deliveries VALUES ('d1', 'e1', 'vip', 'slack', 'pending', 0, 3, ?, ?, ?, ?, ?, ?, ?, "
                     "NULL, NULL)", row)


async def test_sqlite_migrates_a_version_1_database_keeping_its_queue_to_chains_and_quota_waits(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    await asyncio.to_thread(make_version_1, path)

    store = SqliteStore(path)
    await store.open()
    try:
        (claimed,) = await store.claim({"slack": 1}, T0, LEASE_MS)
        assert (claimed.id, claimed.request, claimed.step, claimed.template) == ("d1", rendered("d1"), None, None)
        await put(store, "e2", T0, chained("d2", "d1"))
        held = await store.get_delivery("d2")
        assert held is not None and (held.status, held.template) == (HELD, TEMPLATE)
        assert claimed.quota_waits == 0
        assert await store.finish(claimed, quota_wait(claimed, T0, T0 + 1_000))
        assert await store.pauses(T0) == [DestinationPause("slack", T0 + 1_000, "HTTP 429: slow down")]
    finally:
        await store.close()
    assert await asyncio.to_thread(read_pragmas, path) == ("wal", SCHEMA_VERSION)
    assert await asyncio.to_thread(indexes_of, path, "deliveries") == [
        "deliveries_created", "deliveries_due", "deliveries_event", "deliveries_failing", "deliveries_queue",
    ]  # fmt: skip


def indexes_of(path: Path, table: str) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL "
                            "ORDER BY name", (table,)).fetchall()  # fmt: skip
    return [name for (name,) in rows]


async def test_sqlite_runs_no_statement_on_the_event_loop_and_groups_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[tuple[int, str]] = []
    real_connect = sqlite3.connect

    def tracing_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        statements.append((threading.get_ident(), "connect"))
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        conn.set_trace_callback(lambda sql: statements.append((threading.get_ident(), sql)))
        return conn

    monkeypatch.setattr(sqlite3, "connect", tracing_connect)
    store = SqliteStore(tmp_path / "gateway.db")
    await store.open()
    events = [new_event(f"e{n}") for n in range(200)]
    await asyncio.gather(*(store.ingest(e, [new_delivery(f"d-{e.id}")], WINDOW_MS) for e in events))
    commits_for_ingests = sum(sql == "COMMIT" for _, sql in statements)
    (claimed, *_) = await store.claim({"slack": 5}, T0, LEASE_MS)
    await store.finish(claimed, AttemptResult(attempt_of(claimed, T0, 200, None), DELIVERED))
    await store.requeue([claimed.id], T0 + 1)
    await store.get_event("e1")
    await store.get_delivery(claimed.id)
    await store.list_attempts(claimed.id)
    await store.list_deliveries(DeliveryFilter(status=PENDING))
    await store.find_events(EventQuery(text="e1", status=DELIVERED))
    await store.next_due_ms()
    await store.stats()
    await store.prune(T0 + 1)
    await store.ping()
    await store.close()

    assert {sql.split()[0] for _, sql in statements} >= {"connect", "INSERT", "SELECT", "UPDATE", "DELETE"}
    assert threading.get_ident() not in {thread for thread, _ in statements}
    assert 1 <= commits_for_ingests <= len(events) // 4


async def test_whether_a_host_came_from_a_template_is_kept_through_claim_and_requeue(store: Store) -> None:
    untrusted = dataclasses.replace(rendered("u"), untrusted_host=True)
    await put(store, "e1", T0, NewDelivery("d1", "vip", "slack", 3, untrusted), new_delivery("d2"))
    claimed = {delivery.id: delivery for delivery in await store.claim({"slack": 2}, T0, 60_000)}
    assert claimed["d1"].request == untrusted and claimed["d2"].request == rendered("d2")
    await store.finish(claimed["d1"], AttemptResult(attempt_of(claimed["d1"], T0, 400, "no"), DEAD))
    assert await store.requeue(["d1"], T0 + 1, {"d1": rendered("again")}) == 1
    requeued = await store.get_delivery("d1")
    assert requeued is not None and requeued.request == rendered("again")  # the new request's flag: a literal host
