"""`Store.find_events` on every backend: each filter, newest first, pages, and events stored by an older gateway."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from redis.asyncio import Redis

from gateway.model import (
    DeliveryBrief,
    EventCursor,
    EventFacts,
    EventQuery,
    NewEvent,
    event_facts,
)
from gateway.store.base import Store
from gateway.store.redis import RedisStore, connect
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_schema import V1_SCHEMA
from tests.conftest import FIXTURES
from tests.redis_server import RedisServer
from tests.store.test_contract import DEAD, DELIVERED, PENDING, T0, new_delivery, settle

MINUTE_MS = 60_000


def event_with(event_id: str, at_ms: int, conversation: str, sender: str, subject: str, rule_type: str,
               source: str = "missive") -> NewEvent:  # fmt: skip
    payload = {
        "rule": {"type": rule_type}, "conversation": {"id": conversation, "subject": subject},
        "message": {"from_field": {"address": sender}},
    }  # fmt: skip
    body = json.dumps(payload).encode()
    return NewEvent(event_id, source, at_ms, body, f"key-{event_id}", event_facts(payload))


# Five events, a minute apart; e5 is the newest.
EVENTS = [
    event_with("e1", T0, "conv-a", "Priya@Example.org", "Order HL-20931 arrived damaged", "incoming_email"),
    event_with("e2", T0 + MINUTE_MS, "conv-b", "tomasz.w@example.org", "Invoice charged twice", "incoming_email"),
    event_with("e3", T0 + 2 * MINUTE_MS, "conv-a", "priya@example.org", "Re: Order HL-20931", "label_change"),
    event_with("e4", T0 + 3 * MINUTE_MS, "conv-c", "dev@support.example.com", "100% off_sale", "outgoing_email",
               source="other"),  # fmt: skip
    event_with("e5", T0 + 4 * MINUTE_MS, "conv-b", "tomasz.w@example.org", "Invoice charged twice", "new_comment"),
]


@pytest.fixture
async def stocked(store: Store) -> Store:
    """EVENTS stored; e1 went to slack (delivered) and crm (dead); e2 waits for crm, e5 for slack."""
    await store.ingest(EVENTS[0], [new_delivery("d1-slack", "slack", "vip"), new_delivery("d1-crm", "crm", "notes")], 0)
    await settle(store, "slack", DELIVERED, T0)
    await settle(store, "crm", DEAD, T0)
    later = {"e2": [new_delivery("d2-crm", "crm", "notes")], "e5": [new_delivery("d5-slack", "slack", "vip")]}
    for event in EVENTS[1:]:
        await store.ingest(event, later.get(event.id, []), 0)
    return store


async def found_ids(store: Store, query: EventQuery) -> list[str]:
    return [event.id for event in (await store.find_events(query)).events]


async def test_events_come_newest_first_with_their_facts_and_deliveries(stocked: Store) -> None:
    page = await stocked.find_events(EventQuery())

    assert [event.id for event in page.events] == ["e5", "e4", "e3", "e2", "e1"]
    assert page.next_cursor is None
    oldest = page.events[-1]
    assert (oldest.source, oldest.received_at_ms) == ("missive", T0)
    assert oldest.facts == EventFacts("conv-a", "Order HL-20931 arrived damaged", "priya@example.org", "incoming_email")
    assert oldest.deliveries == (  # created together: by id
        DeliveryBrief("d1-crm", "notes", "crm", DEAD, 1, 3, "HTTP 400"),
        DeliveryBrief("d1-slack", "vip", "slack", DELIVERED, 1, 3, None),
    )
    assert page.events[1].deliveries == ()
    assert page.events[0].deliveries == (DeliveryBrief("d5-slack", "vip", "slack", PENDING, 0, 3, None),)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(EventQuery(conversation_id="conv-a"), ["e3", "e1"], id="conversation"),
        pytest.param(EventQuery(conversation_id="conv"), [], id="conversation-is-whole"),
        pytest.param(EventQuery(sender="PRIYA@example.org"), ["e3", "e1"], id="sender-any-case"),
        pytest.param(EventQuery(sender="priya"), [], id="sender-is-whole"),
        pytest.param(EventQuery(subject="hl-20931"), ["e3", "e1"], id="subject-contains-any-case"),
        pytest.param(EventQuery(subject="0% off_"), ["e4"], id="subject-wildcards-are-literal"),
        pytest.param(EventQuery(subject="0%_off"), [], id="subject-percent-is-not-a-wildcard"),
        pytest.param(EventQuery(text="CONV-B"), ["e5", "e2"], id="text-finds-a-conversation"),
        pytest.param(EventQuery(text="support.example"), ["e4"], id="text-finds-a-sender"),
        pytest.param(EventQuery(text="invoice"), ["e5", "e2"], id="text-finds-a-subject"),
        pytest.param(EventQuery(rule_type="incoming_email"), ["e2", "e1"], id="type"),
        pytest.param(EventQuery(source="other"), ["e4"], id="source"),
        pytest.param(EventQuery(status=DEAD), ["e1"], id="status"),
        pytest.param(EventQuery(status=PENDING), ["e5", "e2"], id="status-pending"),
        pytest.param(EventQuery(route="notes"), ["e2", "e1"], id="route"),
        pytest.param(EventQuery(destination="slack"), ["e5", "e1"], id="destination"),
        pytest.param(EventQuery(destination="slack", status=DEAD), [], id="one-delivery-holds-all-three"),
        pytest.param(EventQuery(route="notes", status=DEAD, destination="crm"), ["e1"], id="route-status-destination"),
        pytest.param(EventQuery(since_ms=T0 + 2 * MINUTE_MS), ["e5", "e4", "e3"], id="since-is-inclusive"),
        pytest.param(EventQuery(until_ms=T0 + 2 * MINUTE_MS), ["e2", "e1"], id="until-is-exclusive"),
        pytest.param(EventQuery(conversation_id="conv-b", since_ms=T0 + MINUTE_MS + 1), ["e5"], id="combined"),
        pytest.param(EventQuery(sender="priya@example.org", rule_type="label_change"), ["e3"], id="index-and-filter"),
        pytest.param(EventQuery(limit=2), ["e5", "e4"], id="limit"),
    ],
)
async def test_each_filter(stocked: Store, query: EventQuery, expected: list[str]) -> None:
    assert await found_ids(stocked, query) == expected


@pytest.mark.parametrize(
    "query",
    [
        pytest.param(EventQuery(limit=2), id="all"),
        pytest.param(EventQuery(rule_type="incoming_email", limit=1), id="by-index"),
        pytest.param(EventQuery(text="e", limit=3), id="filtered"),
    ],
)
async def test_pages_follow_each_other_without_gaps_or_repeats(stocked: Store, query: EventQuery) -> None:
    everything = await found_ids(stocked, EventQuery(**{**vars(query), "limit": 100}))
    seen: list[str] = []
    cursor: EventCursor | None = None
    for _ in range(10):
        page = await stocked.find_events(EventQuery(**{**vars(query), "cursor": cursor}))
        seen += [event.id for event in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
        assert len(page.events) == query.limit
    assert seen == everything and len(everything) > query.limit


async def test_events_received_in_the_same_millisecond_page_by_id(store: Store) -> None:
    for n in range(7):
        await store.ingest(event_with(f"same-{n}", T0, "conv", "a@example.org", "s", "incoming_email"), [], 0)

    first = await store.find_events(EventQuery(limit=3))
    second = await store.find_events(EventQuery(limit=3, cursor=first.next_cursor))
    third = await store.find_events(EventQuery(limit=3, cursor=second.next_cursor))

    assert [event.id for page in (first, second, third) for event in page.events] == [
        f"same-{n}" for n in reversed(range(7))
    ]
    assert third.next_cursor is None
    assert first.next_cursor == EventCursor(T0, "same-4")


async def test_pruned_events_are_not_found(stocked: Store) -> None:
    await settle(stocked, "crm", DELIVERED, T0 + 10 * MINUTE_MS)  # e2's delivery
    await stocked.prune(T0 + 2 * MINUTE_MS)  # e1 keeps its dead letter; e2 is all delivered

    assert await found_ids(stocked, EventQuery()) == ["e5", "e4", "e3", "e1"]
    assert await found_ids(stocked, EventQuery(conversation_id="conv-b")) == ["e5"]
    assert await found_ids(stocked, EventQuery(rule_type="incoming_email")) == ["e1"]


def test_cursor_text_round_trips_and_refuses_anything_else() -> None:
    cursor = EventCursor(T0, "evt_0192:x")
    assert EventCursor.parse(str(cursor)) == cursor
    for text in ("", "12", "abc:evt", ":evt", "12:"):
        with pytest.raises(ValueError, match="not a cursor"):
            EventCursor.parse(text)


@pytest.mark.parametrize(
    ("fixture", "subject", "sender", "rule_type"),
    [
        pytest.param("incoming-email-with-labels.json", "Order HL-20931 arrived damaged", "priya.natarajan@example.org",
                     "incoming_email", id="message-subject-when-the-conversation-has-none"),
        pytest.param("label-change.json", "Invoice 2024-0611 charged twice", "tomasz.w@example.org", "label_change",
                     id="latest-message"),
        pytest.param("new-comment.json", "Order HL-20931 arrived damaged", "alma.reyes@support.example.com",
                     "new_comment", id="comment-author"),
        pytest.param("incoming-sms.json", "SMS with +1 (555) 010-4477", None, "incoming_sms_message", id="no-address"),
    ],
)  # fmt: skip
def test_facts_of_missive_payloads(fixture: str, subject: str, sender: str | None, rule_type: str) -> None:
    payload = json.loads((FIXTURES / fixture).read_text())
    facts = event_facts(payload)
    assert facts == EventFacts(payload["conversation"]["id"], subject, sender, rule_type)


def test_facts_cut_long_subjects_and_skip_what_is_not_text() -> None:
    payload = {"rule": {"type": 7}, "conversation": {"id": None, "subject": "x" * 2000}, "message": "nope"}
    assert event_facts(payload) == EventFacts(None, "x" * 500, None, None)
    assert event_facts([1, 2]) == EventFacts()


# --- events stored by a gateway before lookups (SQLite schema 1, Redis data version 1) ---

def make_v1_file(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(V1_SCHEMA)
        for event in EVENTS:
            conn.execute("INSERT INTO events (id, source, dedupe_key, received_at_ms, body) VALUES (?, ?, ?, ?, ?)",
                         (event.id, event.source, event.dedupe_key, event.received_at_ms, event.body))  # fmt: skip
        conn.execute("INSERT INTO events (id, source, dedupe_key, received_at_ms, body) VALUES ('bad', 'missive', "
                     "'k', 1, x'ff')")  # fmt: skip


async def test_sqlite_file_from_before_lookups_gets_its_facts(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    await asyncio.to_thread(make_v1_file, path)
    store = SqliteStore(path)
    await store.open()
    try:
        assert await found_ids(store, EventQuery(conversation_id="conv-a")) == ["e3", "e1"]
        assert await found_ids(store, EventQuery(text="invoice")) == ["e5", "e2"]
        assert len(await found_ids(store, EventQuery())) == 6
    finally:
        await store.close()


async def test_redis_data_from_before_lookups_gets_its_facts(redis_server: RedisServer) -> None:
    prefix = "v1-lookup:"
    client: Redis = connect(redis_server.url)
    await client.set(f"{prefix}version", 1)
    for event in EVENTS:
        await client.hset(f"{prefix}event:{event.id}", mapping={
            "id": event.id, "source": event.source, "received_at_ms": event.received_at_ms, "body": event.body,
            "dedupe_key": event.dedupe_key})  # fmt: skip
        await client.zadd(f"{prefix}bare", {event.id: event.received_at_ms})
    await client.aclose()
    store = RedisStore(redis_server.url, prefix)
    await store.open()
    try:
        assert await found_ids(store, EventQuery(conversation_id="conv-a")) == ["e3", "e1"]
        assert await found_ids(store, EventQuery(sender="tomasz.w@example.org")) == ["e5", "e2"]
        assert await found_ids(store, EventQuery(text="invoice")) == ["e5", "e2"]
    finally:
        await store.close()
