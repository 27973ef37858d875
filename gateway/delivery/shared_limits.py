"""Limits shared by every replica through Redis: one concurrency cap and one set of rates per destination.

Per destination (under the store's key prefix):

    inflight:<destination>   zset of in-flight slots, scored by when they expire
    starts:<destination>     zset of request starts, scored by their time, kept for the longest window

`capacity` runs one script that drops expired slots and starts older than the longest
window, counts the starts within each rate's window, and records the slots and the starts it
grants; `started` gives back what was not used. A slot expires after the destination's
timeout plus the lease margin (`storage.lease_margin`), so the slots of a replica that died
mid-attempt free up about when its leased deliveries come due again. The rates count as
`gateway.delivery.limits` explains: at most N starts in any window of each length.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping

from redis.asyncio import Redis

from gateway.config.schema import DestinationConfig
from gateway.delivery.limits import Limits, SharedSettings
from gateway.delivery.worker import LEASE_MARGIN_S
from gateway.errors import StoreUnavailable
from gateway.store.redis import redis_errors

log = logging.getLogger("gateway.limits")

# ARGV: now, concurrency, slot expiry, slot name prefix, then per rate: limit, window (ms).
_CAPACITY = """
local now, concurrency, expires_at, slot = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local granted = concurrency - redis.call('ZCARD', KEYS[1])
local longest = 0
for i = 5, #ARGV, 2 do longest = math.max(longest, tonumber(ARGV[i + 1])) end
if longest > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - longest)
  for i = 5, #ARGV, 2 do
    local used = redis.call('ZCOUNT', KEYS[2], '(' .. (now - tonumber(ARGV[i + 1])), '+inf')
    granted = math.min(granted, tonumber(ARGV[i]) - used)
  end
end
if granted <= 0 then return 0 end
for i = 1, granted do
  redis.call('ZADD', KEYS[1], expires_at, slot .. ':' .. i)
  if longest > 0 then redis.call('ZADD', KEYS[2], now, slot .. ':' .. i) end
end
if longest > 0 then redis.call('PEXPIRE', KEYS[2], longest) end
return granted
"""

_RELEASE = """
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
end
"""

# ARGV: now, then per rate: limit, window (ms). Returns when every rate allows one more start, or -1.
_NEXT_READY = """
local now, ready = tonumber(ARGV[1]), -1
for i = 2, #ARGV, 2 do
  local limit, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local low = '(' .. (now - window)
  local used = redis.call('ZCOUNT', KEYS[1], low, '+inf')
  if used >= limit then
    local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], low, '+inf', 'WITHSCORES', 'LIMIT', used - limit, 1)
    ready = math.max(ready, tonumber(oldest[2]) + window)
  end
end
return ready
"""


def _rate_args(settings: SharedSettings) -> list[int]:
    return [number for rate in settings.rates for number in (rate.limit, rate.window_ms)]


class RedisLimits(Limits):
    """`Limits` kept in Redis, shared by every replica that uses the same server and prefix."""

    def __init__(
        self,
        client: Redis,
        destinations: Mapping[str, DestinationConfig],
        prefix: str = "gw:",
        lease_margin_s: float = LEASE_MARGIN_S,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._lease_margin_s = lease_margin_s
        self._destinations = {name: SharedSettings.of(config, lease_margin_s) for name, config in destinations.items()}
        self._capacity = client.register_script(_CAPACITY)
        self._release = client.register_script(_RELEASE)
        self._next_ready = client.register_script(_NEXT_READY)
        self._replica = uuid.uuid4().hex
        self._rounds = 0
        self._reserved: dict[str, list[str]] = {}
        self._in_flight: dict[str, list[str]] = {}

    def reconfigure(self, destinations: Mapping[str, DestinationConfig]) -> None:
        """New settings from the next `capacity` call on (a config reload); slots in flight stay counted."""
        self._destinations = {
            name: SharedSettings.of(config, self._lease_margin_s) for name, config in destinations.items()
        }

    async def capacity(self, destination: str, now_ms: int) -> int:
        limits = self._destinations.get(destination)
        if limits is None:
            return 0
        self._rounds += 1
        slot = f"{self._replica}:{self._rounds}"
        args: list[str | int] = [now_ms, limits.concurrency, now_ms + limits.slot_ms, slot, *_rate_args(limits)]
        with redis_errors("take a delivery slot"):
            granted = int(await self._capacity(keys=self._keys(destination), args=args))
        self._reserved[destination] = [f"{slot}:{n}" for n in range(1, granted + 1)]
        return granted

    async def started(self, destination: str, count: int) -> None:
        reserved = self._reserved.pop(destination, [])
        used, unused = reserved[:count], reserved[count:]
        self._in_flight.setdefault(destination, []).extend(used)
        if not unused:
            return
        with redis_errors("give back delivery slots"):
            await self._release(keys=self._keys(destination), args=unused)

    async def finished(self, destination: str) -> None:
        in_flight = self._in_flight.get(destination)
        if not in_flight:
            return
        slot = in_flight.pop()
        try:
            with redis_errors("free a delivery slot"):
                await self._client.zrem(self._keys(destination)[0], slot)
        except StoreUnavailable as exc:
            log.warning("%s; the slot frees itself when the attempt's lease runs out", exc)

    async def next_ready_ms(self, destination: str, now_ms: int) -> int | None:
        limits = self._destinations.get(destination)
        if limits is None or not limits.rates:
            return None
        with redis_errors("read the rate limit"):
            ready = int(await self._next_ready(keys=self._keys(destination)[1:], args=[now_ms, *_rate_args(limits)]))
        return ready if ready >= 0 else None

    def _keys(self, destination: str) -> list[str]:
        return [f"{self._prefix}inflight:{destination}", f"{self._prefix}starts:{destination}"]
