-- hooks: bookkeeping of status-webhook deliveries (webhooks.py), so that every event is told at
-- least once: an outbox entry stays pending in its consumer group until it is acknowledged
-- here, and a failed one moves to the retry set under a lease, so a deliverer that dies
-- mid-delivery leaves it to another.
-- KEYS[1] outbox stream  KEYS[2] retry set (ZSET: delivery json -> when due)  KEYS[3] failed
--   deliveries (HASH id -> json)  KEYS[4] their index (ZSET id -> when given up)  KEYS[5] stats
-- ARGV[1] op, then:
--   done  entry id ('' for a retried one), retry member ('' none)
--   retry entry id ('' none), old retry member ('' none), new member, due ms
--   fail  entry id ('' none), old retry member ('' none), delivery id, json, keep (how many
--     failed deliveries are kept)
--   due   now ms, limit, lease ms -> the members due (their score moves to now + lease)
--   again delivery id, its new retry member (attempts reset): a failed delivery, tried anew
-- Returns: done/retry/fail: 'ok'; due: the members; again: 1, or 0 when no such failed one
local stream, retry, failed, failed_idx, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op = ARGV[1]
local GROUP = 'hooks'

local function settle_entry(id)
  if id ~= '' then
    redis.call('XACK', stream, GROUP, id)
    redis.call('XDEL', stream, id)
  end
end

if op == 'done' then
  settle_entry(ARGV[2])
  if ARGV[3] ~= '' then redis.call('ZREM', retry, ARGV[3]) end
  stat(stats, 'hooks_delivered', 1)
  return 'ok'
elseif op == 'retry' then
  settle_entry(ARGV[2])
  if ARGV[3] ~= '' then redis.call('ZREM', retry, ARGV[3]) end
  redis.call('ZADD', retry, tonumber(ARGV[5]), ARGV[4])
  stat(stats, 'hooks_retried', 1)
  return 'ok'
elseif op == 'fail' then
  settle_entry(ARGV[2])
  if ARGV[3] ~= '' then redis.call('ZREM', retry, ARGV[3]) end
  local now = now_ms()
  redis.call('HSET', failed, ARGV[4], ARGV[5])
  redis.call('ZADD', failed_idx, now, ARGV[4])
  local keep = tonumber(ARGV[6])
  local extra = redis.call('ZCARD', failed_idx) - keep
  if extra > 0 then
    local old = redis.call('ZRANGE', failed_idx, 0, extra - 1)
    redis.call('ZREMRANGEBYRANK', failed_idx, 0, extra - 1)
    redis.call('HDEL', failed, unpack(old))
  end
  stat(stats, 'hooks_failed', 1)
  return 'ok'
elseif op == 'due' then
  local now, limit, lease = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local due = redis.call('ZRANGEBYSCORE', retry, '-inf', now, 'LIMIT', 0, limit)
  for _, member in ipairs(due) do redis.call('ZADD', retry, now + lease, member) end
  return due
elseif op == 'again' then
  if redis.call('HDEL', failed, ARGV[2]) == 0 then return 0 end
  redis.call('ZREM', failed_idx, ARGV[2])
  redis.call('ZADD', retry, now_ms(), ARGV[3])
  return 1
end
return redis.error_reply('CQ_BAD_HOOKS_OP ' .. tostring(op))
