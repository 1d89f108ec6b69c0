-- zones: records what the claim needs to know of time zones to check calling windows without a
-- time-zone database: zone -> "offset minutes before|next change ms|offset minutes after"
-- (windows.zone_offset_entry). Entries are refreshed by workers well before they go stale.
-- KEYS[1] time-zone offsets hash
-- ARGV: zone, entry, zone, entry, ...
-- Returns: how many zones were new
local new = 0
for i = 1, #ARGV, 2 do
  new = new + redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return new
