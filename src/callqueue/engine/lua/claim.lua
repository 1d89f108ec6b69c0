-- claim: in one step, promote calls that are due, then take up to `want` queued calls -
-- highest priority first, campaigns taking turns within a priority - each with a token from
-- the global sliding-window dial-rate limiter and a global live-call slot, and from its
-- campaign's own limiter and slots when the campaign sets them, and mark them dialing under a
-- lease.
-- KEYS[1] queue prefix (derived keys)  KEYS[2] campaign index  KEYS[3] sched  KEYS[4] live
-- KEYS[5] leases  KEYS[6] rate log  KEYS[7] stats  KEYS[8] dials-per-second  KEYS[9] control
-- KEYS[10] call key prefix (same slot: call keys are popped here, so their names are derived
--   from it)  KEYS[11] do-not-call set  KEYS[12] finished  KEYS[13] dead
-- KEYS[14] lines (number -> the call live on it)
-- (The time-zone offsets of calling windows are read through zone_entries in _lib.lua, by the
-- name KEY.zone_offsets; the daily attempts per number through KEY.number_attempts.)
-- ARGV[1] want  ARGV[2] max_live (0: no cap)  ARGV[3] rate limit per window (0: none)
-- ARGV[4] window ms  ARGV[5] lease ms  ARGV[6] token prefix  ARGV[7] hist_limit
-- ARGV[8] promote limit  ARGV[9] dial lease + ring timeout + grace ms
-- ARGV[10] default max duration ms (for calls that set none)  ARGV[11] retention ms
-- ARGV[12] rate margin ms (added to a campaign limiter's window, as to the global one)
-- ARGV[13] one call per number (0/1)  ARGV[14] how long a call to a busy number waits, ms
-- ARGV[15] attempts allowed per number per UTC day (0: no cap)
-- ARGV[16] clock override ms (0: the server clock; tests of calling windows set it)
-- ARGV[17] the claiming worker's id ('': none, as in tests that claim by hand): recorded in the
--   call (`wk`) and in the worker's in-flight set, so a dead worker's attempts are found at once
-- Just before a call is dialed it is checked again: a number that joined the do-not-call list
-- after it was queued is cancelled; a call outside its campaign's calling window (in the
-- callee's local time, in every time zone of the number) is scheduled for the next opening.
-- Neither uses a rate token or a slot.
-- Returns: {now, blocked, wait_ms (-1 unknown), next_due (-1 none), id, attempt, token, spec,
--   ...}; blocked is '' | empty | paused | rate | concurrency
local prefix, index, sched, live, leases, rate = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6]
local stats, dps, ctl, call_prefix, dnc = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local want, max_live, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, lease_ms, tok_prefix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local hist_limit, promote_limit = tonumber(ARGV[7]), tonumber(ARGV[8])
local ring_grace_ms, default_md_ms = tonumber(ARGV[9]), tonumber(ARGV[10])
local margin_ms = tonumber(ARGV[12])
local one_line, line_wait, day_cap = ARGV[13] == '1', tonumber(ARGV[14]), tonumber(ARGV[15])
local lines = KEYS[14]
local worker = ARGV[17]
local owned = worker ~= '' and worker_calls_key(prefix, worker) or nil
local K = {prefix = prefix, index = index, ctl = ctl, finished = KEYS[12], dead = KEYS[13],
  stats = stats, sched = sched}
local P = {retention_ms = tonumber(ARGV[11]), hist_limit = hist_limit}
local now = tonumber(ARGV[16]) > 0 and tonumber(ARGV[16]) or now_ms()
hooks_init(prefix, ctl)

-- 1. Promote scheduled calls whose time has come, at their original place in line.
local due = redis.call('ZRANGEBYSCORE', sched, '-inf', now, 'LIMIT', 0, promote_limit)
local promoted = {}
for _, id in ipairs(due) do
  redis.call('ZREM', sched, id)
  local key = call_prefix .. id
  local f = redis.call('HMGET', key, 'st', 'q', 'cp', 'hist', 'hn')
  if f[1] == 'scheduled' then
    local c = campaign(prefix, f[3] or '')
    if c.st == 'cancelled' then
      local err = finish_with(K, key, id, 'scheduled', 'cancelled', now, 'campaign cancelled',
        P, f[4], f[5], c.id, 'oc', 'cancelled', 'why', 'campaign')
      if err then return err end
    else
      local err = move_with(key, 'scheduled', 'queued', now, '', hist_limit, f[4], f[5])
      if err then return err end
      redis.call('HDEL', key, 'due')
      redis.call('ZADD', c.ready, f[2], id)
      promoted[c.id] = c
    end
  end
end
for _, c in pairs(promoted) do index_touch(index, ctl, c) end

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
if redis.call('ZCARD', index) == 0 then return blocked('empty', -1) end

-- 2. Global live-call slots: attempts whose longest life has passed no longer count.
local n = want
local bound = ''
if max_live > 0 then
  local free = max_live - redis.call('ZCOUNT', live, '(' .. now, '+inf')
  if free <= 0 then
    local head = redis.call('ZRANGE', live, '(' .. now, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
    return blocked('concurrency', head[2] and (tonumber(head[2]) - now) or -1)
  end
  if free < n then n = free; bound = 'concurrency' end
end

-- 3. Global dial rate: a sliding log of grants; no window of `window` ms ever holds more than
-- `limit`.
local rate_interval, rate_tat
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', rate, '-inf', now - window)
  local tokens = limit - redis.call('ZCARD', rate)
  if tokens <= 0 then
    local oldest = redis.call('ZRANGE', rate, 0, 0, 'WITHSCORES')
    return blocked('rate', math.max(1, tonumber(oldest[2]) + window - now))
  end
  rate_interval = (window - margin_ms) / limit
  local paced, wait_ms
  paced, wait_ms, rate_tat = pace(ctl, 'tat', now, rate_interval, pace_burst(limit), tokens)
  if paced <= 0 then return blocked('rate', wait_ms) end
  tokens = paced
  if tokens < n then n = tokens; bound = 'rate' end
end

local out = {now, bound, -1, 0}
local taken = 0
local second = tostring(math.floor(now / 1000))

-- The campaign's own limits: how many of its calls may be dialed now (0: none), and when one
-- more may be (ms from now, -1 unknown) when the answer is 0.
local function campaign_room(c)
  local room = n - taken
  if c.mc > 0 then
    local free = c.mc - redis.call('ZCOUNT', c.live, '(' .. now, '+inf')
    if free <= 0 then return 0, -1, 'concurrency' end
    room = math.min(room, free)
  end
  if c.rl > 0 then
    local lim, win = math.floor(c.rl), 1000 + margin_ms
    if c.rl < 1 then lim, win = 1, math.floor(1000 / c.rl + 0.5) + margin_ms end
    redis.call('ZREMRANGEBYSCORE', c.rate, '-inf', now - win)
    local tokens = lim - redis.call('ZCARD', c.rate)
    if tokens <= 0 then
      local oldest = redis.call('ZRANGE', c.rate, 0, 0, 'WITHSCORES')
      return 0, math.max(1, tonumber(oldest[2]) + win - now), 'rate'
    end
    c.interval = (win - margin_ms) / lim
    local paced, wait_ms, tat = pace(c.key, 'tat', now, c.interval, pace_burst(lim), tokens)
    if paced <= 0 then return 0, wait_ms, 'rate' end
    c.tat = tat
    room = math.min(room, paced)
  end
  return room, -1, ''
end

-- 4. Take the calls. One call: dialed (returns true), or handled otherwise (false).
local function take(c, id)
  local key = call_prefix .. id
  local f = redis.call('HMGET', key, 'st', 'md', 's', 'a', 'hist', 'hn', 'to', 'tz', 'mach')
  if f[1] ~= 'queued' then return false end
  if f[7] and redis.call('SISMEMBER', dnc, f[7]) == 1 then
    local err = finish_with(K, key, id, 'queued', 'cancelled', now,
      'dnc: the number is on the do-not-call list', P, f[5], f[6], c.id, 'oc', 'cancelled',
      'why', 'dnc')
    if err then error(err.err) end
    return false
  end
  if c.win and c.win ~= '' then
    local entries = zone_entries(prefix, c, f[8])
    local opens
    if entries then
      opens = window_next_open(window_parse(c.win), entries, now)
    else
      opens = now + 60000  -- offsets not known yet (a worker registers them): look again soon
    end
    if opens < 0 then
      local err = finish_with(K, key, id, 'queued', 'cancelled', now, 'the calling window is ' ..
        'never open in all of the number\'s time zones at once', P, f[5], f[6], c.id,
        'oc', 'cancelled', 'why', 'window')
      if err then error(err.err) end
      return false
    end
    if opens > now then
      local err = move_with(key, 'queued', 'scheduled', now, 'outside the calling window in ' ..
        'the callee\'s local time: due when it opens', hist_limit, f[5], f[6], 'due', opens)
      if err then error(err.err) end
      redis.call('ZADD', sched, opens, id)
      window_park(prefix, c.id, id, opens, now)
      return false
    end
  end
  local phone = f[7]
  if one_line and phone then
    -- One person, one line: not while another call to this number is live.
    local holder = redis.call('HGET', lines, phone)
    if holder and holder ~= id then
      local life_end = redis.call('ZSCORE', live, holder)
      if life_end and tonumber(life_end) > now then
        local err = move_with(key, 'queued', 'scheduled', now, 'another call to this number is ' ..
          'live: looked at again shortly', hist_limit, f[5], f[6], 'due', now + line_wait)
        if err then error(err.err) end
        redis.call('ZADD', sched, now + line_wait, id)
        return false
      end
    end
  end
  local day_key
  if day_cap > 0 and phone then
    local day = math.floor(now / 86400000)
    day_key = prefix .. KEY.number_attempts .. day
    if tonumber(redis.call('HGET', day_key, phone) or '0') >= day_cap then
      local tomorrow = (day + 1) * 86400000
      local err = move_with(key, 'queued', 'scheduled', now, 'this number had its ' .. day_cap ..
        ' attempts today (UTC): due tomorrow', hist_limit, f[5], f[6], 'due', tomorrow)
      if err then error(err.err) end
      redis.call('ZADD', sched, tomorrow, id)
      return false
    end
  end
  taken = taken + 1
  local attempt = tonumber(f[4] or '0') + 1
  local token = tok_prefix .. taken
  local err = move_with(key, 'queued', 'dialing', now, 'attempt ' .. attempt, hist_limit,
    f[5], f[6], 'a', attempt, 'tk', token, 'ph', 0, 'as', now, 'wk', worker)
  if err then error(err.err) end
  if owned then redis.call('SADD', owned, id) end
  -- An answering machine detected on an earlier attempt says nothing about this one.
  if f[9] then redis.call('HDEL', key, 'mach') end
  -- The attempt's longest possible life: the carrier may get the request as late as the end
  -- of the dial lease, then ring and talk at most ring timeout + max duration; plus grace.
  local md = tonumber(f[2] or '0')
  local life = now + ring_grace_ms + ((md and md > 0) and md * 1000 or default_md_ms)
  redis.call('ZADD', live, life, id)
  redis.call('ZADD', leases, now + lease_ms, id)
  if limit > 0 then redis.call('ZADD', rate, now, token) end
  redis.call('ZADD', c.live, life, id)
  if c.rl > 0 then redis.call('ZADD', c.rate, now, token) end
  if one_line and phone then redis.call('HSET', lines, phone, id) end
  if day_key then
    redis.call('HINCRBY', day_key, phone, 1)
    redis.call('PEXPIRE', day_key, 2 * 86400000)
  end
  if c.id ~= '' then stat(c.stats, 'dialed', 1) end
  out[#out + 1] = id
  out[#out + 1] = attempt
  out[#out + 1] = token
  out[#out + 1] = f[3]
  return true
end

local set_aside = {}  -- campaigns that can dial nothing now: out of the index for this run
local budget = math.max(200, n * 4)  -- calls looked at in one run, so one run stays short
local wait = -1
local why_all = ''
local vt
local turns = 0
while taken < n and turns < n + 64 and budget > 0 do
  turns = turns + 1
  local head = redis.call('ZRANGE', index, 0, 1, 'WITHSCORES')
  if not head[1] then break end
  local cp, score = head[1], tonumber(head[2])
  local c = campaign(prefix, cp)
  local room, c_wait, why = 0, -1, ''
  if c.st == 'active' then room, c_wait, why = campaign_room(c) end
  if c.st ~= 'active' then
    redis.call('ZREM', index, cp)  -- paused or cancelled since it was indexed
  elseif room <= 0 then
    redis.call('ZREM', index, cp)
    set_aside[#set_aside + 1] = score
    set_aside[#set_aside + 1] = cp
    if c_wait >= 0 and (wait < 0 or c_wait < wait) then wait = c_wait end
    why_all = why
  else
    -- This campaign's turn: as many calls as keep its pass at or below the next campaign's
    -- of the same priority, one priority level at a time.
    local rank, pass = math.floor(score / BAND), score % BAND
    local stride = 1 / math.max(c.w, 0.001)
    local turn = room
    if head[3] then
      local other = tonumber(head[4])
      if math.floor(other / BAND) == rank then
        turn = math.min(turn, math.floor(((other % BAND) - pass) / stride) + 1)
      end
    end
    turn = math.max(1, turn)
    local popped = redis.call('ZPOPMIN', c.ready, math.min(turn, budget))
    budget = budget - #popped / 2
    local granted = 0
    for i = 1, #popped, 2 do
      if math.floor(tonumber(popped[i + 1]) / BAND) ~= rank then
        -- A lower priority follows: back in line, and the index decides again.
        for j = i, #popped, 2 do redis.call('ZADD', c.ready, popped[j + 1], popped[j]) end
        break
      end
      if take(c, popped[i]) then granted = granted + 1 end
    end
    if granted > 0 then
      pass = pass + granted * stride
      vt = pass
      if c.interval then redis.call('HSET', c.key, 'tat', c.tat + granted * c.interval) end
      if c.id ~= '' then  -- its dials per second, for its achieved rate (the last minute)
        redis.call('HINCRBY', c.dps, second, granted)
        redis.call('PEXPIRE', c.dps, 120000)
      end
    end
    local next_head = redis.call('ZRANGE', c.ready, 0, 0, 'WITHSCORES')
    if next_head[2] then
      redis.call('ZADD', index, math.floor(tonumber(next_head[2]) / BAND) * BAND + pass, cp)
    else
      redis.call('ZREM', index, cp)
    end
  end
end
for i = 1, #set_aside, 2 do redis.call('ZADD', index, set_aside[i], set_aside[i + 1]) end
if vt then redis.call('HSET', ctl, 'vt', vt) end
if rate_interval and taken > 0 then redis.call('HSET', ctl, 'tat', rate_tat + taken * rate_interval) end
if taken > 0 then
  stat(stats, 'dialed', taken)
  stat(dps, second, taken)
end
if budget <= 0 and taken < n then
  out[3] = 0  -- stopped early (calls rescheduled or cancelled on the way): look again at once
elseif taken < n and #set_aside > 0 then
  if bound == '' then out[2] = why_all end  -- campaigns with calls wait for their own limits
  out[3] = wait
elseif taken == 0 and redis.call('ZCARD', index) == 0 then
  out[2] = 'empty'
end
out[4] = next_due()
return out
