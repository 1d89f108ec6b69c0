-- release: the carrier refused the dial request outright (rate limited, overloaded, down):
-- no call was placed, so the attempt is given back unused and the call returns to the queue
-- at its place in line (or after `delay_ms`). Only the lease holder may do this, and only
-- while the carrier has said nothing else about the attempt.
-- KEYS[1] call key  KEYS[2] queue prefix (derived keys)  KEYS[3] campaign index  KEYS[4] sched
-- KEYS[5] live  KEYS[6] leases  KEYS[7] finished  KEYS[8] dead  KEYS[9] stats  KEYS[10] control
-- KEYS[11] rate log
-- ARGV[1] call id  ARGV[2] attempt  ARGV[3] token  ARGV[4] delay ms  ARGV[5] reason
-- ARGV[6] wake channel  ARGV[7..16] settle policy (see parse_policy)  ARGV[17] throttle (0/1):
--   the carrier pushed back, so the global dial rate backs off for a while  ARGV[18] unsent
--   (0/1): no request ever left, so the attempt's dial-rate tokens are given back too (and its
--   place in the pacing)  ARGV[19] the global pacing interval ms (0: no rate limit)
-- Returns: {code, status}; code is ok | token | stale | not_found
local key = KEYS[1]
local K = {prefix = KEYS[2], index = KEYS[3], sched = KEYS[4], live = KEYS[5], leases = KEYS[6],
  finished = KEYS[7], dead = KEYS[8], stats = KEYS[9], ctl = KEYS[10], channel = ARGV[6]}
local id, n, token, delay, reason = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5]
local P = parse_policy(ARGV, 7)
local now = now_ms()
hooks_init(K.prefix, K.ctl)
if ARGV[17] == '1' then throttle(K.ctl, now, P.backoff_ms) end

local f = redis.call('HMGET', key, 'st', 'a', 'ph', 'tk', 'cx', 'q', 'cp', 'to', 'wk')
if not f[1] then return {'not_found', ''} end
if f[4] ~= token then return {'token', f[1]} end
if tonumber(f[2]) ~= n or tonumber(f[3] or '0') ~= 0 then return {'stale', f[1]} end
local c = campaign(K.prefix, f[7] or '')
free_line(K.prefix, f[8], id)
disown(K.prefix, f[9], id)
if ARGV[18] == '1' then
  if redis.call('ZREM', KEYS[11], token) == 1 and tonumber(ARGV[19]) > 0 then
    redis.call('HINCRBYFLOAT', K.ctl, 'tat', -tonumber(ARGV[19]))
  end
  if redis.call('ZREM', c.rate, token) == 1 and c.rl > 0 then
    redis.call('HINCRBYFLOAT', c.key, 'tat', -1000 / c.rl)
  end
end

redis.call('ZREM', K.live, id)
redis.call('ZREM', K.leases, id)
slot_freed(K.live, K.channel, now, P.max_live)
if redis.call('ZREM', c.live, id) == 1 then slot_freed(c.live, K.channel, now, c.mc) end
-- Attempt n - 1 is the current one again: it had ended (else n could not have been claimed),
-- so a late or repeated callback about it must find it ended, as it did before the claim.
redis.call('HSET', key, 'a', n - 1, 'ph', n > 1 and 3 or 0)
redis.call('HDEL', key, 'tk', 'as', 'an', 'cid')
stat(K.stats, 'released', 1)
if c.id ~= '' then stat(c.stats, 'released', 1) end
local note = 'carrier refused the request (' .. reason .. '); no attempt used'
if f[5] == '1' then
  local err = finish(K, key, id, f[1], 'cancelled', now, note, P, c.id)
  if err then return err end
  return {'ok', 'cancelled'}
end
if c.st == 'cancelled' then  -- cancelled while this call was being dialed: it ends here
  local err = finish(K, key, id, f[1], 'cancelled', now, note .. '; campaign cancelled', P, c.id,
    'oc', 'cancelled', 'why', 'campaign')
  if err then return err end
  return {'ok', 'cancelled'}
end
if delay > 0 then
  local err = move(key, f[1], 'scheduled', now, note, P.hist_limit, 'due', now + delay)
  if err then return err end
  redis.call('ZADD', K.sched, now + delay, id)
  redis.call('PUBLISH', K.channel, 'd')
  return {'ok', 'scheduled'}
end
local err = move(key, f[1], 'queued', now, note, P.hist_limit)
if err then return err end
redis.call('ZADD', c.ready, f[6], id)
index_touch(K.index, K.ctl, c)
redis.call('PUBLISH', K.channel, 'e')
return {'ok', 'queued'}
