"""The Lua scripts behind the Redis store: each write is one script, so it is all or nothing.

Key layout and semantics are described in `gateway.store.redis`.
"""

# ARGV: prefix, dedupe window, n and n state arguments (none: 0), the event record, the delivery records.
# State: conversation member ('' for none), its version when routed, its new state ('': unchanged), when seen,
# then per once_per window: `<route>:<key>`, its end when routed ('': none running), its new end ('': none).
INGEST = """
local P, window, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local function record(i)  -- ARGV[i] = n, then n field/value pairs: returns them and a table of them
  local flat, fields = {}, {}
  for j = 1, 2 * tonumber(ARGV[i]), 2 do
    flat[j], flat[j + 1] = ARGV[i + j], ARGV[i + j + 1]
    fields[ARGV[i + j]] = ARGV[i + j + 1]
  end
  return flat, fields, i + #flat + 1
end
local event_flat, event, i = record(4 + n)
local seen_key = P .. 'dedupe:' .. event.source .. ':' .. event.dedupe_key
local received = tonumber(event.received_at_ms)
if window > 0 then
  local seen = redis.call('GET', seen_key)
  if seen then
    local at, first = string.match(seen, '^(%-?%d+):(.*)$')
    if received - tonumber(at) < window then return {1, first} end
  end
end
local conversation, version, windows = ARGV[4], tonumber(ARGV[5]), {}
if n > 0 then  -- routed on a state that must still hold
  if conversation ~= '' then
    local now = redis.call('HGET', P .. 'conversation:' .. conversation, 'version')
    if tonumber(now or '0') ~= version then return {2, ''} end
  end
  for j = 8, 3 + n, 3 do
    local running = redis.call('GET', P .. 'once:' .. ARGV[j])
    if not running or tonumber(running) <= received then running = '' end
    if running ~= ARGV[j + 1] then return {2, ''} end
    if ARGV[j + 2] ~= '' then windows[#windows + 1] = {ARGV[j], ARGV[j + 2]} end
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
redis.call('ZADD', P .. 'events', received, event.id)
for _, name in ipairs({'conversation_id', 'sender', 'rule_type', 'source'}) do
  if event[name] then redis.call('ZADD', P .. 'events:' .. name .. ':' .. event[name], received, event.id) end
end
redis.call('SADD', P .. 'sources', event.source)
if #deliveries == 0 then redis.call('ZADD', P .. 'bare', received, event.id) end
for _, delivery in ipairs(deliveries) do
  local flat, d = delivery[1], delivery[2]
  redis.call('HSET', P .. 'delivery:' .. d.id, unpack(flat))
  redis.call('SADD', P .. 'event_deliveries:' .. event.id, d.id)
  redis.call('ZADD', P .. 'created', received, d.id)
  redis.call('ZADD', P .. 'status:' .. d.status, received, d.id)
  redis.call('ZADD', P .. 'state:' .. d.destination .. ':' .. (d.status == 'pending' and 'waiting' or d.status),
             received, d.id)
  redis.call('SADD', P .. 'destinations', d.destination)
  if d.last_error then
    redis.call('HSET', P .. 'last_error:' .. d.destination, 'at', received, 'error', d.last_error, 'id', d.id)
  end
  if d.status == 'pending' then
    redis.call('ZADD', P .. 'due:' .. d.destination, d.next_attempt_at_ms, d.id)
  end
end
if window > 0 then redis.call('SET', seen_key, event.received_at_ms .. ':' .. event.id, 'PX', window) end
if n > 0 and conversation ~= '' and ARGV[6] ~= '' then
  redis.call('HSET', P .. 'conversation:' .. conversation, 'version', version + 1, 'last_seen_ms', ARGV[7],
             'state', ARGV[6])
  redis.call('ZADD', P .. 'conversations', ARGV[7], conversation)
end
for _, running in ipairs(windows) do
  redis.call('SET', P .. 'once:' .. running[1], running[2], 'PX', tonumber(running[2]) - received)
end
return {0, event.id}
"""

CLAIM = """
local P, now, due_at, token = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local claimed = {}
for i = 5, #ARGV, 2 do
  local destination = ARGV[i]
  local paused_until = tonumber(redis.call('HGET', P .. 'pauses', destination))
  if paused_until and paused_until <= tonumber(now) then  -- the pause is over: forget it
    redis.call('HDEL', P .. 'pauses', destination)
    redis.call('HDEL', P .. 'pause_reasons', destination)
    paused_until = nil
  end
  local due = P .. 'due:' .. destination
  local ids = paused_until and {} or redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, ARGV[i + 1])
  for _, id in ipairs(ids) do
    local key = P .. 'delivery:' .. id
    redis.call('ZADD', due, due_at, id)
    redis.call('ZADD', P .. 'leased:' .. ARGV[i], due_at, id)
    redis.call('HSET', key, 'next_attempt_at_ms', due_at, 'lease_token', token .. '-' .. (#claimed + 1))
    claimed[#claimed + 1] = redis.call('HGETALL', key)
  end
end
return claimed
"""

FINISH = """
local P, id, token, status, next_at, ended_at, attempt, has_error, error = unpack(ARGV, 1, 9)
local counted, paused, pause_end, why = unpack(ARGV, 10, 13)
if paused ~= '' then  -- a pause only grows longer; its reason is the latest answer's that lengthened it
  local until_now = tonumber(redis.call('HGET', P .. 'pauses', paused))
  if not until_now or tonumber(pause_end) > until_now then
    redis.call('HSET', P .. 'pauses', paused, pause_end)
    redis.call('HSET', P .. 'pause_reasons', paused, why)
  end
end
local key = P .. 'delivery:' .. id
if redis.call('EXISTS', key) == 0 then return 0 end
redis.call('RPUSH', P .. 'attempts:' .. id, attempt)
local held, current, destination, created = unpack(
  redis.call('HMGET', key, 'lease_token', 'status', 'destination', 'created_at_ms'))
if token == '' or held ~= token or current ~= 'pending' then return 0 end
redis.call('HINCRBY', key, counted == '1' and 'attempts' or 'quota_waits', 1)
redis.call('HSET', key, 'status', status, 'updated_at_ms', ended_at)
redis.call('HDEL', key, 'lease_token')
if has_error == '1' then redis.call('HSET', key, 'last_error', error) else redis.call('HDEL', key, 'last_error') end
if next_at ~= '' then redis.call('HSET', key, 'next_attempt_at_ms', next_at) end
local due, state = P .. 'due:' .. destination, P .. 'state:' .. destination .. ':'
redis.call('ZREM', P .. 'leased:' .. destination, id)
redis.call('ZREM', state .. 'waiting', id)
local failed = P .. 'last_error:' .. destination
if has_error == '1' and status ~= 'delivered' then
  redis.call('HSET', failed, 'at', ended_at, 'error', error, 'id', id)
elseif status == 'delivered' and redis.call('HGET', failed, 'id') == id then
  redis.call('DEL', failed)
end
if status == 'pending' then
  if next_at ~= '' then redis.call('ZADD', due, next_at, id) end
  redis.call('ZADD', state .. 'retrying', created, id)
else
  redis.call('ZREM', due, id)
  redis.call('ZREM', P .. 'status:pending', id)
  redis.call('ZADD', P .. 'status:' .. status, created, id)
  redis.call('ZREM', state .. 'retrying', id)
  redis.call('ZADD', state .. status, created, id)
end
-- Chained deliveries this outcome frees: id, n, then n field/value pairs (status, the request or
-- last_error, steps). One already pending is left alone.
local i = 14
while i <= #ARGV do
  local rid, n = ARGV[i], tonumber(ARGV[i + 1])
  local rkey = P .. 'delivery:' .. rid
  local was, rdestination, rcreated = unpack(redis.call('HMGET', rkey, 'status', 'destination', 'created_at_ms'))
  if was and was ~= 'pending' then
    redis.call('HDEL', rkey, 'method', 'url', 'headers', 'body', 'last_error', 'lease_token')
    local now_status
    for j = i + 2, i + 1 + 2 * n, 2 do
      redis.call('HSET', rkey, ARGV[j], ARGV[j + 1])
      if ARGV[j] == 'status' then now_status = ARGV[j + 1] end
    end
    redis.call('HSET', rkey, 'attempts', 0, 'next_attempt_at_ms', ended_at, 'updated_at_ms', ended_at)
    redis.call('ZREM', P .. 'status:' .. was, rid)
    redis.call('ZADD', P .. 'status:' .. now_status, rcreated, rid)
    local rstate = P .. 'state:' .. rdestination .. ':'
    redis.call('ZREM', rstate .. was, rid)
    if now_status == 'pending' then
      redis.call('ZADD', rstate .. 'waiting', rcreated, rid)
      redis.call('ZADD', P .. 'due:' .. rdestination, ended_at, rid)
      redis.call('SADD', P .. 'destinations', rdestination)
    else
      redis.call('ZADD', rstate .. now_status, rcreated, rid)
      local rerror = redis.call('HGET', rkey, 'last_error')
      redis.call('HSET', P .. 'last_error:' .. rdestination, 'at', ended_at, 'error', rerror, 'id', rid)
    end
  end
  i = i + 2 + 2 * n
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
  if (status == 'dead' or status == 'delivered') and (n > 0 or method) then
    for j = i + 2, i + 1 + 2 * n, 2 do redis.call('HSET', key, ARGV[j], ARGV[j + 1]) end
    redis.call('HSET', key, 'status', 'pending', 'attempts', 0, 'quota_waits', 0, 'next_attempt_at_ms', now,
               'updated_at_ms', now)
    redis.call('HDEL', key, 'lease_token')
    redis.call('ZREM', P .. 'status:' .. status, id)
    redis.call('ZADD', P .. 'status:pending', created, id)
    redis.call('ZREM', P .. 'state:' .. destination .. ':' .. status, id)
    redis.call('ZADD', P .. 'state:' .. destination .. ':waiting', created, id)
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
  local event_id, destination = unpack(redis.call('HMGET', key, 'event_id', 'destination'))
  if destination then redis.call('ZREM', P .. 'state:' .. destination .. ':delivered', id) end
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
  local key = P .. 'event:' .. id
  local facts = {conversation_id = 1, sender = 2, rule_type = 3, source = 4}
  local values = redis.call('HMGET', key, 'conversation_id', 'sender', 'rule_type', 'source')
  for name, i in pairs(facts) do
    if values[i] then redis.call('ZREM', P .. 'events:' .. name .. ':' .. values[i], id) end
  end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'events', id)
  redis.call('ZREM', P .. 'bare', id)
end
local forgotten = redis.call('ZRANGEBYSCORE', P .. 'conversations', '-inf', before, 'LIMIT', 0, chunk)
for _, member in ipairs(forgotten) do
  redis.call('DEL', P .. 'conversation:' .. member)
  redis.call('ZREM', P .. 'conversations', member)
end
return {#delivered, #bare, #forgotten}
"""

# Per destination: how many are pending and when the first is due, held back to the end of a quota pause.
STATS = """
local P = ARGV[1]
local stats = {redis.call('ZCARD', P .. 'status:dead')}
for _, destination in ipairs(redis.call('SMEMBERS', P .. 'destinations')) do
  local due = P .. 'due:' .. destination
  local first = redis.call('ZRANGE', due, 0, 0, 'WITHSCORES')
  if first[2] then
    local paused_until = tonumber(redis.call('HGET', P .. 'pauses', destination)) or 0
    stats[#stats + 1] = destination
    stats[#stats + 1] = redis.call('ZCARD', due)
    stats[#stats + 1] = string.format('%d', math.max(tonumber(first[2]), paused_until))
  end
end
return stats
"""

# Walks one index of events (or of deliveries, mapped to their events) newest first from score `high`, past the
# first `offset` entries scored `high`, at most `budget` entries, and returns the ids of the events that pass
# every filter (at most `wanted`) and where to go on from: a score and how many entries with that score were read
# ('' when the index is done). Empty filters are ''.
FIND = """
local P, index, via, high, low = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4], ARGV[5]
local offset, budget, wanted = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local cursor_ms, cursor_id = tonumber(ARGV[9]), ARGV[10]
local exact = {ARGV[11], ARGV[12], ARGV[13], ARGV[14]}  -- conversation_id, sender, rule_type, source
local subject, text, status, route, destination = ARGV[15], ARGV[16], ARGV[17], ARGV[18], ARGV[19]
local function has(value, needle)
  return value and string.find(string.lower(value), needle, 1, true) ~= nil
end
local function passes(id)
  local v = redis.call('HMGET', P .. 'event:' .. id, 'conversation_id', 'sender', 'rule_type', 'source', 'subject')
  if not v[4] then return false end
  for i = 1, 4 do
    if exact[i] ~= '' and v[i] ~= exact[i] then return false end
  end
  if subject ~= '' and not has(v[5], subject) then return false end
  if text ~= '' and not (has(v[1], text) or has(v[5], text) or has(v[2], text)) then return false end
  if status == '' and route == '' and destination == '' then return true end
  for _, d in ipairs(redis.call('SMEMBERS', P .. 'event_deliveries:' .. id)) do
    local s, r, to = unpack(redis.call('HMGET', P .. 'delivery:' .. d, 'status', 'route', 'destination'))
    if (status == '' or s == status) and (route == '' or r == route) and (destination == '' or to == destination) then
      return true
    end
  end
  return false
end
local found, seen, scanned = {}, {}, 0
local top, ties = high, offset  -- go on below `top`, past the `ties` entries scored `top` already read
while scanned < budget do  -- in small pages, so a lookup that is done early reads little
  local take = math.min(budget - scanned, 256)
  local page = redis.call('ZREVRANGEBYSCORE', index, top, low, 'WITHSCORES', 'LIMIT', ties, take)
  for i = 1, #page, 2 do
    local id, score = page[i], page[i + 1]
    if score == top then ties = ties + 1 else top, ties = score, 1 end
    if via then id = redis.call('HGET', P .. 'delivery:' .. id, 'event_id') end
    if id and not seen[id] then
      seen[id] = true
      local at = tonumber(score)
      local before = not cursor_ms or at < cursor_ms or (at == cursor_ms and id < cursor_id)
      if before and passes(id) then
        found[#found + 1] = id
        if #found >= wanted then return {found, top, ties} end
      end
    end
  end
  scanned = scanned + #page / 2
  if #page / 2 < take then return {found, '', 0} end
end
return {found, top, ties}
"""

