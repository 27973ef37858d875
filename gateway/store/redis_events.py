"""Looking events up in the Redis store, and the indexes that lookups walk.

Every event is in `events` (a zset by received_at_ms) and, when it has them, in
`events:conversation_id:<id>`, `events:sender:<address>` and `events:rule_type:<type>`. A lookup walks
the narrowest index its filters allow (a conversation, a sender, the few pending or dead deliveries, a
rule type, or all events), newest first, inside Redis (the FIND script, a bounded stretch per call), and
loads only the events of the page. A filter that matches few events among many and has no index of its
own (text, `delivered` deliveries) walks until the page is full.
"""

from __future__ import annotations

import json
import string
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from gateway.model import (
    DeliveryBrief,
    DeliveryStatus,
    EventCursor,
    EventFacts,
    EventPage,
    EventQuery,
    EventSummary,
    event_facts,
)

INDEXED_FACTS = ("conversation_id", "sender", "rule_type")
_EVENT_FIELDS = ("id", "source", "received_at_ms", "conversation_id", "subject", "sender", "rule_type")
_BRIEF_FIELDS = ("id", "route", "destination", "status", "attempts", "max_attempts", "last_error", "created_at_ms")
_BUDGET = 5000  # index entries one FIND call walks at most: a few milliseconds of Redis's time
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_UPGRADE_BATCH = 500


def fact_fields(facts: EventFacts) -> dict[str, str]:
    """The facts an event hash holds (absent when unknown)."""
    return {name: value for name, value in vars(facts).items() if value is not None}


async def find_events(client: Redis, find: AsyncScript, prefix: str, query: EventQuery) -> EventPage:
    """Run FIND over the narrowest index until it has a page and one more, then load those events."""
    index, via_deliveries = _narrowest_index(prefix, query)
    high: Any = "+inf" if query.until_ms is None else f"({query.until_ms}"
    if query.cursor is not None:
        high = query.cursor.received_at_ms if query.until_ms is None else min(query.cursor.received_at_ms,
                                                                              query.until_ms - 1)  # fmt: skip
    low: Any = "-inf" if query.since_ms is None else query.since_ms
    cursor = query.cursor
    fixed = [
        *(("", "") if cursor is None else (cursor.received_at_ms, cursor.event_id)),
        query.conversation_id or "", query.sender.lower() if query.sender else "", query.rule_type or "",
        query.source or "", _lower(query.subject), _lower(query.text),
        query.status.value if query.status else "", query.route or "", query.destination or "",
    ]  # fmt: skip
    found: dict[str, None] = {}
    ties = 0
    while len(found) <= query.limit and high != "":
        wanted = query.limit + 1 - len(found)
        ids, top, ties = await find(args=[prefix, index, int(via_deliveries), high, low, ties, _BUDGET, wanted, *fixed])
        found.update(dict.fromkeys(member.decode() for member in ids))
        high = top.decode()
    events = await _load(client, prefix, list(found)[: query.limit + 1])
    more = len(events) > query.limit
    events = events[: query.limit]
    return EventPage(events, EventCursor(events[-1].received_at_ms, events[-1].id) if more else None)


def _lower(text: str | None) -> str:
    """Lower case as Lua's `string.lower` has it (ASCII letters only), so both sides of a comparison agree."""
    return (text or "").translate(_ASCII_LOWER)


def _narrowest_index(prefix: str, query: EventQuery) -> tuple[str, bool]:
    """The index to walk, and whether it holds deliveries (mapped to their events) rather than events."""
    for name, value in (("conversation_id", query.conversation_id),
                        ("sender", query.sender.lower() if query.sender else None)):  # fmt: skip
        if value is not None:
            return f"{prefix}events:{name}:{value}", False
    if query.status in (DeliveryStatus.PENDING, DeliveryStatus.HELD, DeliveryStatus.DEAD):  # few beside delivered
        return f"{prefix}status:{query.status.value}", True
    if query.rule_type is not None:
        return f"{prefix}events:rule_type:{query.rule_type}", False
    return f"{prefix}events", False


async def _load(client: Redis, prefix: str, event_ids: Sequence[str]) -> list[EventSummary]:
    """The events among `event_ids` that are still stored, in that order, with their deliveries."""
    if not event_ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.hmget(f"{prefix}event:{event_id}", _EVENT_FIELDS)
            pipe.smembers(f"{prefix}event_deliveries:{event_id}")
        replies = await pipe.execute()
    stored = []
    for values, delivery_ids in zip(replies[0::2], replies[1::2], strict=True):
        fields = {name: value.decode() for name, value in zip(_EVENT_FIELDS, values, strict=True) if value is not None}
        if "id" in fields:
            stored.append((fields, [member.decode() for member in delivery_ids]))
    briefs = await _briefs(client, prefix, [delivery_id for _, ids in stored for delivery_id in ids])
    events = []
    for fields, delivery_ids in stored:
        own = sorted(briefs[delivery_id] for delivery_id in delivery_ids if delivery_id in briefs)
        facts = EventFacts(*(fields.get(name) for name in ("conversation_id", "subject", "sender", "rule_type")))
        events.append(EventSummary(fields["id"], fields["source"], int(fields["received_at_ms"]), facts,
                                   tuple(brief for *_, brief in own)))  # fmt: skip
    return events


async def _briefs(
    client: Redis, prefix: str, delivery_ids: Sequence[str]
) -> dict[str, tuple[int, str, DeliveryBrief]]:
    """Each delivery's creation time and id (to order them) and brief, by id."""
    if not delivery_ids:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for delivery_id in delivery_ids:
            pipe.hmget(f"{prefix}delivery:{delivery_id}", _BRIEF_FIELDS)
        replies = await pipe.execute()
    found = {}
    for values in replies:
        if values[0] is None:
            continue  # pruned meanwhile
        fields = {name: value.decode() for name, value in zip(_BRIEF_FIELDS, values, strict=True) if value is not None}
        brief = DeliveryBrief(
            fields["id"], fields["route"], fields["destination"], DeliveryStatus(fields["status"]),
            int(fields["attempts"]), int(fields["max_attempts"]), fields.get("last_error"),
        )  # fmt: skip
        found[brief.id] = (int(fields["created_at_ms"]), brief.id, brief)
    return found


async def index_old_events(client: Redis, prefix: str) -> None:
    """Give events stored by a version 1 gateway their facts and index entries (safe to run twice)."""
    async for keys in _batches(client, f"{prefix}event:*"):
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "id", "received_at_ms", "body")
            replies = await pipe.execute()
        async with client.pipeline(transaction=False) as pipe:
            for event_id, received, body in replies:
                if event_id is None:
                    continue
                try:
                    fields = fact_fields(event_facts(json.loads(body)))
                except ValueError:
                    fields = {}
                if fields:
                    flat = [item for pair in fields.items() for item in pair]
                    pipe.hset(f"{prefix}event:{event_id.decode()}", items=flat)
                pipe.zadd(f"{prefix}events", {event_id: int(received)})
                for name in INDEXED_FACTS:
                    if name in fields:
                        pipe.zadd(f"{prefix}events:{name}:{fields[name]}", {event_id: int(received)})
            await pipe.execute()


async def _batches(client: Redis, pattern: str) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=_UPGRADE_BATCH):
        batch.append(key)
        if len(batch) >= _UPGRADE_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch
