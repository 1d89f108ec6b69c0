-- reap: recovers what dead workers and lost callbacks leave behind, and keeps indexes bounded.
--  * dial leases that lapsed (the worker died or hung mid-dial): the request may or may not
--    have reached the carrier, so the slot stays held; the history says so.
--  * live slots whose attempt outlived its longest possible life (ring timeout + max duration
--    + grace): the attempt is over for sure; it ends as `lost` and the retry policy applies.
--  * finished/dead indexes and worker heartbeats older than their retention are trimmed.
--  * campaigns made by their first call (no settings of their own) that have been completed
--    for the retention are forgotten: their keys and their registry entry.
-- KEYS[1] live  KEYS[2] leases  KEYS[3] sched  KEYS[4] finished  KEYS[5] dead  KEYS[6] stats
-- KEYS[7] queue prefix (derived keys)  KEYS[8] workers  KEYS[9] dials-per-second
-- KEYS[10] call key prefix  KEYS[11] campaign index  KEYS[12] control
-- KEYS[13] campaign registry  KEYS[14] finished campaigns that may be forgotten
-- ARGV[1] limit per kind  ARGV[2] worker id ('' none)  ARGV[3] worker ttl ms  ARGV[4] wake channel
-- ARGV[5..14] settle policy (see parse_policy)  ARGV[15] leaving (0/1): the worker stops, so
--   its heartbeat is removed instead of renewed
-- Returns: {lapsed leases, lost attempts, next expiry ms (-1 none), now}
local K = {live = KEYS[1], leases = KEYS[2], sched = KEYS[3], finished = KEYS[4], dead = KEYS[5],
  stats = KEYS[6], prefix = KEYS[7], index = KEYS[11], ctl = KEYS[12], channel = ARGV[4]}
local workers, dps, prefix = KEYS[8], KEYS[9], KEYS[10]
local limit, worker, worker_ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local P = parse_policy(ARGV, 5)
local now = now_ms()
hooks_init(K.prefix, K.ctl)

local lapsed = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K.leases, '-inf', now, 'LIMIT', 0, limit)) do
  redis.call('ZREM', K.leases, id)
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'st', 'ph')
  if f[1] and LIVE[f[1]] and tonumber(f[2] or '0') == 0 then
    lapsed = lapsed + 1
    push_history(key, now, f[1], 'dial lease lapsed (worker lost mid-dial): slot held until ' ..
      'the attempt\'s longest life has passed', P.hist_limit)
  end
end
if lapsed > 0 then stat(K.stats, 'lapsed_leases', lapsed) end

local lost = 0
local expired = redis.call('ZRANGEBYSCORE', K.live, '-inf', now, 'LIMIT', 0, limit)
for i, id in ipairs(expired) do
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'st', 'a', 'ph')
  if f[1] and LIVE[f[1]] and tonumber(f[3] or '0') < 3 then
    lost = lost + 1
    local rand = (P.rand + i * 0.6180339887) % 1
    local result = settle(K, key, id, tonumber(f[2]), 'lost', {}, now, P, rand)
    if type(result) == 'table' then return result end
  else
    redis.call('ZREM', K.live, id)
    local cp = f[1] and redis.call('HGET', key, 'cp') or nil
    if cp then redis.call('ZREM', ckey(K.prefix, 'lv', cp), id) end
  end
end

if P.retention_ms > 0 then
  redis.call('ZREMRANGEBYSCORE', K.finished, '-inf', now - P.retention_ms)
  redis.call('ZREMRANGEBYSCORE', K.dead, '-inf', now - P.retention_ms)
  local registry, done = KEYS[13], KEYS[14]
  local old = redis.call('ZRANGEBYSCORE', done, '-inf', now - P.retention_ms, 'LIMIT', 0, limit)
  for _, cp in ipairs(old) do
    redis.call('ZREM', done, cp)
    local c = campaign(K.prefix, cp)
    -- Checked again: anything that brings a campaign back takes it out of the done set, so
    -- this only guards against a bug forgetting a campaign in use.
    if c.auto and c.st == 'completed' and
        tonumber(redis.call('HGET', c.stats, 'open') or '0') <= 0 then
      redis.call('DEL', c.key, c.stats, c.dps, c.ready, c.live, c.rate)
      redis.call('ZREM', registry, cp)
      redis.call('ZREM', K.index, cp)
    end
  end
end
if worker ~= '' and ARGV[15] == '1' then
  redis.call('ZREM', workers, worker)
elseif worker ~= '' then
  redis.call('ZADD', workers, now, worker)
end
redis.call('ZREMRANGEBYSCORE', workers, '-inf', now - worker_ttl)
-- Dials-per-second counters keep the last minute: the queue's, and those of the campaigns
-- dialing now (a campaign's counters also expire when it stops dialing).
local oldest = math.floor(now / 1000) - 60
local counters = {dps}
for _, cp in ipairs(redis.call('ZRANGE', K.index, 0, 99)) do
  counters[#counters + 1] = ckey(K.prefix, 'cd', cp)
end
for _, key in ipairs(counters) do
  local old = {}
  for _, sec in ipairs(redis.call('HKEYS', key)) do
    if tonumber(sec) < oldest then old[#old + 1] = sec end
  end
  if #old > 0 then redis.call('HDEL', key, unpack(old)) end
end

local next_expiry = -1
for _, k in ipairs({K.leases, K.live}) do
  local head = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if head[2] and (next_expiry < 0 or tonumber(head[2]) < next_expiry) then
    next_expiry = tonumber(head[2])
  end
end
return {lapsed, lost, next_expiry, now}
