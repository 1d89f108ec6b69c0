-- reap: recovers what dead workers and lost callbacks leave behind, and keeps indexes bounded.
--  * workers whose heartbeat lapsed (older than the worker ttl), and the worker calling with
--    `leaving`: each attempt it had in flight (its `wc:` set) is taken over at once. If its
--    calls end with its process (trait 'e' in winfo: the simulator), the attempt is over: it
--    ends as `lost` when nothing was heard of it, else as `failed` (cause WORKER_GONE), and the
--    retry policy applies. Otherwise (a real carrier) the call may be live at the carrier: an
--    accepted attempt keeps its slot and its callbacks settle it; one the carrier never
--    answered keeps its slot until a callback or its longest life. The history says which.
--  * dial leases that lapsed (the worker died or hung mid-dial): the request may or may not
--    have reached the carrier, so the slot stays held; the history says so.
--  * live slots whose attempt outlived its longest possible life (ring timeout + max duration
--    + grace): the attempt is over for sure, but its end was never reported. It ends as `lost`
--    (the retry policy applies) only when nothing at all was heard of it; one the carrier
--    accepted but never said was answered ends as `failed`, and one that was answered ends as
--    `completed` (a person picked up: never call them back on a guess); both with the cause
--    END_NOT_REPORTED.
--  * finished/dead indexes and worker heartbeats older than their retention are trimmed.
--  * campaigns made by their first call (no settings of their own) that have been completed
--    for the retention are forgotten: their keys and their registry entry.
-- KEYS[1] live  KEYS[2] leases  KEYS[3] sched  KEYS[4] finished  KEYS[5] dead  KEYS[6] stats
-- KEYS[7] queue prefix (derived keys)  KEYS[8] workers  KEYS[9] dials-per-second
-- KEYS[10] call key prefix  KEYS[11] campaign index  KEYS[12] control
-- KEYS[13] campaign registry  KEYS[14] finished campaigns that may be forgotten
-- KEYS[15] worker traits (winfo)
-- ARGV[1] limit per kind  ARGV[2] worker id ('' none)  ARGV[3] worker ttl ms  ARGV[4] wake channel
-- ARGV[5..14] settle policy (see parse_policy)  ARGV[15] leaving (0/1): the worker stops, so
--   its attempts are taken over and its heartbeat removed instead of renewed
-- ARGV[16] the calling worker's calls end with its process (0/1)
-- Returns: {lapsed leases, lost attempts, next expiry ms (-1 none), now, attempts of gone
--   workers settled, attempts of gone workers left to their callbacks}
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
  local phase = tonumber(f[3] or '0')
  if f[1] and LIVE[f[1]] and phase < PHASE.ended then
    lost = lost + 1
    local rand = (P.rand + i * 0.6180339887) % 1
    local outcome, facts = 'lost', {}
    if phase >= PHASE.answered then
      outcome, facts = 'completed', {hc = 'END_NOT_REPORTED'}
    elseif phase >= PHASE.accepted then
      outcome, facts = 'failed', {hc = 'END_NOT_REPORTED'}
    end
    local result = settle(K, key, id, tonumber(f[2]), outcome, facts, now, P, rand)
    if type(result) == 'table' then return result end
  else
    redis.call('ZREM', K.live, id)
    local cp = f[1] and redis.call('HGET', key, 'cp') or nil
    if cp then redis.call('ZREM', K.prefix .. KEY.live .. cp, id) end
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
-- Workers: what a gone worker had in flight is taken over now, not at its longest life.
local winfo = KEYS[15]
local orphans_settled, orphans_held = 0, 0
local function take_over(w, ends_with_it, why)
  local set = worker_calls_key(K.prefix, w)
  for i, id in ipairs(redis.call('SPOP', set, limit)) do
    local key = prefix .. id
    local f = redis.call('HMGET', key, 'st', 'a', 'ph', 'wk')
    if f[1] and LIVE[f[1]] and f[4] == w then
      local phase = tonumber(f[3] or '0')
      if ends_with_it then
        orphans_settled = orphans_settled + 1
        push_history(key, now, f[1], why .. ': its calls ended with it', P.hist_limit)
        local outcome = phase == 0 and 'lost' or 'failed'
        local rand = (P.rand + i * 0.7548776662) % 1
        local result = settle(K, key, id, tonumber(f[2]), outcome, {hc = 'WORKER_GONE'}, now, P,
          rand)
        if type(result) == 'table' then return result end
      else
        orphans_held = orphans_held + 1
        push_history(key, now, f[1], why .. (phase == 0 and
          ': the dial request may have reached the carrier, so the slot is held until a ' ..
          'callback or the attempt\'s longest life' or ': the carrier\'s callbacks settle it'),
          P.hist_limit)
      end
    end
  end
  if redis.call('SCARD', set) > 0 then return false end
  redis.call('ZREM', workers, w)
  redis.call('HDEL', winfo, w)
  return true
end
if worker ~= '' and ARGV[15] == '1' then
  local err = take_over(worker, ARGV[16] == '1', 'worker ' .. worker .. ' stopped')
  if type(err) == 'table' then return err end
elseif worker ~= '' then
  redis.call('ZADD', workers, now, worker)
  if ARGV[16] == '1' then redis.call('HSET', winfo, worker, 'e') end
end
for _, w in ipairs(redis.call('ZRANGEBYSCORE', workers, '-inf', now - worker_ttl, 'LIMIT', 0, 16)) do
  local err = take_over(w, redis.call('HGET', winfo, w) == 'e',
    'worker ' .. w .. ' stopped answering')
  if type(err) == 'table' then return err end
end
-- Dials-per-second counters keep the last minute: the queue's, and those of the campaigns
-- dialing now (a campaign's counters also expire when it stops dialing).
local oldest = math.floor(now / 1000) - 60
local counters = {dps}
for _, cp in ipairs(redis.call('ZRANGE', K.index, 0, 99)) do
  counters[#counters + 1] = K.prefix .. KEY.dps .. cp
end
for _, key in ipairs(counters) do
  local old = {}
  for _, sec in ipairs(redis.call('HKEYS', key)) do
    if tonumber(sec) < oldest then old[#old + 1] = sec end
  end
  if #old > 0 then redis.call('HDEL', key, unpack(old)) end
end

local next_expiry = -1
for _, k in ipairs({K.leases, K.live, workers}) do
  local head = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  local at = head[2] and tonumber(head[2]) + (k == workers and worker_ttl or 0)
  if at and (next_expiry < 0 or at < next_expiry) then next_expiry = at end
end
return {lapsed, lost, next_expiry, now, orphans_settled, orphans_held}
