-- Calling windows, the Lua twin of callqueue/windows.py (same semantics, same answers).
-- Plain top-level local functions, no globals: this file is concatenated into a library.
-- A window is "<mask>|<start_min>|<end_min>" (CallingWindow.encode): bit d of mask is weekday d
-- (Monday = bit 0, the local day an opening starts), minutes after local midnight, start > end
-- crossing midnight. A zone is an entry "<offset min before>|<transition ms>|<offset min after>"
-- (windows.zone_offset_entry): its UTC offset now and its next change; a later change is not
-- known, so entries must be refreshed at least daily. A zone is open when its wall clock
-- shows a listed day and a time in [start, end); in DST gaps and overlaps that is still what the
-- clock shows (see windows.py). Times are epoch ms; doubles hold them exactly.

-- The window as {mask, s = start ms, e = end ms after local midnight}; raises CQ_BAD_WINDOW on
-- anything CallingWindow.encode would not produce.
local function window_parse(text)
  local m, s, e = string.match(text or '', '^(%d+)|(%d+)|(%d+)$')
  m, s, e = tonumber(m), tonumber(s), tonumber(e)
  if not m or m < 1 or m > 127 or s > 1439 or e > 1440 or s == e then
    error('CQ_BAD_WINDOW calling window ' .. tostring(text), 0)
  end
  return {mask = m, s = s * 60000, e = e * 60000}
end

-- The UTC offset in minutes (east positive) at t_ms, from a zone entry.
local function zone_offset_at(entry, t_ms)
  local b, tr, a = string.match(entry or '', '^(%-?%d+)|(%-?%d+)|(%-?%d+)$')
  if not b then error('CQ_BAD_WINDOW zone offset entry ' .. tostring(entry), 0) end
  if t_ms < tonumber(tr) then return tonumber(b) end
  return tonumber(a)
end

-- Whether weekday d (Monday = 0) is in mask.
local function window_day(mask, d)
  return math.floor(mask / 2 ^ d) % 2 == 1
end

-- The first local wall time (ms since 1970-01-01 00:00 local) at or after l inside window w,
-- on a clock without DST changes.
local function window_local_next(w, l)
  local day = math.floor(l / 86400000)
  local tod = l - day * 86400000
  local wd = (day + 3) % 7  -- 1970-01-01 was a Thursday
  local s, e, m = w.s, w.e, w.mask
  if s < e then
    if tod >= s and tod < e and window_day(m, wd) then return l end
  elseif (tod >= s and window_day(m, wd)) or (tod < e and window_day(m, (wd + 6) % 7)) then
    return l
  end
  local k = 0
  if tod >= s then k = 1 end
  while not window_day(m, (wd + k) % 7) do k = k + 1 end  -- mask has a day: k <= 7
  return (day + k) * 86400000 + s
end

-- The first instant at or after c at which a zone (offset b ms until tr, a ms from then on)
-- is open: in the stretch before the change if it opens there, else from the change on (the
-- clock may jump into the window at the change itself).
local function window_zone_next(w, b, tr, a, c)
  if c < tr then
    local u = window_local_next(w, c + b) - b
    if u < tr then return u end
    c = tr
  end
  return window_local_next(w, c + a) - a
end

-- t_ms if window w (from window_parse) is open now in every zone of `entries` (an array of
-- entry strings, at least one: the fallback zone's when the number's are unknown), else the
-- earliest later instant open in all of them, or -1 if none within 8 days.
local function window_next_open(w, entries, t_ms)
  local n = #entries
  if n == 0 then error('CQ_BAD_WINDOW no zone entries', 0) end
  local z = {}
  for i = 1, n do
    local b, tr, a = string.match(entries[i], '^(%-?%d+)|(%-?%d+)|(%-?%d+)$')
    if not b then error('CQ_BAD_WINDOW zone offset entry ' .. tostring(entries[i]), 0) end
    z[3 * i - 2], z[3 * i - 1], z[3 * i] = tonumber(b) * 60000, tonumber(tr), tonumber(a) * 60000
  end
  local limit = t_ms + 691200000  -- 8 days
  local c = t_ms
  -- Every zone is closed from c until its own next opening, so an instant open in all of them
  -- is no earlier than the latest of those: jump there until all agree.
  while true do
    local best = c
    for i = 1, 3 * n, 3 do
      local u = window_zone_next(w, z[i], z[i + 1], z[i + 2], c)
      if u > best then best = u end
    end
    if best > limit then return -1 end
    if best == c or n == 1 then return best end
    c = best
  end
end
