-- event: a carrier event for one attempt of a call. Idempotent and order-proof: the attempt's
-- phase only moves forward (dialing < ringing < answered < ended), so a repeated or late event
-- changes nothing; events for another attempt number change nothing.
-- KEYS[1] call key  KEYS[2] live  KEYS[3] leases  KEYS[4] sched  KEYS[5] finished  KEYS[6] dead
-- KEYS[7] stats  KEYS[8] ready  KEYS[9] control
-- ARGV[1] call id  ARGV[2] attempt  ARGV[3] kind: accepted | ringing | answered | ended |
--   ambiguous | machine (answering machine detected; the attempt ends as `machine`)
-- ARGV[4] lease token (accepted/ambiguous only)  ARGV[5] carrier call id  ARGV[6] outcome (ended)
-- ARGV[7] hangup cause  ARGV[8] duration s  ARGV[9] bill duration s  ARGV[10] answered ms
-- ARGV[11] ended ms  ARGV[12] wake channel  ARGV[13..22] settle policy (see parse_policy)
-- Returns: {code, status, cancel_requested}; code is ok | dup | stale | token | not_found
local key = KEYS[1]
local K = {live = KEYS[2], leases = KEYS[3], sched = KEYS[4], finished = KEYS[5], dead = KEYS[6],
  stats = KEYS[7], ready = KEYS[8], ctl = KEYS[9], channel = ARGV[12]}
local id, n, kind, token, cid = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local hist_limit = tonumber(ARGV[14])
local now = now_ms()

local f = redis.call('HMGET', key, 'st', 'a', 'ph', 'tk', 'cx', 'cid')
local st = f[1]
if not st then return {'not_found', '', '0'} end
local current, phase, cx = tonumber(f[2]), tonumber(f[3] or '0'), f[5] or '0'
local facts = {cid = cid, hc = ARGV[7], d = tonumber(ARGV[8]), bd = tonumber(ARGV[9]),
  an = tonumber(ARGV[10]), e = tonumber(ARGV[11])}

if n ~= current then
  -- A late word about an earlier attempt: keep the facts, change no state.
  local raw = redis.call('HGET', key, 'atts')
  if n < current and raw and raw ~= '[]' then
    local atts = cjson.decode(raw)
    for _, rec in ipairs(atts) do
      if tonumber(rec.n) == n then merge_facts(rec, facts) end
    end
    redis.call('HSET', key, 'atts', cjson.encode(atts))
  end
  return {'stale', st, cx}
end

-- The carrier's id for the call: the dial answer's (request) id until a callback names the
-- call itself; that one is what a hang-up needs.
local function keep_carrier_id(callback)
  if cid ~= '' and phase < 3 and (not f[6] or f[6] == '' or (callback and f[6] ~= cid)) then
    redis.call('HSET', key, 'cid', cid)
  end
end

if kind == 'accepted' or kind == 'ambiguous' then
  if phase >= PHASE.ended then return {'dup', st, cx} end
  if f[4] ~= token then return {'token', st, cx} end
  redis.call('ZREM', K.leases, id)
  if kind == 'ambiguous' then
    if phase == 0 then
      push_history(key, now, st, 'no answer from the carrier to the dial request: slot held ' ..
        'until a callback or the end of the attempt\'s longest life', hist_limit)
    end
    return {'ok', st, cx}
  end
  keep_carrier_id(false)
  if phase >= PHASE.accepted then return {'dup', st, cx} end
  local err = move(key, st, 'ringing', now, 'carrier accepted', hist_limit, 'ph', PHASE.accepted)
  if err then return err end
  return {'ok', 'ringing', cx}
end

if kind == 'machine' then
  if phase >= PHASE.ended or TERMINAL[st] then return {'dup', st, cx} end
  redis.call('HSET', key, 'mach', 1)
  push_history(key, now, st, 'answering machine detected', hist_limit)
  return {'ok', st, cx}
end

local rank = PHASE[kind]
if not rank then return redis.error_reply('CQ_BAD_EVENT ' .. tostring(kind)) end
if phase >= rank or TERMINAL[st] then return {'dup', st, cx} end
if kind ~= 'ended' then
  redis.call('ZREM', K.leases, id)  -- settle does both for an ended attempt
  keep_carrier_id(true)
end
if kind == 'ringing' then
  local err = move(key, st, 'ringing', now, '', hist_limit, 'ph', rank)
  if err then return err end
  return {'ok', 'ringing', cx}
elseif kind == 'answered' then
  local err = move(key, st, 'in_progress', now, '', hist_limit, 'ph', rank, 'an', facts.an or now)
  if err then return err end
  return {'ok', 'in_progress', cx}
end
local P = parse_policy(ARGV, 13)
local result = settle(K, key, id, n, ARGV[6], facts, now, P, P.rand)
if type(result) == 'table' then return result end
return {'ok', result, cx}
