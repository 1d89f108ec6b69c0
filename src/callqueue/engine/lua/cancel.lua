-- cancel: a call waiting (scheduled or queued) is cancelled at once; a live one is marked so
-- that its attempt ends as cancelled and is never retried, and a hang-up is announced on the
-- wake channel (message "h <id> <attempt> <carrier id>") for whoever holds the carrier call.
-- KEYS[1] call key  KEYS[2] queue prefix (derived keys)  KEYS[3] sched  KEYS[4] finished
-- KEYS[5] dead  KEYS[6] stats  KEYS[7] campaign index  KEYS[8] control
-- ARGV[1] call id  ARGV[2] reason  ARGV[3] wake channel
-- ARGV[4..13] settle policy (see parse_policy)
-- Returns: {code, status, attempt, carrier call id}; code is cancelled | hangup | final |
--   not_found
local key = KEYS[1]
local K = {prefix = KEYS[2], sched = KEYS[3], finished = KEYS[4], dead = KEYS[5], stats = KEYS[6],
  index = KEYS[7], ctl = KEYS[8]}
local id, reason, channel = ARGV[1], ARGV[2], ARGV[3]
local P = parse_policy(ARGV, 4)
local now = now_ms()
hooks_init(K.prefix, K.ctl)

local f = redis.call('HMGET', key, 'st', 'a', 'cid', 'cx', 'cp')
local st = f[1]
f[2] = f[2] or '0'  -- a call never dialed has no attempt number
if not st then return {'not_found', '', 0, ''} end
if TERMINAL[st] then return {'final', st, tonumber(f[2]), f[3] or ''} end
if st == 'scheduled' or st == 'queued' then
  local err = finish(K, key, id, st, 'cancelled', now, reason, P, f[5] or '')
  if err then return err end
  redis.call('HSET', key, 'oc', 'cancelled')
  return {'cancelled', 'cancelled', tonumber(f[2]), ''}
end
if f[4] ~= '1' then
  redis.call('HSET', key, 'cx', 1)
  push_history(key, now, st, 'cancel requested: ' .. reason, P.hist_limit)
end
redis.call('PUBLISH', channel, 'h ' .. id .. ' ' .. f[2] .. ' ' .. (f[3] or ''))
return {'hangup', st, tonumber(f[2]), f[3] or ''}
