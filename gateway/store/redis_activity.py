"""The console overview's figures from the Redis store, read by one script from indexes the writes keep:

    sources                       set of every source that sent an event
    events:source:<source>        zset of its events by received_at_ms (beside the lookups' indexes)
    state:<destination>:<state>   zsets of deliveries by created_at_ms: waiting (pending, not tried yet),
                                  retrying (pending, tried), delivered, dead
    leased:<destination>          zset of claimed deliveries by the end of their lease
    last_error:<destination>      hash: at, error, id of the last failed attempt of a delivery not delivered since

Deliveries stored before these indexes existed (data version 2 and older) are indexed when the store opens.
"""

from __future__ import annotations

from typing import Any, cast

from redis.commands.core import AsyncScript

from gateway.model import Activity, DestinationActivity, HourCounts

_UPGRADE_CHUNK = 500

ACTIVITY = """
local P, since, bucket, buckets, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local function counts(key)
  local out = {}
  for b = 0, buckets - 1 do
    local low = since + b * bucket
    out[b + 1] = redis.call('ZCOUNT', key, string.format('%d', low), string.format('(%d', low + bucket))
  end
  return out
end
local sources = {}
for _, source in ipairs(redis.call('SMEMBERS', P .. 'sources')) do
  sources[#sources + 1] = {source, counts(P .. 'events:source:' .. source)}
end
local destinations = {}
for _, d in ipairs(redis.call('SMEMBERS', P .. 'destinations')) do
  local state = P .. 'state:' .. d .. ':'
  local oldest = false
  for _, name in ipairs({'waiting', 'retrying'}) do
    local first = redis.call('ZRANGE', state .. name, 0, 0, 'WITHSCORES')
    if first[2] and (not oldest or tonumber(first[2]) < tonumber(oldest)) then oldest = first[2] end
  end
  local failed = redis.call('HMGET', P .. 'last_error:' .. d, 'at', 'error')
  destinations[#destinations + 1] = {
    d, redis.call('ZCARD', state .. 'waiting'), redis.call('ZCARD', state .. 'retrying'),
    redis.call('ZCOUNT', P .. 'leased:' .. d, '(' .. now, '+inf'), redis.call('ZCARD', state .. 'dead'),
    oldest, failed[1] or false, failed[2] or false,
    counts(state .. 'delivered'), counts(state .. 'waiting'), counts(state .. 'retrying'), counts(state .. 'dead'),
  }
end
return {sources, destinations}
"""

# Indexes one chunk of what was stored before these indexes existed: deliveries (from `created`), then
# events (from `events`); returns how many records it read.
INDEX_OLD = """
local P, kind, offset, chunk = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGE', P .. kind, offset, offset + chunk - 1)
for _, id in ipairs(ids) do
  if kind == 'events' then
    local source, received = unpack(redis.call('HMGET', P .. 'event:' .. id, 'source', 'received_at_ms'))
    if source then
      redis.call('ZADD', P .. 'events:source:' .. source, received, id)
      redis.call('SADD', P .. 'sources', source)
    end
  else
    local d, status, attempts, created = unpack(
      redis.call('HMGET', P .. 'delivery:' .. id, 'destination', 'status', 'attempts', 'created_at_ms'))
    if d then
      local name = status
      if status == 'pending' then name = tonumber(attempts) > 0 and 'retrying' or 'waiting' end
      redis.call('ZADD', P .. 'state:' .. d .. ':' .. name, created, id)
      redis.call('SADD', P .. 'destinations', d)
    end
  end
end
return #ids
"""


async def index_old_records(script: AsyncScript, prefix: str) -> None:
    """Index what an earlier gateway stored (several replicas may do it at once: it is idempotent)."""
    for kind in ("created", "events"):
        offset = 0
        while True:
            read = int(await script(args=[prefix, kind, offset, _UPGRADE_CHUNK]))
            offset += read
            if read < _UPGRADE_CHUNK:
                break


def parse_activity(reply: Any, since_ms: int, bucket_ms: int) -> Activity:
    sources, destinations = cast(list[Any], reply)
    events = {name.decode(): tuple(int(count) for count in counts) for name, counts in sources}
    found = {}
    for row in destinations:
        name, waiting, retrying, in_flight, dead, oldest, error_at, error, *by_state = row
        delivered, waiting_by, retrying_by, dead_by = by_state
        found[name.decode()] = DestinationActivity(
            waiting=int(waiting), retrying=int(retrying), in_flight=int(in_flight), dead=int(dead),
            oldest_pending_ms=int(oldest) if oldest is not None else None,
            last_error=error.decode() if error is not None else None,
            last_error_at_ms=int(error_at) if error_at is not None else None,
            buckets=tuple(
                HourCounts(int(done), int(fresh) + int(tried), int(gone))
                for done, fresh, tried, gone in zip(delivered, waiting_by, retrying_by, dead_by, strict=True)
            ),
        )  # fmt: skip
    return Activity(since_ms, bucket_ms, events, dict(sorted(found.items())))
