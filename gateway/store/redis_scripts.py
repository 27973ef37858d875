"""The Lua scripts behind the Redis store: each write is one script, so it is all or nothing.

Key layout and semantics are described in `gateway.store.redis`.
"""

INGEST = """
local P, window = ARGV[1], tonumber(ARGV[2])
local function record(i)  -- ARGV[i] = n, then n field/value pairs: returns them and a table of them
  local flat, fields = {}, {}
  for j = 1, 2 * tonumber(ARGV[i]), 2 do
    flat[j], flat[j + 1] = ARGV[i + j], ARGV[i + j + 1]
    fields[ARGV[i + j]] = ARGV[i + j + 1]
  end
  return flat, fields, i + #flat + 1
end
local event_flat, event, i = record(3)
local seen_key = P .. 'dedupe:' .. event.source .. ':' .. event.dedupe_key
local received = tonumber(event.received_at_ms)
if window > 0 then
  local seen = redis.call('GET', seen_key)
  if seen then
    local at, first = string.match(seen, '^(%-?%d+):(.*)$')
    if received - tonumber(at) < window then return {1, first} end
  end
end
if redis.call('EXISTS', P .. 'event:' .. event.id) == 1 then
  return redis.error_reply('event id ' .. event.id .. ' is taken')
end
local deliveries, taken = {}, {}
while i <= #ARGV do
  local flat, fields
  flat, fields, i = record(i)
  if taken[fields.id] or redis.call('EXISTS', P .. 'delivery:' .. fields.id) == 1 then
    return redis.error_reply('delivery id ' .. fields.id .. ' is taken')
  end
  taken[fields.id] = true
  deliveries[#deliveries + 1] = {flat, fields}
end
redis.call('HSET', P .. 'event:' .. event.id, unpack(event_flat))
if #deliveries == 0 then redis.call('ZADD', P .. 'bare', received, event.id) end
for _, delivery in ipairs(deliveries) do
  local flat, d = delivery[1], delivery[2]
  redis.call('HSET', P .. 'delivery:' .. d.id, unpack(flat))
  redis.call('SADD', P .. 'event_deliveries:' .. event.id, d.id)
  redis.call('ZADD', P .. 'created', received, d.id)
  redis.call('ZADD', P .. 'status:' .. d.status, received, d.id)
  if d.status == 'pending' then
    redis.call('ZADD', P .. 'due:' .. d.destination, d.next_attempt_at_ms, d.id)
    redis.call('SADD', P .. 'destinations', d.destination)
  end
end
if window > 0 then redis.call('SET', seen_key, event.received_at_ms .. ':' .. event.id, 'PX', window) end
return {0, event.id}
"""

CLAIM = """
local P, now, due_at, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local claimed = {}
for i = 5, #ARGV, 2 do
  local due = P .. 'due:' .. ARGV[i]
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, ARGV[i + 1])) do
    local key = P .. 'delivery:' .. id
    redis.call('ZADD', due, due_at, id)
    redis.call('HSET', key, 'next_attempt_at_ms', due_at, 'lease_token', token .. '-' .. (#claimed + 1))
    claimed[#claimed + 1] = redis.call('HGETALL', key)
  end
end
return claimed
"""

FINISH = """
local P, id, token, status, next_at, ended_at, attempt, error = unpack(ARGV)
local key = P .. 'delivery:' .. id
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('RPUSH', P .. 'attempts:' .. id, attempt)
local held, current, destination, created = unpack(
  redis.call('HMGET', key, 'lease_token', 'status', 'destination', 'created_at_ms'))
if token == '' or held ~= token or current ~= 'pending' then return 0 end
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'status', status, 'updated_at_ms', ended_at)
redis.call('HDEL', key, 'lease_token')
if error then redis.call('HSET', key, 'last_error', error) else redis.call('HDEL', key, 'last_error') end
if next_at ~= '' then redis.call('HSET', key, 'next_attempt_at_ms', next_at) end
local due = P .. 'due:' .. destination
if status == 'pending' then
  if next_at ~= '' then redis.call('ZADD', due, next_at, id) end
else
  redis.call('ZREM', due, id)
  redis.call('ZREM', P .. 'status:pending', id)
  redis.call('ZADD', P .. 'status:' .. status, created, id)
end
return 1
"""

REQUEUE = """
local P, now = ARGV[1], ARGV[2]
local count, i = 0, 3
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 1])
  local key = P .. 'delivery:' .. id
  local status, destination, created, method = unpack(
    redis.call('HMGET', key, 'status', 'destination', 'created_at_ms', 'method'))
  if status and status ~= 'pending' and (n > 0 or method) then
    for j = i + 2, i + 1 + 2 * n, 2 do redis.call('HSET', key, ARGV[j], ARGV[j + 1]) end
    redis.call('HSET', key, 'status', 'pending', 'attempts', 0, 'next_attempt_at_ms', now, 'updated_at_ms', now)
    redis.call('HDEL', key, 'lease_token')
    redis.call('ZREM', P .. 'status:' .. status, id)
    redis.call('ZADD', P .. 'status:pending', created, id)
    redis.call('ZADD', P .. 'due:' .. destination, now, id)
    redis.call('SADD', P .. 'destinations', destination)
    count = count + 1
  end
  i = i + 2 + 2 * n
end
return count
"""

PRUNE = """
local P, before, chunk = ARGV[1], '(' .. ARGV[2], ARGV[3]
local delivered = redis.call('ZRANGEBYSCORE', P .. 'status:delivered', '-inf', before, 'LIMIT', 0, chunk)
for _, id in ipairs(delivered) do
  local key = P .. 'delivery:' .. id
  local event_id = redis.call('HGET', key, 'event_id')
  redis.call('DEL', key, P .. 'attempts:' .. id)
  redis.call('ZREM', P .. 'status:delivered', id)
  redis.call('ZREM', P .. 'created', id)
  if event_id then
    local siblings = P .. 'event_deliveries:' .. event_id
    redis.call('SREM', siblings, id)
    local received = redis.call('HGET', P .. 'event:' .. event_id, 'received_at_ms')
    if received and redis.call('SCARD', siblings) == 0 then redis.call('ZADD', P .. 'bare', received, event_id) end
  end
end
local bare = redis.call('ZRANGEBYSCORE', P .. 'bare', '-inf', before, 'LIMIT', 0, chunk)
for _, id in ipairs(bare) do
  redis.call('DEL', P .. 'event:' .. id)
  redis.call('ZREM', P .. 'bare', id)
end
return {#delivered, #bare}
"""

STATS = """
local P = ARGV[1]
local stats = {redis.call('ZCARD', P .. 'status:dead')}
for _, destination in ipairs(redis.call('SMEMBERS', P .. 'destinations')) do
  local due = P .. 'due:' .. destination
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if first[2] then
    stats[#stats + 1] = destination
    stats[#stats + 1] = redis.call('ZCARD', due)
    stats[#stats + 1] = first[2]
  end
end
return stats
"""
