-- recheck: after a campaign's calling window or its time zone changed, looks again at the calls
-- the window had parked (window_park in _park.lua), at most `limit` of them per run. A call the
-- window lets through now is queued again at its old place in line; the others become due at
-- the window's next opening (a retry moved into the window never earlier than its own delay).
-- Calls scheduled for another reason (scheduled_at, retry backoff, a busy line, the daily cap)
-- were never parked and are not touched. The change itself (campaign.lua set) set the parked
-- calls aside in wr:<campaign>; each run takes some from there. So runs may be repeated, may
-- interleave with claims, and whoever runs next finishes the work of one that died; a call
-- looked at twice gets the same answer (the window's next opening after any instant until
-- then is that same opening).
-- KEYS[1] queue prefix (derived keys)  KEYS[2] campaign index  KEYS[3] control  KEYS[4] sched
-- KEYS[5] call key prefix
-- ARGV[1] campaign id ('': any campaign with a recheck under way)  ARGV[2] limit (calls per run)
-- ARGV[3] history limit  ARGV[4] wake channel  ARGV[5] clock override ms (0: the server clock;
--   tests of calling windows set it, as for claim)
-- Returns: {campaign id ('': no recheck was under way), calls now due, calls given another due
--   time, more (1: call again: for this campaign, or with '' for any)}
local prefix, index, ctl, sched, call_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local cp, limit, hist_limit, channel = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local now = tonumber(ARGV[5]) > 0 and tonumber(ARGV[5]) or now_ms()
local rechecks = park_rechecks_key(prefix)
local any = cp == ''
if any then
  cp = redis.call('HRANDFIELD', rechecks)
  if not cp then return {'', 0, 0, 0} end
end

-- The reply: `more` for the campaign, or for any when none was named.
local function reply(due_now, moved, more)
  if any and not more then more = redis.call('HLEN', rechecks) > 0 end
  return {cp, due_now, moved, more and 1 or 0}
end

if redis.call('HEXISTS', rechecks, cp) == 0 then return reply(0, 0, false) end
local wr = park_recheck_key(prefix, cp)
local c = campaign(prefix, cp)
if not c.found or c.st == 'cancelled' then
  window_recheck_drop(prefix, cp)
  return reply(0, 0, false)
end

-- True when calls wait in wr; starts the next sweep when one was asked for, else ends.
local function sweep_ready()
  if redis.call('EXISTS', wr) == 1 then return true end
  if redis.call('HGET', rechecks, cp) == '1' then
    redis.call('HSET', rechecks, cp, 0)
    if park_set_aside(prefix, cp) then return true end
  end
  redis.call('HDEL', rechecks, cp)
  return false
end

if not sweep_ready() then return reply(0, 0, false) end
hooks_init(prefix, ctl)
local win = (c.win and c.win ~= '') and window_parse(c.win) or nil
local popped = redis.call('ZPOPMIN', wr, limit)
local due_now, moved, earlier = 0, 0, false
for i = 1, #popped, 2 do
  local id, was = popped[i], tonumber(popped[i + 1])
  local key = call_prefix .. id
  local f = redis.call('HMGET', key, 'st', 'cp', 'q', 'hist', 'hn', 'tz', 'nb', 'due')
  -- Still parked there ('due' is its score in sched)? Else the entry is stale: the call moved
  -- on, and the entry is dropped.
  if f[1] == 'scheduled' and f[2] == cp and tonumber(f[8]) == was then
    -- A retry moved into the window keeps its own delay ('nb': not before).
    local base = math.max(now, tonumber(f[7] or '0') or 0)
    local due, parked = base, false
    if win then
      local entries = zone_entries(prefix, c, f[6])
      if not entries then
        due, parked = was, true  -- offsets not known yet: as the claim decided
      else
        local opens = window_next_open(win, entries, base)
        -- (-1: never open in all of the number's zones: due now, and the claim ends it, saying
        -- why.)
        if opens > base then due, parked = opens, true end
      end
    end
    if due <= now then
      local err = move_with(key, 'scheduled', 'queued', now, 'the calling window changed: due ' ..
        'now', hist_limit, f[4], f[5])
      if err then return err end
      redis.call('HDEL', key, 'due', 'nb')
      redis.call('ZREM', sched, id)
      redis.call('ZADD', c.ready, f[3], id)
      due_now = due_now + 1
    else
      if due ~= was then
        local h, n = add_history(f[4], f[5], now, 'scheduled', 'the calling window changed: due ' ..
          (parked and 'when it opens' or 'after the retry delay'), hist_limit)
        redis.call('HSET', key, 'due', due, 'up', now, 'hist', h, 'hn', n)
        redis.call('ZADD', sched, due, id)
        moved = moved + 1
        if due < was then earlier = true end
      end
      if parked then
        window_park(prefix, cp, id, due, now)
      else
        redis.call('HDEL', key, 'nb')
      end
    end
  end
end
if due_now > 0 then
  index_touch(index, ctl, c)
  redis.call('PUBLISH', channel, 'e')
elseif earlier then
  redis.call('PUBLISH', channel, 'd')  -- sleepers wait for the old first due time
end
return reply(due_now, moved, sweep_ready())
