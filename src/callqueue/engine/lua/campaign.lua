-- campaign: changes a campaign's settings or its state.
-- KEYS[1] queue prefix (derived keys)  KEYS[2] campaign index  KEYS[3] control
-- KEYS[4] campaign registry  KEYS[5] sched  KEYS[6] finished  KEYS[7] dead  KEYS[8] stats
-- ARGV[1] campaign id  ARGV[2] op  ARGV[3] wake channel  ARGV[4] retention ms
-- ARGV[5] history limit, then by op:
--   set: field, value, ... (a value '' removes the field). Fields: name, mc (max concurrent
--     calls), rl (dials per second), w (weight), win (calling window, windows.py encoding),
--     wtz (its time zone for numbers of unknown zone), rp (retry policy), cfg (default
--     call_config json), wh (status webhook url), we (webhook events: final | all), wp (1: calls' zones
--     are being filled in, so none is dialed meanwhile)
--   pause | resume: a cancelled campaign refuses both (reply {'conflict', 'cancelled'}); pausing
--     a paused campaign or resuming an active or completed one changes nothing
--   cancel: a limit of calls to end in this run, and a cursor in the scheduled set (0 first)
-- A set that changes win or wtz starts a recheck of the calls the window parked (recheck.lua
-- does it, a slice at a time); cancel drops any.
-- Returns: set: {status, created (0/1), recheck under way (0/1)}; pause/resume: {status,
--   created (0/1)}; any of these may instead return {'not_found', 0} / {'conflict', status}
--   (the campaign's status refuses the op: nothing changed); cancel: {status, queued left,
--   next cursor in the scheduled set (-1: done), calls cancelled in this run}
local prefix, index, ctl, registry, sched = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cp, op, channel = ARGV[1], ARGV[2], ARGV[3]
local P = {retention_ms = tonumber(ARGV[4]), hist_limit = tonumber(ARGV[5])}
local K = {prefix = prefix, index = index, ctl = ctl, finished = KEYS[6], dead = KEYS[7],
  stats = KEYS[8], sched = sched}
local now = now_ms()
hooks_init(prefix, ctl)
local c = campaign(prefix, cp)
local created = 0
if redis.call('EXISTS', c.key) == 0 then
  if op ~= 'set' then return {'not_found', 0} end
  redis.call('HSET', c.key, 'st', 'active', 'cr', now)
  redis.call('ZADD', registry, now, cp)
  created = 1
end
local st = redis.call('HGET', c.key, 'st')

if op == 'set' then
  -- Settings make the campaign the user's: it is kept when it finishes.
  redis.call('HDEL', c.key, 'auto')
  redis.call('ZREM', done_key(prefix), cp)
  local window_before = redis.call('HMGET', c.key, 'win', 'wtz')
  for i = 6, #ARGV, 2 do
    if ARGV[i + 1] == '' then
      redis.call('HDEL', c.key, ARGV[i])
    else
      redis.call('HSET', c.key, ARGV[i], ARGV[i + 1])
    end
  end
  redis.call('HSET', c.key, 'up', now)
  if redis.call('HGET', c.key, 'we') == 'all' then redis.call('HSET', ctl, 'hk_all', 1) end
  CAMPAIGNS[cp] = nil  -- read the new settings
  index_touch(index, ctl, campaign(prefix, cp))
  redis.call('PUBLISH', channel, 'c')  -- limits may have grown
  local window_after = redis.call('HMGET', c.key, 'win', 'wtz')
  if window_after[1] ~= window_before[1] or window_after[2] ~= window_before[2] then
    window_recheck_start(prefix, cp)
  end
  return {st, created, redis.call('HEXISTS', park_rechecks_key(prefix), cp)}
elseif (op == 'pause' or op == 'resume') and st == 'cancelled' then
  return {'conflict', st}  -- its calls are ended and new ones refused: nothing to run again
elseif op == 'pause' then
  if st == 'active' or st == 'completed' then
    redis.call('HSET', c.key, 'st', 'paused', 'up', now)
    st = 'paused'
    redis.call('ZREM', index, cp)
    redis.call('ZREM', done_key(prefix), cp)  -- a paused campaign is kept
  end
  return {st, 0}
elseif op == 'resume' then
  if st == 'paused' then
    redis.call('HSET', c.key, 'st', 'active', 'up', now)
    st = 'active'
    c.st = 'active'
    if c.auto then  -- completed before its pause, it is complete again (and may be forgotten)
      c.done_at = now
      MAYBE_DONE[cp] = c
    end
    index_touch(index, ctl, c)
    redis.call('PUBLISH', channel, 'e')
  end
  return {st, 0}
elseif op == 'cancel' then
  local limit, cursor = tonumber(ARGV[6]), tonumber(ARGV[7])
  if st ~= 'cancelled' then
    redis.call('HSET', c.key, 'st', 'cancelled', 'up', now)
    redis.call('ZREM', index, cp)
  end
  c.st = 'cancelled'
  if cursor == 0 then window_recheck_drop(prefix, cp) end
  local done = 0
  local call_prefix = prefix .. KEY.call
  -- Queued calls first, a slice at a time.
  local popped = redis.call('ZPOPMIN', c.ready, limit)
  for i = 1, #popped, 2 do
    local id = popped[i]
    local key = call_prefix .. id
    local f = redis.call('HMGET', key, 'st', 'hist', 'hn')
    if f[1] == 'queued' then
      local err = finish_with(K, key, id, 'queued', 'cancelled', now, 'campaign cancelled', P,
        f[2], f[3], cp, 'oc', 'cancelled', 'why', 'campaign')
      if err then return err end
      done = done + 1
    end
  end
  local left = redis.call('ZCARD', c.ready)
  -- Then the scheduled set, looking for this campaign's calls.
  local next_cursor = -1
  if left > 0 or done >= limit then
    next_cursor = cursor
  elseif cursor >= 0 then
    local ids = redis.call('ZRANGE', sched, cursor, cursor + (limit - done) - 1)
    local removed = 0
    for _, id in ipairs(ids) do
      local key = call_prefix .. id
      local f = redis.call('HMGET', key, 'st', 'cp', 'hist', 'hn')
      if f[1] == 'scheduled' and f[2] == cp then
        local err = finish_with(K, key, id, 'scheduled', 'cancelled', now, 'campaign cancelled',
          P, f[3], f[4], cp, 'oc', 'cancelled', 'why', 'campaign')
        if err then return err end
        done = done + 1
        removed = removed + 1
      end
    end
    if #ids > 0 then next_cursor = cursor + #ids - removed end
  end
  return {'cancelled', left, next_cursor, done}
end
return redis.error_reply('CQ_BAD_CAMPAIGN_OP ' .. tostring(op))
