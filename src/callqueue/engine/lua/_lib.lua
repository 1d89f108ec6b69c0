-- Shared helpers of the function library that engine/scripts.py builds: it puts this file once
-- into the library, after the constants it generates from Python (ALLOWED, the status
-- transitions from callqueue.models.TRANSITIONS; TERMINAL and LIVE, the status sets from
-- models; PHASE, the phase of each carrier event from engine/contracts.py; KEY, the names of
-- the keys derived from the queue prefix, from engine/keys.py) and _window.lua and _park.lua,
-- and before the transitions, each wrapped as a function of the library.
-- Conventions: times are epoch milliseconds from the server clock (TIME), so every worker
-- on every machine shares one clock; replies start with a status code string.

-- Per-invocation state, reset by the wrapper engine/scripts.py puts around every function:
-- counter increments are summed here and written once per field at the end of the run (a
-- batch of 100 events then costs one HINCRBY per counter, not one per event), and campaign
-- settings are read once per run.
local PENDING = {}
local CAMPAIGNS = {}
local OFFSETS = {}  -- time zone -> its offset entry (or false: not recorded), read once per run
local MAYBE_DONE = {}  -- campaigns whose last open call may have ended in this run
-- Status webhooks of this run: set by hooks_init (scripts that change calls call it).
local HOOKS = nil

-- Completed campaigns that their first call made, by when (keys.py: campaigns_done).
local function done_key(prefix) return prefix .. KEY.campaigns_done end

local function invocation_start()
  PENDING = {}
  CAMPAIGNS = {}
  OFFSETS = {}
  MAYBE_DONE = {}
  HOOKS = nil
  park_run_start()
end

-- Status webhooks: an outbox stream that workers deliver from (webhooks.py). An entry names
-- what changed and the URL to tell: the call's own webhook_url, else its campaign's. Flags in
-- the control hash say whether any call has its own URL (hk_call) and whether anyone wants
-- every transition rather than final statuses only (hk_all), so that runs read a call's
-- webhook fields only when some exist.
local HOOKS_MAXLEN = 1000000

local function hooks_init(prefix, ctl)
  local f = redis.call('HMGET', ctl, 'hk_call', 'hk_all')
  HOOKS = {stream = prefix .. KEY.hooks, calls = f[1] == '1', all = f[2] == '1', prefix = prefix}
end

local function hook_add(kind, id, status, at, cp, url)
  redis.call('XADD', HOOKS.stream, 'MAXLEN', '~', HOOKS_MAXLEN, '*', 'k', kind, 'id', id,
    's', status, 't', at, 'cp', cp or '', 'u', url)
end

local function stat(key, field, n)
  local t = PENDING[key]
  if not t then
    t = {}
    PENDING[key] = t
  end
  t[field] = (t[field] or 0) + n
end

local function stats_flush()
  for key, fields in pairs(PENDING) do
    for field, n in pairs(fields) do
      if n ~= 0 then redis.call('HINCRBY', key, field, n) end
    end
  end
  PENDING = {}
  -- `open` counts a campaign's calls not yet final: at 0 the campaign is complete. A completed
  -- campaign that its first call made (it has no settings of its own) joins the done set, and
  -- reap forgets it once it has been completed for the retention, as its calls are. (A
  -- cancelled one is kept: it goes on refusing calls that name it.)
  for _, c in pairs(MAYBE_DONE) do
    if tonumber(redis.call('HGET', c.stats, 'open') or '0') <= 0 and
        redis.call('HGET', c.key, 'st') == 'active' then
      redis.call('HSET', c.key, 'st', 'completed', 'done', c.done_at)
      if c.wh and HOOKS then hook_add('campaign', c.id, 'completed', c.done_at, c.id, c.wh) end
      if c.auto then redis.call('ZADD', done_key(c.prefix), c.done_at, c.id) end
    end
  end
  MAYBE_DONE = {}
end

-- Keys derived from the queue prefix (passed in KEYS: it carries the queue's hash tag, so every
-- derived key is in the same cluster slot) are named by KEY, generated from engine/keys.py.
-- The attempts a worker has in flight (keys.py: worker_calls). A claim adds the call and records
-- its worker in the call's `wk`; whatever ends or gives back the attempt takes it out again.
local function worker_calls_key(prefix, worker) return prefix .. KEY.worker_calls .. worker end
local function disown(prefix, worker, id)
  if worker and worker ~= '' then redis.call('SREM', worker_calls_key(prefix, worker), id) end
end
local BAND = 1099511627776  -- 2^40: a ready score is priority rank * BAND + arrival sequence
-- Retries of a call that set no max_retries and whose campaign sets none (the seed's default).
local DEFAULT_RETRIES = 3

-- A campaign's settings, read once per run. The calls of no campaign ('') form one more
-- campaign with no settings of its own.
local function campaign(prefix, cp)
  local c = CAMPAIGNS[cp]
  if c then return c end
  c = {id = cp, prefix = prefix, st = 'active', mc = 0, rl = 0, w = 1, key = prefix .. KEY.campaign .. cp,
    ready = prefix .. KEY.ready .. cp, live = prefix .. KEY.live .. cp,
    rate = prefix .. KEY.rate .. cp, stats = prefix .. KEY.stats .. cp, dps = prefix .. KEY.dps .. cp}
  if cp ~= '' then
    local f = redis.call('HMGET', c.key, 'st', 'mc', 'rl', 'w', 'win', 'wtz', 'rp', 'wp', 'wh',
      'we', 'auto')
    c.found = f[1] ~= false  -- every campaign hash has `st` from its first write
    c.st = f[1] or 'active'
    c.mc, c.rl = tonumber(f[2] or '0'), tonumber(f[3] or '0')
    c.w = tonumber(f[4] or '1')
    c.win, c.wtz, c.rp = f[5], f[6], f[7]
    if f[8] == '1' then c.st = 'pending' end  -- zones of its calls are being filled in
    c.wh, c.we = f[9], f[10]
    c.auto = f[11] == '1'  -- made by its first call, never given settings: forgotten when done
  end
  CAMPAIGNS[cp] = c
  return c
end

-- The campaign index (KEYS: index ZSET): campaigns with queued calls that may be dialed, scored
-- priority rank of their first queued call * BAND + their pass. Within a priority the lowest
-- pass goes first, and each dial advances a campaign's pass by 1 / weight: campaigns take turns
-- (stride scheduling) and a small campaign queued behind a big one starts at once, because it
-- joins at the current virtual time (the pass of the last dial granted, `vt` in control).
local function index_touch(index, ctl, c)
  if c.st ~= 'active' then
    redis.call('ZREM', index, c.id)
    return
  end
  local head = redis.call('ZRANGE', c.ready, 0, 0, 'WITHSCORES')
  if not head[2] then
    redis.call('ZREM', index, c.id)
    return
  end
  local rank = math.floor(tonumber(head[2]) / BAND)
  local cur = redis.call('ZSCORE', index, c.id)
  local pass
  if cur then
    pass = tonumber(cur) % BAND
  else
    pass = tonumber(redis.call('HGET', ctl, 'vt') or '0')
  end
  redis.call('ZADD', index, rank * BAND + pass, c.id)
end

-- Pacing for a dial-rate limit (GCRA): grants go out one per `interval` ms on average, with
-- at most `burst` at once, instead of a whole second's worth at the start of each window (the
-- sliding log alone allows that: a burst, then a second of silence that a campaign queued
-- meanwhile would wait through, and carriers dislike bursts). The sliding log still caps every
-- window; this only spreads the grants. State: the theoretical arrival time `tat` (ms) of the
-- next on-schedule grant, in field `field` of `hash`.
-- Returns how many of `want` may go now (0: then also the ms to wait) and the tat to store
-- once `k` were granted (pace_after).
local function pace(hash, field, now, interval, burst, want)
  local tat = tonumber(redis.call('HGET', hash, field) or '0')
  if tat < now then tat = now end
  -- (now - tat) first: epoch ms plus a fraction loses the fraction's last digits.
  local allowed = math.floor((now - tat) / interval + burst + 1e-9)
  if allowed <= 0 then
    return 0, math.max(1, math.ceil((tat - now) - (burst - 1) * interval)), tat
  end
  return math.min(allowed, want), 0, tat
end

local function pace_burst(limit) return math.max(1, math.floor(limit / 10)) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- History: one line per transition, "ms|status|note", newest last, at most `limit` lines.
-- Plain string appends: no JSON work on the hot path. Takes the current (hist, hn) values and
-- returns the new ones. A new call's hash has its first line but no count (enqueue.lua).
local function add_history(h, n, at, status, note, limit)
  n = (tonumber(n) or ((h and h ~= '') and 1 or 0)) + 1
  h = (h or '') .. at .. '|' .. status .. '|' .. string.gsub(note or '', '\n', ' ') .. '\n'
  while n > limit do
    h = string.sub(h, string.find(h, '\n', 1, true) + 1)
    n = n - 1
  end
  return h, n
end

local function push_history(key, at, status, note, limit)
  local f = redis.call('HMGET', key, 'hist', 'hn')
  local h, n = add_history(f[1], f[2], at, status, note, limit)
  redis.call('HSET', key, 'hist', h, 'hn', n)
end

-- Moves a call to `to`, refusing any move the transition table does not allow. `h` and `n`
-- are the call's current history and its length (already read by the caller); extra
-- field/value pairs are written in the same HSET.
local function move_with(key, from, to, at, note, hist_limit, h, n, ...)
  if not (ALLOWED[from] and ALLOWED[from][to]) then
    return redis.error_reply('CQ_BAD_TRANSITION ' .. tostring(from) .. '->' .. tostring(to))
  end
  h, n = add_history(h, n, at, to, note, hist_limit)
  redis.call('HSET', key, 'st', to, 'up', at, 'hist', h, 'hn', n, ...)
  if HOOKS and HOOKS.all then
    -- Someone wants every transition: this call's own choice, else its campaign's.
    local w = redis.call('HMGET', key, 'wh', 'we', 'cp')
    local url, events = w[1], w[2]
    if not url and w[3] then
      local cf = redis.call('HMGET', HOOKS.prefix .. KEY.campaign .. w[3], 'wh', 'we')
      url, events = cf[1], cf[2]
    end
    if url and events == 'all' then
      hook_add('call', string.match(key, 'c:(.*)$'), to, at, w[3], url)
      if TERMINAL[to] then HOOKS.told = key end  -- finish_with need not tell it again
    end
  end
  return false
end

local function move(key, from, to, at, note, hist_limit, ...)
  local f = redis.call('HMGET', key, 'hist', 'hn')
  return move_with(key, from, to, at, note, hist_limit, f[1], f[2], ...)
end

-- Attempts: the current one lives in plain fields (as: start, an: answered, cid: carrier id);
-- a finished one is appended to `atts`, a JSON array, by settle below.

-- Copies carrier facts into attempt record `rec` without overwriting known ones.
local function merge_facts(rec, facts)
  for k, v in pairs(facts) do
    if v ~= nil and v ~= '' and rec[k] == nil then rec[k] = v end
  end
end

-- Publishes a wake-up only when it can help: somebody may be waiting for a slot.
local function slot_freed(live_key, channel, at, max_live)
  if max_live > 0 and redis.call('ZCOUNT', live_key, '(' .. at, '+inf') + 1 >= max_live then
    redis.call('PUBLISH', channel, 's')
  end
end

-- Ends a call for good: terminal status, indexes, counters, retention. `cp` is the call's
-- campaign ('' for none). Extra field/value pairs are written with the status.
-- K: {prefix, index, ctl, finished, dead, stats, sched}
local function finish_with(K, key, id, from, final, at, note, P, h, n, cp, ...)
  local err = move_with(key, from, final, at, note, P.hist_limit, h, n, 'fin', at, ...)
  if err then return err end
  redis.call('HDEL', key, 'tk', 'due', 'as', 'an', 'cid')
  local c = campaign(K.prefix, cp or '')
  if from == 'queued' then
    redis.call('ZREM', c.ready, id)
    index_touch(K.index, K.ctl, c)
  end
  if from == 'scheduled' then redis.call('ZREM', K.sched, id) end
  redis.call('ZADD', K.finished, at, id)
  if final == 'failed' then redis.call('ZADD', K.dead, at, id) end
  stat(K.stats, 'final:' .. final, 1)
  if HOOKS and HOOKS.told ~= key then
    local url = HOOKS.calls and redis.call('HGET', key, 'wh') or nil
    url = url or c.wh
    if url then hook_add('call', id, final, at, c.id, url) end
  end
  if c.id ~= '' then
    stat(c.stats, 'final:' .. final, 1)
    stat(c.stats, 'open', -1)
    c.done_at = at
    MAYBE_DONE[c.id] = c  -- looked at once the counters are written (stats_flush)
  end
  if P.retention_ms > 0 then redis.call('PEXPIRE', key, P.retention_ms) end
  return false
end

local function finish(K, key, id, from, final, at, note, P, cp, ...)
  local f = redis.call('HMGET', key, 'hist', 'hn')
  return finish_with(K, key, id, from, final, at, note, P, f[1], f[2], cp, ...)
end

-- The carrier pushed back (HTTP 429, concurrency breach): the global dial rate is cut in half
-- for `window_ms` (again on each push-back, down to a tenth), then returns to the limit.
local function throttle(ctl, at, window_ms)
  local f = redis.call('HMGET', ctl, 'rb_until', 'rb_factor')
  local factor = 1
  if f[1] and tonumber(f[1]) > at then factor = tonumber(f[2] or '1') end
  factor = math.max(0.1, factor * 0.5)
  redis.call('HSET', ctl, 'rb_until', at + window_ms, 'rb_factor', factor)
end

-- Parses the settle policy block that scripts which end attempts receive in ARGV from `i`:
-- retention_ms, hist_limit, max_live, base_ms, factor, cap_ms, jitter, retry_on (csv, plus
-- '+machine_done' when an answering machine counts as done), rand,
-- rate backoff window ms
local function parse_policy(argv, i)
  local P = {
    retention_ms = tonumber(argv[i]), hist_limit = tonumber(argv[i + 1]),
    max_live = tonumber(argv[i + 2]), base_ms = tonumber(argv[i + 3]),
    factor = tonumber(argv[i + 4]), cap_ms = tonumber(argv[i + 5]),
    jitter = tonumber(argv[i + 6]), retry_on = {}, rand = tonumber(argv[i + 8]),
    backoff_ms = tonumber(argv[i + 9]),
  }
  for o in string.gmatch(argv[i + 7], '[^,]+') do
    if o == '+machine_done' then P.machine_done = true else P.retry_on[o] = true end
  end
  return P
end

-- The offset entries (zones.lua) of a call's time zones - its own (`tz`), else its campaign's
-- window zone - or nil when none is known or one is not recorded yet.
local function zone_entries(prefix, c, tz)
  local names = (tz and tz ~= '') and tz or c.wtz
  if not names or names == '' then return nil end
  local entries = {}
  for zone in string.gmatch(names, '[^,]+') do
    local e = OFFSETS[zone]
    if e == nil then
      e = redis.call('HGET', prefix .. KEY.zone_offsets, zone) or false
      OFFSETS[zone] = e
    end
    if not e then return nil end
    entries[#entries + 1] = e
  end
  return entries
end

-- A retry due at `due` moves to its campaign's next calling-window opening when `due` falls
-- outside the window (the claim checks again just before dialing in any case). Moved, it is
-- parked by the window (_park.lua), and its own time is kept ('nb': not before) for a recheck
-- after the window changes.
local function within_window(prefix, c, tz, due, id, key, now)
  if not c.win or c.win == '' then return due end
  local entries = zone_entries(prefix, c, tz)
  if not entries then return due end
  local opens = window_next_open(window_parse(c.win), entries, due)
  if opens <= due then return due end
  window_park(prefix, c.id, id, opens, now)
  redis.call('HSET', key, 'nb', due)
  return opens
end

-- One person, one line: the number's line is free again once this call's attempt is over.
local function free_line(prefix, phone, id)
  if phone then
    local lines = prefix .. KEY.lines
    if redis.call('HGET', lines, phone) == id then redis.call('HDEL', lines, phone) end
  end
end

-- A campaign's retry policy ('rp', set by the campaigns API) overrides the queue's:
-- "outcomes csv|max retries ('' = the call's)|delay ms|lin or exp|factor|max delay ms".
local function campaign_retry(c, P)
  if not c.rp or c.rp == '' then return nil end
  local on, mr, base, mode, factor, cap = string.match(c.rp,
    '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  if not on then return nil end
  local R = {retry_on = {}, max_retries = tonumber(mr), base_ms = tonumber(base),
    linear = mode == 'lin', factor = tonumber(factor) or 2, cap_ms = tonumber(cap)}
  for o in string.gmatch(on, '[^,]+') do R.retry_on[o] = true end
  return R
end

-- Ends attempt `n` of a live call with `outcome`, gives back its live-call slots (global and
-- campaign), then completes the call, schedules its next attempt with backoff, or fails it.
-- K: {prefix, index, live, leases, sched, finished, dead, stats, channel, ctl}
-- facts: attempt fields to record (cid, hc, an, e, d, bd)
local function settle(K, key, id, n, outcome, facts, at, P, rand)
  local f = redis.call('HMGET', key, 'as', 'an', 'cid', 'atts', 'st', 'cx', 'mr', 'hist', 'hn',
    'mach', 'fr', 'cp', 'to', 'tz', 'wk')
  local c = campaign(K.prefix, f[12] or '')
  free_line(K.prefix, f[13], id)
  disown(K.prefix, f[15], id)
  redis.call('ZREM', K.live, id)
  redis.call('ZREM', K.leases, id)
  slot_freed(K.live, K.channel, at, P.max_live)
  if redis.call('ZREM', c.live, id) == 1 then slot_freed(c.live, K.channel, at, c.mc) end
  local throttled = outcome == 'throttled' and f[6] ~= '1'
  if outcome == 'completed' and f[10] == '1' then outcome = 'machine' end
  local cid = (facts.cid and facts.cid ~= '') and facts.cid or (f[3] or nil)
  local rec = {n = n, s = tonumber(f[1]), an = tonumber(f[2]), cid = cid, o = outcome}
  merge_facts(rec, facts)
  if rec.e == nil then rec.e = at end
  -- Talk time of an answered attempt whose end gives none, or 0 (the simulator's word on a
  -- hang-up we asked for, a cancel): from its answer to its end.
  if rec.an and (rec.d == nil or rec.d == 0) and rec.e > rec.an then
    rec.d = (rec.e - rec.an) / 1000
  end
  local enc = cjson.encode(rec)
  local atts = (f[4] and f[4] ~= '' and f[4] ~= '[]') and (string.sub(f[4], 1, -2) .. ',' .. enc .. ']')
    or ('[' .. enc .. ']')
  stat(K.stats, 'o:' .. outcome, 1)
  if c.id ~= '' then stat(c.stats, 'o:' .. outcome, 1) end
  local d = tonumber(rec.d)
  if outcome == 'completed' and d then
    local ms = math.floor(d * 1000 + 0.5)
    stat(K.stats, 'dur_ms', ms)
    stat(K.stats, 'dur_n', 1)
    if c.id ~= '' then
      stat(c.stats, 'dur_ms', ms)
      stat(c.stats, 'dur_n', 1)
    end
  end
  local st = f[5]
  if throttled then
    -- The carrier refused the call after taking the request (its concurrency limit): nobody
    -- was called, so the attempt does not count against max_retries ('fr': free attempts).
    -- Its number is not reused: a late callback of it must never touch the next attempt.
    throttle(K.ctl, at, P.backoff_ms)
    redis.call('HINCRBY', key, 'fr', 1)
    local due = at + math.floor(1000 + 1000 * rand)
    local err = move_with(key, st, 'scheduled', at, 'carrier refused the call (' ..
      (facts.hc or '') .. '); it does not count as an attempt', P.hist_limit, f[8], f[9],
      'due', due, 'atts', atts, 'ph', 3)
    if err then return err end
    redis.call('HDEL', key, 'tk', 'as', 'an', 'cid')
    redis.call('ZADD', K.sched, due, id)
    redis.call('PUBLISH', K.channel, 'd')
    return 'scheduled'
  end
  local R = campaign_retry(c, P)
  local retry_on = R and R.retry_on or P.retry_on
  local max_retries = tonumber(f[7] or '') or (R and R.max_retries) or DEFAULT_RETRIES
  local final
  if f[6] == '1' then  -- cancelled by request: hung up whatever the carrier reports
    final = 'cancelled'
  elseif outcome == 'completed' then
    final = 'completed'
  elseif retry_on[outcome] and n - tonumber(f[11] or '0') <= max_retries then
    local delay
    if R and R.linear then
      delay = R.base_ms * n
    elseif R then
      delay = R.base_ms * (R.factor ^ (n - 1))
    else
      delay = P.base_ms * (P.factor ^ (n - 1))
    end
    delay = math.min((R and R.cap_ms) or P.cap_ms, delay)
    delay = math.max(0, math.floor(delay * (1 + P.jitter * (2 * rand - 1))))
    local due = within_window(K.prefix, c, f[14], at + delay, id, key, at)
    local err = move_with(key, st, 'scheduled', at, outcome .. '; attempt ' .. (n + 1) .. ' due',
      P.hist_limit, f[8], f[9], 'due', due, 'atts', atts, 'ph', 3, 'oc', outcome)
    if err then return err end
    redis.call('HDEL', key, 'tk', 'as', 'an', 'cid')
    local head = redis.call('ZRANGE', K.sched, 0, 0, 'WITHSCORES')
    redis.call('ZADD', K.sched, due, id)
    if head[2] == nil or due < tonumber(head[2]) then redis.call('PUBLISH', K.channel, 'd') end
    return 'scheduled'
  elseif outcome == 'machine' and (P.machine_done or (R and R.retry_on['+machine_done'])) then
    final = 'completed'  -- policy: a machine answered, the call counts as done
  else
    final = 'failed'
  end
  local err = finish_with(K, key, id, st, final, at, outcome, P, f[8], f[9], f[12], 'atts', atts,
    'ph', 3, 'oc', outcome)
  if err then return err end
  return final
end
