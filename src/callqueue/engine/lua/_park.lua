-- Calls parked by a calling window, per campaign: what lets a change of the window (or of its
-- time zone) find them again (recheck.lua) without scanning every scheduled call.
-- Plain top-level local functions, no globals: concatenated into the library after _window.lua
-- and before _lib.lua (whose retries park calls too). Key names mirror engine/keys.py and are
-- derived from the queue prefix, so they share its cluster slot:
--   wp:<campaign>  ZSET call id -> the due time the window parked it to (its sched score)
--   wr:<campaign>  ZSET the same entries, set aside by a change of the window: still to be
--                  looked at again
--   wrecheck       HASH campaign -> 0 | 1 (one more sweep after this one): rechecks under way
-- An entry is a hint, checked when used: the call is still parked there only while it is
-- scheduled with that very due time. A call leaves `scheduled` only once that time has come
-- (the claim promotes it) or when it ends, and whatever schedules it again does so for a later
-- time; so nothing removes entries when calls move on. Entries due by now are trimmed as new
-- ones come, and the key expires a while after its last due time.

-- Kept after an entry's due time: clocks of tests and servers may disagree a little.
local PARK_GRACE_MS = 3600000
-- This run's park keys -> the latest due time their expiry covers (each is trimmed once a run).
local PARKED = {}

local function park_run_start() PARKED = {} end

local function park_key(prefix, cp) return prefix .. 'wp:' .. cp end
local function park_recheck_key(prefix, cp) return prefix .. 'wr:' .. cp end
local function park_rechecks_key(prefix) return prefix .. 'wrecheck' end

-- Records that the window of campaign `cp` parked call `id` until `due` (ms; `now` < `due`).
local function window_park(prefix, cp, id, due, now)
  local key = park_key(prefix, cp)
  redis.call('ZADD', key, due, id)
  local covered = PARKED[key]
  if covered == nil then
    -- Calls due by now are promoted by the claim (or about to be), which checks them against
    -- the window of that moment: a recheck has nothing to do for them.
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    covered = -1
  end
  if due > covered then
    -- Relative to `now`, which a test may set: the expiry is right whatever the clock says.
    local ttl = due - now + PARK_GRACE_MS
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
    covered = due
  end
  PARKED[key] = covered
end

-- Sets the parked calls of `cp` aside to be rechecked (O(1); they keep their expiry). Returns
-- false when there are none.
local function park_set_aside(prefix, cp)
  local key = park_key(prefix, cp)
  if redis.call('EXISTS', key) == 0 then return false end
  redis.call('RENAME', key, park_recheck_key(prefix, cp))
  PARKED[key] = nil
  return true
end

-- The window (or zone) of campaign `cp` changed: its parked calls are to be looked at again.
-- When a recheck is under way, the calls it has passed already were looked at under the older
-- setting: one more sweep follows it.
local function window_recheck_start(prefix, cp)
  local rechecks = park_rechecks_key(prefix)
  if redis.call('HEXISTS', rechecks, cp) == 1 then
    redis.call('HSET', rechecks, cp, 1)
    return
  end
  if park_set_aside(prefix, cp) then redis.call('HSET', rechecks, cp, 0) end
end

-- The campaign is gone (cancelled): nothing of it is to be rechecked.
local function window_recheck_drop(prefix, cp)
  redis.call('UNLINK', park_key(prefix, cp), park_recheck_key(prefix, cp))
  PARKED[park_key(prefix, cp)] = nil
  redis.call('HDEL', park_rechecks_key(prefix), cp)
end
