-- claim: in one step, promote due calls, then take up to `want` of the highest-priority ready
-- calls, each with a token from the global sliding-window dial-rate limiter and a global
-- live-call slot, and mark them dialing under a lease.
-- KEYS[1] ready  KEYS[2] sched  KEYS[3] live  KEYS[4] leases  KEYS[5] rate log  KEYS[6] stats
-- KEYS[7] dials-per-second  KEYS[8] control  KEYS[9] call key prefix (same slot: call keys are
--   popped here, so their names are derived from it)  KEYS[10] do-not-call set
-- KEYS[11] finished  KEYS[12] dead
-- ARGV[1] want  ARGV[2] max_live (0: no cap)  ARGV[3] rate limit per window (0: none)
-- ARGV[4] window ms  ARGV[5] lease ms  ARGV[6] token prefix  ARGV[7] hist_limit
-- ARGV[8] promote limit  ARGV[9] wake channel  ARGV[10] dial lease + ring timeout + grace ms
-- ARGV[11] default max duration ms (for calls that set none)  ARGV[12] retention ms
-- A call whose number joined the do-not-call list after it was queued is cancelled here, never
-- dialed (it uses no rate token and no slot).
-- Returns: {now, blocked, wait_ms (-1 unknown), next_due (-1 none), id, attempt, token, spec,
--   ...}; blocked is '' | empty | paused | rate | concurrency
local ready, sched, live, leases, rate = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local stats, dps, ctl, prefix = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local want, max_live, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, lease_ms, tok_prefix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local hist_limit, promote_limit = tonumber(ARGV[7]), tonumber(ARGV[8])
local ring_grace_ms, default_md_ms = tonumber(ARGV[10]), tonumber(ARGV[11])
local dnc = KEYS[10]
local K = {finished = KEYS[11], dead = KEYS[12], stats = stats, ready = ready, sched = sched}
local P = {retention_ms = tonumber(ARGV[12]), hist_limit = hist_limit}
local now = now_ms()

-- 1. Promote scheduled calls whose time has come, at their original place in line.
local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now, 'LIMIT', 0, promote_limit)
for _, id in ipairs(due) do
  redis.call('ZREM', sched, id)
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'st', 'q')
  if f[1] == 'scheduled' then
    local err = move(key, 'scheduled', 'queued', now, '', hist_limit)
    if err then return err end
    redis.call('HDEL', key, 'due')
    redis.call('ZADD', ready, f[2], id)
  end
end

local function next_due()
  local head = redis.call('ZRANGE', sched, 0, 0, 'WITHSCORES')
  return head[2] and tonumber(head[2]) or -1
end

local function blocked(reason, wait)
  return {now, reason, wait, next_due()}
end

local control = redis.call('HMGET', ctl, 'paused', 'rb_until', 'rb_factor')
if control[1] == '1' then return blocked('paused', -1) end
if limit > 0 and control[2] and tonumber(control[2]) > now then
  -- The carrier pushed back lately: dial at a fraction of the limit for a while.
  limit = math.max(1, math.floor(limit * tonumber(control[3] or '1')))
end
local backlog = redis.call('ZCARD', ready)
if backlog == 0 then return blocked('empty', -1) end

-- 2. Live-call slots: attempts whose longest life has passed no longer count.
local n = want
local bound = ''
local wait = -1
if max_live > 0 then
  local free = max_live - redis.call('ZCOUNT', live, '(' .. now, '+inf')
  if free <= 0 then
    local head = redis.call('ZRANGE', live, '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
    return blocked('concurrency', head[2] and (tonumber(head[2]) - now) or -1)
  end
  if free < n then n = free; bound = 'concurrency' end
end

-- 3. Dial rate: a sliding log of grants; no window of `window` ms ever holds more than `limit`.
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', rate, '-inf', now - window)
  local tokens = limit - redis.call('ZCARD', rate)
  if tokens <= 0 then
    local oldest = redis.call('ZRANGE', rate, 0, 0, 'WITHSCORES')
    return blocked('rate', math.max(1, tonumber(oldest[2]) + window - now))
  end
  if tokens < n then n = tokens; bound = 'rate' end
end
if backlog < n then n = backlog; bound = '' end

-- 4. Take the calls.
local out = {now, bound, -1, 0}
local popped = redis.call('ZPOPMIN', ready, n)
local taken = 0
for i = 1, #popped, 2 do
  local id = popped[i]
  local key = prefix .. id
  local f = redis.call('HMGET', key, 'st', 'md', 's', 'a', 'hist', 'hn', 'to')
  if f[1] == 'queued' and f[7] and redis.call('SISMEMBER', dnc, f[7]) == 1 then
    local err = finish_with(K, key, id, 'queued', 'cancelled', now,
      'dnc: the number is on the do-not-call list', P, f[5], f[6], 'oc', 'cancelled', 'why', 'dnc')
    if err then return err end
  elseif f[1] == 'queued' then
    taken = taken + 1
    local attempt = tonumber(f[4] or '0') + 1
    local token = tok_prefix .. taken
    local err = move_with(key, 'queued', 'dialing', now, 'attempt ' .. attempt, hist_limit,
      f[5], f[6], 'a', attempt, 'tk', token, 'ph', 0, 'as', now)
    if err then return err end
    -- The attempt's longest possible life: the carrier may get the request as late as the end
    -- of the dial lease, then ring and talk at most ring timeout + max duration; plus grace.
    local md = tonumber(f[2] or '0')
    local life = ring_grace_ms + ((md and md > 0) and md * 1000 or default_md_ms)
    redis.call('ZADD', live, now + life, id)
    redis.call('ZADD', leases, now + lease_ms, id)
    if limit > 0 then redis.call('ZADD', rate, now, token) end
    out[#out + 1] = id
    out[#out + 1] = attempt
    out[#out + 1] = token
    out[#out + 1] = f[3]
  end
end
if taken > 0 then
  redis.call('HINCRBY', stats, 'dialed', taken)
  redis.call('HINCRBY', dps, tostring(math.floor(now / 1000)), taken)
end
out[4] = next_due()
return out
