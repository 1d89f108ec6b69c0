-- enqueue: adds calls (one or a batch), idempotent on the call id.
-- KEYS[1] queue prefix (derived keys: campaign settings, ready sets, counters)  KEYS[2] campaign
--   index  KEYS[3] sched  KEYS[4] seq  KEYS[5] stats  KEYS[6] batch set (or the seq key again
--   when there is no batch)  KEYS[7] do-not-call set  KEYS[8] control  KEYS[9] campaign
--   registry  KEYS[9+i] call key of the i-th call
-- ARGV[1] wake channel  ARGV[2] batch index ttl ms  ARGV[3] has_batch (0/1)  ARGV[4] batch id
-- ARGV[5] arrival sequence of the first call (0: take `ARGV[6]` numbers from the seq key here;
--   a bulk enqueue reserves its numbers with its first script, so its calls keep their input
--   order whichever of its scripts the server runs first)  ARGV[6] how many numbers to take
-- then 11 per call: id, spec json, priority rank, due ms (0: now), max_retries ('' = the
--   campaign's), max duration s (0: the dialing worker's default), body hash, phone number
--   (E.164), campaign id ('' none), time zones of the callee (comma-separated IANA names, ''),
--   status webhook url of the call itself ('' none)
-- Returns: {'ok', codes, first seq, status...}: codes has one letter per call, in order:
--   q created queued, s created scheduled, e exists (same body), c conflict (same id, other
--   body), d dnc (the number is on the do-not-call list: nothing is created), x its campaign
--   is cancelled (nothing is created); then, for each e or c in order, the existing call's
--   status. (Compact, because bulk replies of 1,000 calls are built by the server and decoded
--   by the client on the hot path.)
-- A new call's hash starts without the fields whose absence means their zero value: attempt
-- number `a` (0), `up` (= `cr`), `hn` (1 history line); priority is the high part of `q`.
-- A campaign id not seen before creates the campaign with default settings.
local prefix, index, sched, seqk, stats, batch = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6]
local dnc, ctl, registry = KEYS[7], KEYS[8], KEYS[9]
local FIRST_CALL_KEY = 10
local channel, batch_ttl = ARGV[1], tonumber(ARGV[2])
local has_batch, batch_id = ARGV[3] == '1', ARGV[4]
local n = #KEYS - (FIRST_CALL_KEY - 1)
local now = now_ms()
local seq = tonumber(ARGV[5])
if seq == 0 then
  local take = tonumber(ARGV[6])
  seq = redis.call('INCRBY', seqk, take) - take + 1
end
local first_seq = seq
local sched_head  -- asked only when a call is scheduled (each check is a server call)
local wake = false
local codes, out = {}, {'ok', '', 0}
local new_ids = {}
-- One SMISMEMBER for the whole batch (in slices: unpack has a stack limit).
local listed = {}
for first = 1, n, 1000 do
  local phones = {}
  for i = first, math.min(n, first + 999) do phones[#phones + 1] = ARGV[6 + (i - 1) * 11 + 8] end
  local got = redis.call('SMISMEMBER', dnc, unpack(phones))
  for j = 1, #got do listed[first + j - 1] = got[j] end
end
-- Fresh calls are the common case: one EXISTS over the batch spares a read per call.
local any_exist = false
for first = FIRST_CALL_KEY, #KEYS, 1000 do
  if redis.call('EXISTS', unpack(KEYS, first, math.min(#KEYS, first + 999))) > 0 then
    any_exist = true
    break
  end
end
local call_hooks = false  -- a call with its own status webhook (flag hk_call)
local seen = {}  -- ids created by this batch (the same id twice in one batch)
local to_ready = {}  -- campaign id -> {score, id, ...}: one ZADD per campaign at the end
local touched = {}  -- campaign id -> calls created
local function usable(cp)
  -- Calls to a cancelled campaign are refused. (No side effect: a row that creates nothing,
  -- a replay or a listed number, leaves its campaign as it is.)
  return cp == '' or campaign(prefix, cp).st ~= 'cancelled'
end
local function adopt(cp)
  -- The first call created in a campaign not seen before makes it, with default settings
  -- ('auto': forgotten once finished, see reap); one created in a completed campaign brings it
  -- back.
  local c = campaign(prefix, cp)
  if not c.found then
    redis.call('HSET', c.key, 'st', 'active', 'cr', now, 'auto', 1)
    redis.call('ZADD', registry, now, cp)
    c.found, c.auto = true, true
  elseif c.st == 'completed' then
    redis.call('HSET', c.key, 'st', 'active')
    c.st = 'active'
    if c.auto then redis.call('ZREM', done_key(prefix), cp) end
  end
end
-- The campaign of the previous row: a batch is usually all one campaign, so its list and
-- checks are kept at hand (table lookups and # are not free in a 1,000-row loop).
local last_cp, last_ok, last_list, last_len = nil, false, nil, 0
local n_new = 0
for i = 1, n do
  local key = KEYS[FIRST_CALL_KEY - 1 + i]
  local b = 6 + (i - 1) * 11
  local id, spec, prio, due = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local hash, phone, cp, tz = ARGV[b + 7], ARGV[b + 8], ARGV[b + 9], ARGV[b + 10]
  local existing = (any_exist or seen[id]) and redis.call('HMGET', key, 'st', 'h') or {}
  if cp ~= last_cp then
    if last_list then to_ready[last_cp] = last_list end
    last_cp, last_ok = cp, usable(cp)
    last_list = to_ready[cp]
    last_len = last_list and #last_list or 0
  end
  if existing[1] then
    codes[i] = (existing[2] == hash) and 'e' or 'c'
    out[#out + 1] = existing[1]
  elseif listed[i] == 1 then
    codes[i] = 'd'
  elseif not last_ok then
    codes[i] = 'x'
  else
    if touched[cp] == nil and cp ~= '' then adopt(cp) end
    local score = prio * BAND + seq + i - 1
    local status = (due > now) and 'scheduled' or 'queued'
    local fields = {'s', spec, 'st', status, 'q', score, 'md', ARGV[b + 6], 'cr', now,
      'h', hash, 'to', phone, 'hist', now .. '|' .. status .. '|\n'}
    local nf = 16
    if ARGV[b + 5] ~= '' then fields[nf + 1], fields[nf + 2], nf = 'mr', ARGV[b + 5], nf + 2 end
    if cp ~= '' then fields[nf + 1], fields[nf + 2], nf = 'cp', cp, nf + 2 end
    if tz ~= '' then fields[nf + 1], fields[nf + 2], nf = 'tz', tz, nf + 2 end
    if ARGV[b + 11] ~= '' then
      fields[nf + 1], fields[nf + 2], nf = 'wh', ARGV[b + 11], nf + 2
      call_hooks = true
    end
    if has_batch then fields[nf + 1], fields[nf + 2], nf = 'b', batch_id, nf + 2 end
    if status == 'scheduled' then
      fields[nf + 1], fields[nf + 2] = 'due', due
      redis.call('HSET', key, unpack(fields))
      if sched_head == nil then
        local head = redis.call('ZRANGE', sched, 0, 0, 'WITHSCORES')
        sched_head = head[2] and tonumber(head[2]) or false
      end
      redis.call('ZADD', sched, due, id)
      if not sched_head or due < sched_head then
        sched_head = due
        wake = true
      end
      codes[i] = 's'
    else
      redis.call('HSET', key, unpack(fields))
      if not last_list then last_list = {} end
      last_list[last_len + 1], last_list[last_len + 2] = score, id
      last_len = last_len + 2
      codes[i] = 'q'
    end
    n_new = n_new + 1
    new_ids[n_new] = id
    seen[id] = true
    touched[cp] = (touched[cp] or 0) + 1
  end
end
if last_list then to_ready[last_cp] = last_list end
for cp, list in pairs(to_ready) do
  local c = campaign(prefix, cp)
  local head = redis.call('ZRANGE', c.ready, 0, 0, 'WITHSCORES')
  if c.st == 'active' and not head[2] then wake = true end
  local low = list[1]
  for first = 1, #list, 1000 do
    redis.call('ZADD', c.ready, unpack(list, first, math.min(#list, first + 999)))
  end
  for j = 3, #list, 2 do
    if list[j] < low then low = list[j] end
  end
  -- An active campaign with queued calls is always in the index, scored by its head: when
  -- no new call goes before the head, its entry stays as it is (three server calls fewer).
  if c.st ~= 'active' or not head[2] or low < tonumber(head[2]) then
    index_touch(index, ctl, c)
  end
end
for cp, created in pairs(touched) do
  if created > 0 and cp ~= '' then
    local c = campaign(prefix, cp)
    stat(c.stats, 'enqueued', created)
    stat(c.stats, 'open', created)
  end
end
out[2] = table.concat(codes)
out[3] = first_seq
if #new_ids > 0 then stat(stats, 'enqueued', #new_ids) end
if has_batch and #new_ids > 0 then
  for first = 1, #new_ids, 1000 do
    redis.call('SADD', batch, unpack(new_ids, first, math.min(#new_ids, first + 999)))
  end
end
if has_batch and batch_ttl > 0 then redis.call('PEXPIRE', batch, batch_ttl) end
if call_hooks then redis.call('HSET', ctl, 'hk_call', 1) end
if wake then redis.call('PUBLISH', channel, 'e') end
return out
