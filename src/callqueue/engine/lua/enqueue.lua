-- enqueue: adds calls (one or a batch), idempotent on the call id.
-- KEYS[1] ready  KEYS[2] sched  KEYS[3] seq  KEYS[4] stats  KEYS[5] batch set (or the seq key
--   again when there is no batch)  KEYS[6] do-not-call set  KEYS[6+i] call key of the i-th call
-- ARGV[1] wake channel  ARGV[2] batch index ttl ms  ARGV[3] has_batch (0/1)  ARGV[4] batch id
-- then 8 per call: id, spec json, priority rank, due ms (0: now), max_retries,
--   max duration s (0: the dialing worker's default), body hash, phone number (E.164)
-- Returns: {'ok', id1, state1, status1, id2, ...}; state is created | exists | conflict | dnc
--   (the number is on the do-not-call list: nothing is created; status is '')
local ready, sched, seqk, stats, batch = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local dnc = KEYS[6]
local channel, batch_ttl = ARGV[1], tonumber(ARGV[2])
local has_batch, batch_id = ARGV[3] == '1', ARGV[4]
local n = #KEYS - 6
local now = now_ms()
local seq = redis.call('INCRBY', seqk, n) - n
local ready_was_empty = redis.call('ZCARD', ready) == 0
local head = redis.call('ZRANGE', sched, 0, 0, 'WITHSCORES')
local sched_head = head[2] and tonumber(head[2]) or nil
local wake = false
local out = {'ok'}
local created = 0
for i = 1, n do
  local key = KEYS[6 + i]
  local b = 4 + (i - 1) * 8
  local id, spec, prio, due = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local hash, phone = ARGV[b + 7], ARGV[b + 8]
  local existing = redis.call('HMGET', key, 'st', 'h')
  if existing[1] then
    out[#out + 1] = id
    out[#out + 1] = (existing[2] == hash) and 'exists' or 'conflict'
    out[#out + 1] = existing[1]
  elseif redis.call('SISMEMBER', dnc, phone) == 1 then
    out[#out + 1] = id
    out[#out + 1] = 'dnc'
    out[#out + 1] = ''
  else
    seq = seq + 1
    local score = prio * 1099511627776 + seq
    local status = (due > now) and 'scheduled' or 'queued'
    redis.call('HSET', key, 's', spec, 'st', status, 'p', prio, 'q', score, 'a', 0,
      'mr', ARGV[b + 5], 'md', ARGV[b + 6], 'cr', now, 'up', now, 'h', hash, 'to', phone,
      'hist', now .. '|' .. status .. '|\n', 'hn', 1)
    if status == 'scheduled' then
      redis.call('HSET', key, 'due', due)
      redis.call('ZADD', sched, due, id)
      if sched_head == nil or due < sched_head then
        sched_head = due
        wake = true
      end
    else
      redis.call('ZADD', ready, score, id)
      if ready_was_empty then wake = true end
    end
    if has_batch then
      redis.call('HSET', key, 'b', batch_id)
      redis.call('SADD', batch, id)
    end
    created = created + 1
    out[#out + 1] = id
    out[#out + 1] = 'created'
    out[#out + 1] = status
  end
end
if created > 0 then redis.call('HINCRBY', stats, 'enqueued', created) end
if has_batch and batch_ttl > 0 then redis.call('PEXPIRE', batch, batch_ttl) end
if wake then redis.call('PUBLISH', channel, 'e') end
return out
