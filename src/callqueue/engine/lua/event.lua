-- event: carrier events, one or many (a batch is one round trip and one script run; each
-- event is applied in order, as if alone). Idempotent and order-proof: an attempt's phase only
-- moves forward (dialing < ringing < answered < ended), so a repeated or late event changes
-- nothing; events for another attempt number change nothing.
-- KEYS[1] queue prefix (derived keys)  KEYS[2] campaign index  KEYS[3] live  KEYS[4] leases
-- KEYS[5] sched  KEYS[6] finished  KEYS[7] dead  KEYS[8] stats  KEYS[9] control
-- KEYS[9+i] call key of the i-th event
-- ARGV[1] wake channel  ARGV[2..11] settle policy (see parse_policy; its rand is unused)
-- then 13 per event: call id, attempt, kind (accepted | ringing | answered | ended |
--   ambiguous | machine: answering machine detected, the attempt ends as `machine`),
--   lease token (accepted/ambiguous only), carrier call id, outcome (ended), hangup cause,
--   duration s, bill duration s, answered ms, ended ms, rand (0-1, for retry jitter),
--   ids (a carrier callback's ids for its call, space separated; '' for no check)
-- Returns: {code1, status1, cancel_requested1, code2, ...}; code is ok | dup | stale | token |
--   not_found | mismatch (the attempt's known carrier id is none of the event's ids: nothing
--   changed) | error (then status holds the error text: a bug, never carrier input)
local K = {prefix = KEYS[1], index = KEYS[2], live = KEYS[3], leases = KEYS[4], sched = KEYS[5],
  finished = KEYS[6], dead = KEYS[7], stats = KEYS[8], ctl = KEYS[9], channel = ARGV[1]}
local FIRST_CALL_KEY = 10
local PER_EVENT = 13
local P = parse_policy(ARGV, 2)
local hist_limit = P.hist_limit
local now = now_ms()
hooks_init(K.prefix, K.ctl)

-- The carrier's id for the call: the dial answer's (request) id until a callback names the
-- call itself; that one is what a hang-up needs.
local function keep_carrier_id(key, cid, phase, known, callback)
  if cid ~= '' and phase < 3 and (not known or known == '' or (callback and known ~= cid)) then
    redis.call('HSET', key, 'cid', cid)
  end
end

-- Whether a callback naming its call by `ids` can be about an attempt whose carrier id is
-- `known`: a signed callback re-shaped to name another call must not move this one.
local function names_call(ids, known)
  if ids == '' or type(known) ~= 'string' or known == '' then return true end
  for id in string.gmatch(ids, '%S+') do
    if id == known then return true end
  end
  return false
end

local function apply(key, b)
  local id, n, kind, token, cid = ARGV[b], tonumber(ARGV[b + 1]), ARGV[b + 2], ARGV[b + 3],
    ARGV[b + 4]
  local f = redis.call('HMGET', key, 'st', 'a', 'ph', 'tk', 'cx', 'cid')
  local st = f[1]
  if not st then return 'not_found', '', '0' end
  local current, phase, cx = tonumber(f[2] or '0'), tonumber(f[3] or '0'), f[5] or '0'
  local facts = {cid = cid, hc = ARGV[b + 6], d = tonumber(ARGV[b + 7]),
    bd = tonumber(ARGV[b + 8]), an = tonumber(ARGV[b + 9]), e = tonumber(ARGV[b + 10])}
  local ids = ARGV[b + 12]

  if n ~= current then
    -- A late word about an earlier attempt: keep the facts, change no state.
    local raw = redis.call('HGET', key, 'atts')
    if n < current and raw and raw ~= '[]' then
      local atts = cjson.decode(raw)
      for _, rec in ipairs(atts) do
        if tonumber(rec.n) == n then
          if not names_call(ids, rec.cid) then return 'mismatch', st, cx end
          merge_facts(rec, facts)
        end
      end
      redis.call('HSET', key, 'atts', cjson.encode(atts))
    end
    return 'stale', st, cx
  end
  if not names_call(ids, f[6]) then return 'mismatch', st, cx end

  if kind == 'accepted' or kind == 'ambiguous' then
    if phase >= PHASE.ended then return 'dup', st, cx end
    if f[4] ~= token then return 'token', st, cx end
    redis.call('ZREM', K.leases, id)
    if kind == 'ambiguous' then
      if phase == 0 then
        push_history(key, now, st, 'no answer from the carrier to the dial request: slot ' ..
          'held until a callback or the end of the attempt\'s longest life', hist_limit)
      end
      return 'ok', st, cx
    end
    keep_carrier_id(key, cid, phase, f[6], false)
    if phase >= PHASE.accepted then return 'dup', st, cx end
    local err = move(key, st, 'ringing', now, 'carrier accepted', hist_limit, 'ph', PHASE.accepted)
    if err then return 'error', err.err, cx end
    return 'ok', 'ringing', cx
  end

  if kind == 'machine' then
    if phase >= PHASE.ended or TERMINAL[st] then return 'dup', st, cx end
    redis.call('HSET', key, 'mach', 1)
    push_history(key, now, st, 'answering machine detected', hist_limit)
    return 'ok', st, cx
  end

  local rank = PHASE[kind]
  if not rank then return 'error', 'CQ_BAD_EVENT ' .. tostring(kind), cx end
  if phase >= rank or TERMINAL[st] then return 'dup', st, cx end
  if kind ~= 'ended' then
    redis.call('ZREM', K.leases, id)  -- settle does both for an ended attempt
    keep_carrier_id(key, cid, phase, f[6], true)
  end
  if kind == 'ringing' then
    local err = move(key, st, 'ringing', now, '', hist_limit, 'ph', rank)
    if err then return 'error', err.err, cx end
    return 'ok', 'ringing', cx
  elseif kind == 'answered' then
    local err = move(key, st, 'in_progress', now, '', hist_limit, 'ph', rank, 'an',
      facts.an or now)
    if err then return 'error', err.err, cx end
    return 'ok', 'in_progress', cx
  end
  local result = settle(K, key, id, n, ARGV[b + 5], facts, now, P, tonumber(ARGV[b + 11]))
  if type(result) == 'table' then return 'error', result.err, cx end
  return 'ok', result, cx
end

local out = {}
for i = 1, #KEYS - (FIRST_CALL_KEY - 1) do
  local code, status, cx = apply(KEYS[FIRST_CALL_KEY - 1 + i], 12 + (i - 1) * PER_EVENT)
  out[#out + 1] = code
  out[#out + 1] = status
  out[#out + 1] = cx
end
return out
