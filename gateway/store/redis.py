"""The shared store: one Redis server behind any number of gateway replicas.

Every write is one Lua script, so it is atomic: a replica that dies mid-call leaves all of
the write or none of it. Keys (all under a prefix, default `gw:`):

    event:<id>                  hash: id, source, received_at_ms, body, dedupe_key, and its facts
                                (conversation_id, subject, sender, rule_type) when known
    events, events:<fact>:<v>   zsets of event ids by received_at_ms, for lookups (`gateway.store.redis_events`)
    event_deliveries:<id>       set of the event's delivery ids
    bare                        zset of events without deliveries, by received_at_ms (pruned by age)
    delivery:<id>               hash: the Delivery's fields (absent field = None)
    attempts:<delivery id>      list of JSON attempts, oldest first
    due:<destination>           zset of pending delivery ids by next_attempt_at_ms
    destinations                set of every destination that ever had a pending delivery
    created, status:<status>    zsets of delivery ids by created_at_ms, for listing
    dedupe:<source>:<key>       "<received_at_ms>:<event id>" of the last stored event with that body
    conversation:<source>:<id>  hash: version (writes so far), last_seen_ms, state (labels and assignees, JSON)
    conversations               zset of those `<source>:<id>` by last_seen_ms (pruned by age)
    once:<route>:<key>          the end (ms) of a once_per window, expiring with it
    pauses, pause_reasons       hashes by destination: until when it is paused (a spent quota), and why

and the indexes of the console's overview, described in `gateway.store.redis_activity`.

Leases work as in SQLite: `claim` re-scores a due delivery to `now + lease` and gives it a
fresh `lease_token`. This is our equivalent of a stream's XAUTOCLAIM: when a replica dies
holding leases, its deliveries simply come due again when the lease runs out and any
replica claims them; `finish` only moves a delivery whose token still matches.

Times come from the callers, never from Redis, as the Store contract asks. Durability is
Redis's: run it with `appendonly yes` and `appendfsync always` (checked, with a warning, on open).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from gateway.errors import StoreUnavailable
from gateway.model import (
    Activity,
    Attempt,
    AttemptResult,
    Delivery,
    DeliveryFilter,
    DestinationPause,
    EventPage,
    EventQuery,
    IngestResult,
    NewDelivery,
    NewEvent,
    QueueStats,
    RenderedRequest,
    StateKeys,
    StateSnapshot,
    StateWrite,
    StoredEvent,
)
from gateway.store import redis_scripts as lua
from gateway.store.base import Store
from gateway.store.redis_activity import ACTIVITY, INDEX_OLD, index_old_records, parse_activity
from gateway.store.redis_events import fact_fields, find_events, index_old_events
from gateway.store.redis_records import (
    counted,
    matches,
    new_delivery_fields,
    pair_key,
    pairs,
    read_delivery,
    release_fields,
    request_fields,
    snapshot,
    state_arguments,
)

log = logging.getLogger("gateway.store")

DATA_VERSION = 3  # 2: events indexed for lookups; 3: for the overview
TIMEOUT_S = 5.0
MAX_CONNECTIONS = 32
_PRUNE_CHUNK = 500
_LIST_PAGE = 200
_DUPLICATE, _CONFLICT = 1, 2  # what INGEST answers, besides 0: stored

@contextlib.contextmanager
def redis_errors(doing: str) -> Iterator[None]:
    """Turn any Redis failure (down, timeout, refused write) into StoreUnavailable."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise StoreUnavailable(f"Redis store cannot {doing}: {exc}") from exc


def connect(url: str) -> Redis:
    """A client with a bounded pool and no silent retries: a call runs once or fails with StoreUnavailable."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=TIMEOUT_S,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)


@dataclass(frozen=True)
class _Scripts:
    ingest: AsyncScript
    claim: AsyncScript
    finish: AsyncScript
    requeue: AsyncScript
    prune: AsyncScript
    stats: AsyncScript
    find: AsyncScript
    activity: AsyncScript
    index_old: AsyncScript

    @classmethod
    def on(cls, client: Redis) -> _Scripts:
        sources = (lua.INGEST, lua.CLAIM, lua.FINISH, lua.REQUEUE, lua.PRUNE, lua.STATS, lua.FIND, ACTIVITY, INDEX_OLD)
        return cls(*(client.register_script(source) for source in sources))


class RedisStore(Store):
    """The `Store` on a Redis server at `url`; `prefix` namespaces its keys (one gateway per prefix)."""

    def __init__(self, url: str, prefix: str = "gw:") -> None:
        self._url = url
        self.prefix = prefix
        self._client: Redis | None = None
        self._scripts: _Scripts | None = None
        self._calls = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def client(self) -> Redis:
        """The open connection pool, for what shares this Redis (RedisLimits)."""
        if self._client is None:
            raise StoreUnavailable("Redis store is not open")
        return self._client

    async def open(self) -> None:
        client = connect(self._url)
        try:
            with redis_errors("open"):
                await client.set(self._key("version"), DATA_VERSION, nx=True)
                version = int(cast(bytes, await client.get(self._key("version"))))
                await _warn_unless_durable(client)
            if version > DATA_VERSION:
                known = DATA_VERSION
                raise StoreUnavailable(f"Redis data version {version} is newer than this gateway knows ({known})")
            scripts = _Scripts.on(client)
            with redis_errors("index what an earlier gateway stored"):
                if version < 2:
                    await index_old_events(client, self.prefix)
                if version < 3:
                    await index_old_records(scripts.index_old, self.prefix)
                if version < DATA_VERSION:
                    await client.set(self._key("version"), DATA_VERSION)
        except BaseException:
            await client.aclose()
            raise
        self._client, self._scripts = client, scripts

    async def close(self) -> None:
        """Refuse new calls, let the calls in flight end, then disconnect."""
        client, self._client, self._scripts = self._client, None, None
        if client is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TIMEOUT_S):
                    await self._idle.wait()
            await client.aclose()

    async def ping(self) -> None:
        async with self._call("write") as (client, _):
            await client.set(self._key("ping"), "1")
        await self.next_due_ms()  # what the worker reads

    async def ingest(
        self, event: NewEvent, deliveries: list[NewDelivery], dedupe_window_ms: int, state: StateWrite | None = None
    ) -> IngestResult:
        event_fields = {
            "id": event.id, "source": event.source, "received_at_ms": event.received_at_ms, "body": event.body,
            "dedupe_key": event.dedupe_key, **fact_fields(event.facts),
        }  # fmt: skip
        if event.changes is not None:
            event_fields["changes"] = event.changes
        written = state_arguments(state)
        args: list[Any] = [self.prefix, dedupe_window_ms, len(written), *written, *counted(event_fields)]
        for new in deliveries:
            args += counted(new_delivery_fields(event, new))
        async with self._call("store the event") as (_, scripts):
            outcome, event_id = await scripts.ingest(args=args)
        if outcome == _DUPLICATE:
            return IngestResult(event_id=event_id.decode(), deliveries=0, duplicate=True)
        if outcome == _CONFLICT:
            return IngestResult(event_id=event.id, deliveries=0, conflict=True)
        return IngestResult(event_id=event.id, deliveries=len(deliveries))

    async def read_state(self, keys: StateKeys, now_ms: int) -> StateSnapshot:
        async with self._call("read") as (client, _), client.pipeline(transaction=False) as pipe:
            if keys.conversation is not None:
                pipe.hmget(self._key("conversation", pair_key(keys.conversation)), "version", "last_seen_ms",
                           "state")  # fmt: skip
            for once in keys.once:
                pipe.get(self._key("once", pair_key(once)))
            replies = await pipe.execute()
        return snapshot(keys, replies, now_ms)

    async def claim(self, capacity: Mapping[str, int], now_ms: int, lease_ms: int) -> list[Delivery]:
        wanted = [item for destination, limit in capacity.items() if limit > 0 for item in (destination, limit)]
        if not wanted:
            return []
        args = [self.prefix, now_ms, now_ms + lease_ms, uuid.uuid4().hex, *wanted]
        async with self._call("claim deliveries") as (_, scripts):
            claimed = await scripts.claim(args=args)
        return [read_delivery(pairs(flat)) for flat in claimed]

    async def finish(self, delivery: Delivery, result: AttemptResult) -> bool:
        attempt = result.attempt
        record = [attempt.number, attempt.started_at_ms, attempt.elapsed_ms, attempt.status_code, attempt.error,
                  attempt.response_excerpt]  # fmt: skip
        next_at = "" if result.next_attempt_at_ms is None else result.next_attempt_at_ms
        pause = result.pause
        args = [self.prefix, delivery.id, delivery.lease_token or "", result.status.value, next_at,
                attempt.started_at_ms + round(attempt.elapsed_ms), json.dumps(record),
                "0" if attempt.error is None else "1", attempt.error or "", int(result.counted),
                *((pause.destination, pause.until_ms, pause.reason) if pause else ("", "", ""))]  # fmt: skip
        for release in result.released:
            args += [release.delivery_id, *counted(release_fields(release))]
        async with self._call("record the attempt") as (_, scripts):
            return bool(await scripts.finish(args=args))

    async def next_due_ms(self) -> int | None:
        return (await self.stats()).oldest_due_ms

    async def pauses(self, now_ms: int) -> list[DestinationPause]:
        async with self._call("read") as (client, _):
            until = cast(dict[bytes, bytes], await client.hgetall(self._key("pauses")))
            reasons = cast(dict[bytes, bytes], await client.hgetall(self._key("pause_reasons")))
        found = [DestinationPause(name.decode(), int(at), reasons.get(name, b"").decode())
                 for name, at in until.items() if int(at) > now_ms]  # fmt: skip
        return sorted(found, key=lambda pause: pause.destination)

    async def get_event(self, event_id: str) -> StoredEvent | None:
        async with self._call("read") as (client, _):
            fields = cast(dict[bytes, bytes], await client.hgetall(self._key("event", event_id)))
        if not fields:
            return None
        changes = fields.get(b"changes")
        return StoredEvent(fields[b"id"].decode(), fields[b"source"].decode(), int(fields[b"received_at_ms"]),
                           fields[b"body"], changes.decode() if changes is not None else None)  # fmt: skip

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        found = await self._load([delivery_id])
        return found[0] if found else None

    async def list_attempts(self, delivery_id: str) -> list[Attempt]:
        async with self._call("read") as (client, _):
            records = await client.lrange(self._key("attempts", delivery_id), 0, -1)
        return [Attempt(delivery_id, *json.loads(record)) for record in records]

    async def list_deliveries(self, where: DeliveryFilter) -> list[Delivery]:
        if where.ids is None and where.event_id is None:
            return await self._scan(where)
        if where.ids is not None:
            candidates = list(dict.fromkeys(where.ids))
        else:
            siblings = self._key("event_deliveries", where.event_id or "")
            async with self._call("read") as (client, _):
                members = cast(set[bytes], await client.smembers(siblings))
            candidates = [member.decode() for member in members]
        found = [delivery for delivery in await self._load(candidates) if matches(delivery, where)]
        found.sort(key=lambda delivery: (delivery.created_at_ms, delivery.id), reverse=True)
        return found[: where.limit]

    async def find_events(self, query: EventQuery) -> EventPage:
        async with self._call("read") as (client, scripts):
            return await find_events(client, scripts.find, self.prefix, query)

    async def requeue(
        self, delivery_ids: list[str], now_ms: int, requests: Mapping[str, RenderedRequest] | None = None
    ) -> int:
        args: list[Any] = [self.prefix, now_ms]
        for delivery_id in delivery_ids:
            request = (requests or {}).get(delivery_id)
            args += [delivery_id, *counted(request_fields(request) if request is not None else {})]
        async with self._call("requeue") as (_, scripts):
            return int(await scripts.requeue(args=args))

    async def prune(self, before_ms: int) -> int:
        # In chunks, each its own script, so a large prune never blocks Redis for long.
        events = 0
        while True:
            async with self._call("prune") as (_, scripts):
                counts = await scripts.prune(args=[self.prefix, before_ms, _PRUNE_CHUNK])
            events += counts[1]
            if max(counts) < _PRUNE_CHUNK:
                return int(events)

    async def stats(self) -> QueueStats:
        async with self._call("read") as (_, scripts):
            dead, *per_destination = await scripts.stats(args=[self.prefix])
        names, counts, firsts = per_destination[0::3], per_destination[1::3], per_destination[2::3]
        pending = {name.decode(): int(count) for name, count in zip(names, counts, strict=True)}
        oldest = min((int(first) for first in firsts), default=None)
        return QueueStats(pending=sum(pending.values()), dead=int(dead), oldest_due_ms=oldest, by_destination=pending)

    async def activity(self, since_ms: int, bucket_ms: int, buckets: int, now_ms: int) -> Activity:
        async with self._call("read") as (_, scripts):
            reply = await scripts.activity(args=[self.prefix, since_ms, bucket_ms, buckets, now_ms])
        return parse_activity(reply, since_ms, bucket_ms)

    @contextlib.asynccontextmanager
    async def _call(self, doing: str) -> AsyncIterator[tuple[Redis, _Scripts]]:
        """One call on the open store, counted so `close` can wait for it; Redis failures become StoreUnavailable."""
        if self._client is None or self._scripts is None:
            raise StoreUnavailable("Redis store is not open")
        self._calls += 1
        self._idle.clear()
        try:
            with redis_errors(doing):
                yield self._client, self._scripts
        finally:
            self._calls -= 1
            if not self._calls:
                self._idle.set()

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _load(self, delivery_ids: Sequence[str]) -> list[Delivery]:
        """The deliveries that exist among `delivery_ids`, in that order."""
        if not delivery_ids:
            return []
        async with self._call("read") as (client, _), client.pipeline(transaction=False) as pipe:
            for delivery_id in delivery_ids:
                pipe.hgetall(self._key("delivery", delivery_id))
            found = await pipe.execute()
        return [read_delivery(fields) for fields in found if fields]

    async def _scan(self, where: DeliveryFilter) -> list[Delivery]:
        """Walk the created-time index (all, or one status), newest first, filtering the rest here."""
        index = self._key("status", where.status.value) if where.status else self._key("created")
        low = "-inf" if where.since_ms is None else where.since_ms
        found: dict[str, Delivery] = {}
        offset = 0
        while len(found) < where.limit:
            async with self._call("read") as (client, _):
                page = cast(list[bytes], await client.zrevrangebyscore(index, "+inf", low, offset, _LIST_PAGE))
            for delivery in await self._load([member.decode() for member in page]):
                if matches(delivery, where) and len(found) < where.limit:
                    found.setdefault(delivery.id, delivery)
            if len(page) < _LIST_PAGE:
                break
            offset += _LIST_PAGE
        return list(found.values())


async def _warn_unless_durable(client: Redis) -> None:
    """Ingest answers 200 once Redis has the event: only an fsync'd AOF keeps it through a Redis crash."""
    try:
        config = await client.config_get("append*")
    except ResponseError:  # CONFIG is often disabled on managed Redis; nothing to check then
        return
    appendonly, appendfsync = config.get("appendonly"), config.get("appendfsync")
    if (appendonly, appendfsync) != ("yes", "always"):
        log.warning(
            "Redis runs with appendonly=%s appendfsync=%s: events it acknowledged can be lost if Redis crashes. "
            "Set appendonly yes and appendfsync always on the Redis server.",
            appendonly, appendfsync,
        )  # fmt: skip
