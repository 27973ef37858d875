"""Limits shared by every replica through Redis: one concurrency cap and one rate per destination.

Per destination (under the store's key prefix):

    inflight:<destination>   zset of in-flight slots, scored by when they expire
    rate:<destination>       hash: tokens, updated_ms (the token bucket)

`capacity` runs one script that drops expired slots, refills the bucket, and takes both the
slots and the tokens it grants; `started` gives back what was not used. A slot expires after
the destination's timeout plus the lease margin (`storage.lease_margin`), so the slots of a replica that
died mid-attempt free up about when its leased deliveries come due again.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway.config.schema import DestinationConfig
from gateway.delivery.limits import Limits
from gateway.delivery.worker import LEASE_MARGIN_S
from gateway.errors import StoreUnavailable
from gateway.store.redis import redis_errors

log = logging.getLogger("gateway.limits")

# As in LocalLimits: floating-point refills can land a hair under a whole token.
_TOKEN_EPSILON = 1e-9

_CAPACITY = """
local now, concurrency, expires_at, slot = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local granted = concurrency - redis.call('ZCARD', KEYS[1])
if granted <= 0 then return 0 end
if ARGV[5] then
  local rate, burst = tonumber(ARGV[5]), tonumber(ARGV[6])
  local state = redis.call('HMGET', KEYS[2], 'tokens', 'updated_ms')
  local tokens, updated = tonumber(state[1]) or burst, tonumber(state[2]) or now
  if now > updated then
    tokens, updated = math.min(burst, tokens + (now - updated) * rate / 1000), now
  end
  granted = math.min(granted, math.floor(tokens + tonumber(ARGV[7])))
  redis.call('HSET', KEYS[2], 'tokens', string.format('%.17g', tokens - granted),
             'updated_ms', string.format('%d', updated))
end
for i = 1, granted do redis.call('ZADD', KEYS[1], expires_at, slot .. ':' .. i) end
return granted
"""

_RELEASE = """
for i = 2, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
local tokens = tonumber(redis.call('HGET', KEYS[2], 'tokens'))
if ARGV[1] ~= '' and tokens then
  local given_back = math.min(tonumber(ARGV[1]), tokens + #ARGV - 1)
  redis.call('HSET', KEYS[2], 'tokens', string.format('%.17g', given_back))
end
"""


@dataclass(frozen=True)
class _Destination:
    concurrency: int
    slot_ms: int
    rate_per_s: float | None
    burst: float


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
        self._destinations = {name: _destination(config, lease_margin_s) for name, config in destinations.items()}
        self._capacity = client.register_script(_CAPACITY)
        self._release = client.register_script(_RELEASE)
        self._replica = uuid.uuid4().hex
        self._rounds = 0
        self._reserved: dict[str, list[str]] = {}
        self._in_flight: dict[str, list[str]] = {}

    def reconfigure(self, destinations: Mapping[str, DestinationConfig]) -> None:
        """New settings from the next `capacity` call on (a config reload); slots in flight stay counted."""
        self._destinations = {
            name: _destination(config, self._lease_margin_s) for name, config in destinations.items()
        }

    async def capacity(self, destination: str, now_ms: int) -> int:
        limits = self._destinations.get(destination)
        if limits is None:
            return 0
        self._rounds += 1
        slot = f"{self._replica}:{self._rounds}"
        args: list[str | int | float] = [now_ms, limits.concurrency, now_ms + limits.slot_ms, slot]
        if limits.rate_per_s is not None:
            args += [limits.rate_per_s, limits.burst, _TOKEN_EPSILON]
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
        limits = self._destinations.get(destination)
        rate = "" if limits is None or limits.rate_per_s is None else limits.burst
        with redis_errors("give back delivery slots"):
            await self._release(keys=self._keys(destination), args=[rate, *unused])

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

    async def next_ready_ms(self, destination: str) -> int | None:
        limits = self._destinations.get(destination)
        if limits is None or limits.rate_per_s is None:
            return None
        with redis_errors("read the rate limit"):
            tokens, updated_ms = await self._client.hmget(self._keys(destination)[1], ["tokens", "updated_ms"])
        if tokens is None or updated_ms is None or math.floor(float(tokens) + _TOKEN_EPSILON) >= 1:
            return None
        return int(updated_ms) + math.ceil((1 - float(tokens)) / limits.rate_per_s * 1000)

    def _keys(self, destination: str) -> list[str]:
        return [f"{self._prefix}inflight:{destination}", f"{self._prefix}rate:{destination}"]


def _destination(config: DestinationConfig, lease_margin_s: float) -> _Destination:
    slot_ms = round((config.timeout + lease_margin_s) * 1000)
    # The same burst as LocalLimits: one second's worth, at least one request.
    burst = 1.0 if config.rate_limit is None else max(1.0, config.rate_limit)
    return _Destination(config.concurrency, slot_ms, config.rate_limit, burst)
