-- dnc: adds numbers to, or removes them from, the queue's do-not-call list. Calls to a listed
-- number are refused at enqueue and cancelled at claim, never dialed.
-- KEYS[1] do-not-call set
-- ARGV[1] add | remove  ARGV[2..] E.164 numbers
-- Returns: how many numbers changed
local op = ARGV[1]
local changed = 0
for i = 2, #ARGV, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #ARGV) do chunk[#chunk + 1] = ARGV[j] end
  if op == 'add' then
    changed = changed + redis.call('SADD', KEYS[1], unpack(chunk))
  elseif op == 'remove' then
    changed = changed + redis.call('SREM', KEYS[1], unpack(chunk))
  else
    return redis.error_reply('CQ_BAD_DNC_OP ' .. tostring(op))
  end
end
return changed
